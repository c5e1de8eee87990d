//! The eligible agents, ordered the ways the strategies read them.
//!
//! One [`Pool`] per workgroup holds the workgroup's eligible members in five orderings: by idle
//! time, by idle time per site, by idle time per skill, by level per skill, and by username. An
//! agent in several workgroups is in each of their pools; the [`Agent`] record itself is kept once.
//! The index is derived data: the state machine rebuilds it from the views after a snapshot.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::SiteId;

/// An eligible agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// Lowercase username.
    pub key: Arc<str>,
    /// The site the agent is logged on at.
    pub site: SiteId,
    /// Entry time (ms) since which the agent has been idle: its last presence change.
    pub idle_since_ms: u64,
    /// Skill name → level.
    pub skills: Arc<BTreeMap<String, u32>>,
}

impl Agent {
    /// Whether the agent has every skill at or above the required level.
    pub fn has_skills(&self, required: &BTreeMap<String, u32>) -> bool {
        required.iter().all(|(skill, level)| self.skills.get(skill).is_some_and(|have| have >= level))
    }

    /// The sum of the agent's levels in the required skills (the most-skilled sort key).
    pub fn skill_score(&self, required: &BTreeMap<String, u32>) -> u32 {
        required.keys().filter_map(|skill| self.skills.get(skill)).sum()
    }
}

/// An idle-ordered entry: longest idle (earliest `idle_since_ms`) first, then username.
pub type IdleEntry = (u64, Arc<str>);
/// A level-ordered entry: highest level first, then longest idle, then username.
pub type LevelEntry = (Reverse<u32>, u64, Arc<str>);

/// The eligible agents of one workgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pool {
    /// Every eligible agent, longest idle first.
    pub by_idle: BTreeSet<IdleEntry>,
    /// Per site, longest idle first.
    pub by_site: BTreeMap<SiteId, BTreeSet<IdleEntry>>,
    /// Per skill (agents having it at any level), longest idle first.
    pub by_skill: BTreeMap<String, BTreeSet<IdleEntry>>,
    /// Per skill, highest level first.
    pub by_level: BTreeMap<String, BTreeSet<LevelEntry>>,
    /// Every eligible agent, by username (round robin).
    pub by_key: BTreeSet<Arc<str>>,
}

impl Pool {
    /// Number of eligible agents.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no agent is eligible.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    fn insert(&mut self, agent: &Agent) {
        let idle: IdleEntry = (agent.idle_since_ms, agent.key.clone());
        self.by_idle.insert(idle.clone());
        self.by_site.entry(agent.site).or_default().insert(idle.clone());
        for (skill, level) in agent.skills.iter() {
            self.by_skill.entry(skill.clone()).or_default().insert(idle.clone());
            self.by_level.entry(skill.clone()).or_default().insert((
                Reverse(*level),
                agent.idle_since_ms,
                agent.key.clone(),
            ));
        }
        self.by_key.insert(agent.key.clone());
    }

    fn remove(&mut self, agent: &Agent) {
        let idle: IdleEntry = (agent.idle_since_ms, agent.key.clone());
        self.by_idle.remove(&idle);
        remove_from(&mut self.by_site, &agent.site, &idle);
        for (skill, level) in agent.skills.iter() {
            remove_from(&mut self.by_skill, skill, &idle);
            remove_from(&mut self.by_level, skill, &(Reverse(*level), agent.idle_since_ms, agent.key.clone()));
        }
        self.by_key.remove(&agent.key);
    }
}

/// Removes `entry` from the set under `key`, and the set once it is empty (so a pool's maps
/// never grow with sites or skills nobody eligible has).
fn remove_from<K: Ord + Clone, E: Ord>(map: &mut BTreeMap<K, BTreeSet<E>>, key: &K, entry: &E) {
    if let Some(set) = map.get_mut(key) {
        set.remove(entry);
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Every eligible agent and the pools of the workgroups it is in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Index {
    agents: BTreeMap<Arc<str>, (Agent, BTreeSet<String>)>,
    pools: BTreeMap<String, Pool>,
}

impl Index {
    /// Adds `agent` to the pools of `workgroups` (lowercase names), replacing any previous
    /// record of the same agent.
    pub fn insert(&mut self, agent: Agent, workgroups: BTreeSet<String>) {
        self.remove(&agent.key);
        for workgroup in &workgroups {
            self.pools.entry(workgroup.clone()).or_default().insert(&agent);
        }
        self.agents.insert(agent.key.clone(), (agent, workgroups));
    }

    /// Removes the agent from every pool; returns whether it was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some((agent, workgroups)) = self.agents.remove(key) else { return false };
        for workgroup in &workgroups {
            if let Some(pool) = self.pools.get_mut(workgroup) {
                pool.remove(&agent);
                if pool.is_empty() {
                    self.pools.remove(workgroup);
                }
            }
        }
        true
    }

    /// The eligible agent with this lowercase username.
    pub fn agent(&self, key: &str) -> Option<&Agent> {
        self.agents.get(key).map(|(agent, _)| agent)
    }

    /// The workgroups an eligible agent is indexed under.
    pub fn workgroups_of(&self, key: &str) -> Option<&BTreeSet<String>> {
        self.agents.get(key).map(|(_, workgroups)| workgroups)
    }

    /// The pool of a workgroup (lowercase name); `None` when nobody in it is eligible.
    pub fn pool(&self, workgroup: &str) -> Option<&Pool> {
        self.pools.get(workgroup)
    }

    /// Every eligible agent, by username.
    pub fn agents(&self) -> impl Iterator<Item = &Agent> {
        self.agents.values().map(|(agent, _)| agent)
    }

    /// Number of eligible agents.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether no agent is eligible.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// Checks that every pool holds exactly the agents indexed under its workgroup, in every
    /// ordering; panics naming the first difference. Tests and simulations call it.
    pub fn check(&self) {
        let mut expected: BTreeMap<&str, Pool> = BTreeMap::new();
        for (agent, workgroups) in self.agents.values() {
            for workgroup in workgroups {
                expected.entry(workgroup).or_default().insert(agent);
            }
        }
        assert_eq!(
            expected.keys().copied().collect::<Vec<_>>(),
            self.pools.keys().map(String::as_str).collect::<Vec<_>>(),
            "pools exist for other workgroups than the agents are in"
        );
        for (workgroup, pool) in &self.pools {
            assert!(expected[workgroup.as_str()] == *pool, "pool of workgroup {workgroup} differs from its agents");
        }
    }
}
