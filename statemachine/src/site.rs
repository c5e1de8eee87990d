//! A site: one contact-center server (or server pair) that belongs to the collective.

use serde::{Deserialize, Serialize};

mod rules;

/// Site id, 1..=999 (the vendor's Multi-Site "Site ID").
pub type SiteId = u32;

/// What a user homed at another site may do while logged on at this site.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustedAccess {
    /// May publish handlers here.
    pub publish_handlers: bool,
    /// May manage handlers here.
    pub manage_handlers: bool,
    /// Acts as a master administrator here (collective-wide configuration).
    pub master_administrator: bool,
}

/// A site as the collective stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    /// Unique id, 1..=999.
    pub id: SiteId,
    /// Unique name (compared case-insensitively).
    pub name: String,
    /// Phone number, normalised: digits with an optional leading `+`.
    pub phone: String,
    /// Argon2id PHC string of the site password; computed at the edge, never returned by any API.
    pub password_hash: String,
    /// Dial string that reaches a note id over a tie line (default `*90`).
    pub note_id_dial_string: String,
    /// Whether the site takes part in the collective (inactive sites receive nothing).
    pub active: bool,
    /// Host names of the site's servers; the first is the primary.
    pub servers: Vec<String>,
    /// What roaming users may do here.
    pub trusted_access: TrustedAccess,
}

/// Default note-id dial string of a new site.
pub const NOTE_ID_DIAL_STRING_DEFAULT: &str = "*90";
