//! A user of the collective: an agent or any other person with an extension.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::site::SiteId;
use crate::small::{VecMap, VecSet};

mod rules;

/// A user as the collective stores it. Usernames are unique case-insensitively; the stored
/// form keeps the case it was created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Unique username.
    pub username: String,
    /// Name shown in directories.
    pub display_name: String,
    /// Unique email address (Status Aggregator matched users by it).
    pub email: String,
    /// The site where the user is configured.
    pub home_site: SiteId,
    /// Extension, 2..=15 digits.
    pub extension: String,
    /// Skill name → level 1..=100.
    pub skills: VecMap<String, u32>,
    /// Licences (the home site's terms apply while roaming).
    pub licences: VecSet<String>,
    /// Workgroups the user is a member of, by lowercase name.
    pub workgroups: VecSet<String>,
}

/// The fields a caller supplies to create or update a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    /// Unique username.
    pub username: String,
    /// Name shown in directories.
    pub display_name: String,
    /// Unique email address.
    pub email: String,
    /// Home site id.
    pub home_site: SiteId,
    /// Extension, 2..=15 digits.
    pub extension: String,
    /// Skill name → level 1..=100.
    pub skills: BTreeMap<String, u32>,
    /// Licences.
    pub licences: BTreeSet<String>,
}

impl User {
    /// A user with the caller-supplied fields of `spec`, the given stored username and memberships.
    pub fn from_spec(spec: &UserSpec, username: String, workgroups: VecSet<String>) -> User {
        User {
            username,
            display_name: spec.display_name.clone(),
            email: spec.email.clone(),
            home_site: spec.home_site,
            extension: spec.extension.clone(),
            skills: spec.skills.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            licences: spec.licences.iter().cloned().collect(),
            workgroups,
        }
    }
}

/// The canonical key of a case-insensitive name.
pub fn key_of(name: &str) -> String {
    name.to_lowercase()
}

/// `key_of` for a lookup: borrowed when the name already is its key (lowercase ASCII, as most
/// names are), so the lookups each applied write makes on every member copy nothing.
pub fn key_ref(name: &str) -> std::borrow::Cow<'_, str> {
    if name.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        std::borrow::Cow::Borrowed(name)
    } else {
        std::borrow::Cow::Owned(name.to_lowercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ref_is_key_of_and_borrows_names_that_are_their_key() {
        for name in ["alice", "Alice", "ALICE.SMITH@x", "jürgen", "JÜRGEN", "İlker", "émile-2", ""] {
            assert_eq!(key_ref(name), key_of(name), "{name}");
        }
        assert!(matches!(key_ref("bench42"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(key_ref("Bench42"), std::borrow::Cow::Owned(_)));
    }
}
