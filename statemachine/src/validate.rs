//! Syntax and limits of commands, checked on the node that receives a request, before proposal,
//! so malformed input never reaches the log. `apply` runs the same checks again (cheaply) so a
//! replica can never be corrupted by an entry that bypassed the edge.

use crate::catalog::StatusDef;
use crate::command::{Command, SiteSpec};
use crate::lease::{LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN};
use crate::limits::*;
use crate::rejection::Rejection;
use crate::user::UserSpec;

type Checked = Result<(), Rejection>;

/// Checks a command's fields; returns the first problem, naming the field.
pub fn validate(command: &Command) -> Checked {
    match command {
        Command::AddSite(spec) => validate_site(spec),
        Command::SetSiteActive { site, .. } => site_id("site.id", *site),
        Command::AddUser(spec) | Command::UpdateUser(spec) => validate_user(spec),
        Command::DeleteUser { username } => self::username("user.username", username),
        Command::AddWorkgroup { name, required_skills, .. } => {
            self::name("workgroup.name", name)?;
            skills("workgroup.required_skills", required_skills)
        }
        Command::DeleteWorkgroup { name } => self::name("workgroup.name", name),
        Command::AddWorkgroupMember { workgroup, username }
        | Command::RemoveWorkgroupMember { workgroup, username } => {
            self::name("workgroup", workgroup)?;
            self::username("username", username)
        }
        Command::PutStatusDef(def) => validate_status_def(def),
        Command::SetStatus { username, status_key, detail, .. } => {
            self::username("username", username)?;
            text("status_key", status_key, 1, STATUS_KEY_CHARS_MAX)?;
            text("detail", detail, 0, DETAIL_CHARS_MAX)
        }
        Command::LogOn { username, site, server } => {
            self::username("username", username)?;
            site_id("site", *site)?;
            if !server.is_empty() {
                host("server", server)?;
            }
            Ok(())
        }
        Command::LogOff { username, reason } => {
            self::username("username", username)?;
            text("reason", reason, 1, NAME_CHARS_MAX)
        }
        Command::StartInteraction { username, interaction_id }
        | Command::EndInteraction { username, interaction_id } => {
            self::username("username", username)?;
            text("interaction_id", interaction_id, 1, INTERACTION_ID_CHARS_MAX)
        }
        Command::ChangeSiteId { old, new } => {
            site_id("old", *old)?;
            site_id("new", *new)?;
            if old == new {
                return Err(Rejection::invalid("new", "equals the current id"));
            }
            Ok(())
        }
        Command::GrantLease { site, ttl_ms } => {
            site_id("site", *site)?;
            if !(LEASE_TTL_MS_MIN..=LEASE_TTL_MS_MAX).contains(ttl_ms) {
                return Err(Rejection::invalid(
                    "ttl_ms",
                    format!("{ttl_ms} is outside {LEASE_TTL_MS_MIN}..={LEASE_TTL_MS_MAX}"),
                ));
            }
            Ok(())
        }
        Command::KeepAlive { site } | Command::RevokeLease { site } => site_id("site", *site),
        Command::RenewLeases | Command::Tick => Ok(()),
    }
}

fn validate_site(spec: &SiteSpec) -> Checked {
    site_id("site.id", spec.id)?;
    name("site.name", &spec.name)?;
    normalize_phone(&spec.phone).map(|_| ())?;
    if !spec.password_hash.starts_with("$argon2id$") {
        return Err(Rejection::invalid("site.password", "must be hashed with Argon2id at the edge"));
    }
    if !spec.note_id_dial_string.is_empty() {
        text("site.note_id_dial_string", &spec.note_id_dial_string, 1, DIAL_STRING_CHARS_MAX)?;
        if !spec.note_id_dial_string.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#') {
            return Err(Rejection::invalid("site.note_id_dial_string", "only digits, '*' and '#' are allowed"));
        }
    }
    if spec.servers.len() > SITE_SERVERS_MAX {
        return Err(Rejection::invalid("site.servers", format!("at most {SITE_SERVERS_MAX} servers")));
    }
    for server in &spec.servers {
        host("site.servers", server)?;
    }
    Ok(())
}

fn validate_user(spec: &UserSpec) -> Checked {
    username("user.username", &spec.username)?;
    name("user.display_name", &spec.display_name)?;
    email("user.email", &spec.email)?;
    site_id("user.home_site", spec.home_site)?;
    extension("user.extension", &spec.extension)?;
    skills("user.skills", &spec.skills)?;
    if spec.licences.len() > LICENCES_PER_USER_MAX {
        return Err(Rejection::invalid("user.licences", format!("at most {LICENCES_PER_USER_MAX} licences")));
    }
    for licence in &spec.licences {
        text("user.licences", licence, 1, NAME_CHARS_MAX)?;
    }
    Ok(())
}

fn validate_status_def(def: &StatusDef) -> Checked {
    text("status.key", &def.key, 1, STATUS_KEY_CHARS_MAX)?;
    text("status.message", &def.message, 1, NAME_CHARS_MAX)
}

/// Checks a site id is within 1..=999.
pub fn site_id(field: &str, id: u32) -> Checked {
    if !(SITE_ID_MIN..=SITE_ID_MAX).contains(&id) {
        return Err(Rejection::invalid(field, format!("{id} is outside {SITE_ID_MIN}..={SITE_ID_MAX}")));
    }
    Ok(())
}

/// Checks a text's length in characters and that it has no control characters.
pub fn text(field: &str, value: &str, min_chars: usize, max_chars: usize) -> Checked {
    let chars = value.chars().count();
    if chars < min_chars {
        return Err(Rejection::invalid(
            field,
            if min_chars == 1 {
                "must not be empty".to_string()
            } else {
                format!("needs at least {min_chars} characters")
            },
        ));
    }
    if chars > max_chars {
        return Err(Rejection::invalid(field, format!("{chars} characters is over the limit of {max_chars}")));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(Rejection::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

fn name(field: &str, value: &str) -> Checked {
    text(field, value, 1, NAME_CHARS_MAX)?;
    if value.trim() != value {
        return Err(Rejection::invalid(field, "must not start or end with white space"));
    }
    Ok(())
}

fn username(field: &str, value: &str) -> Checked {
    text(field, value, 1, USERNAME_CHARS_MAX)?;
    if !value.chars().all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')) {
        return Err(Rejection::invalid(field, "only letters, digits, '.', '_', '-' and '@' are allowed"));
    }
    Ok(())
}

fn email(field: &str, value: &str) -> Checked {
    text(field, value, 3, EMAIL_CHARS_MAX)?;
    let mut parts = value.splitn(2, '@');
    let (local, domain) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if local.is_empty() || domain.is_empty() || domain.contains('@') || value.contains(char::is_whitespace) {
        return Err(Rejection::invalid(field, format!("{value:?} is not an email address")));
    }
    Ok(())
}

fn extension(field: &str, value: &str) -> Checked {
    let digits = value.len();
    if !value.chars().all(|c| c.is_ascii_digit()) || !(EXTENSION_DIGITS_MIN..=EXTENSION_DIGITS_MAX).contains(&digits) {
        return Err(Rejection::invalid(
            field,
            format!("{value:?} must be {EXTENSION_DIGITS_MIN} to {EXTENSION_DIGITS_MAX} digits"),
        ));
    }
    Ok(())
}

fn host(field: &str, value: &str) -> Checked {
    text(field, value, 1, HOST_CHARS_MAX)?;
    if !value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')) {
        return Err(Rejection::invalid(field, format!("{value:?} is not a host name")));
    }
    Ok(())
}

fn skills(field: &str, skills: &std::collections::BTreeMap<String, u32>) -> Checked {
    if skills.len() > SKILLS_PER_USER_MAX {
        return Err(Rejection::invalid(field, format!("at most {SKILLS_PER_USER_MAX} skills")));
    }
    for (skill, level) in skills {
        text(field, skill, 1, SKILL_NAME_CHARS_MAX)?;
        if !(SKILL_LEVEL_MIN..=SKILL_LEVEL_MAX).contains(level) {
            return Err(Rejection::invalid(
                field,
                format!("level {level} of skill {skill:?} is outside {SKILL_LEVEL_MIN}..={SKILL_LEVEL_MAX}"),
            ));
        }
    }
    Ok(())
}

/// Normalises a phone number: digits, `+`, `-` and spaces are accepted; the stored form keeps the
/// digits and a leading `+`.
pub fn normalize_phone(value: &str) -> Result<String, Rejection> {
    let field = "site.phone";
    if value.trim().is_empty() {
        return Err(Rejection::invalid(field, "must not be empty"));
    }
    let mut normalized = String::with_capacity(value.len());
    for (index, c) in value.trim().chars().enumerate() {
        match c {
            '0'..='9' => normalized.push(c),
            '+' if index == 0 => normalized.push(c),
            '-' | ' ' => {}
            _ => {
                return Err(Rejection::invalid(
                    field,
                    format!("{value:?}: only digits, '+', '-' and spaces are allowed"),
                ))
            }
        }
    }
    let digits = normalized.trim_start_matches('+').len();
    if digits == 0 || normalized.len() > PHONE_CHARS_MAX {
        return Err(Rejection::invalid(field, format!("{value:?} must have 1 to {PHONE_CHARS_MAX} digits")));
    }
    Ok(normalized)
}
