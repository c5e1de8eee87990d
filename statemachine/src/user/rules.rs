//! User rules: add, update and delete a user, and the extension rule (`State::check_extension`):
//! a spanning user's extension is unique everywhere, a local user's unique at its home site.

use super::{key_of, key_ref, User, UserSpec};
use crate::catalog::STATUS_INITIAL;
use crate::event::Event;
use crate::limits::USERS_MAX;
use crate::presence::{Presence, StatusDeadlines, LOGOFF_REASON_DELETED};
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::small::Name;
use crate::small::VecSet;
use crate::state::State;
use std::collections::BTreeSet;

impl State {
    pub(crate) fn decide_add_user(&self, spec: &UserSpec) -> Result<Vec<Event>, Rejection> {
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

    pub(crate) fn decide_update_user(&self, spec: &UserSpec) -> Result<Vec<Event>, Rejection> {
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
    pub(crate) fn check_user_fields(&self, user_key: &str, spec: &UserSpec, spanning: bool) -> Result<(), Rejection> {
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
    pub(crate) fn check_extension(
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

    /// The user and everything it is part of: its interactions end, it logs off, leaves its
    /// workgroups (and stops spanning), then is deleted; each its own event, so a watcher (or a
    /// fold of the events) sees the user leave its site and its workgroups.
    pub(crate) fn decide_delete_user(&self, username: &str) -> Result<Vec<Event>, Rejection> {
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

    pub(crate) fn fold_user(&mut self, event: &Event, at_ms: u64) {
        let revision = self.revision;
        match event {
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
            _ => {}
        }
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
}
