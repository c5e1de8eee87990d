//! `State`: the materialised views of the collective and the pure `apply` that advances them.
//!
//! `apply` first *decides* (reads state, checks rules, produces events, changes nothing), then
//! *folds* each event into the views. A rejected command therefore changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::{seed_catalog, StatusDef, STATUS_INITIAL};
use crate::command::{Batch, Command, Envelope, Principal, SiteSpec};
use crate::event::{Event, EventRecord};
use crate::lease::{Lease, LOGOFF_REASON_SITE_UNREACHABLE};
use crate::limits::*;
use crate::messaging::Messaging;
use crate::presence::{Logon, Presence, StatusDeadlines};
use crate::rejection::Rejection;
use crate::routing::Routing;
use crate::site::{Site, SiteId, NOTE_ID_DIAL_STRING_DEFAULT};
use crate::small::{Name, VecSet};
use crate::user::{key_of, key_ref, User, UserSpec};
use crate::validate::{normalize_phone, validate};
use crate::workgroup::Workgroup;

/// Reason recorded when a user logs off by request.
pub const LOGOFF_REASON_USER: &str = "user";
/// Reason recorded when a logged-on user is deleted.
pub const LOGOFF_REASON_DELETED: &str = "user-deleted";
/// Reason recorded when a user is logged off because it logged on at another site.
pub const LOGOFF_REASON_ROAMED: &str = "logged-on-elsewhere";

/// The whole replicated state. Every map is a `BTreeMap` so iteration order never depends on
/// hashing, and the snapshot bytes of equal states are equal.
///
/// Serde goes through `remote = "Self"` so that deserialising (a snapshot, a fixture) rebuilds
/// the derived routing index before anyone reads the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct State {
    /// Revision of the last event; 0 before the first.
    pub revision: u64,
    /// Entry time of the last applied command.
    pub last_at_ms: u64,
    /// Sites by id.
    pub sites: BTreeMap<SiteId, Site>,
    /// Lowercase site name → id.
    pub site_names: BTreeMap<String, SiteId>,
    /// Users by lowercase username.
    pub users: BTreeMap<Name, User>,
    /// Lowercase email → lowercase username.
    pub emails: BTreeMap<Name, Name>,
    /// Extension → lowercase usernames that have it.
    pub extensions: BTreeMap<Name, VecSet<Name>>,
    /// Workgroups by lowercase name.
    pub workgroups: BTreeMap<String, Workgroup>,
    /// Status catalog by key.
    pub catalog: BTreeMap<String, StatusDef>,
    /// Presence by lowercase username; exactly one per user.
    pub presence: BTreeMap<Name, Presence>,
    /// Live site leases by site id.
    #[serde(default)]
    pub leases: BTreeMap<SiteId, Lease>,
    /// Inter-site message queues, open requests and notes.
    #[serde(default)]
    pub messaging: Messaging,
    /// Interactions, routing settings and statistics.
    #[serde(default)]
    pub routing: Routing,
    /// Imports being staged, by id.
    #[serde(default)]
    pub imports: BTreeMap<String, crate::config::StagedImport>,
    /// Derived: the statuses whose `until` is still ahead (`presence.rs`), rebuilt on load.
    #[serde(skip)]
    pub status_deadlines: StatusDeadlines,
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        State::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = State::deserialize(deserializer)?;
        state.rebuild_routing_index();
        state.status_deadlines = StatusDeadlines::of(&state.presence);
        Ok(state)
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// A new collective: no sites or users, the vendor's status catalog.
    pub fn new() -> State {
        State {
            revision: 0,
            last_at_ms: 0,
            sites: BTreeMap::new(),
            site_names: BTreeMap::new(),
            users: BTreeMap::new(),
            emails: BTreeMap::new(),
            extensions: BTreeMap::new(),
            workgroups: BTreeMap::new(),
            catalog: seed_catalog().into_iter().map(|def| (def.key.clone(), def)).collect(),
            presence: BTreeMap::new(),
            leases: BTreeMap::new(),
            messaging: Messaging::default(),
            routing: Routing::default(),
            imports: BTreeMap::new(),
            status_deadlines: StatusDeadlines::default(),
        }
    }

    /// The earliest entry time at which a lease, note, request or status ends, if any: the leader
    /// proposes a `Tick` once its clock passes it.
    pub fn next_timer_ms(&self) -> Option<u64> {
        let leases = self.leases.values().map(|lease| lease.expires_at_ms).min();
        let imports =
            self.imports.values().map(|staged| staged.started_at_ms + crate::config::IMPORT_STAGING_TTL_MS).min();
        [
            leases,
            self.messaging.next_expiry_ms(),
            self.routing.index.next_deadline_ms(),
            imports,
            self.status_deadlines.first_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Applies one stamped command: the events it produced, numbered, or why it was refused.
    pub fn apply(&mut self, envelope: &Envelope) -> Result<Vec<EventRecord>, Rejection> {
        self.apply_command(envelope.at_ms, &envelope.principal, &envelope.command)
    }

    /// Applies every command of a log entry in order; each has its own outcome, and a rejected
    /// one does not affect the others.
    pub fn apply_batch(&mut self, batch: &Batch) -> Vec<Result<Vec<EventRecord>, Rejection>> {
        batch
            .proposals
            .iter()
            .map(|proposal| self.apply_command(batch.at_ms, &proposal.principal, &proposal.command))
            .collect()
    }

    fn apply_command(
        &mut self,
        at_ms: u64,
        principal: &Principal,
        command: &Command,
    ) -> Result<Vec<EventRecord>, Rejection> {
        // Entry time never goes backwards in the state, even if a new leader's clock is behind
        // or concurrent batches commit out of stamp order.
        let at_ms = at_ms.max(self.last_at_ms);
        validate(command)?;
        self.authorize(principal, command)?;
        let events = self.decide(at_ms, command)?;
        let mut records = Vec::with_capacity(events.len());
        let mut record = |state: &mut State, event: Event| {
            state.revision += 1;
            state.fold(&event, at_ms);
            records.push(EventRecord { revision: state.revision, at_ms, principal: principal.clone(), event });
        };
        for event in events {
            record(self, event);
        }
        // Routing decisions the command set in motion (reservations, queues served) follow
        // its own events in the same entry.
        self.route_pending(at_ms, &mut record);
        self.last_at_ms = at_ms;
        Ok(records)
    }

    /// Whether a user (by lowercase key) is a member of at least one spanning workgroup.
    pub fn is_spanning(&self, user_key: &str) -> bool {
        self.users
            .get(user_key)
            .is_some_and(|user| user.workgroups.iter().any(|wg| self.workgroups.get(wg).is_some_and(|w| w.spans_sites)))
    }

    /// The user with this username, case-insensitively.
    pub fn user(&self, username: &str) -> Result<&User, Rejection> {
        self.users.get(&*key_ref(username)).ok_or_else(|| Rejection::not_found("user", username))
    }

    /// The site with this id.
    pub fn site(&self, id: SiteId) -> Result<&Site, Rejection> {
        self.sites.get(&id).ok_or_else(|| Rejection::not_found("site", id))
    }

    /// The workgroup with this name, case-insensitively.
    pub fn workgroup(&self, name: &str) -> Result<&Workgroup, Rejection> {
        self.workgroups.get(&key_of(name)).ok_or_else(|| Rejection::not_found("workgroup", name))
    }

    fn decide(&self, at_ms: u64, command: &Command) -> Result<Vec<Event>, Rejection> {
        match command {
            Command::AddSite(spec) => self.decide_add_site(spec),
            Command::UpdateSite(spec) => {
                let current = self.site(spec.id)?;
                if let Some(other) = self.site_names.get(&key_of(&spec.name)).filter(|other| **other != spec.id) {
                    return Err(Rejection::AlreadyExists {
                        kind: "site".into(),
                        field: "name".into(),
                        key: format!("{} (site {other})", spec.name),
                    });
                }
                let mut site = self.site_from_spec(spec)?;
                if spec.password_hash.is_empty() {
                    site.password_hash = current.password_hash.clone();
                }
                if site == *current {
                    return Ok(vec![]);
                }
                Ok(vec![Event::SiteUpdated(site)])
            }
            Command::StageImport { import_id, part, config } => self.decide_stage_import(import_id, *part, config),
            Command::CommitImport { import_id, parts, mode } => {
                self.decide_commit_import(at_ms, import_id, *parts, *mode)
            }
            Command::AbortImport { import_id } => {
                if !self.imports.contains_key(import_id) {
                    return Err(Rejection::not_found("import", import_id));
                }
                Ok(vec![Event::ImportDiscarded { import_id: import_id.clone(), reason: "aborted".into() }])
            }
            Command::SetSiteActive { site, active } => {
                let current = self.site(*site)?;
                if current.active == *active {
                    return Ok(vec![]);
                }
                Ok(vec![Event::SiteActiveChanged { site: *site, active: *active }])
            }
            Command::AddUser(spec) => self.decide_add_user(spec),
            Command::UpdateUser(spec) => self.decide_update_user(spec),
            Command::DeleteUser { username } => {
                // Everything the deletion ends is told as its own event first, so a watcher
                // (or a fold of the events) sees the user leave its site and its workgroups.
                let user = self.user(username)?;
                let user_key = key_of(&user.username);
                let presence = &self.presence[user_key.as_str()];
                let mut events: Vec<Event> = presence
                    .interactions
                    .iter()
                    .map(|id| Event::InteractionEnded { username: user.username.clone(), interaction_id: id.clone() })
                    .collect();
                if let Some(logon) = &presence.logon {
                    events.push(Event::UserLoggedOff {
                        username: user.username.clone(),
                        site: logon.site,
                        reason: LOGOFF_REASON_DELETED.to_string(),
                    });
                }
                for wg in &user.workgroups {
                    let workgroup = self.workgroups[wg].name.clone();
                    events.push(Event::UserRemovedFromWorkgroup { workgroup, username: user.username.clone() });
                }
                if self.is_spanning(&user_key) {
                    events.push(Event::UserStoppedSpanning { username: user.username.clone() });
                }
                events.push(Event::UserDeleted { username: user.username.clone() });
                Ok(events)
            }
            Command::AddWorkgroup { name, spans_sites, required_skills } => {
                if self.workgroups.contains_key(&key_of(name)) {
                    return Err(Rejection::exists("workgroup", "name", name));
                }
                if self.workgroups.len() >= WORKGROUPS_MAX {
                    return Err(Rejection::LimitReached { what: "workgroups".into(), limit: WORKGROUPS_MAX as u64 });
                }
                Ok(vec![Event::WorkgroupAdded(Workgroup {
                    name: name.clone(),
                    spans_sites: *spans_sites,
                    members: BTreeSet::new(),
                    required_skills: required_skills.clone(),
                })])
            }
            Command::DeleteWorkgroup { name } => {
                let workgroup = self.workgroup(name)?;
                self.check_workgroup_idle(&workgroup.name)?;
                let mut events = Vec::new();
                for member in &workgroup.members {
                    events.extend(self.removal_events(workgroup, &self.users[member.as_str()]));
                }
                events.push(Event::WorkgroupDeleted { name: workgroup.name.clone() });
                Ok(events)
            }
            Command::AddWorkgroupMember { workgroup, username } => {
                let workgroup = self.workgroup(workgroup)?;
                let user = self.user(username)?;
                let user_key = key_of(&user.username);
                if workgroup.members.contains(&user_key) {
                    return Err(Rejection::exists("workgroup member", "username", &user.username));
                }
                if workgroup.members.len() >= MEMBERS_PER_WORKGROUP_MAX {
                    return Err(Rejection::LimitReached {
                        what: format!("members of workgroup {}", workgroup.name),
                        limit: MEMBERS_PER_WORKGROUP_MAX as u64,
                    });
                }
                if user.workgroups.len() >= WORKGROUPS_PER_USER_MAX {
                    return Err(Rejection::LimitReached {
                        what: format!("workgroups of user {}", user.username),
                        limit: WORKGROUPS_PER_USER_MAX as u64,
                    });
                }
                let mut events = vec![Event::UserAddedToWorkgroup {
                    workgroup: workgroup.name.clone(),
                    username: user.username.clone(),
                }];
                if workgroup.spans_sites && !self.is_spanning(&user_key) {
                    self.check_extension(&user_key, &user.extension, user.home_site, true)?;
                    events.push(Event::UserStartedSpanning { username: user.username.clone() });
                }
                Ok(events)
            }
            Command::RemoveWorkgroupMember { workgroup, username } => {
                let workgroup = self.workgroup(workgroup)?;
                let user = self.user(username)?;
                if !workgroup.members.contains(&key_of(&user.username)) {
                    return Err(Rejection::not_found("workgroup member", &user.username));
                }
                Ok(self.removal_events(workgroup, user))
            }
            Command::PutStatusDef(def) => {
                if !self.catalog.contains_key(&def.key) && self.catalog.len() >= STATUSES_MAX {
                    return Err(Rejection::LimitReached {
                        what: "status catalog entries".into(),
                        limit: STATUSES_MAX as u64,
                    });
                }
                if let Some(current) = self.catalog.get(&def.key) {
                    // Users in (or falling back to) this status rely on these two flags.
                    let changes_meaning =
                        current.persistent != def.persistent || current.requires_until() != def.requires_until();
                    let in_use = self
                        .presence
                        .values()
                        .filter(|p| p.status_key == def.key || p.last_persistent_status == def.key)
                        .count();
                    if changes_meaning && in_use > 0 {
                        return Err(Rejection::precondition(
                            "status",
                            format!(
                                "status {:?} is in use by {in_use} users; its persistent and date/time flags cannot change",
                                def.key
                            ),
                        ));
                    }
                }
                Ok(vec![Event::StatusDefined(def.clone())])
            }
            Command::SetStatus { username, status_key, until_ms, detail } => {
                let user = self.user(username)?;
                let def = self.catalog.get(status_key).ok_or_else(|| Rejection::not_found("status", status_key))?;
                match (def.requires_until(), until_ms) {
                    (true, None) => {
                        return Err(Rejection::invalid(
                            "until",
                            format!("status {status_key:?} requires an until date/time"),
                        ))
                    }
                    (false, Some(_)) => {
                        return Err(Rejection::invalid(
                            "until",
                            format!("status {status_key:?} takes no until date/time"),
                        ))
                    }
                    (true, Some(until)) if *until <= at_ms => {
                        return Err(Rejection::invalid(
                            "until",
                            format!("{until} ms is not in the future (now {at_ms} ms)"),
                        ))
                    }
                    _ => {}
                }
                Ok(vec![Event::StatusChanged {
                    username: user.username.clone(),
                    status_key: def.key.clone(),
                    until_ms: *until_ms,
                    detail: detail.clone(),
                }])
            }
            Command::LogOn { username, site, server } => {
                let user = self.user(username)?;
                let target = self.site(*site)?;
                if !target.active {
                    return Err(Rejection::precondition("site", format!("site {site} is not active")));
                }
                let server = if server.is_empty() {
                    target.servers.first().cloned().unwrap_or_default()
                } else {
                    server.clone()
                };
                if !target.servers.is_empty() && !target.servers.contains(&server) {
                    return Err(Rejection::invalid("server", format!("{server:?} is not a server of site {site}")));
                }
                let presence = &self.presence[&*key_ref(&user.username)];
                let mut events = Vec::new();
                if let Some(logon) = &presence.logon {
                    if logon.site == *site && logon.server == server {
                        return Ok(vec![]);
                    }
                    events.extend(self.logoff_events(user, presence, logon, LOGOFF_REASON_ROAMED));
                }
                events.push(Event::UserLoggedOn { username: user.username.clone(), site: *site, server });
                Ok(events)
            }
            Command::LogOff { username, reason } => {
                let user = self.user(username)?;
                let presence = &self.presence[&*key_ref(&user.username)];
                let Some(logon) = &presence.logon else {
                    return Err(Rejection::precondition(
                        "username",
                        format!("user {} is not logged on", user.username),
                    ));
                };
                Ok(self.logoff_events(user, presence, logon, reason))
            }
            Command::StartInteraction { username, interaction_id } => {
                let user = self.user(username)?;
                let presence = &self.presence[&*key_ref(&user.username)];
                if presence.interactions.contains(interaction_id) {
                    return Err(Rejection::exists("interaction", "interaction_id", interaction_id));
                }
                if presence.interactions.len() >= INTERACTIONS_PER_USER_MAX {
                    return Err(Rejection::LimitReached {
                        what: format!("interactions of user {}", user.username),
                        limit: INTERACTIONS_PER_USER_MAX as u64,
                    });
                }
                Ok(vec![Event::InteractionStarted {
                    username: user.username.clone(),
                    interaction_id: interaction_id.clone(),
                }])
            }
            Command::EndInteraction { username, interaction_id } => {
                let user = self.user(username)?;
                if !self.presence[&*key_ref(&user.username)].interactions.contains(interaction_id) {
                    return Err(Rejection::not_found("interaction", interaction_id));
                }
                Ok(vec![Event::InteractionEnded {
                    username: user.username.clone(),
                    interaction_id: interaction_id.clone(),
                }])
            }
            Command::ChangeSiteId { old, new } => {
                self.site(*old)?;
                if self.sites.contains_key(new) {
                    return Err(Rejection::exists("site", "id", new));
                }
                Ok(vec![Event::SiteIdChanged { old: *old, new: *new }])
            }
            Command::GrantLease { site, ttl_ms } => {
                if !self.site(*site)?.active {
                    return Err(Rejection::precondition("site", format!("site {site} is not active")));
                }
                // A lease already past due ends first: its users were unreachable until now.
                let mut events = match self.leases.get(site) {
                    Some(lease) if lease.expires_at_ms <= at_ms => self.lease_end_events(*site, "expired"),
                    _ => vec![],
                };
                events.push(Event::LeaseGranted { site: *site, ttl_ms: *ttl_ms, expires_at_ms: at_ms + ttl_ms });
                Ok(events)
            }
            Command::KeepAlive { site } => {
                if !self.site(*site)?.active {
                    return Err(Rejection::precondition("site", format!("site {site} is not active")));
                }
                // A lease past its expiry is gone even before the Tick that ends it is applied.
                match self.leases.get(site) {
                    Some(lease) if lease.expires_at_ms > at_ms => {
                        Ok(vec![Event::LeaseRenewed { site: *site, expires_at_ms: at_ms + lease.ttl_ms }])
                    }
                    _ => Err(Rejection::NotFound {
                        kind: "lease".into(),
                        key: format!("site {site} (grant a new lease)"),
                    }),
                }
            }
            Command::RevokeLease { site } => {
                self.site(*site)?;
                if !self.leases.contains_key(site) {
                    return Err(Rejection::not_found("lease", format!("site {site}")));
                }
                Ok(self.lease_end_events(*site, "revoked"))
            }
            // Only leases still live at the previous entry: one that expired under the old leader
            // (its Tick lost in the election) must not come back.
            Command::RenewLeases => Ok(self
                .leases
                .iter()
                .filter(|(_, lease)| {
                    lease.expires_at_ms > self.last_at_ms && lease.expires_at_ms < at_ms + lease.ttl_ms
                })
                .map(|(site, lease)| Event::LeaseRenewed { site: *site, expires_at_ms: at_ms + lease.ttl_ms })
                .collect()),
            Command::Tick => {
                let mut events: Vec<Event> = self
                    .leases
                    .iter()
                    .filter(|(_, lease)| lease.expires_at_ms <= at_ms)
                    .flat_map(|(site, _)| self.lease_end_events(*site, "expired"))
                    .collect();
                events.extend(self.messaging_expiry_events(at_ms));
                events.extend(self.reservation_expiry_events(at_ms));
                events.extend(self.import_expiry_events(at_ms));
                events.extend(self.overdue_events(at_ms));
                Ok(events)
            }
            Command::RecordAuthFailure { member, site, source } => {
                Ok(vec![Event::AuthenticationFailed { member: *member, site: *site, source: source.clone() }])
            }
            Command::SendMessage { from_site, to, object_id, event_id, kind, elements } => {
                self.decide_send(at_ms, *from_site, *to, object_id, event_id, *kind, elements)
            }
            Command::AckMessages { site, ids } => self.decide_ack(*site, ids),
            Command::CloseRequest { correlation_id, reason } => {
                if !self.messaging.requests.contains_key(correlation_id) {
                    return Err(Rejection::not_found("request", correlation_id));
                }
                Ok(vec![Event::RequestClosed { correlation_id: *correlation_id, reason: reason.clone() }])
            }
            Command::SetQueueLimits(limits) => Ok(vec![Event::QueueLimitsSet(*limits)]),
            Command::CreateNote { site, name, ttl_minutes } => {
                self.decide_create_note(at_ms, *site, name, *ttl_minutes)
            }
            Command::UpdateNoteAttribute { site, name, attribute, op, values } => {
                let note = self.messaging.note(*site, name, at_ms)?;
                if !note.value.attributes.contains_key(attribute)
                    && note.value.attributes.len() >= crate::limits::NOTE_ATTRIBUTES_MAX
                {
                    return Err(Rejection::LimitReached {
                        what: format!("attributes of note {name}"),
                        limit: crate::limits::NOTE_ATTRIBUTES_MAX as u64,
                    });
                }
                let value = Messaging::updated_attribute(note, attribute, *op, values)?;
                Ok(vec![Event::NoteAttributeUpdated {
                    site: *site,
                    name: note.value.name.clone(),
                    attribute: attribute.clone(),
                    value,
                }])
            }
            Command::RemoveNote { site, name } => {
                let note = self.messaging.note(*site, name, at_ms)?;
                Ok(vec![Event::NoteRemoved { site: *site, name: note.value.name.clone(), reason: "removed".into() }])
            }
            Command::RouteInteraction(request) => self.decide_route(at_ms, request),
            Command::AcceptInteraction { interaction_id, agent } => {
                self.decide_accept(at_ms, interaction_id, agent.as_deref())
            }
            Command::RejectInteraction { interaction_id, agent, not_answering } => {
                self.decide_reject(at_ms, interaction_id, agent.as_deref(), *not_answering)
            }
            Command::CancelInteraction { interaction_id } => self.decide_cancel(interaction_id),
            Command::SetRoutingSettings { workgroup, settings } => self.decide_routing_settings(workgroup, settings),
            Command::SetRouteCost { from, to, cost } => self.decide_route_cost(*from, *to, *cost),
        }
    }

    fn decide_add_site(&self, spec: &SiteSpec) -> Result<Vec<Event>, Rejection> {
        if self.sites.contains_key(&spec.id) {
            return Err(Rejection::exists("site", "id", spec.id));
        }
        if let Some(other) = self.site_names.get(&key_of(&spec.name)) {
            return Err(Rejection::AlreadyExists {
                kind: "site".into(),
                field: "name".into(),
                key: format!("{} (site {other})", spec.name),
            });
        }
        if self.sites.len() >= SITES_MAX {
            return Err(Rejection::LimitReached { what: "sites".into(), limit: SITES_MAX as u64 });
        }
        Ok(vec![Event::SiteAdded(self.site_from_spec(spec)?)])
    }

    fn site_from_spec(&self, spec: &SiteSpec) -> Result<Site, Rejection> {
        Ok(Site {
            id: spec.id,
            name: spec.name.clone(),
            phone: normalize_phone(&spec.phone)?,
            password_hash: spec.password_hash.clone(),
            note_id_dial_string: if spec.note_id_dial_string.is_empty() {
                NOTE_ID_DIAL_STRING_DEFAULT.to_string()
            } else {
                spec.note_id_dial_string.clone()
            },
            active: spec.active,
            servers: spec.servers.clone(),
            trusted_access: spec.trusted_access,
        })
    }

    /// One step of an import on a scratch copy: the command's events, folded, without the
    /// routing pass (the real entry runs it once, after all the steps).
    pub(crate) fn apply_step(&mut self, at_ms: u64, command: &Command) -> Result<Vec<Event>, Rejection> {
        validate(command)?;
        let events = self.decide(at_ms, command)?;
        for event in &events {
            self.revision += 1;
            self.fold(event, at_ms);
        }
        Ok(events)
    }

    fn decide_add_user(&self, spec: &UserSpec) -> Result<Vec<Event>, Rejection> {
        let user_key = key_of(&spec.username);
        if self.users.contains_key(user_key.as_str()) {
            return Err(Rejection::exists("user", "username", &spec.username));
        }
        if self.users.len() >= USERS_MAX {
            return Err(Rejection::LimitReached { what: "users".into(), limit: USERS_MAX as u64 });
        }
        self.check_user_fields(&user_key, spec, false)?;
        Ok(vec![Event::UserAdded(User::from_spec(spec, spec.username.clone(), VecSet::new()))])
    }

    fn decide_update_user(&self, spec: &UserSpec) -> Result<Vec<Event>, Rejection> {
        let current = self.user(&spec.username)?;
        let user_key = key_of(&current.username);
        self.check_user_fields(&user_key, spec, self.is_spanning(&user_key))?;
        // The username keeps the case it was created with; memberships do not change here.
        let updated = User::from_spec(spec, current.username.clone(), current.workgroups.clone());
        if &updated == current {
            return Ok(vec![]);
        }
        Ok(vec![Event::UserUpdated(updated)])
    }

    /// Rules shared by add and update: the home site exists, the email is unique, the extension
    /// dials unambiguously.
    fn check_user_fields(&self, user_key: &str, spec: &UserSpec, spanning: bool) -> Result<(), Rejection> {
        self.site(spec.home_site).map_err(|_| {
            Rejection::precondition("user.home_site", format!("site {} does not exist", spec.home_site))
        })?;
        if let Some(owner) = self.emails.get(&*key_ref(&spec.email)) {
            if owner != user_key {
                return Err(Rejection::AlreadyExists {
                    kind: "user".into(),
                    field: "email".into(),
                    key: format!("{} (user {})", spec.email, self.users[owner].username),
                });
            }
        }
        self.check_extension(user_key, &spec.extension, spec.home_site, spanning)
    }

    /// The extension rule: a spanning user's extension is unique among all users of all sites; a
    /// non-spanning user's is unique within its home site and equals no spanning user's.
    fn check_extension(
        &self,
        user_key: &str,
        extension: &str,
        home_site: SiteId,
        spanning: bool,
    ) -> Result<(), Rejection> {
        let Some(holders) = self.extensions.get(extension) else {
            return Ok(());
        };
        for other_key in holders.iter().filter(|other| other.as_str() != user_key) {
            let other = &self.users[other_key];
            if spanning || self.is_spanning(other_key) || other.home_site == home_site {
                return Err(Rejection::ExtensionConflict {
                    extension: extension.to_string(),
                    other_user: other.username.clone(),
                    other_site: other.home_site,
                    suggestion: format!("{home_site}{extension}"),
                });
            }
        }
        Ok(())
    }

    fn removal_events(&self, workgroup: &Workgroup, user: &User) -> Vec<Event> {
        let mut events = vec![Event::UserRemovedFromWorkgroup {
            workgroup: workgroup.name.clone(),
            username: user.username.clone(),
        }];
        let wg_key = key_of(&workgroup.name);
        let still_spanning = user.workgroups.iter().any(|wg| *wg != wg_key && self.workgroups[wg].spans_sites);
        if workgroup.spans_sites && !still_spanning {
            events.push(Event::UserStoppedSpanning { username: user.username.clone() });
        }
        events
    }

    /// The lease of `site` ends: every user logged on there is logged off as unreachable.
    fn lease_end_events(&self, site: SiteId, reason: &str) -> Vec<Event> {
        let mut events = vec![Event::LeaseEnded { site, reason: reason.to_string() }];
        for (user_key, presence) in &self.presence {
            if let Some(logon) = presence.logon.as_ref().filter(|logon| logon.site == site) {
                events.extend(self.logoff_events(
                    &self.users[user_key],
                    presence,
                    logon,
                    LOGOFF_REASON_SITE_UNREACHABLE,
                ));
            }
        }
        events
    }

    /// `StatusOverdue` for each status whose `until` is at or before `at_ms` (at most
    /// `OVERDUE_PER_TICK_MAX`; the next `Tick` takes the rest).
    fn overdue_events(&self, at_ms: u64) -> Vec<Event> {
        self.status_deadlines
            .due(at_ms)
            .filter_map(|(until_ms, user_key)| {
                let (user, presence) = (self.users.get(user_key)?, self.presence.get(user_key)?);
                Some(Event::StatusOverdue {
                    username: user.username.clone(),
                    status_key: presence.status_key.clone(),
                    until_ms: *until_ms,
                })
            })
            .collect()
    }

    fn logoff_events(&self, user: &User, presence: &Presence, logon: &Logon, reason: &str) -> Vec<Event> {
        let mut events: Vec<Event> = presence
            .interactions
            .iter()
            .map(|id| Event::InteractionEnded { username: user.username.clone(), interaction_id: id.clone() })
            .collect();
        events.push(Event::UserLoggedOff {
            username: user.username.clone(),
            site: logon.site,
            reason: reason.to_string(),
        });
        let persistent = self.catalog.get(&presence.status_key).is_some_and(|def| def.persistent);
        if !persistent && presence.status_key != presence.last_persistent_status {
            events.push(Event::StatusChanged {
                username: user.username.clone(),
                status_key: presence.last_persistent_status.clone(),
                until_ms: None,
                detail: String::new(),
            });
        }
        events
    }

    /// Folds one event into the views. Events are facts: folding never fails.
    fn fold(&mut self, event: &Event, at_ms: u64) {
        let revision = self.revision;
        match event {
            Event::SiteAdded(site) => {
                self.site_names.insert(key_of(&site.name), site.id);
                self.sites.insert(site.id, site.clone());
            }
            Event::SiteActiveChanged { site, active } => {
                if let Some(site) = self.sites.get_mut(site) {
                    site.active = *active;
                }
            }
            Event::SiteUpdated(site) => {
                if let Some(old) = self.sites.insert(site.id, site.clone()) {
                    self.site_names.remove(&key_of(&old.name));
                }
                self.site_names.insert(key_of(&site.name), site.id);
            }
            Event::ConfigImported { import_id, .. } | Event::ImportDiscarded { import_id, .. } => {
                self.imports.remove(import_id);
            }
            Event::ImportPartStaged { import_id, part, config } => {
                let staged = self
                    .imports
                    .entry(import_id.clone())
                    .or_insert_with(|| crate::config::StagedImport { started_at_ms: at_ms, parts: BTreeMap::new() });
                staged.parts.insert(*part, (**config).clone());
            }
            Event::UserAdded(user) => {
                let user_key = Name::from(key_of(&user.username));
                self.emails.insert(key_of(&user.email).into(), user_key.clone());
                self.extensions.entry(user.extension.as_str().into()).or_default().insert(user_key.clone());
                self.presence.insert(
                    user_key.clone(),
                    Presence {
                        status_key: STATUS_INITIAL.to_string(),
                        until_ms: None,
                        detail: String::new(),
                        interactions: BTreeSet::new(),
                        logon: None,
                        last_persistent_status: STATUS_INITIAL.to_string(),
                        since_ms: at_ms,
                        revision,
                        overdue: false,
                    },
                );
                self.users.insert(user_key, user.clone());
            }
            Event::UserUpdated(user) => {
                let user_key = Name::from(key_of(&user.username));
                if let Some(old) = self.users.insert(user_key.clone(), user.clone()) {
                    self.unindex_user(&user_key, &old);
                }
                self.emails.insert(key_of(&user.email).into(), user_key.clone());
                self.extensions.entry(user.extension.as_str().into()).or_default().insert(user_key);
            }
            Event::UserDeleted { username } => {
                let user_key = key_of(username);
                if let Some(old) = self.users.remove(user_key.as_str()) {
                    self.unindex_user(&user_key, &old);
                    for wg in &old.workgroups {
                        if let Some(workgroup) = self.workgroups.get_mut(wg) {
                            workgroup.members.remove(&user_key);
                        }
                    }
                }
                if let Some(presence) = self.presence.remove(user_key.as_str()) {
                    self.status_deadlines.change(&user_key, StatusDeadlines::deadline_of(&presence), None);
                }
            }
            Event::WorkgroupAdded(workgroup) => {
                self.workgroups.insert(key_of(&workgroup.name), workgroup.clone());
            }
            Event::WorkgroupDeleted { name } => {
                self.workgroups.remove(&key_of(name));
            }
            Event::UserAddedToWorkgroup { workgroup, username } => {
                let (wg_key, user_key) = (key_of(workgroup), key_of(username));
                if let Some(wg) = self.workgroups.get_mut(&wg_key) {
                    wg.members.insert(user_key.clone());
                }
                if let Some(user) = self.users.get_mut(user_key.as_str()) {
                    user.workgroups.insert(wg_key);
                }
            }
            Event::UserRemovedFromWorkgroup { workgroup, username } => {
                let (wg_key, user_key) = (key_of(workgroup), key_of(username));
                if let Some(wg) = self.workgroups.get_mut(&wg_key) {
                    wg.members.remove(&user_key);
                }
                if let Some(user) = self.users.get_mut(user_key.as_str()) {
                    user.workgroups.remove(&wg_key);
                }
            }
            // Spanning is derived from memberships; these events exist for watchers and sites.
            Event::UserStartedSpanning { .. } | Event::UserStoppedSpanning { .. } => {}
            Event::StatusDefined(def) => {
                self.catalog.insert(def.key.clone(), def.clone());
            }
            Event::StatusChanged { username, status_key, until_ms, detail } => {
                let persistent = self.catalog.get(status_key).is_some_and(|def| def.persistent);
                let user_key = key_ref(username);
                if let Some(presence) = self.presence.get_mut(&*user_key) {
                    let before = StatusDeadlines::deadline_of(presence);
                    presence.status_key = status_key.clone();
                    presence.until_ms = *until_ms;
                    presence.overdue = false;
                    self.status_deadlines.change(&user_key, before, *until_ms);
                    presence.detail = detail.clone();
                    if persistent {
                        presence.last_persistent_status = status_key.clone();
                    }
                    presence.since_ms = at_ms;
                    presence.revision = revision;
                }
            }
            Event::StatusOverdue { username, .. } => {
                let user_key = key_ref(username);
                if let Some(presence) = self.presence.get_mut(&*user_key) {
                    self.status_deadlines.change(&user_key, StatusDeadlines::deadline_of(presence), None);
                    presence.overdue = true;
                    presence.revision = revision;
                }
            }
            Event::UserLoggedOn { username, site, server } => {
                if let Some(presence) = self.presence.get_mut(&*key_ref(username)) {
                    presence.logon = Some(Logon { site: *site, server: server.clone() });
                    presence.since_ms = at_ms;
                    presence.revision = revision;
                }
            }
            Event::UserLoggedOff { username, .. } => {
                if let Some(presence) = self.presence.get_mut(&*key_ref(username)) {
                    presence.logon = None;
                    presence.since_ms = at_ms;
                    presence.revision = revision;
                }
            }
            Event::InteractionStarted { username, interaction_id } => {
                if let Some(presence) = self.presence.get_mut(&*key_ref(username)) {
                    presence.interactions.insert(interaction_id.clone());
                    presence.since_ms = at_ms;
                    presence.revision = revision;
                }
            }
            Event::SiteIdChanged { old, new } => self.fold_site_id_changed(*old, *new),
            Event::LeaseGranted { site, ttl_ms, expires_at_ms } => {
                self.leases
                    .insert(*site, Lease { ttl_ms: *ttl_ms, granted_at_ms: at_ms, expires_at_ms: *expires_at_ms });
            }
            Event::LeaseRenewed { site, expires_at_ms } => {
                if let Some(lease) = self.leases.get_mut(site) {
                    lease.expires_at_ms = *expires_at_ms;
                }
            }
            Event::LeaseEnded { site, .. } => {
                self.leases.remove(site);
            }
            Event::MessageQueued(_)
            | Event::MessagesAcked { .. }
            | Event::RequestOpened { .. }
            | Event::ResponseArrived(_)
            | Event::RequestClosed { .. }
            | Event::QueueLimitsSet(_)
            | Event::NoteCreated { .. }
            | Event::NoteAttributeUpdated { .. }
            | Event::NoteRemoved { .. } => self.fold_messaging(event),
            Event::InteractionArrived(_)
            | Event::AgentReserved { .. }
            | Event::InteractionQueued { .. }
            | Event::ReservationAccepted { .. }
            | Event::ReservationReleased { .. }
            | Event::InteractionCancelled { .. }
            | Event::RoutingSettingsSet { .. }
            | Event::RouteCostSet { .. } => self.fold_routing(event, at_ms),
            Event::InteractionEnded { username, interaction_id } => {
                if let Some(presence) = self.presence.get_mut(&*key_ref(username)) {
                    presence.interactions.remove(interaction_id);
                    presence.since_ms = at_ms;
                    presence.revision = revision;
                }
            }
            // A record for the members' failure limiters and the audit trail; no view holds it.
            Event::AuthenticationFailed { .. } => {}
        }
        self.note_routing_effects(event, at_ms);
    }

    /// Rewrites every reference to site `old` (the site itself, its name index, users' home and
    /// current site, its lease) to `new`, in one fold: readers never see half of it.
    fn fold_site_id_changed(&mut self, old: SiteId, new: SiteId) {
        if let Some(mut site) = self.sites.remove(&old) {
            site.id = new;
            self.site_names.insert(key_of(&site.name), new);
            self.sites.insert(new, site);
        }
        for user in self.users.values_mut().filter(|user| user.home_site == old) {
            user.home_site = new;
        }
        for logon in self.presence.values_mut().filter_map(|p| p.logon.as_mut()).filter(|logon| logon.site == old) {
            logon.site = new;
        }
        if let Some(lease) = self.leases.remove(&old) {
            self.leases.insert(new, lease);
        }
        self.messaging_site_id_changed(old, new);
        self.routing_site_id_changed(old, new);
    }

    fn unindex_user(&mut self, user_key: &str, old: &User) {
        self.emails.remove(&*key_ref(&old.email));
        if let Some(holders) = self.extensions.get_mut(old.extension.as_str()) {
            holders.remove(user_key);
            if holders.is_empty() {
                self.extensions.remove(old.extension.as_str());
            }
        }
    }

    /// Checks every invariant of the views; panics with the numbers that broke one. Tests and
    /// simulations call it after every apply.
    pub fn check_invariants(&self) {
        let deadlines = StatusDeadlines::of(&self.presence);
        assert!(
            self.status_deadlines == deadlines,
            "the status deadline index holds {} users, a rebuild {}",
            self.status_deadlines.len(),
            deadlines.len()
        );
        assert!(self.imports.len() <= crate::config::IMPORTS_STAGED_MAX, "{} imports staged", self.imports.len());
        self.check_messaging_invariants();
        self.check_routing_invariants();
        assert_eq!(
            self.site_names.len(),
            self.sites.len(),
            "site_names has {} entries for {} sites",
            self.site_names.len(),
            self.sites.len()
        );
        for (name, id) in &self.site_names {
            assert_eq!(key_of(&self.sites[id].name), *name, "site_names maps {name:?} to site {id}");
        }
        assert_eq!(
            self.presence.len(),
            self.users.len(),
            "{} presence entries for {} users",
            self.presence.len(),
            self.users.len()
        );
        assert_eq!(
            self.emails.len(),
            self.users.len(),
            "{} email index entries for {} users",
            self.emails.len(),
            self.users.len()
        );
        let indexed: usize = self.extensions.values().map(VecSet::len).sum();
        assert_eq!(indexed, self.users.len(), "{indexed} extension index entries for {} users", self.users.len());
        for (user_key, user) in &self.users {
            assert_eq!(*user_key, key_of(&user.username), "user key {user_key:?} for {:?}", user.username);
            assert!(
                self.sites.contains_key(&user.home_site),
                "user {} homed at missing site {}",
                user.username,
                user.home_site
            );
            assert_eq!(self.emails.get(&*key_ref(&user.email)), Some(user_key), "email index of {}", user.username);
            assert!(
                self.extensions[user.extension.as_str()].contains(user_key),
                "extension index of {}",
                user.username
            );
            for wg in &user.workgroups {
                assert!(
                    self.workgroups.get(wg).is_some_and(|w| w.members.contains(user_key.as_str())),
                    "user {} lists workgroup {wg} that lacks it",
                    user.username
                );
            }
            let presence = &self.presence[user_key];
            assert!(
                self.catalog.contains_key(&presence.status_key),
                "user {} in unknown status {:?}",
                user.username,
                presence.status_key
            );
            assert!(
                self.catalog.get(&presence.last_persistent_status).is_some_and(|d| d.persistent),
                "user {} falls back to {:?}, which is not a persistent status",
                user.username,
                presence.last_persistent_status
            );
            assert!(
                presence.revision <= self.revision,
                "presence revision {} > state revision {}",
                presence.revision,
                self.revision
            );
            if let Some(logon) = &presence.logon {
                assert!(
                    self.sites.contains_key(&logon.site),
                    "user {} logged on at missing site {}",
                    user.username,
                    logon.site
                );
            }
            let spanning = self.is_spanning(user_key);
            for other_key in self.extensions[user.extension.as_str()].iter().filter(|other| *other != user_key) {
                let other = &self.users[other_key];
                assert!(
                    !(spanning || self.is_spanning(other_key) || other.home_site == user.home_site),
                    "extension {} is ambiguous between {} (site {}) and {} (site {})",
                    user.extension,
                    user.username,
                    user.home_site,
                    other.username,
                    other.home_site
                );
            }
        }
        for (id, site) in &self.sites {
            assert_eq!(*id, site.id, "site keyed {id} has id {}", site.id);
        }
        for (site, lease) in &self.leases {
            assert!(self.sites.contains_key(site), "lease of missing site {site}");
            assert!(lease.expires_at_ms >= lease.granted_at_ms, "lease of site {site} expires before it was granted");
        }
        for (wg_key, workgroup) in &self.workgroups {
            assert_eq!(*wg_key, key_of(&workgroup.name), "workgroup keyed {wg_key:?} is named {:?}", workgroup.name);
            for member in &workgroup.members {
                assert!(
                    self.users.get(member.as_str()).is_some_and(|u| u.workgroups.contains(wg_key)),
                    "workgroup {wg_key} lists member {member} that lacks it"
                );
            }
        }
    }
}
