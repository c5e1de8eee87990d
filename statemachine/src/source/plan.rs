//! What a poll changes: directory entries matched to our users by email (case-insensitively),
//! turned into [`SourceStep`]s. Pure, so a dry run and a real poll plan the same way, and a poll
//! of an unchanged directory plans nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{LdapSettings, Mapping, OnMissing, SourceStep, REFUSALS_KEPT_MAX};
use crate::state::State;
use crate::user::{key_of, User, UserSpec};

/// An entry as the directory returned it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryEntry {
    /// Its distinguished name.
    pub dn: String,
    /// Attribute (lowercase name) → values.
    pub attributes: BTreeMap<String, Vec<String>>,
}

/// A step and the entry it comes from (for the report of a refusal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// The entry's DN, or the user's name for a removal.
    pub entry: String,
    /// The change.
    pub step: SourceStep,
}

/// A poll's plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Entries read.
    pub seen: u64,
    /// The changes, in order (a user's creation before its workgroups).
    pub steps: Vec<PlannedStep>,
    /// Users the steps create.
    pub creates: u64,
    /// Users the steps change.
    pub updates: u64,
    /// Users the steps deactivate or delete.
    pub removes: u64,
    /// Entries refused while planning.
    pub refused: u64,
    /// The first refusals, `entry: reason`.
    pub refusals: Vec<String>,
}

impl Plan {
    /// Records a refusal (the first [`REFUSALS_KEPT_MAX`] keep their text).
    pub fn refuse(&mut self, entry: &str, reason: impl std::fmt::Display) {
        self.refused += 1;
        if self.refusals.len() < REFUSALS_KEPT_MAX {
            self.refusals.push(super::report_text(&format!("{entry}: {reason}")));
        }
    }

    fn push(&mut self, entry: &str, step: SourceStep) {
        self.steps.push(PlannedStep { entry: entry.to_string(), step });
    }
}

/// An entry's fields, as the mapping reads them.
struct Mapped {
    spec: UserSpec,
    /// `None` when skills are not mapped (then a user's own are kept).
    skills: Option<BTreeMap<String, u32>>,
    /// Workgroup keys, `None` when not mapped.
    workgroups: Option<BTreeSet<String>>,
}

/// The plan that brings our directory in line with `entries`.
pub fn plan(state: &State, settings: &LdapSettings, entries: &[DirectoryEntry]) -> Plan {
    let mut plan = Plan { seen: entries.len() as u64, ..Plan::default() };
    let (owned, deactivated) = match &state.source {
        Some(source) => (source.owned.clone(), source.deactivated.clone()),
        None => Default::default(),
    };
    let mut emails_seen = BTreeSet::new();
    let mut users_seen = BTreeSet::new();
    let mut usernames_created = BTreeSet::new();
    for entry in entries {
        let mapped = match map(state, &settings.mapping, entry) {
            Ok(mapped) => mapped,
            Err(reason) => {
                plan.refuse(&entry.dn, reason);
                continue;
            }
        };
        let email_key = key_of(&mapped.spec.email);
        if !emails_seen.insert(email_key.clone()) {
            plan.refuse(&entry.dn, format!("email {} is also another entry's", mapped.spec.email));
            continue;
        }
        if let Err(unknown) = known_workgroups(state, &mapped.workgroups) {
            plan.refuse(&entry.dn, format!("workgroup {unknown:?} does not exist"));
            continue;
        }
        match state.emails.get(email_key.as_str()).and_then(|key| state.users.get(key)) {
            Some(user) => {
                let user_key = key_of(&user.username);
                users_seen.insert(user_key.clone());
                plan_existing(&mut plan, entry, user, mapped, &owned, deactivated.contains(&user_key));
            }
            None => {
                let username_key = key_of(&mapped.spec.username);
                if let Some(other) = state.users.get(username_key.as_str()) {
                    plan.refuse(
                        &entry.dn,
                        format!("username {} is taken by the user with email {}", other.username, other.email),
                    );
                    continue;
                }
                if !usernames_created.insert(username_key) {
                    plan.refuse(&entry.dn, format!("username {} is also another entry's", mapped.spec.username));
                    continue;
                }
                plan_new(&mut plan, entry, mapped);
            }
        }
    }
    let missing: Vec<&String> = owned.iter().filter(|key| !users_seen.contains(*key)).collect();
    if entries.is_empty() && !missing.is_empty() {
        // An empty answer is far likelier a wrong base DN or filter than everyone leaving.
        plan.refuse("(directory)", "the search returned no entries: nobody was deactivated or deleted");
        return plan;
    }
    for key in missing {
        let Some(user) = state.users.get(key.as_str()) else { continue };
        let username = user.username.clone();
        match settings.on_missing {
            OnMissing::Delete => plan.push(&username.clone(), SourceStep::Delete { username }),
            OnMissing::Deactivate if deactivated.contains(key) => continue,
            OnMissing::Deactivate => plan.push(&username.clone(), SourceStep::Deactivate { username }),
        }
        plan.removes += 1;
    }
    plan
}

/// A user the directory has and we do not.
fn plan_new(plan: &mut Plan, entry: &DirectoryEntry, mapped: Mapped) {
    let username = mapped.spec.username.clone();
    let spec = UserSpec { skills: mapped.skills.unwrap_or_default(), ..mapped.spec };
    if let Err(rejection) = crate::validate::validate_user(&spec) {
        plan.refuse(&entry.dn, rejection);
        return;
    }
    plan.push(&entry.dn, SourceStep::Create(spec));
    for workgroup in mapped.workgroups.unwrap_or_default() {
        plan.push(&entry.dn, SourceStep::Join { username: username.clone(), workgroup });
    }
    plan.creates += 1;
}

/// A user matched by email: its fields, memberships and activation brought in line.
fn plan_existing(
    plan: &mut Plan,
    entry: &DirectoryEntry,
    user: &User,
    mapped: Mapped,
    owned: &BTreeSet<String>,
    deactivated: bool,
) {
    let spec = UserSpec {
        // Our username stays: users are matched by email, and a rename is not a poll's to make.
        username: user.username.clone(),
        skills: mapped.skills.unwrap_or_else(|| user.skills.iter().map(|(k, v)| (k.clone(), *v)).collect()),
        licences: user.licences.iter().cloned().collect(),
        ..mapped.spec
    };
    if let Err(rejection) = crate::validate::validate_user(&spec) {
        plan.refuse(&entry.dn, rejection);
        return;
    }
    let before = plan.steps.len();
    let unchanged = User::from_spec(&spec, user.username.clone(), user.workgroups.clone()) == *user;
    if !unchanged {
        plan.push(&entry.dn, SourceStep::Update(spec));
    } else if !owned.contains(&key_of(&user.username)) {
        plan.push(&entry.dn, SourceStep::Claim { username: user.username.clone() });
    }
    if deactivated {
        plan.push(&entry.dn, SourceStep::Reactivate { username: user.username.clone() });
    }
    if let Some(wanted) = mapped.workgroups {
        let current: BTreeSet<String> = user.workgroups.iter().cloned().collect();
        for workgroup in wanted.difference(&current) {
            plan.push(&entry.dn, SourceStep::Join { username: user.username.clone(), workgroup: workgroup.clone() });
        }
        for workgroup in current.difference(&wanted) {
            plan.push(&entry.dn, SourceStep::Leave { username: user.username.clone(), workgroup: workgroup.clone() });
        }
    }
    let changed = plan.steps[before..].iter().any(|planned| !matches!(planned.step, SourceStep::Claim { .. }));
    if changed {
        plan.updates += 1;
    }
}

/// Every named workgroup exists (returns the first that does not).
fn known_workgroups(state: &State, workgroups: &Option<BTreeSet<String>>) -> Result<(), String> {
    match workgroups.iter().flatten().find(|key| !state.workgroups.contains_key(key.as_str())) {
        Some(unknown) => Err(unknown.clone()),
        None => Ok(()),
    }
}

/// Reads an entry through the mapping; the reason names the field that is missing or wrong.
fn map(state: &State, mapping: &Mapping, entry: &DirectoryEntry) -> Result<Mapped, String> {
    let one = |field: &str, source: &str| -> Result<String, String> {
        values(entry, source)
            .into_iter()
            .next()
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
            .ok_or_else(|| format!("no {source} for our {field}"))
    };
    let username = one("username", &mapping.username)?;
    let email = one("email", &mapping.email)?;
    let display_name =
        if mapping.display_name.is_empty() { None } else { one("display_name", &mapping.display_name).ok() };
    let site = one("home_site", &mapping.home_site)?;
    let home_site = match site.parse::<u32>() {
        Ok(id) if state.sites.contains_key(&id) => id,
        _ => *state
            .site_names
            .get(&site.to_lowercase())
            .ok_or_else(|| format!("home site {site:?} is not a site id or name of the collective"))?,
    };
    let extension: String = one("extension", &mapping.extension)?.chars().filter(char::is_ascii_digit).collect();
    let skills = if mapping.skills.is_empty() {
        None
    } else {
        let mut skills = BTreeMap::new();
        for value in values(entry, &mapping.skills) {
            let parsed =
                value.split_once('=').and_then(|(name, level)| Some((name.trim(), level.trim().parse().ok()?)));
            match parsed {
                Some((name, level)) if !name.is_empty() => skills.insert(name.to_string(), level),
                _ => return Err(format!("skill {value:?} is not name=level")),
            };
        }
        Some(skills)
    };
    let workgroups = if mapping.workgroups.is_empty() {
        None
    } else {
        Some(values(entry, &mapping.workgroups).iter().map(|value| key_of(group_name(value))).collect())
    };
    Ok(Mapped {
        spec: UserSpec {
            display_name: display_name.unwrap_or_else(|| username.clone()),
            username,
            email,
            home_site,
            extension,
            skills: BTreeMap::new(),
            licences: BTreeSet::new(),
        },
        skills,
        workgroups,
    })
}

/// The values `source` gives for an entry: an attribute's, or the DN part's for `dn:TYPE`.
fn values<'a>(entry: &'a DirectoryEntry, source: &str) -> Vec<&'a str> {
    match source.strip_prefix("dn:") {
        Some(kind) => dn_parts(&entry.dn)
            .find(|(part_kind, _)| part_kind.eq_ignore_ascii_case(kind))
            .map(|(_, value)| vec![value])
            .unwrap_or_default(),
        None => entry
            .attributes
            .get(&source.to_ascii_lowercase())
            .map(|values| values.iter().map(String::as_str).collect())
            .unwrap_or_default(),
    }
}

/// A DN's parts, `(type, value)`, most specific first (escaped commas are not split on).
fn dn_parts(dn: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut parts = Vec::new();
    let mut start = 0;
    let bytes = dn.as_bytes();
    for (i, byte) in bytes.iter().enumerate() {
        if *byte == b',' && (i == 0 || bytes[i - 1] != b'\\') {
            parts.push(&dn[start..i]);
            start = i + 1;
        }
    }
    parts.push(&dn[start..]);
    parts.into_iter().filter_map(|part| part.split_once('=')).map(|(kind, value)| (kind.trim(), value.trim()))
}

/// A workgroup named by an entry: a plain name, or a group's DN (`cn=Support,ou=groups,…`).
fn group_name(value: &str) -> &str {
    match dn_parts(value).next() {
        Some((_, name)) if value.contains('=') => name,
        _ => value.trim(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_parts_and_group_names() {
        let parts: Vec<_> = dn_parts("uid=ada,ou=Paris,dc=example,dc=com").collect();
        assert_eq!(parts[0], ("uid", "ada"));
        assert_eq!(parts[1], ("ou", "Paris"));
        assert_eq!(group_name("cn=Support,ou=groups,dc=example,dc=com"), "Support");
        assert_eq!(group_name(" Sales "), "Sales");
        let escaped: Vec<_> = dn_parts(r"cn=Smith\, Ann,ou=2").collect();
        assert_eq!(escaped[0], ("cn", r"Smith\, Ann"));
    }
}
