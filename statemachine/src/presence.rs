//! Presence: where a user is logged on, which status it is in, and whether it is on the phone.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::site::SiteId;

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
}

impl Presence {
    /// Whether the user has an active interaction.
    pub fn on_phone(&self) -> bool {
        !self.interactions.is_empty()
    }
}
