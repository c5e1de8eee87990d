//! What the presence history records: after each change, a [`PresenceVersion`] of every user the
//! change touched. Stored per user and time (by the node), versions answer "presence of U at T",
//! "who was available in W at T" and "time in each status" without replaying events.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::catalog::StatusGroup;
use crate::event::{Event, EventRecord};
use crate::site::SiteId;
use crate::state::State;
use crate::user::key_ref;

/// A user's presence as of one change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceVersion {
    /// Username as created.
    pub username: String,
    /// Status key.
    pub status_key: String,
    /// The status's group at the time.
    pub status_group: StatusGroup,
    /// Current site while logged on.
    pub logged_on_site: Option<SiteId>,
    /// Home site.
    pub home_site: SiteId,
    /// On the phone.
    pub on_phone: bool,
    /// Workgroups (lowercase) the user was a member of.
    pub workgroups: crate::small::VecSet<String>,
    /// The user was deleted by this change (no presence from here on).
    pub deleted: bool,
    /// Entry time of the change that put the user in this presence.
    #[serde(default)]
    pub since_ms: u64,
    /// The status's `until` had passed (`StatusOverdue`). Last: versions stored before it
    /// existed end before it, and the node's history store reads them as not overdue.
    #[serde(default)]
    pub overdue: bool,
}

impl PresenceVersion {
    /// The version of a user as `state` has it now.
    pub fn of(state: &State, user_key: &str) -> Option<PresenceVersion> {
        PresenceVersionRef::of(state, user_key).map(|version| version.to_version())
    }

    /// Available to take work: logged on and in a status of group Available.
    pub fn available(&self) -> bool {
        !self.deleted && self.logged_on_site.is_some() && self.status_group == StatusGroup::Available
    }
}

/// A [`PresenceVersion`] borrowed from the state, so recording one copies no strings. It
/// serialises to exactly the bytes of the owned version (same fields, same order, same types
/// as far as serde is concerned): stored versions decode as `PresenceVersion`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceVersionRef<'a> {
    /// Username as created.
    pub username: &'a str,
    /// Status key.
    pub status_key: &'a str,
    /// The status's group at the time.
    pub status_group: StatusGroup,
    /// Current site while logged on.
    pub logged_on_site: Option<SiteId>,
    /// Home site.
    pub home_site: SiteId,
    /// On the phone.
    pub on_phone: bool,
    /// Workgroups (lowercase) the user was a member of.
    pub workgroups: &'a crate::small::VecSet<String>,
    /// The user was deleted by this change (no presence from here on).
    pub deleted: bool,
    /// Entry time of the change that put the user in this presence.
    pub since_ms: u64,
    /// The status's `until` had passed.
    pub overdue: bool,
}

/// The workgroups of a deleted user's tombstone.
static NO_WORKGROUPS: crate::small::VecSet<String> = crate::small::VecSet::new();

impl<'a> PresenceVersionRef<'a> {
    /// The version of a user as `state` has it now.
    pub fn of(state: &'a State, user_key: &str) -> Option<PresenceVersionRef<'a>> {
        let user = state.users.get(user_key)?;
        let presence = state.presence.get(user_key)?;
        Some(PresenceVersionRef {
            username: &user.username,
            status_key: &presence.status_key,
            status_group: state.catalog.get(&presence.status_key).map(|d| d.group).unwrap_or(StatusGroup::Unavailable),
            logged_on_site: presence.logon.as_ref().map(|l| l.site),
            home_site: user.home_site,
            on_phone: presence.on_phone(),
            workgroups: &user.workgroups,
            deleted: false,
            since_ms: presence.since_ms,
            overdue: presence.overdue,
        })
    }

    /// The tombstone of a user deleted at `at_ms`.
    fn deleted(username: &'a str, at_ms: u64) -> PresenceVersionRef<'a> {
        PresenceVersionRef {
            username,
            status_key: "",
            status_group: StatusGroup::Unavailable,
            logged_on_site: None,
            home_site: 0,
            on_phone: false,
            workgroups: &NO_WORKGROUPS,
            deleted: true,
            since_ms: at_ms,
            overdue: false,
        }
    }

    /// The owned version.
    pub fn to_version(&self) -> PresenceVersion {
        PresenceVersion {
            username: self.username.to_string(),
            status_key: self.status_key.to_string(),
            status_group: self.status_group,
            logged_on_site: self.logged_on_site,
            home_site: self.home_site,
            on_phone: self.on_phone,
            workgroups: self.workgroups.clone(),
            deleted: self.deleted,
            since_ms: self.since_ms,
            overdue: self.overdue,
        }
    }
}

/// The versions to record after `records` were applied and `state` reached: per touched user
/// (lowercase key), the entry time, the revision of its last event, and its version (a deleted
/// user gets a tombstone), in key order. Several changes at one entry time collapse into the last.
pub fn versions<'a>(
    state: &'a State,
    records: &'a [EventRecord],
) -> Vec<(Cow<'a, str>, u64, u64, PresenceVersionRef<'a>)> {
    // Each touch in the order of the records; sorted by user below, the last touch of each user
    // kept. (A B-tree of the touched users was 11 % of applying an entry of 1,024 changes.)
    let mut touched: Vec<(Cow<'a, str>, usize, u64, u64, &'a str)> = Vec::with_capacity(records.len());
    for record in records {
        let mut touch = |username: &'a str| {
            touched.push((key_ref(username), touched.len(), record.at_ms, record.revision, username));
        };
        match &record.event {
            Event::SiteIdChanged { new, .. } => {
                for (user_key, user) in &state.users {
                    let here =
                        state.presence.get(user_key).and_then(|p| p.logon.as_ref()).is_some_and(|l| l.site == *new);
                    if here || user.home_site == *new {
                        touch(&user.username);
                    }
                }
            }
            // A redefined status may change group: everyone in it gets a new version.
            Event::StatusDefined(def) => {
                for (user_key, presence) in &state.presence {
                    if presence.status_key == def.key {
                        touch(&state.users[user_key].username);
                    }
                }
            }
            Event::WorkgroupDeleted { .. } => {}
            event => {
                if let Some(username) = event.username() {
                    touch(username);
                }
            }
        }
    }
    // By user, the latest touch first; then only each user's first entry stays.
    touched.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    touched.dedup_by(|later, first| later.0 == first.0);
    touched
        .into_iter()
        .map(|(user_key, _, at_ms, revision, username)| {
            let version = PresenceVersionRef::of(state, &user_key)
                .unwrap_or_else(|| PresenceVersionRef::deleted(username, at_ms));
            (user_key, at_ms, revision, version)
        })
        .collect()
}
