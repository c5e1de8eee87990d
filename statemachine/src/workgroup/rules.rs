//! Workgroup rules: add and delete workgroups, add and remove members; a user spans sites while
//! it is a member of a spanning workgroup.

use super::Workgroup;
use crate::event::Event;
use crate::limits::{MEMBERS_PER_WORKGROUP_MAX, WORKGROUPS_MAX, WORKGROUPS_PER_USER_MAX};
use crate::rejection::Rejection;
use crate::state::State;
use crate::user::{key_of, User};
use std::collections::{BTreeMap, BTreeSet};

impl State {
    pub(crate) fn decide_add_workgroup(
        &self,
        name: &str,
        spans_sites: bool,
        required_skills: &BTreeMap<String, u32>,
    ) -> Result<Vec<Event>, Rejection> {
        if self.workgroups.contains_key(&key_of(name)) {
            return Err(Rejection::exists("workgroup", "name", name));
        }
        if self.workgroups.len() >= WORKGROUPS_MAX {
            return Err(Rejection::LimitReached { what: "workgroups".into(), limit: WORKGROUPS_MAX as u64 });
        }
        Ok(vec![Event::WorkgroupAdded(Workgroup {
            name: name.to_string(),
            spans_sites,
            members: BTreeSet::new(),
            required_skills: required_skills.clone(),
        })])
    }

    pub(crate) fn decide_delete_workgroup(&self, name: &str) -> Result<Vec<Event>, Rejection> {
        let workgroup = self.workgroup(name)?;
        self.check_workgroup_idle(&workgroup.name)?;
        let mut events = Vec::new();
        for member in &workgroup.members {
            events.extend(self.removal_events(workgroup, &self.users[member.as_str()]));
        }
        events.push(Event::WorkgroupDeleted { name: workgroup.name.clone() });
        Ok(events)
    }

    pub(crate) fn decide_add_workgroup_member(&self, workgroup: &str, username: &str) -> Result<Vec<Event>, Rejection> {
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
        let mut events =
            vec![Event::UserAddedToWorkgroup { workgroup: workgroup.name.clone(), username: user.username.clone() }];
        if workgroup.spans_sites && !self.is_spanning(&user_key) {
            self.check_extension(&user_key, &user.extension, user.home_site, true)?;
            events.push(Event::UserStartedSpanning { username: user.username.clone() });
        }
        Ok(events)
    }

    pub(crate) fn decide_remove_workgroup_member(
        &self,
        workgroup: &str,
        username: &str,
    ) -> Result<Vec<Event>, Rejection> {
        let workgroup = self.workgroup(workgroup)?;
        let user = self.user(username)?;
        if !workgroup.members.contains(&key_of(&user.username)) {
            return Err(Rejection::not_found("workgroup member", &user.username));
        }
        Ok(self.removal_events(workgroup, user))
    }

    pub(crate) fn removal_events(&self, workgroup: &Workgroup, user: &User) -> Vec<Event> {
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

    pub(crate) fn fold_workgroup(&mut self, event: &Event) {
        match event {
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
            _ => {}
        }
    }
}
