//! Syntax and limits of commands, checked on the node that receives a request, before proposal,
//! so malformed input never reaches the log. `apply` runs the same checks again (cheaply) so a
//! replica can never be corrupted by an entry that bypassed the edge.

use crate::catalog::StatusDef;
use crate::command::{Command, SiteSpec};
use crate::lease::{LEASE_TTL_MS_MAX, LEASE_TTL_MS_MIN};
use crate::limits::*;
use crate::messaging::{Destination, Element, MessageKind, Messaging};
use crate::notes::Attribute;
use crate::rejection::Rejection;
use crate::user::UserSpec;

type Checked = Result<(), Rejection>;

/// Refuses a time past [`TIME_MS_MAX`], naming the field.
pub fn time(field: &str, ms: Option<u64>) -> Checked {
    match ms {
        Some(ms) if ms > TIME_MS_MAX => {
            Err(Rejection::invalid(field, format!("{ms} ms is after the year 9999 (at most {TIME_MS_MAX})")))
        }
        _ => Ok(()),
    }
}

/// Checks a command's fields; returns the first problem, naming the field.
pub fn validate(command: &Command) -> Checked {
    match command {
        Command::AddSite(spec) => validate_site(spec),
        // An empty hash keeps the current password; any other must be Argon2id.
        Command::UpdateSite(spec) if spec.password_hash.is_empty() => {
            validate_site(&SiteSpec { password_hash: "$argon2id$".into(), ..spec.clone() })
        }
        Command::UpdateSite(spec) => validate_site(spec),
        Command::StageImport { import_id, config, .. } => {
            text("import_id", import_id, 1, NAME_CHARS_MAX)?;
            if config.entities() > crate::config::IMPORT_PART_ENTITIES_MAX {
                return Err(Rejection::invalid(
                    "config",
                    format!("a part holds at most {} entities", crate::config::IMPORT_PART_ENTITIES_MAX),
                ));
            }
            Ok(())
        }
        Command::CommitImport { import_id, .. } | Command::AbortImport { import_id } => {
            text("import_id", import_id, 1, NAME_CHARS_MAX)
        }
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
        Command::SetStatus { username, status_key, detail, until_ms } => {
            self::username("username", username)?;
            text("status_key", status_key, 1, STATUS_KEY_CHARS_MAX)?;
            text("detail", detail, 0, DETAIL_CHARS_MAX)?;
            time("until_ms", *until_ms)
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
        Command::SetSource { settings, next_poll_ms } => {
            crate::source::validate_settings(settings)?;
            time("source.next_poll_ms", *next_poll_ms)
        }
        Command::RemoveSource | Command::PollSourceNow | Command::StartSourcePoll { .. } => Ok(()),
        Command::SourceStep { step, .. } => validate_source_step(step),
        Command::PutAlertRule(rule) => crate::alert::validate_rule(rule),
        Command::RemoveAlertRule { name } => text("rule.name", name, 1, NAME_CHARS_MAX),
        Command::AlertsDelivered { .. } => Ok(()),
        Command::FinishSourcePoll { report, .. } => {
            if report.refusals.len() > crate::source::REFUSALS_KEPT_MAX {
                return Err(Rejection::invalid(
                    "report.refusals",
                    format!("at most {} are kept", crate::source::REFUSALS_KEPT_MAX),
                ));
            }
            for refusal in &report.refusals {
                text("report.refusals", refusal, 1, crate::source::SOURCE_TEXT_CHARS_MAX)?;
            }
            if let Some(error) = &report.error {
                text("report.error", error, 1, crate::source::SOURCE_TEXT_CHARS_MAX)?;
            }
            Ok(())
        }
        Command::RecordAuthFailure { site, source, .. } => {
            site_id("site", *site)?;
            text("source", source, 0, SOURCE_CHARS_MAX)
        }
        Command::SendMessage { from_site, to, object_id, event_id, kind, elements } => {
            site_id("from_site", *from_site)?;
            if let Destination::Site(site) = to {
                site_id("to", *site)?;
            }
            text("object_id", object_id, 1, HANDLER_ID_CHARS_MAX)?;
            text("event_id", event_id, 1, HANDLER_ID_CHARS_MAX)?;
            match kind {
                MessageKind::Request { timeout_ms } if *timeout_ms > REQUEST_TIMEOUT_MS_MAX => {
                    return Err(Rejection::invalid(
                        "timeout_ms",
                        format!("{timeout_ms} is over {REQUEST_TIMEOUT_MS_MAX} (0 waits without limit)"),
                    ));
                }
                MessageKind::Response { correlation_id: 0 } => {
                    return Err(Rejection::invalid("correlation_id", "must not be 0 (0 marks events)"));
                }
                _ => {}
            }
            message_elements(elements)?;
            let bytes = Messaging::message_bytes(object_id, event_id, elements);
            if bytes > MESSAGE_BYTES_MAX {
                return Err(Rejection::invalid("elements", format!("{bytes} bytes is over {MESSAGE_BYTES_MAX}")));
            }
            Ok(())
        }
        Command::AckMessages { site, ids } => {
            site_id("site", *site)?;
            if ids.is_empty() || ids.len() > ACK_IDS_MAX {
                return Err(Rejection::invalid("ids", format!("needs 1..={ACK_IDS_MAX} message ids")));
            }
            Ok(())
        }
        Command::CloseRequest { reason, .. } => text("reason", reason, 1, NAME_CHARS_MAX),
        Command::SetQueueLimits(limits) => {
            if !(1..=SITE_QUEUE_MESSAGES_MAX).contains(&limits.messages) {
                return Err(Rejection::invalid("messages", format!("must be within 1..={SITE_QUEUE_MESSAGES_MAX}")));
            }
            if !(MESSAGE_BYTES_MAX..=SITE_QUEUE_BYTES_MAX).contains(&limits.bytes) {
                return Err(Rejection::invalid(
                    "bytes",
                    format!(
                        "must be within {MESSAGE_BYTES_MAX}..={SITE_QUEUE_BYTES_MAX} (a queue must fit one message)"
                    ),
                ));
            }
            Ok(())
        }
        Command::CreateNote { site, name, ttl_minutes } => {
            site_id("site", *site)?;
            note_name("name", name)?;
            if let Some(minutes) = ttl_minutes {
                if !(1..=NOTE_TTL_MINUTES_MAX).contains(minutes) {
                    return Err(Rejection::invalid(
                        "ttl_minutes",
                        format!("{minutes} is outside 1..={NOTE_TTL_MINUTES_MAX}"),
                    ));
                }
            }
            Ok(())
        }
        Command::UpdateNoteAttribute { site, name, attribute, values, .. } => {
            site_id("site", *site)?;
            note_name("name", name)?;
            note_name("attribute", attribute)?;
            attribute_values("values", values)
        }
        Command::RemoveNote { site, name } => {
            site_id("site", *site)?;
            note_name("name", name)
        }
        Command::RouteInteraction(request) => {
            text("interaction_id", &request.interaction_id, 1, INTERACTION_ID_CHARS_MAX)?;
            site_id("origin_site", request.origin_site)?;
            self::name("workgroup", &request.workgroup)?;
            skills("skills", &request.skills)?;
            if request.priority > PRIORITY_MAX {
                return Err(Rejection::invalid(
                    "priority",
                    format!("{} is outside 0..={PRIORITY_MAX}", request.priority),
                ));
            }
            Ok(())
        }
        Command::AcceptInteraction { interaction_id, agent }
        | Command::RejectInteraction { interaction_id, agent, .. } => {
            text("interaction_id", interaction_id, 1, INTERACTION_ID_CHARS_MAX)?;
            match agent {
                Some(agent) => self::username("agent", agent),
                None => Ok(()),
            }
        }
        Command::CancelInteraction { interaction_id } => {
            text("interaction_id", interaction_id, 1, INTERACTION_ID_CHARS_MAX)
        }
        Command::SetRoutingSettings { workgroup, settings } => {
            self::name("workgroup", workgroup)?;
            settings.check().map_err(|(field, reason)| Rejection::invalid(&format!("settings.{field}"), reason))
        }
        Command::SetRouteCost { from, to, cost } => {
            site_id("from", *from)?;
            site_id("to", *to)?;
            if from == to {
                return Err(Rejection::invalid("to", "a site routes to itself at no cost; name another site"));
            }
            if *cost > collective_routing::settings::ROUTE_COST_MAX {
                return Err(Rejection::invalid(
                    "cost",
                    format!("{cost} exceeds {}", collective_routing::settings::ROUTE_COST_MAX),
                ));
            }
            Ok(())
        }
    }
}

fn note_name(field: &str, value: &str) -> Checked {
    text(field, value, 1, NOTE_NAME_CHARS_MAX)?;
    if value.trim() != value {
        return Err(Rejection::invalid(field, "must not start or end with white space"));
    }
    Ok(())
}

fn attribute_values(field: &str, values: &Attribute) -> Checked {
    if values.len() > NOTE_ATTRIBUTE_VALUES_MAX {
        return Err(Rejection::invalid(field, format!("{} values is over {NOTE_ATTRIBUTE_VALUES_MAX}", values.len())));
    }
    if let Attribute::String(strings) = values {
        if let Some(long) = strings.iter().find(|s| s.len() > STRING_VALUE_BYTES_MAX) {
            return Err(Rejection::invalid(
                field,
                format!("a value of {} bytes is over {STRING_VALUE_BYTES_MAX}", long.len()),
            ));
        }
    }
    Ok(())
}

/// Checks a message's elements: count, string sizes, embedded notes.
fn message_elements(elements: &[Element]) -> Checked {
    if elements.len() > MESSAGE_ELEMENTS_MAX {
        return Err(Rejection::invalid(
            "elements",
            format!("{} elements is over {MESSAGE_ELEMENTS_MAX}", elements.len()),
        ));
    }
    for (index, element) in elements.iter().enumerate() {
        let field = format!("elements[{index}]");
        match element {
            Element::Integer(_) => {}
            Element::String(text) if text.len() > STRING_VALUE_BYTES_MAX => {
                return Err(Rejection::invalid(
                    &field,
                    format!("{} bytes is over {STRING_VALUE_BYTES_MAX}", text.len()),
                ));
            }
            Element::String(_) => {}
            Element::Note(note) => {
                note_name(&format!("{field}.name"), &note.name)?;
                if note.attributes.len() > NOTE_ATTRIBUTES_MAX {
                    return Err(Rejection::invalid(&field, format!("more than {NOTE_ATTRIBUTES_MAX} attributes")));
                }
                for (name, values) in &note.attributes {
                    note_name(&format!("{field}.attributes"), name)?;
                    attribute_values(&format!("{field}.attributes.{name}"), values)?;
                }
            }
        }
    }
    Ok(())
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

/// A poll's step carries a user or a membership, checked like their own commands.
fn validate_source_step(step: &crate::source::SourceStep) -> Checked {
    use crate::source::SourceStep;
    match step {
        SourceStep::Create(spec) | SourceStep::Update(spec) => validate_user(spec),
        SourceStep::Join { username, workgroup } | SourceStep::Leave { username, workgroup } => {
            self::name("workgroup", workgroup)?;
            self::username("username", username)
        }
        SourceStep::Claim { username }
        | SourceStep::Deactivate { username }
        | SourceStep::Reactivate { username }
        | SourceStep::Delete { username } => self::username("username", username),
    }
}

/// Checks a user's fields (also each user a directory source's poll plans).
pub(crate) fn validate_user(spec: &UserSpec) -> Checked {
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
    // Every replica checks every command again as it applies: ASCII (most text) is counted
    // and checked by bytes.
    let ascii = value.is_ascii();
    let chars = if ascii { value.len() } else { value.chars().count() };
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
    let control = if ascii { value.bytes().any(|b| b.is_ascii_control()) } else { value.chars().any(char::is_control) };
    if control {
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
