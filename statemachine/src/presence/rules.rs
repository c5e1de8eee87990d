//! Presence rules: set a status, log on (roaming logs off elsewhere first), log off (a
//! non-persistent status reverts to the last persistent one), interactions, overdue statuses.

use super::{Logon, Presence, StatusDeadlines, LOGOFF_REASON_ROAMED};
use crate::event::Event;
use crate::limits::INTERACTIONS_PER_USER_MAX;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::state::State;
use crate::user::{key_ref, User};

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
        self.check_not_deactivated(&user.username)?;
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
