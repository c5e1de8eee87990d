//! A directory source: the collective fills its directory from LDAP / Active Directory, as the
//! vendor's Status Aggregator did from its data source. The settings, the polling schedule, the
//! users the source owns and the outcome of the last poll are replicated state; the leader reads
//! the directory (the node's `source.rs`), works out the changes with [`plan`] and proposes them
//! as [`SourceStep`]s, in bounded batches, under the principal `source:ldap`.
//!
//! Two leaders never both apply a poll: a poll begins with `StartSourcePoll { term }` (the
//! proposing leader's Raft term), which is refused unless the term is at least the last poll's;
//! every step and the poll's report carry that term and are refused once a newer poll began. A
//! deposed leader's late steps therefore change nothing after its successor's poll started.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::limits::*;
use crate::rejection::Rejection;
use crate::user::UserSpec;
use crate::validate::text;

pub mod plan;
mod rules;

/// Characters of a URL, DN, filter or password.
pub const SOURCE_TEXT_CHARS_MAX: usize = 1_024;
/// Bytes of the CA certificates (PEM) a source trusts.
pub const SOURCE_CA_PEM_BYTES_MAX: usize = 64 << 10;
/// The shortest polling interval, in seconds.
pub const POLL_INTERVAL_S_MIN: u32 = 10;
/// The longest polling interval: one week, in seconds.
pub const POLL_INTERVAL_S_MAX: u32 = 7 * 24 * 3_600;
/// Refused entries a poll's report keeps (the count covers them all).
pub const REFUSALS_KEPT_MAX: usize = 100;
/// Directory entries one poll reads at most; a larger directory fails the poll, changing nothing.
pub const SOURCE_ENTRIES_MAX: usize = 2_000_000;
/// Steps per proposed batch.
pub const SOURCE_STEPS_PER_BATCH: usize = 256;

/// Where the directory is and how its entries become users. Its `Debug` never shows the
/// password, so no log line of a command or event can.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LdapSettings {
    /// `ldap://host:port` or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    pub starttls: bool,
    /// CA certificates (PEM) the server's certificate must chain to; empty: the system's roots.
    pub ca_pem: String,
    /// The DN to bind as.
    pub bind_dn: String,
    /// Its password. A secret: replicated (every member may become the leader that polls), never
    /// returned by a read, never logged.
    pub bind_password: String,
    /// Where the search starts.
    pub base_dn: String,
    /// The search filter, e.g. `(objectClass=inetOrgPerson)`.
    pub filter: String,
    /// Which directory attribute gives which of our fields.
    pub mapping: Mapping,
    /// Seconds between polls.
    pub interval_s: u32,
    /// What happens to a user the source owns when its entry leaves the directory.
    pub on_missing: OnMissing,
}

impl std::fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("url", &self.url)
            .field("starttls", &self.starttls)
            .field("ca_pem_bytes", &self.ca_pem.len())
            .field("bind_dn", &self.bind_dn)
            .field("bind_password", &"<redacted>")
            .field("base_dn", &self.base_dn)
            .field("filter", &self.filter)
            .field("mapping", &self.mapping)
            .field("interval_s", &self.interval_s)
            .field("on_missing", &self.on_missing)
            .finish()
    }
}

/// Directory attributes for our user fields. Each is an attribute name (`mail`), or `dn:TYPE`
/// for the value of the first `TYPE=` part of the entry's DN (`dn:ou`); empty means the field
/// is not taken from the directory (skills and workgroups are then left as they are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// Our username (required).
    pub username: String,
    /// Display name (falls back to the username).
    pub display_name: String,
    /// Email, which matches directory entries to our users (required).
    pub email: String,
    /// Home site: a site id, or a site's name (required).
    pub home_site: String,
    /// Extension (required); characters other than digits are dropped (`+1 (317) 555-0100`).
    pub extension: String,
    /// Skills, each value `name=level`.
    pub skills: String,
    /// Workgroups, each value a workgroup name or a group DN (its first part's value).
    pub workgroups: String,
}

impl Default for Mapping {
    /// OpenLDAP's `inetOrgPerson`: uid, cn, mail, the `ou` of the DN, telephoneNumber.
    fn default() -> Mapping {
        Mapping {
            username: "uid".into(),
            display_name: "cn".into(),
            email: "mail".into(),
            home_site: "dn:ou".into(),
            extension: "telephoneNumber".into(),
            skills: String::new(),
            workgroups: String::new(),
        }
    }
}

impl Mapping {
    /// Every mapped field: (our field's name, its source).
    pub fn fields(&self) -> [(&'static str, &str); 7] {
        [
            ("username", &self.username),
            ("display_name", &self.display_name),
            ("email", &self.email),
            ("home_site", &self.home_site),
            ("extension", &self.extension),
            ("skills", &self.skills),
            ("workgroups", &self.workgroups),
        ]
    }

    /// The attributes a search must ask for (lowercase, without the `dn:` ones).
    pub fn attributes(&self) -> Vec<String> {
        let mut attributes: Vec<String> = self
            .fields()
            .iter()
            .filter(|(_, source)| !source.is_empty() && !source.starts_with("dn:"))
            .map(|(_, source)| source.to_ascii_lowercase())
            .collect();
        attributes.sort();
        attributes.dedup();
        attributes
    }
}

/// What happens to a user the source owns once its entry is gone from the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnMissing {
    /// Logged off and refused logon until the entry returns; kept otherwise.
    Deactivate,
    /// Deleted.
    Delete,
}

impl OnMissing {
    /// `deactivate` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnMissing::Deactivate => "deactivate",
            OnMissing::Delete => "delete",
        }
    }
}

/// The replicated state of the directory source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectorySource {
    /// Its settings.
    pub settings: LdapSettings,
    /// Entry time at which the next poll is due.
    pub next_poll_ms: u64,
    /// The Raft term of the newest poll begun (the fence of [`crate::command::Command::SourceStep`]).
    pub term: u64,
    /// Whether a poll has begun and not reported.
    pub polling: bool,
    /// The last poll's report.
    pub last_poll: Option<PollReport>,
    /// Users (lowercase usernames) the source created or matched: the ones it deactivates or
    /// deletes when their entries leave the directory.
    pub owned: BTreeSet<String>,
    /// Owned users deactivated because their entries left the directory.
    pub deactivated: BTreeSet<String>,
}

/// What one poll did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollReport {
    /// Leader time the poll began.
    pub started_ms: u64,
    /// How long it took.
    pub duration_ms: u64,
    /// Entries the directory returned.
    pub seen: u64,
    /// Users created.
    pub created: u64,
    /// Users updated (fields, workgroups, reactivation).
    pub updated: u64,
    /// Users deactivated or deleted.
    pub removed: u64,
    /// Entries (or changes) refused.
    pub refused: u64,
    /// The first refusals, each `entry: reason`.
    pub refusals: Vec<String>,
    /// Why the poll failed as a whole (bind refused, server unreachable…); it changed nothing.
    pub error: Option<String>,
}

/// One change a poll makes to a user. Each is its own command, so one refused change (an
/// extension conflict) leaves the others applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceStep {
    /// Create a user the directory has and we do not; the source owns it.
    Create(UserSpec),
    /// Replace a user's fields with the directory's; the source owns it from now on.
    Update(UserSpec),
    /// Take ownership of a user whose fields already match.
    Claim {
        /// The user.
        username: String,
    },
    /// Add a user to a workgroup its entry names.
    Join {
        /// The user.
        username: String,
        /// The workgroup.
        workgroup: String,
    },
    /// Remove a user from a workgroup its entry no longer names.
    Leave {
        /// The user.
        username: String,
        /// The workgroup.
        workgroup: String,
    },
    /// Log off and refuse logon: the entry left the directory.
    Deactivate {
        /// The user.
        username: String,
    },
    /// Allow logon again: the entry is back.
    Reactivate {
        /// The user.
        username: String,
    },
    /// Delete the user: the entry left the directory.
    Delete {
        /// The user.
        username: String,
    },
}

impl SourceStep {
    /// The user the step changes.
    pub fn username(&self) -> &str {
        match self {
            SourceStep::Create(spec) | SourceStep::Update(spec) => &spec.username,
            SourceStep::Claim { username }
            | SourceStep::Join { username, .. }
            | SourceStep::Leave { username, .. }
            | SourceStep::Deactivate { username }
            | SourceStep::Reactivate { username }
            | SourceStep::Delete { username } => username,
        }
    }
}

/// A line of a poll's report as the state keeps it: control characters (an LDAP server's
/// multi-line diagnostic) become spaces and the text is cut at [`SOURCE_TEXT_CHARS_MAX`], so a
/// report is never refused for its text (which would fail the poll again and again).
pub fn report_text(text: &str) -> String {
    let line: String = text.chars().take(SOURCE_TEXT_CHARS_MAX).map(|c| if c.is_control() { ' ' } else { c }).collect();
    if line.trim().is_empty() {
        "(no text)".to_string()
    } else {
        line
    }
}

/// Checks a source's settings; the first problem names its field.
pub fn validate_settings(settings: &LdapSettings) -> Result<(), Rejection> {
    text("settings.url", &settings.url, 1, SOURCE_TEXT_CHARS_MAX)?;
    let rest = match settings.url.split_once("://") {
        Some(("ldap", rest)) => rest,
        Some(("ldaps", rest)) if !settings.starttls => rest,
        Some(("ldaps", _)) => {
            return Err(Rejection::invalid("settings.starttls", "StartTLS upgrades ldap://; ldaps:// is TLS already"))
        }
        _ => {
            return Err(Rejection::invalid(
                "settings.url",
                format!("{:?} is not ldap://HOST or ldaps://HOST", settings.url),
            ))
        }
    };
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err(Rejection::invalid("settings.url", format!("{:?} names no host", settings.url)));
    }
    if settings.ca_pem.len() > SOURCE_CA_PEM_BYTES_MAX {
        return Err(Rejection::invalid("settings.ca_pem", format!("over {SOURCE_CA_PEM_BYTES_MAX} bytes")));
    }
    if !settings.ca_pem.is_empty() && !settings.ca_pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(Rejection::invalid("settings.ca_pem", "holds no PEM certificate"));
    }
    text("settings.bind_dn", &settings.bind_dn, 1, SOURCE_TEXT_CHARS_MAX)?;
    if settings.bind_password.len() > SOURCE_TEXT_CHARS_MAX {
        return Err(Rejection::invalid("settings.bind_password", format!("over {SOURCE_TEXT_CHARS_MAX} bytes")));
    }
    text("settings.base_dn", &settings.base_dn, 1, SOURCE_TEXT_CHARS_MAX)?;
    validate_filter(&settings.filter)?;
    for (field, source) in settings.mapping.fields() {
        validate_mapped(field, source)?;
    }
    if !(POLL_INTERVAL_S_MIN..=POLL_INTERVAL_S_MAX).contains(&settings.interval_s) {
        return Err(Rejection::invalid(
            "settings.interval_s",
            format!("{} s is outside {POLL_INTERVAL_S_MIN}..={POLL_INTERVAL_S_MAX} s", settings.interval_s),
        ));
    }
    Ok(())
}

/// An LDAP filter: one parenthesised filter whose parentheses balance (a literal parenthesis
/// is written `\28` or `\29` in LDAP), within the length limit.
fn validate_filter(filter: &str) -> Result<(), Rejection> {
    text("settings.filter", filter, 2, SOURCE_TEXT_CHARS_MAX)?;
    if !filter.starts_with('(') || !filter.ends_with(')') {
        return Err(Rejection::invalid(
            "settings.filter",
            format!("{filter:?} is not one parenthesised filter, e.g. (objectClass=inetOrgPerson)"),
        ));
    }
    let mut depth: i64 = 0;
    for (i, c) in filter.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 || (depth == 0 && i + 1 < filter.len()) || (i + 1 == filter.len() && depth != 0) {
            return Err(Rejection::invalid("settings.filter", format!("{filter:?}: the parentheses do not balance")));
        }
    }
    Ok(())
}

/// One mapping: an attribute name, `dn:TYPE`, or empty where the field is optional.
fn validate_mapped(field: &str, source: &str) -> Result<(), Rejection> {
    let path = format!("settings.mapping.{field}");
    if source.is_empty() {
        return match field {
            "display_name" | "skills" | "workgroups" => Ok(()),
            _ => Err(Rejection::invalid(&path, "must name an attribute (or dn:TYPE)")),
        };
    }
    if field == "email" && source.starts_with("dn:") {
        return Err(Rejection::invalid(&path, "the email must come from an attribute"));
    }
    let name = source.strip_prefix("dn:").unwrap_or(source);
    let valid = name.len() <= NAME_CHARS_MAX
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';');
    if !valid {
        return Err(Rejection::invalid(&path, format!("{source:?} is not an attribute name or dn:TYPE")));
    }
    Ok(())
}
