//! Events: past-tense facts produced by `apply`, each numbered by a collective-wide revision.

use serde::{Deserialize, Serialize};

use crate::catalog::StatusDef;
use crate::command::Principal;
use crate::config::{Category, ConfigSet, ImportMode};
use crate::messaging::{Delivery, QueueLimits};
use crate::notes::Attribute;
use crate::routing::{Interaction, RecordedDecision, Settings};
use crate::site::{Site, SiteId};
use crate::user::User;
use crate::workgroup::Workgroup;

/// An event with its place in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Collective-wide revision, gap-free, starting at 1.
    pub revision: u64,
    /// Entry time of the command that produced it.
    pub at_ms: u64,
    /// Who asked for the command.
    pub principal: Principal,
    /// The fact.
    pub event: Event,
}

/// Every fact the collective records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A site was added (the password hash is stored but never published in events' API form).
    SiteAdded(Site),
    /// A site's active flag changed.
    SiteActiveChanged {
        /// The site.
        site: SiteId,
        /// New flag.
        active: bool,
    },
    /// A user was added.
    UserAdded(User),
    /// A user's fields changed (memberships unchanged).
    UserUpdated(User),
    /// A user was deleted everywhere.
    UserDeleted {
        /// The user.
        username: String,
    },
    /// A workgroup was added.
    WorkgroupAdded(Workgroup),
    /// A workgroup was deleted.
    WorkgroupDeleted {
        /// The workgroup.
        name: String,
    },
    /// A user joined a workgroup.
    UserAddedToWorkgroup {
        /// The workgroup.
        workgroup: String,
        /// The user.
        username: String,
    },
    /// A user left a workgroup.
    UserRemovedFromWorkgroup {
        /// The workgroup.
        workgroup: String,
        /// The user.
        username: String,
    },
    /// A user became visible at every site (joined its first spanning workgroup).
    UserStartedSpanning {
        /// The user.
        username: String,
    },
    /// A user stopped being visible at sites other than its home (left its last spanning workgroup).
    UserStoppedSpanning {
        /// The user.
        username: String,
    },
    /// A status catalog entry was added or replaced.
    StatusDefined(StatusDef),
    /// A user's status changed.
    StatusChanged {
        /// The user.
        username: String,
        /// New status key.
        status_key: String,
        /// End of the status.
        until_ms: Option<u64>,
        /// Free text.
        detail: String,
    },
    /// A user logged on at a site.
    UserLoggedOn {
        /// The user.
        username: String,
        /// The site.
        site: SiteId,
        /// The server.
        server: String,
    },
    /// A user logged off.
    UserLoggedOff {
        /// The user.
        username: String,
        /// The site it was logged on at.
        site: SiteId,
        /// Why.
        reason: String,
    },
    /// An interaction started; the user is on the phone.
    InteractionStarted {
        /// The user.
        username: String,
        /// Interaction id.
        interaction_id: String,
    },
    /// An interaction ended.
    InteractionEnded {
        /// The user.
        username: String,
        /// Interaction id.
        interaction_id: String,
    },
    /// A site was renumbered; every reference to `old` now names `new`.
    SiteIdChanged {
        /// Former id.
        old: SiteId,
        /// New id.
        new: SiteId,
    },
    /// A site's lease was granted (or re-granted).
    LeaseGranted {
        /// The site.
        site: SiteId,
        /// Time-to-live.
        ttl_ms: u64,
        /// When it expires unless kept alive.
        expires_at_ms: u64,
    },
    /// A site's lease was kept alive (or extended by a new leader).
    LeaseRenewed {
        /// The site.
        site: SiteId,
        /// New expiry.
        expires_at_ms: u64,
    },
    /// A site's lease ended: it expired, or the site revoked it.
    LeaseEnded {
        /// The site.
        site: SiteId,
        /// `expired` or `revoked`.
        reason: String,
    },
    /// A message entered its destination site's queue.
    MessageQueued(Delivery),
    /// A site acknowledged deliveries; they left its queue.
    MessagesAcked {
        /// The site.
        site: SiteId,
        /// The ids that were queued.
        ids: Vec<u64>,
    },
    /// A request is waiting for its response (its message is queued at `to_site`).
    RequestOpened {
        /// The request's message id.
        correlation_id: u64,
        /// The requesting site.
        from_site: SiteId,
        /// The site asked.
        to_site: SiteId,
        /// When the request is gone, if it has a timeout.
        expires_at_ms: Option<u64>,
    },
    /// The response to an open request arrived (kept with the request for its requester).
    ResponseArrived(Delivery),
    /// A request ended: `answered`, `timed-out` or `expired`.
    RequestClosed {
        /// The request's correlation id.
        correlation_id: u64,
        /// Why.
        reason: String,
    },
    /// Queue bounds changed.
    QueueLimitsSet(QueueLimits),
    /// A note was created.
    NoteCreated {
        /// The site.
        site: SiteId,
        /// The name as given.
        name: String,
        /// When it expires, if it has a time to live.
        expires_at_ms: Option<u64>,
    },
    /// A note attribute has a new value.
    NoteAttributeUpdated {
        /// The site.
        site: SiteId,
        /// The note.
        name: String,
        /// The attribute.
        attribute: String,
        /// The whole new value.
        value: Attribute,
    },
    /// A note is gone: `removed` or `expired`.
    NoteRemoved {
        /// The site.
        site: SiteId,
        /// The note.
        name: String,
        /// Why.
        reason: String,
    },
    /// A site's fields changed.
    SiteUpdated(Site),
    /// A configuration import was applied (its changes are the events before it in the entry).
    ConfigImported {
        /// The staged import it applied.
        import_id: String,
        /// Merge or recovery.
        mode: ImportMode,
        /// Categories the file held completely.
        complete: std::collections::BTreeSet<Category>,
        /// Entities created.
        creates: u64,
        /// Entities changed.
        updates: u64,
        /// Entities deleted or deactivated.
        deletes: u64,
    },
    /// A part of an import was staged.
    ImportPartStaged {
        /// The import.
        import_id: String,
        /// Part number.
        part: u32,
        /// The part.
        config: Box<ConfigSet>,
    },
    /// A staged import was dropped: `aborted` or `expired`.
    ImportDiscarded {
        /// The import.
        import_id: String,
        /// Why.
        reason: String,
    },
    /// An interaction came in to be routed; a reservation or the queue follows in the same entry.
    InteractionArrived(Box<Interaction>),
    /// An agent was chosen and reserved for an interaction.
    AgentReserved {
        /// The interaction.
        interaction_id: String,
        /// Its workgroup.
        workgroup: String,
        /// The agent.
        agent: String,
        /// The agent's site.
        agent_site: SiteId,
        /// Where the interaction came in.
        origin_site: SiteId,
        /// When the reservation times out.
        expires_at_ms: u64,
        /// Why this agent.
        decision: RecordedDecision,
    },
    /// No agent qualified: the interaction waits in its workgroup's queue.
    InteractionQueued {
        /// The interaction.
        interaction_id: String,
        /// Its workgroup.
        workgroup: String,
        /// Where the interaction came in.
        origin_site: SiteId,
        /// Who was considered.
        decision: RecordedDecision,
    },
    /// The reserved agent took the interaction.
    ReservationAccepted {
        /// The interaction.
        interaction_id: String,
        /// Its workgroup.
        workgroup: String,
        /// The agent.
        agent: String,
    },
    /// A reservation ended without an accept (`rejected`, `timed-out`, `agent-unavailable`);
    /// the interaction is routed again.
    ReservationReleased {
        /// The interaction.
        interaction_id: String,
        /// Its workgroup.
        workgroup: String,
        /// The agent.
        agent: String,
        /// Why.
        reason: String,
    },
    /// A queued or reserved interaction was cancelled.
    InteractionCancelled {
        /// The interaction.
        interaction_id: String,
        /// Its workgroup.
        workgroup: String,
        /// Where it came in.
        origin_site: SiteId,
    },
    /// A workgroup's routing settings changed.
    RoutingSettingsSet {
        /// The workgroup.
        workgroup: String,
        /// The new settings.
        settings: Settings,
    },
    /// The route cost between two sites changed (0: removed).
    RouteCostSet {
        /// Origin site.
        from: SiteId,
        /// Agent site.
        to: SiteId,
        /// Cost in ms of idle time.
        cost: u32,
    },
    /// A user's status passed its `until` without a change: the status stays, the presence is
    /// marked overdue. (Last in the enum: the log's encoding numbers variants in order.)
    StatusOverdue {
        /// The user.
        username: String,
        /// The status that is overdue.
        status_key: String,
        /// The `until` that passed.
        until_ms: u64,
    },
    /// A member refused a site's password (the failure limiter of every member counts it).
    AuthenticationFailed {
        /// The member that refused it.
        member: u64,
        /// The site the attempt named.
        site: SiteId,
        /// The caller's address as the limiter keys it; empty if unknown.
        source: String,
    },
    /// The directory source was configured (the password is never shown outside the state).
    SourceSet {
        /// Its settings.
        settings: crate::source::LdapSettings,
        /// When its next poll is due.
        next_poll_ms: u64,
    },
    /// The directory source was removed.
    SourceRemoved,
    /// The next poll was made due.
    SourcePollDue {
        /// When.
        next_poll_ms: u64,
    },
    /// The leader of `term` began a poll.
    SourcePollStarted {
        /// Its term.
        term: u64,
    },
    /// The directory source owns a user from now on.
    SourceClaimed {
        /// The user.
        username: String,
    },
    /// A user's directory entry left: it may not log on.
    UserDeactivated {
        /// The user.
        username: String,
    },
    /// A deactivated user's entry is back.
    UserReactivated {
        /// The user.
        username: String,
    },
    /// A poll reported.
    SourcePolled {
        /// Its term.
        term: u64,
        /// What it did.
        report: crate::source::PollReport,
        /// When the next is due.
        next_poll_ms: u64,
    },
    /// An alert rule was added or replaced.
    AlertRuleSet(crate::alert::AlertRule),
    /// An alert rule was removed.
    AlertRuleRemoved {
        /// Its name.
        name: String,
    },
    /// A rule's condition began to hold.
    AlertPending {
        /// The rule.
        name: String,
        /// The statistic's value.
        value: u64,
    },
    /// A rule's condition held for its window: the alert is raised.
    AlertRaised {
        /// The rule.
        name: String,
        /// The statistic's value.
        value: u64,
    },
    /// A rule's condition stopped holding.
    AlertCleared {
        /// The rule.
        name: String,
        /// The statistic's value.
        value: u64,
        /// Whether the alert had been raised (else the condition ended within its window).
        was_raised: bool,
    },
    /// Every alert record with a webhook up to this revision was delivered.
    AlertsDelivered {
        /// The newest delivered record's revision.
        up_to: u64,
    },
}

impl Event {
    /// The event's kind, as watch filters name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::SiteAdded(_) => "SiteAdded",
            Event::SiteActiveChanged { .. } => "SiteActiveChanged",
            Event::UserAdded(_) => "UserAdded",
            Event::UserUpdated(_) => "UserUpdated",
            Event::UserDeleted { .. } => "UserDeleted",
            Event::WorkgroupAdded(_) => "WorkgroupAdded",
            Event::WorkgroupDeleted { .. } => "WorkgroupDeleted",
            Event::UserAddedToWorkgroup { .. } => "UserAddedToWorkgroup",
            Event::UserRemovedFromWorkgroup { .. } => "UserRemovedFromWorkgroup",
            Event::UserStartedSpanning { .. } => "UserStartedSpanning",
            Event::UserStoppedSpanning { .. } => "UserStoppedSpanning",
            Event::StatusDefined(_) => "StatusDefined",
            Event::StatusChanged { .. } => "StatusChanged",
            Event::UserLoggedOn { .. } => "UserLoggedOn",
            Event::UserLoggedOff { .. } => "UserLoggedOff",
            Event::InteractionStarted { .. } => "InteractionStarted",
            Event::InteractionEnded { .. } => "InteractionEnded",
            Event::SiteIdChanged { .. } => "SiteIdChanged",
            Event::LeaseGranted { .. } => "LeaseGranted",
            Event::LeaseRenewed { .. } => "LeaseRenewed",
            Event::LeaseEnded { .. } => "LeaseEnded",
            Event::MessageQueued(_) => "MessageQueued",
            Event::MessagesAcked { .. } => "MessagesAcked",
            Event::RequestOpened { .. } => "RequestOpened",
            Event::ResponseArrived(_) => "ResponseArrived",
            Event::RequestClosed { .. } => "RequestClosed",
            Event::QueueLimitsSet(_) => "QueueLimitsSet",
            Event::NoteCreated { .. } => "NoteCreated",
            Event::NoteAttributeUpdated { .. } => "NoteAttributeUpdated",
            Event::NoteRemoved { .. } => "NoteRemoved",
            Event::SiteUpdated(_) => "SiteUpdated",
            Event::ConfigImported { .. } => "ConfigImported",
            Event::ImportPartStaged { .. } => "ImportPartStaged",
            Event::ImportDiscarded { .. } => "ImportDiscarded",
            Event::InteractionArrived(_) => "InteractionArrived",
            Event::AgentReserved { .. } => "AgentReserved",
            Event::InteractionQueued { .. } => "InteractionQueued",
            Event::ReservationAccepted { .. } => "ReservationAccepted",
            Event::ReservationReleased { .. } => "ReservationReleased",
            Event::InteractionCancelled { .. } => "InteractionCancelled",
            Event::RoutingSettingsSet { .. } => "RoutingSettingsSet",
            Event::RouteCostSet { .. } => "RouteCostSet",
            Event::StatusOverdue { .. } => "StatusOverdue",
            Event::AuthenticationFailed { .. } => "AuthenticationFailed",
            Event::SourceSet { .. } => "SourceSet",
            Event::SourceRemoved => "SourceRemoved",
            Event::SourcePollDue { .. } => "SourcePollDue",
            Event::SourcePollStarted { .. } => "SourcePollStarted",
            Event::SourceClaimed { .. } => "SourceClaimed",
            Event::UserDeactivated { .. } => "UserDeactivated",
            Event::UserReactivated { .. } => "UserReactivated",
            Event::SourcePolled { .. } => "SourcePolled",
            Event::AlertRuleSet(_) => "AlertRuleSet",
            Event::AlertRuleRemoved { .. } => "AlertRuleRemoved",
            Event::AlertPending { .. } => "AlertPending",
            Event::AlertRaised { .. } => "AlertRaised",
            Event::AlertCleared { .. } => "AlertCleared",
            Event::AlertsDelivered { .. } => "AlertsDelivered",
        }
    }

    /// The user the event is about, if any (for watch filters).
    pub fn username(&self) -> Option<&str> {
        match self {
            Event::UserAdded(user) | Event::UserUpdated(user) => Some(&user.username),
            Event::UserDeleted { username }
            | Event::UserAddedToWorkgroup { username, .. }
            | Event::UserRemovedFromWorkgroup { username, .. }
            | Event::UserStartedSpanning { username }
            | Event::UserStoppedSpanning { username }
            | Event::StatusChanged { username, .. }
            | Event::StatusOverdue { username, .. }
            | Event::UserLoggedOn { username, .. }
            | Event::UserLoggedOff { username, .. }
            | Event::InteractionStarted { username, .. }
            | Event::InteractionEnded { username, .. }
            | Event::AgentReserved { agent: username, .. }
            | Event::ReservationAccepted { agent: username, .. }
            | Event::ReservationReleased { agent: username, .. }
            | Event::SourceClaimed { username }
            | Event::UserDeactivated { username }
            | Event::UserReactivated { username } => Some(username),
            _ => None,
        }
    }

    /// The workgroup the event names, if any (for watch filters).
    pub fn workgroup(&self) -> Option<&str> {
        match self {
            Event::WorkgroupAdded(workgroup) => Some(&workgroup.name),
            Event::WorkgroupDeleted { name } => Some(name),
            Event::UserAddedToWorkgroup { workgroup, .. }
            | Event::UserRemovedFromWorkgroup { workgroup, .. }
            | Event::AgentReserved { workgroup, .. }
            | Event::InteractionQueued { workgroup, .. }
            | Event::ReservationAccepted { workgroup, .. }
            | Event::ReservationReleased { workgroup, .. }
            | Event::InteractionCancelled { workgroup, .. }
            | Event::RoutingSettingsSet { workgroup, .. } => Some(workgroup),
            Event::InteractionArrived(interaction) => Some(&interaction.request.workgroup),
            _ => None,
        }
    }

    /// The site the event is about, if any (for watch filters).
    pub fn site(&self) -> Option<SiteId> {
        match self {
            Event::SiteAdded(site) | Event::SiteUpdated(site) => Some(site.id),
            Event::SiteActiveChanged { site, .. }
            | Event::UserLoggedOn { site, .. }
            | Event::UserLoggedOff { site, .. }
            | Event::LeaseGranted { site, .. }
            | Event::LeaseRenewed { site, .. }
            | Event::LeaseEnded { site, .. }
            | Event::MessagesAcked { site, .. }
            | Event::NoteCreated { site, .. }
            | Event::NoteAttributeUpdated { site, .. }
            | Event::NoteRemoved { site, .. }
            | Event::AuthenticationFailed { site, .. } => Some(*site),
            Event::MessageQueued(delivery) | Event::ResponseArrived(delivery) => Some(delivery.to_site),
            Event::RequestOpened { to_site, .. } => Some(*to_site),
            Event::SiteIdChanged { new, .. } => Some(*new),
            Event::UserAdded(user) | Event::UserUpdated(user) => Some(user.home_site),
            // Routing events are told to the site the interaction came in at.
            Event::AgentReserved { origin_site, .. }
            | Event::InteractionQueued { origin_site, .. }
            | Event::InteractionCancelled { origin_site, .. } => Some(*origin_site),
            Event::InteractionArrived(interaction) => Some(interaction.request.origin_site),
            Event::RouteCostSet { from, .. } => Some(*from),
            _ => None,
        }
    }
}
