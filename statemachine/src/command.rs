//! Commands: what a caller asks for, in the imperative. The leader stamps each with the time and
//! the principal (an [`Envelope`]) before it enters the Raft log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::StatusDef;
use crate::config::{ConfigSet, ImportMode};
use crate::messaging::{Destination, Element, MessageKind, QueueLimits};
use crate::notes::{Attribute, UpdateOp};
use crate::routing::{RouteRequest, Settings};
use crate::site::{SiteId, TrustedAccess};
use crate::source::{LdapSettings, PollReport, SourceStep};
use crate::user::UserSpec;

/// Who asked for a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Principal {
    /// An administrator, by name. Shared: every event a command produces carries its
    /// principal, on every member (encoded like a plain string).
    Admin(std::sync::Arc<str>),
    /// A site, authenticated by id and password.
    Site(SiteId),
    /// The collective itself (ticks, timers).
    System,
    /// A directory source's poll, by kind (`ldap`), proposed by the leader.
    Source(std::sync::Arc<str>),
}

impl std::fmt::Display for Principal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Principal::Admin(name) => write!(f, "admin:{name}"),
            Principal::Site(id) => write!(f, "site:{id}"),
            Principal::System => write!(f, "system"),
            Principal::Source(kind) => write!(f, "source:{kind}"),
        }
    }
}

/// A command as it is stored in the log: stamped by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Leader time in ms since the epoch; `apply` uses only this clock.
    pub at_ms: u64,
    /// Who asked.
    pub principal: Principal,
    /// What was asked.
    pub command: Command,
}

/// One command and who asked for it, inside a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Who asked.
    pub principal: Principal,
    /// What was asked.
    pub command: Command,
}

/// What one Raft log entry carries: commands proposed together under one leader time. Batching
/// many commands into one entry is what lets one fsync cover many writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Leader time in ms since the epoch for every command of the batch.
    pub at_ms: u64,
    /// The commands, applied in this order. Shared, so the node's cache of recent log entries
    /// hands out copies without copying the commands (encoded like a plain sequence).
    pub proposals: std::sync::Arc<[Proposal]>,
}

/// How Raft's logs name an entry's payload: its size and time, not its commands.
impl std::fmt::Display for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "batch of {} commands at {} ms", self.proposals.len(), self.at_ms)
    }
}

/// The fields of a site a caller supplies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteSpec {
    /// Site id 1..=999.
    pub id: SiteId,
    /// Unique name.
    pub name: String,
    /// Phone number as given; normalised by validation.
    pub phone: String,
    /// Argon2id PHC hash of the password, computed at the edge.
    pub password_hash: String,
    /// Note-id dial string (empty means the default `*90`).
    pub note_id_dial_string: String,
    /// Whether the site is active.
    pub active: bool,
    /// Server host names.
    pub servers: Vec<String>,
    /// Trusted access for roaming users.
    pub trusted_access: TrustedAccess,
}

/// Every change the collective knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Add a new site.
    AddSite(SiteSpec),
    /// Mark a site active or inactive.
    SetSiteActive {
        /// The site.
        site: SiteId,
        /// New flag.
        active: bool,
    },
    /// Add a new user.
    AddUser(UserSpec),
    /// Replace the fields of an existing user (matched by username).
    UpdateUser(UserSpec),
    /// Delete a user everywhere.
    DeleteUser {
        /// The user.
        username: String,
    },
    /// Create a workgroup.
    AddWorkgroup {
        /// Unique name.
        name: String,
        /// Whether members span sites.
        spans_sites: bool,
        /// Required skills (name → minimum level).
        required_skills: BTreeMap<String, u32>,
    },
    /// Delete a workgroup (its members stay).
    DeleteWorkgroup {
        /// The workgroup.
        name: String,
    },
    /// Add a user to a workgroup.
    AddWorkgroupMember {
        /// The workgroup.
        workgroup: String,
        /// The user.
        username: String,
    },
    /// Remove a user from a workgroup.
    RemoveWorkgroupMember {
        /// The workgroup.
        workgroup: String,
        /// The user.
        username: String,
    },
    /// Add or replace a status catalog entry.
    PutStatusDef(StatusDef),
    /// Set a user's status.
    SetStatus {
        /// The user.
        username: String,
        /// Catalog key.
        status_key: String,
        /// End of the status, required iff the status requires a date or time.
        until_ms: Option<u64>,
        /// Free text.
        detail: String,
    },
    /// Log a user on at a site (roaming: any active site).
    LogOn {
        /// The user.
        username: String,
        /// The site.
        site: SiteId,
        /// The server host name of that site (empty: its primary server).
        server: String,
    },
    /// Log a user off.
    LogOff {
        /// The user.
        username: String,
        /// Why (`user`, `site-unreachable`, …).
        reason: String,
    },
    /// An interaction started on the user's queue or logged-on station queue.
    StartInteraction {
        /// The user.
        username: String,
        /// Interaction id.
        interaction_id: String,
    },
    /// An interaction ended.
    EndInteraction {
        /// The user.
        username: String,
        /// Interaction id.
        interaction_id: String,
    },
    /// Renumber a site, rewriting every reference to it atomically.
    ChangeSiteId {
        /// Current id.
        old: SiteId,
        /// New id (must be free).
        new: SiteId,
    },
    /// A site connects: grant (or re-grant) its lease.
    GrantLease {
        /// The site.
        site: SiteId,
        /// Time-to-live in ms.
        ttl_ms: u64,
    },
    /// A connected site keeps its lease alive for another TTL.
    KeepAlive {
        /// The site.
        site: SiteId,
    },
    /// A site disconnects cleanly: its lease ends and its users are logged off.
    RevokeLease {
        /// The site.
        site: SiteId,
    },
    /// A new leader extends every lease by its TTL, so a leader change never expires a healthy
    /// lease (keepalives may have been lost while there was no leader).
    RenewLeases,
    /// Nothing but the passage of time: leases, notes and requests due at the entry time end.
    Tick,
    /// Send an inter-site message (event, request or response).
    SendMessage {
        /// The sending site.
        from_site: SiteId,
        /// One site or every other active site.
        to: Destination,
        /// Selects the receiving handlers.
        object_id: String,
        /// Selects the receiving handlers.
        event_id: String,
        /// Event, request or response.
        kind: MessageKind,
        /// The elements, in order.
        elements: Vec<Element>,
    },
    /// A site has handled these deliveries: they leave its queue.
    AckMessages {
        /// The receiving site.
        site: SiteId,
        /// Delivery ids.
        ids: Vec<u64>,
    },
    /// The requester took the response or stopped waiting.
    CloseRequest {
        /// The request's correlation id.
        correlation_id: u64,
        /// `answered` or `timed-out`.
        reason: String,
    },
    /// Set the queue bounds of every site.
    SetQueueLimits(QueueLimits),
    /// Create a note at a site.
    CreateNote {
        /// The site.
        site: SiteId,
        /// Unique name at the site.
        name: String,
        /// Time to live in minutes; none: until removed.
        ttl_minutes: Option<u32>,
    },
    /// Change one attribute of a note.
    UpdateNoteAttribute {
        /// The site.
        site: SiteId,
        /// The note.
        name: String,
        /// The attribute.
        attribute: String,
        /// Append, replace or remove.
        op: UpdateOp,
        /// The values (their type is the attribute's).
        values: Attribute,
    },
    /// Remove a note.
    RemoveNote {
        /// The site.
        site: SiteId,
        /// The note.
        name: String,
    },
    /// Replace the fields of an existing site (matched by id); an empty password hash keeps the
    /// current password.
    UpdateSite(SiteSpec),
    /// Stage one part of an import (each part is one log entry; staging a part again
    /// replaces it, so a retried part is harmless).
    StageImport {
        /// Names the import.
        import_id: String,
        /// Part number, from 0.
        part: u32,
        /// The part's configuration.
        config: Box<ConfigSet>,
    },
    /// Apply a staged import, all of it in this one entry, or nothing.
    CommitImport {
        /// The import.
        import_id: String,
        /// How many parts it has (all must be staged).
        parts: u32,
        /// Merge, or make the complete categories exactly the file's.
        mode: ImportMode,
    },
    /// Discard a staged import.
    AbortImport {
        /// The import.
        import_id: String,
    },
    /// Route an interaction to an agent of a workgroup (or queue it).
    RouteInteraction(RouteRequest),
    /// The reserved agent takes the interaction: it becomes active, the agent on the phone.
    AcceptInteraction {
        /// The interaction.
        interaction_id: String,
        /// The agent accepting; when given, it must be the one the interaction is reserved to
        /// (a reservation that timed out may have moved to someone else).
        #[serde(default)]
        agent: Option<String>,
    },
    /// The reserved agent declines: the interaction is routed again without it.
    RejectInteraction {
        /// The interaction.
        interaction_id: String,
        /// The agent declining; when given, it must be the one the interaction is reserved to.
        #[serde(default)]
        agent: Option<String>,
        /// Also set the agent to `AcdAgentNotAnswering`.
        not_answering: bool,
    },
    /// The caller hung up before an agent took the interaction.
    CancelInteraction {
        /// The interaction.
        interaction_id: String,
    },
    /// Set a workgroup's routing settings.
    SetRoutingSettings {
        /// The workgroup.
        workgroup: String,
        /// The settings.
        settings: Settings,
    },
    /// Set the route cost from one site to another (0 removes it).
    SetRouteCost {
        /// Origin site.
        from: SiteId,
        /// Agent site.
        to: SiteId,
        /// Cost in ms of idle time.
        cost: u32,
    },
    /// Record a failed site authentication a member saw, so every member's failure limiter
    /// counts it (proposed by that member; last in the enum, as the log numbers variants).
    RecordAuthFailure {
        /// The member that saw it.
        member: u64,
        /// The site the attempt named.
        site: SiteId,
        /// The caller's address as the limiter keys it (IPv4, or IPv6 /64); empty if unknown.
        source: String,
    },
    /// Configure the directory source (replacing the settings of any), its first poll due at
    /// `next_poll_ms` (at once when absent).
    SetSource {
        /// The settings.
        settings: LdapSettings,
        /// When the next poll is due.
        next_poll_ms: Option<u64>,
    },
    /// Remove the directory source; the users it filled stay, none deactivated any more.
    RemoveSource,
    /// Make the next poll due now.
    PollSourceNow,
    /// The leader of `term` begins a poll (see `source.rs` on fencing).
    StartSourcePoll {
        /// The proposing leader's Raft term.
        term: u64,
    },
    /// One change of the poll of `term`.
    SourceStep {
        /// The poll's term.
        term: u64,
        /// The change.
        step: SourceStep,
    },
    /// The poll of `term` reports; the next is due one interval later.
    FinishSourcePoll {
        /// The poll's term.
        term: u64,
        /// What it did.
        report: PollReport,
    },
    /// Add or replace an alert rule (matched by name).
    PutAlertRule(crate::alert::AlertRule),
    /// Remove an alert rule.
    RemoveAlertRule {
        /// Its name.
        name: String,
    },
    /// The leader delivered every alert record with a webhook up to this revision.
    AlertsDelivered {
        /// The newest delivered record's revision.
        up_to: u64,
    },
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::AddSite(_) => "AddSite",
            Command::SetSiteActive { .. } => "SetSiteActive",
            Command::AddUser(_) => "AddUser",
            Command::UpdateUser(_) => "UpdateUser",
            Command::DeleteUser { .. } => "DeleteUser",
            Command::AddWorkgroup { .. } => "AddWorkgroup",
            Command::DeleteWorkgroup { .. } => "DeleteWorkgroup",
            Command::AddWorkgroupMember { .. } => "AddWorkgroupMember",
            Command::RemoveWorkgroupMember { .. } => "RemoveWorkgroupMember",
            Command::PutStatusDef(_) => "PutStatusDef",
            Command::SetStatus { .. } => "SetStatus",
            Command::LogOn { .. } => "LogOn",
            Command::LogOff { .. } => "LogOff",
            Command::StartInteraction { .. } => "StartInteraction",
            Command::EndInteraction { .. } => "EndInteraction",
            Command::ChangeSiteId { .. } => "ChangeSiteId",
            Command::GrantLease { .. } => "GrantLease",
            Command::KeepAlive { .. } => "KeepAlive",
            Command::RevokeLease { .. } => "RevokeLease",
            Command::RenewLeases => "RenewLeases",
            Command::Tick => "Tick",
            Command::SendMessage { .. } => "SendMessage",
            Command::AckMessages { .. } => "AckMessages",
            Command::CloseRequest { .. } => "CloseRequest",
            Command::SetQueueLimits(_) => "SetQueueLimits",
            Command::CreateNote { .. } => "CreateNote",
            Command::UpdateNoteAttribute { .. } => "UpdateNoteAttribute",
            Command::RemoveNote { .. } => "RemoveNote",
            Command::UpdateSite(_) => "UpdateSite",
            Command::StageImport { .. } => "StageImport",
            Command::CommitImport { .. } => "CommitImport",
            Command::AbortImport { .. } => "AbortImport",
            Command::RouteInteraction(_) => "RouteInteraction",
            Command::AcceptInteraction { .. } => "AcceptInteraction",
            Command::RejectInteraction { .. } => "RejectInteraction",
            Command::CancelInteraction { .. } => "CancelInteraction",
            Command::SetRoutingSettings { .. } => "SetRoutingSettings",
            Command::SetRouteCost { .. } => "SetRouteCost",
            Command::RecordAuthFailure { .. } => "RecordAuthFailure",
            Command::SetSource { .. } => "SetSource",
            Command::RemoveSource => "RemoveSource",
            Command::PollSourceNow => "PollSourceNow",
            Command::StartSourcePoll { .. } => "StartSourcePoll",
            Command::SourceStep { .. } => "SourceStep",
            Command::FinishSourcePoll { .. } => "FinishSourcePoll",
            Command::PutAlertRule(_) => "PutAlertRule",
            Command::RemoveAlertRule { .. } => "RemoveAlertRule",
            Command::AlertsDelivered { .. } => "AlertsDelivered",
        }
    }
}
