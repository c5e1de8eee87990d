//! Presence: where a user is logged on, which status it is in, and whether it is on the phone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::site::SiteId;
use crate::small::Name;

mod rules;

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
    pub fn of(presence: &crate::sorted_map::SortedMap<Name, Presence>) -> StatusDeadlines {
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
