//! Directory source rules: configure it, schedule and fence polls, apply a poll's steps, refuse
//! logon to a deactivated user.

use super::{DirectorySource, LdapSettings, PollReport, SourceStep};
use crate::event::Event;
use crate::rejection::Rejection;
use crate::state::State;
use crate::user::key_of;

/// The logoff reason of a user whose entry left the directory.
pub const DEACTIVATED_REASON: &str = "deactivated: the entry left the directory";

impl State {
    fn source(&self) -> Result<&DirectorySource, Rejection> {
        self.source.as_ref().ok_or_else(|| Rejection::not_found("directory source", "ldap"))
    }

    /// The poll of `term` may still change things: it is the newest begun and has not reported.
    fn source_fence(&self, term: u64) -> Result<&DirectorySource, Rejection> {
        let source = self.source()?;
        if source.term != term || !source.polling {
            return Err(Rejection::precondition(
                "term",
                format!("the poll of term {term} is over or superseded (newest: term {})", source.term),
            ));
        }
        Ok(source)
    }

    pub(crate) fn decide_set_source(
        &self,
        at_ms: u64,
        settings: &LdapSettings,
        next_poll_ms: Option<u64>,
    ) -> Result<Vec<Event>, Rejection> {
        Ok(vec![Event::SourceSet { settings: settings.clone(), next_poll_ms: next_poll_ms.unwrap_or(at_ms) }])
    }

    pub(crate) fn decide_remove_source(&self) -> Result<Vec<Event>, Rejection> {
        self.source()?;
        Ok(vec![Event::SourceRemoved])
    }

    pub(crate) fn decide_poll_source_now(&self, at_ms: u64) -> Result<Vec<Event>, Rejection> {
        self.source()?;
        Ok(vec![Event::SourcePollDue { next_poll_ms: at_ms }])
    }

    /// A leader begins a poll: refused if a leader of a newer term already began one.
    pub(crate) fn decide_start_source_poll(&self, term: u64) -> Result<Vec<Event>, Rejection> {
        let source = self.source()?;
        if term < source.term {
            return Err(Rejection::precondition(
                "term",
                format!("a poll of a newer term ({}) began; term {term} may not poll", source.term),
            ));
        }
        Ok(vec![Event::SourcePollStarted { term }])
    }

    pub(crate) fn decide_source_step(&self, term: u64, step: &SourceStep) -> Result<Vec<Event>, Rejection> {
        let source = self.source_fence(term)?;
        let claim = |username: &str| {
            let owned = source.owned.contains(&key_of(username));
            (!owned).then(|| Event::SourceClaimed { username: username.to_string() })
        };
        match step {
            SourceStep::Create(spec) => {
                let mut events = self.decide_add_user(spec)?;
                events.push(Event::SourceClaimed { username: spec.username.clone() });
                Ok(events)
            }
            SourceStep::Update(spec) => {
                let mut events = self.decide_update_user(spec)?;
                let username = self.user(&spec.username)?.username.clone();
                events.extend(claim(&username));
                Ok(events)
            }
            SourceStep::Claim { username } => {
                let username = self.user(username)?.username.clone();
                Ok(claim(&username).into_iter().collect())
            }
            SourceStep::Join { username, workgroup } => self.decide_add_workgroup_member(workgroup, username),
            SourceStep::Leave { username, workgroup } => self.decide_remove_workgroup_member(workgroup, username),
            SourceStep::Deactivate { username } => {
                let user = self.user(username)?;
                let key = key_of(&user.username);
                if source.deactivated.contains(&key) {
                    return Ok(vec![]);
                }
                let presence = &self.presence[key.as_str()];
                let mut events = match &presence.logon {
                    Some(logon) => self.logoff_events(user, presence, logon, DEACTIVATED_REASON),
                    None => Vec::new(),
                };
                events.push(Event::UserDeactivated { username: user.username.clone() });
                Ok(events)
            }
            SourceStep::Reactivate { username } => {
                let user = self.user(username)?;
                if !source.deactivated.contains(&key_of(&user.username)) {
                    return Ok(vec![]);
                }
                Ok(vec![Event::UserReactivated { username: user.username.clone() }])
            }
            SourceStep::Delete { username } => self.decide_delete_user(username),
        }
    }

    /// A poll reports: its outcome is kept and the next poll is due one interval later, or at
    /// once if something made it due after the poll began.
    pub(crate) fn decide_finish_source_poll(
        &self,
        at_ms: u64,
        term: u64,
        report: &PollReport,
    ) -> Result<Vec<Event>, Rejection> {
        let source = self.source_fence(term)?;
        // Made due again while it ran (sync-now, new settings): the next poll is due at once.
        let next_poll_ms = if source.next_poll_ms >= report.started_ms {
            source.next_poll_ms
        } else {
            at_ms + u64::from(source.settings.interval_s) * 1_000
        };
        Ok(vec![Event::SourcePolled { term, report: report.clone(), next_poll_ms }])
    }

    /// A user the source deactivated may not log on until its entry returns.
    pub(crate) fn check_not_deactivated(&self, username: &str) -> Result<(), Rejection> {
        match &self.source {
            Some(source) if source.deactivated.contains(&key_of(username)) => Err(Rejection::precondition(
                "username",
                format!("user {username} is deactivated: its directory entry is gone (directory source)"),
            )),
            _ => Ok(()),
        }
    }

    pub(crate) fn fold_source(&mut self, event: &Event) {
        match event {
            Event::SourceSet { settings, next_poll_ms } => match &mut self.source {
                Some(source) => {
                    source.settings = settings.clone();
                    source.next_poll_ms = *next_poll_ms;
                }
                None => {
                    self.source = Some(DirectorySource {
                        settings: settings.clone(),
                        next_poll_ms: *next_poll_ms,
                        term: 0,
                        polling: false,
                        last_poll: None,
                        owned: Default::default(),
                        deactivated: Default::default(),
                    })
                }
            },
            Event::SourceRemoved => self.source = None,
            _ => {
                let Some(source) = &mut self.source else { return };
                match event {
                    Event::SourcePollDue { next_poll_ms } => source.next_poll_ms = *next_poll_ms,
                    Event::SourcePollStarted { term } => {
                        source.term = *term;
                        source.polling = true;
                    }
                    Event::SourceClaimed { username } => {
                        source.owned.insert(key_of(username));
                    }
                    Event::UserDeactivated { username } => {
                        source.deactivated.insert(key_of(username));
                    }
                    Event::UserReactivated { username } => {
                        source.deactivated.remove(&key_of(username));
                    }
                    Event::SourcePolled { report, next_poll_ms, .. } => {
                        source.polling = false;
                        source.last_poll = Some(report.clone());
                        source.next_poll_ms = *next_poll_ms;
                    }
                    _ => {}
                }
            }
        }
    }

    /// A deleted user leaves the source's sets, whoever deleted it.
    pub(crate) fn note_source_effects(&mut self, event: &Event) {
        if let (Event::UserDeleted { username }, Some(source)) = (event, &mut self.source) {
            let key = key_of(username);
            source.owned.remove(&key);
            source.deactivated.remove(&key);
        }
    }
}
