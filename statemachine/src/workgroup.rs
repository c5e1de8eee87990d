//! A workgroup: a named set of users; a spanning workgroup replicates its members to every site.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

mod rules;

/// A workgroup as the collective stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workgroup {
    /// Unique name (compared case-insensitively).
    pub name: String,
    /// Whether members are visible at, and dial unambiguously from, every site.
    pub spans_sites: bool,
    /// Members, by lowercase username.
    pub members: BTreeSet<String>,
    /// Skills an agent needs to take this workgroup's interactions (name → minimum level).
    pub required_skills: BTreeMap<String, u32>,
}
