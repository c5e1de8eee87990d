//! `State`: the materialised views of the collective, their accessors and invariants. `apply.rs`
//! advances them; each concept's file holds the rules for its part.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{seed_catalog, StatusDef};
use crate::lease::Lease;
use crate::messaging::Messaging;
use crate::presence::{Presence, StatusDeadlines};
use crate::rejection::Rejection;
use crate::routing::Routing;
use crate::site::{Site, SiteId};
use crate::small::{Name, VecSet};
use crate::sorted_map::SortedMap;
use crate::user::{key_of, key_ref, User};
use crate::workgroup::Workgroup;

/// The whole replicated state. Every map iterates in key order (a `BTreeMap`, or a `SortedMap`
/// for those every write looks up by name) so iteration order never depends on hashing, and the
/// snapshot bytes of equal states are equal.
///
/// Serde goes through `remote = "Self"` so that deserialising (a snapshot, a fixture) rebuilds
/// the derived routing index before anyone reads the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct State {
    /// Revision of the last event; 0 before the first.
    pub revision: u64,
    /// Entry time of the last applied command.
    pub last_at_ms: u64,
    /// Sites by id.
    pub sites: BTreeMap<SiteId, Site>,
    /// Lowercase site name → id.
    pub site_names: BTreeMap<String, SiteId>,
    /// Users by lowercase username.
    pub users: SortedMap<Name, User>,
    /// Lowercase email → lowercase username.
    pub emails: BTreeMap<Name, Name>,
    /// Extension → lowercase usernames that have it.
    pub extensions: BTreeMap<Name, VecSet<Name>>,
    /// Workgroups by lowercase name.
    pub workgroups: BTreeMap<String, Workgroup>,
    /// Status catalog by key.
    pub catalog: SortedMap<String, StatusDef>,
    /// Presence by lowercase username; exactly one per user.
    pub presence: SortedMap<Name, Presence>,
    /// Live site leases by site id.
    #[serde(default)]
    pub leases: BTreeMap<SiteId, Lease>,
    /// Inter-site message queues, open requests and notes.
    #[serde(default)]
    pub messaging: Messaging,
    /// Interactions, routing settings and statistics.
    #[serde(default)]
    pub routing: Routing,
    /// Imports being staged, by id.
    #[serde(default)]
    pub imports: BTreeMap<String, crate::config::StagedImport>,
    /// Alert rules and the history of raised and cleared alerts.
    #[serde(default)]
    pub alerts: crate::alert::Alerts,
    /// The directory source (LDAP), if one is configured.
    #[serde(default)]
    pub source: Option<crate::source::DirectorySource>,
    /// Derived: the statuses whose `until` is still ahead (`presence.rs`), rebuilt on load.
    #[serde(skip)]
    pub status_deadlines: StatusDeadlines,
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        State::serialize(self, serializer)
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut state = State::deserialize(deserializer)?;
        state.rebuild_routing_index();
        state.status_deadlines = StatusDeadlines::of(&state.presence);
        Ok(state)
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl State {
    /// A new collective: no sites or users, the vendor's status catalog.
    pub fn new() -> State {
        State {
            revision: 0,
            last_at_ms: 0,
            sites: BTreeMap::new(),
            site_names: BTreeMap::new(),
            users: SortedMap::new(),
            emails: BTreeMap::new(),
            extensions: BTreeMap::new(),
            workgroups: BTreeMap::new(),
            catalog: seed_catalog().into_iter().map(|def| (def.key.clone(), def)).collect(),
            presence: SortedMap::new(),
            leases: BTreeMap::new(),
            messaging: Messaging::default(),
            routing: Routing::default(),
            imports: BTreeMap::new(),
            source: None,
            alerts: Default::default(),
            status_deadlines: StatusDeadlines::default(),
        }
    }

    /// The earliest entry time at which a lease, note, request or status ends, or the alert rules
    /// are next evaluated, if any: the leader proposes a `Tick` once its clock passes it.
    pub fn next_timer_ms(&self) -> Option<u64> {
        let leases = self.leases.values().map(|lease| lease.expires_at_ms).min();
        let imports =
            self.imports.values().map(|staged| staged.started_at_ms + crate::config::IMPORT_STAGING_TTL_MS).min();
        [
            leases,
            self.messaging.next_expiry_ms(),
            self.routing.index.next_deadline_ms(),
            imports,
            self.status_deadlines.first_ms(),
            self.next_alert_evaluation_ms(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether a user (by lowercase key) is a member of at least one spanning workgroup.
    pub fn is_spanning(&self, user_key: &str) -> bool {
        self.users
            .get(user_key)
            .is_some_and(|user| user.workgroups.iter().any(|wg| self.workgroups.get(wg).is_some_and(|w| w.spans_sites)))
    }

    /// The user with this username, case-insensitively.
    pub fn user(&self, username: &str) -> Result<&User, Rejection> {
        self.users.get(&*key_ref(username)).ok_or_else(|| Rejection::not_found("user", username))
    }

    /// The site with this id.
    pub fn site(&self, id: SiteId) -> Result<&Site, Rejection> {
        self.sites.get(&id).ok_or_else(|| Rejection::not_found("site", id))
    }

    /// The workgroup with this name, case-insensitively.
    pub fn workgroup(&self, name: &str) -> Result<&Workgroup, Rejection> {
        self.workgroups.get(&key_of(name)).ok_or_else(|| Rejection::not_found("workgroup", name))
    }

    /// Checks every invariant of the views; panics with the numbers that broke one. Tests and
    /// simulations call it after every apply.
    pub fn check_invariants(&self) {
        let deadlines = StatusDeadlines::of(&self.presence);
        assert!(
            self.status_deadlines == deadlines,
            "the status deadline index holds {} users, a rebuild {}",
            self.status_deadlines.len(),
            deadlines.len()
        );
        assert!(self.imports.len() <= crate::config::IMPORTS_STAGED_MAX, "{} imports staged", self.imports.len());
        self.check_messaging_invariants();
        self.check_routing_invariants();
        if let Some(source) = &self.source {
            for key in &source.owned {
                assert!(self.users.contains_key(key.as_str()), "the directory source owns {key:?}, no user");
            }
            for key in &source.deactivated {
                assert!(source.owned.contains(key), "the directory source deactivated {key:?}, which it does not own");
                let logged_on = self.presence[key.as_str()].logon.is_some();
                assert!(!logged_on, "{key:?} is deactivated and logged on");
            }
        }
        assert_eq!(
            self.site_names.len(),
            self.sites.len(),
            "site_names has {} entries for {} sites",
            self.site_names.len(),
            self.sites.len()
        );
        for (name, id) in &self.site_names {
            assert_eq!(key_of(&self.sites[id].name), *name, "site_names maps {name:?} to site {id}");
        }
        assert_eq!(
            self.presence.len(),
            self.users.len(),
            "{} presence entries for {} users",
            self.presence.len(),
            self.users.len()
        );
        assert_eq!(
            self.emails.len(),
            self.users.len(),
            "{} email index entries for {} users",
            self.emails.len(),
            self.users.len()
        );
        let indexed: usize = self.extensions.values().map(VecSet::len).sum();
        assert_eq!(indexed, self.users.len(), "{indexed} extension index entries for {} users", self.users.len());
        for (user_key, user) in &self.users {
            assert_eq!(*user_key, key_of(&user.username), "user key {user_key:?} for {:?}", user.username);
            assert!(
                self.sites.contains_key(&user.home_site),
                "user {} homed at missing site {}",
                user.username,
                user.home_site
            );
            assert_eq!(self.emails.get(&*key_ref(&user.email)), Some(user_key), "email index of {}", user.username);
            assert!(
                self.extensions[user.extension.as_str()].contains(user_key),
                "extension index of {}",
                user.username
            );
            for wg in &user.workgroups {
                assert!(
                    self.workgroups.get(wg).is_some_and(|w| w.members.contains(user_key.as_str())),
                    "user {} lists workgroup {wg} that lacks it",
                    user.username
                );
            }
            let presence = &self.presence[user_key];
            assert!(
                self.catalog.contains_key(&presence.status_key),
                "user {} in unknown status {:?}",
                user.username,
                presence.status_key
            );
            assert!(
                self.catalog.get(&presence.last_persistent_status).is_some_and(|d| d.persistent),
                "user {} falls back to {:?}, which is not a persistent status",
                user.username,
                presence.last_persistent_status
            );
            assert!(
                presence.revision <= self.revision,
                "presence revision {} > state revision {}",
                presence.revision,
                self.revision
            );
            if let Some(logon) = &presence.logon {
                assert!(
                    self.sites.contains_key(&logon.site),
                    "user {} logged on at missing site {}",
                    user.username,
                    logon.site
                );
            }
            let spanning = self.is_spanning(user_key);
            for other_key in self.extensions[user.extension.as_str()].iter().filter(|other| *other != user_key) {
                let other = &self.users[other_key];
                assert!(
                    !(spanning || self.is_spanning(other_key) || other.home_site == user.home_site),
                    "extension {} is ambiguous between {} (site {}) and {} (site {})",
                    user.extension,
                    user.username,
                    user.home_site,
                    other.username,
                    other.home_site
                );
            }
        }
        for (id, site) in &self.sites {
            assert_eq!(*id, site.id, "site keyed {id} has id {}", site.id);
        }
        for (site, lease) in &self.leases {
            assert!(self.sites.contains_key(site), "lease of missing site {site}");
            assert!(lease.expires_at_ms >= lease.granted_at_ms, "lease of site {site} expires before it was granted");
        }
        for (wg_key, workgroup) in &self.workgroups {
            assert_eq!(*wg_key, key_of(&workgroup.name), "workgroup keyed {wg_key:?} is named {:?}", workgroup.name);
            for member in &workgroup.members {
                assert!(
                    self.users.get(member.as_str()).is_some_and(|u| u.workgroups.contains(wg_key)),
                    "workgroup {wg_key} lists member {member} that lacks it"
                );
            }
        }
    }
}
