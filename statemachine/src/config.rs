//! Configuration export and import (the vendor's Interaction Migrator): a [`ConfigSet`] of
//! sites, statuses, users, workgroups and routing settings, taken from a state with the closure of
//! what it depends on, and merged into (migration) or made the content of (recovery) another
//! collective as one command.
//!
//! An import is planned by applying its steps, in dependency order, to a scratch copy of the
//! state with the same rules as any command: every conflict (an extension collision, a site id
//! taken by another name, a missing dependency) is found and named, and nothing is applied
//! unless there is none. The events of the steps then fold into the real state in one log entry,
//! so a reader sees the collective before or after the import, never half of it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::StatusDef;
use crate::notes::NoteValue;
use crate::routing::Settings;
use crate::site::{Site, SiteId};
use crate::user::{key_of, UserSpec};

pub(crate) mod rules;

/// Most conflicts one import reports (the count says how many there were).
pub const IMPORT_CONFLICTS_REPORTED_MAX: usize = 100;
/// Imports being staged at once.
pub const IMPORTS_STAGED_MAX: usize = 4;
/// Most parts of one staged import.
pub const IMPORT_PARTS_MAX: u32 = 10_000;
/// Most entities (sites, statuses, users, workgroup members, settings, costs) in one part:
/// a part is one log entry, and openraft 0.9 gives an AppendEntries only the heartbeat
/// interval (250 ms) to be sent and fsynced, so entries must stay around a megabyte.
pub const IMPORT_PART_ENTITIES_MAX: usize = 4_000;
/// A staged import not committed within this long is discarded by a `Tick`.
pub const IMPORT_STAGING_TTL_MS: u64 = 3_600_000;

/// An import being uploaded in parts (each part one log entry); committing it applies the
/// assembled configuration in one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedImport {
    /// Entry time of the first part.
    pub started_at_ms: u64,
    /// The parts by number.
    pub parts: BTreeMap<u32, ConfigSet>,
}

impl StagedImport {
    /// The parts joined in order (a workgroup split over parts has its members joined).
    pub fn assembled(&self) -> ConfigSet {
        let mut set = ConfigSet::default();
        let mut workgroups: BTreeMap<String, usize> = BTreeMap::new();
        for part in self.parts.values() {
            set.complete.extend(part.complete.iter().copied());
            set.sites.extend(part.sites.iter().cloned());
            set.statuses.extend(part.statuses.iter().cloned());
            set.users.extend(part.users.iter().cloned());
            for workgroup in &part.workgroups {
                match workgroups.get(&key_of(&workgroup.name)) {
                    Some(&at) => set.workgroups[at].members.extend(workgroup.members.iter().cloned()),
                    None => {
                        workgroups.insert(key_of(&workgroup.name), set.workgroups.len());
                        set.workgroups.push(workgroup.clone());
                    }
                }
            }
            set.routing_settings.extend(part.routing_settings.iter().cloned());
            set.route_costs.extend(part.route_costs.iter().cloned());
            set.notes.extend(part.notes.iter().cloned());
        }
        set
    }

    /// How many entities the parts hold.
    pub fn entities(&self) -> usize {
        self.parts.values().map(ConfigSet::entities).sum()
    }
}

/// What can be exported and imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Category {
    /// Sites, with their password hashes and trusted access.
    Sites,
    /// The status catalog.
    Statuses,
    /// Users (needs their home sites).
    Users,
    /// Workgroups and their members (needs the members).
    Workgroups,
    /// Routing settings and route costs (needs the workgroups and sites).
    Routing,
    /// Notes with their attributes and time to live (needs their sites).
    Notes,
}

impl Category {
    /// Every category, in dependency order.
    pub const ALL: [Category; 6] = [
        Category::Sites,
        Category::Statuses,
        Category::Users,
        Category::Workgroups,
        Category::Routing,
        Category::Notes,
    ];

    /// The name the API and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Sites => "sites",
            Category::Statuses => "statuses",
            Category::Users => "users",
            Category::Workgroups => "workgroups",
            Category::Routing => "routing",
            Category::Notes => "notes",
        }
    }

    /// Parses a category name, case-insensitively.
    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|category| category.as_str().eq_ignore_ascii_case(text.trim()))
    }
}

/// How an import treats what the collective already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImportMode {
    /// Create what is missing, update what matches by natural key, delete nothing.
    Migration,
    /// Also make the file's complete categories exactly its content: users and workgroups not in
    /// the file are deleted, memberships removed, route costs cleared, settings reset, sites not
    /// in the file deactivated (sites and statuses are never deleted).
    Recovery,
}

/// A workgroup with its members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkgroupConfig {
    /// Name.
    pub name: String,
    /// Whether members span sites.
    pub spans_sites: bool,
    /// Required skills.
    pub required_skills: BTreeMap<String, u32>,
    /// Members, by username.
    pub members: Vec<String>,
}

/// A workgroup's routing settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkgroupSettings {
    /// The workgroup.
    pub workgroup: String,
    /// Its settings.
    pub settings: Settings,
}

/// A route cost between two sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteCost {
    /// Origin site.
    pub from: SiteId,
    /// Agent site.
    pub to: SiteId,
    /// Cost in ms of idle time.
    pub cost: u32,
}

/// A note and the site it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteNote {
    /// The site.
    pub site: SiteId,
    /// Name and attributes.
    pub value: NoteValue,
    /// When it expires (ms since the epoch); `None`: never.
    pub expires_at_ms: Option<u64>,
}

/// Exported configuration. Every list is sorted by its natural key, so equal configurations
/// encode to equal bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSet {
    /// Categories held completely (chosen at export); others hold only what those depend on.
    pub complete: BTreeSet<Category>,
    /// Sites by id.
    pub sites: Vec<Site>,
    /// Statuses by key.
    pub statuses: Vec<StatusDef>,
    /// Users by lowercase username.
    pub users: Vec<UserSpec>,
    /// Workgroups by lowercase name.
    pub workgroups: Vec<WorkgroupConfig>,
    /// Routing settings by lowercase workgroup name.
    pub routing_settings: Vec<WorkgroupSettings>,
    /// Route costs by (from, to).
    pub route_costs: Vec<RouteCost>,
    /// Notes by (site, name).
    #[serde(default)]
    pub notes: Vec<SiteNote>,
}

impl ConfigSet {
    /// Entities held, counting each workgroup member.
    pub fn entities(&self) -> usize {
        self.sites.len()
            + self.statuses.len()
            + self.users.len()
            + self.workgroups.iter().map(|w| 1 + w.members.len()).sum::<usize>()
            + self.routing_settings.len()
            + self.route_costs.len()
            + self.notes.len()
    }

    /// Splits the set into parts of at most [`IMPORT_PART_ENTITIES_MAX`] entities, in order; a
    /// large workgroup's members spread over several parts. [`StagedImport::assembled`] joins
    /// them back.
    pub fn split(&self) -> Vec<ConfigSet> {
        let empty = || ConfigSet { complete: self.complete.clone(), ..ConfigSet::default() };
        let mut parts = vec![empty()];
        let mut weight = 0;
        let room = |parts: &mut Vec<ConfigSet>, weight: &mut usize| {
            // One short of the bound: a part that starts inside a workgroup's members repeats
            // the workgroup itself, which counts too.
            if *weight >= IMPORT_PART_ENTITIES_MAX - 1 {
                parts.push(empty());
                *weight = 0;
            }
            *weight += 1;
        };
        for site in &self.sites {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").sites.push(site.clone());
        }
        for status in &self.statuses {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").statuses.push(status.clone());
        }
        for user in &self.users {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").users.push(user.clone());
        }
        for workgroup in &self.workgroups {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").workgroups.push(WorkgroupConfig { members: vec![], ..workgroup.clone() });
            for member in &workgroup.members {
                room(&mut parts, &mut weight);
                let part = parts.last_mut().expect("a part");
                if part.workgroups.last().is_none_or(|w| w.name != workgroup.name) {
                    part.workgroups.push(WorkgroupConfig { members: vec![], ..workgroup.clone() });
                }
                part.workgroups.last_mut().expect("pushed").members.push(member.clone());
            }
        }
        for settings in &self.routing_settings {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").routing_settings.push(settings.clone());
        }
        for cost in &self.route_costs {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").route_costs.push(*cost);
        }
        for note in &self.notes {
            room(&mut parts, &mut weight);
            parts.last_mut().expect("a part").notes.push(note.clone());
        }
        parts
    }

    /// Entities per category, for reports.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("sites", self.sites.len()),
            ("statuses", self.statuses.len()),
            ("users", self.users.len()),
            ("workgroups", self.workgroups.len()),
            ("routing_settings", self.routing_settings.len()),
            ("route_costs", self.route_costs.len()),
            ("notes", self.notes.len()),
        ])
    }
}
