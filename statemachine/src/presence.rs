//! Presence: where a user is logged on, which status it is in, and whether it is on the phone.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::event::Event;
use crate::limits::INTERACTIONS_PER_USER_MAX;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::small::Name;
use crate::state::State;
use crate::user::{key_ref, User};

/// Reason recorded when a user logs off by request.
pub const LOGOFF_REASON_USER: &str = "user";
/// Reason recorded when a logged-on user is deleted.
pub const LOGOFF_REASON_DELETED: &str = "user-deleted";
/// Reason recorded when a user is logged off because it logged on at another site.
pub const LOGOFF_REASON_ROAMED: &str = "logged-on-elsewhere";

/// Where a user is logged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logon {
    /// The current site.
    pub site: SiteId,
    /// The server (host name) of the current site the user is logged on to.
    pub server: String,
}

/// The live presence of one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// Current status key (exists in the catalog).
    pub status_key: String,
    /// When the status ends (ms since the epoch), for statuses that require it.
    pub until_ms: Option<u64>,
    /// Free text, at most 256 characters.
    pub detail: String,
    /// Active interactions (user queue or logged-on station queue); on the phone while non-empty.
    pub interactions: BTreeSet<String>,
    /// Where the user is logged on; `None` while logged off.
    pub logon: Option<Logon>,
    /// The last persistent status, restored on logout when the current one is not persistent.
    pub last_persistent_status: String,
    /// Entry time of the last change.
    pub since_ms: u64,
    /// Revision of the last change.
    pub revision: u64,
    /// The status's `until` has passed: a `Tick` marked it (`StatusOverdue`). The status stays,
    /// as the vendor's does; the next status change clears this.
    #[serde(default)]
    pub overdue: bool,
}

impl Presence {
    /// Whether the user has an active interaction.
    pub fn on_phone(&self) -> bool {
        !self.interactions.is_empty()
    }
}

/// Most users one `Tick` marks overdue; the rest wait for the next `Tick`, which the leader
/// proposes at once since their time is still due.
pub const OVERDUE_PER_TICK_MAX: usize = 10_000;

/// The users whose status has an `until` that has not been marked overdue yet, by that time:
/// what a `Tick` marks overdue, and when the next one is due. Derived from the presences
/// (rebuilt when a state is loaded, compared with a rebuild by `check_invariants`), never stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusDeadlines(BTreeSet<(u64, Name)>);

impl StatusDeadlines {
    /// The deadlines of `presence`.
    pub fn of(presence: &BTreeMap<Name, Presence>) -> StatusDeadlines {
        let deadlines = presence
            .iter()
            .filter(|(_, p)| !p.overdue)
            .filter_map(|(user_key, p)| p.until_ms.map(|until| (until, user_key.clone())))
            .collect();
        StatusDeadlines(deadlines)
    }

    /// The deadline a presence contributes: its `until`, unless already marked overdue.
    pub fn deadline_of(presence: &Presence) -> Option<u64> {
        presence.until_ms.filter(|_| !presence.overdue)
    }

    /// Moves `user_key`'s deadline from `before` to `after`.
    pub fn change(&mut self, user_key: &str, before: Option<u64>, after: Option<u64>) {
        if before == after {
            return;
        }
        if let Some(before) = before {
            self.0.remove(&(before, Name::from(user_key)));
        }
        if let Some(after) = after {
            self.0.insert((after, Name::from(user_key)));
        }
    }

    /// The earliest deadline.
    pub fn first_ms(&self) -> Option<u64> {
        self.0.first().map(|(until, _)| *until)
    }

    /// The users due at `at_ms`, earliest first, at most [`OVERDUE_PER_TICK_MAX`].
    pub fn due(&self, at_ms: u64) -> impl Iterator<Item = &(u64, Name)> {
        self.0.iter().take_while(move |(until, _)| *until <= at_ms).take(OVERDUE_PER_TICK_MAX)
    }

    /// How many users have a deadline.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no user has a deadline.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl State {
    pub(crate) fn decide_set_status(
        &self,
        at_ms: u64,
        username: &str,
        status_key: &str,
        until_ms: Option<u64>,
        detail: &str,
    ) -> Result<Vec<Event>, Rejection> {
        let user = self.user(username)?;
        let def = self.catalog.get(status_key).ok_or_else(|| Rejection::not_found("status", status_key))?;
        match (def.requires_until(), until_ms) {
            (true, None) => {
                return Err(Rejection::invalid("until", format!("status {status_key:?} requires an until date/time")))
            }
            (false, Some(_)) => {
                return Err(Rejection::invalid("until", format!("status {status_key:?} takes no until date/time")))
            }
            (true, Some(until)) if until <= at_ms => {
                return Err(Rejection::invalid("until", format!("{until} ms is not in the future (now {at_ms} ms)")))
            }
            _ => {}
        }
        Ok(vec![Event::StatusChanged {
            username: user.username.clone(),
            status_key: def.key.clone(),
            until_ms,
            detail: detail.to_string(),
        }])
    }

    pub(crate) fn decide_log_on(&self, username: &str, site: SiteId, server: &str) -> Result<Vec<Event>, Rejection> {
        let user = self.user(username)?;
        let target = self.site(site)?;
        if !target.active {
            return Err(Rejection::precondition("site", format!("site {site} is not active")));
        }
        let server =
            if server.is_empty() { target.servers.first().cloned().unwrap_or_default() } else { server.to_string() };
        if !target.servers.is_empty() && !target.servers.contains(&server) {
            return Err(Rejection::invalid("server", format!("{server:?} is not a server of site {site}")));
        }
        let presence = &self.presence[&*key_ref(&user.username)];
        let mut events = Vec::new();
        if let Some(logon) = &presence.logon {
            if logon.site == site && logon.server == server {
                return Ok(vec![]);
            }
            events.extend(self.logoff_events(user, presence, logon, LOGOFF_REASON_ROAMED));
        }
        events.push(Event::UserLoggedOn { username: user.username.clone(), site, server });
        Ok(events)
    }

    pub(crate) fn decide_log_off(&self, username: &str, reason: &str) -> Result<Vec<Event>, Rejection> {
        let user = self.user(username)?;
        let presence = &self.presence[&*key_ref(&user.username)];
        let Some(logon) = &presence.logon else {
            return Err(Rejection::precondition("username", format!("user {} is not logged on", user.username)));
        };
        Ok(self.logoff_events(user, presence, logon, reason))
    }

    pub(crate) fn decide_start_interaction(
        &self,
        username: &str,
        interaction_id: &str,
    ) -> Result<Vec<Event>, Rejection> {
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
            interaction_id: interaction_id.to_string(),
        }])
    }

    pub(crate) fn decide_end_interaction(&self, username: &str, interaction_id: &str) -> Result<Vec<Event>, Rejection> {
        let user = self.user(username)?;
        if !self.presence[&*key_ref(&user.username)].interactions.contains(interaction_id) {
            return Err(Rejection::not_found("interaction", interaction_id));
        }
        Ok(vec![Event::InteractionEnded {
            username: user.username.clone(),
            interaction_id: interaction_id.to_string(),
        }])
    }

    /// A logoff: the user's interactions end, it logs off, and a non-persistent status reverts
    /// to the last persistent one.
    pub(crate) fn logoff_events(&self, user: &User, presence: &Presence, logon: &Logon, reason: &str) -> Vec<Event> {
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

    /// `StatusOverdue` for each status whose `until` is at or before `at_ms` (at most
    /// `OVERDUE_PER_TICK_MAX`; the next `Tick` takes the rest).
    pub(crate) fn overdue_events(&self, at_ms: u64) -> Vec<Event> {
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

    pub(crate) fn fold_presence(&mut self, event: &Event, at_ms: u64) {
        let revision = self.revision;
        match event {
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
            Event::InteractionEnded { username, interaction_id } => {
                if let Some(presence) = self.presence.get_mut(&*key_ref(username)) {
                    presence.interactions.remove(interaction_id);
                    presence.since_ms = at_ms;
                    presence.revision = revision;
                }
            }
            _ => {}
        }
    }
}
