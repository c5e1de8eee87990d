//! Selection: a table of cases per strategy and the site rules, each checked through the
//! indexed `select` and the reference `select_among`; then random pools where the two must agree.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use collective_routing::{select, select_among, Agent, Context, Index, Request, Settings, Strategy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const NOW: u64 = 1_000_000;

/// An agent: username, site, idle for `idle_s` seconds, skills.
fn agent(key: &str, site: u32, idle_s: u64, skills: &[(&str, u32)]) -> Agent {
    Agent {
        key: Arc::from(key),
        site,
        idle_since_ms: NOW - idle_s * 1_000,
        skills: Arc::new(skills.iter().map(|(s, l)| (s.to_string(), *l)).collect()),
    }
}

struct Case {
    name: &'static str,
    agents: Vec<Agent>,
    strategy: Strategy,
    margin_s: u64,
    origin: u32,
    skills: &'static [(&'static str, u32)],
    costs: &'static [((u32, u32), u32)],
    dead_sites: &'static [u32],
    exclude: &'static [&'static str],
    cursor: Option<&'static str>,
    winner: Option<&'static str>,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            name: "",
            agents: vec![],
            strategy: Strategy::LongestIdle,
            margin_s: 0,
            origin: 1,
            skills: &[],
            costs: &[],
            dead_sites: &[],
            exclude: &[],
            cursor: None,
            winner: None,
        }
    }
}

/// Runs one case through both the index and the reference ranking.
fn check(case: Case) {
    let mut index = Index::default();
    for agent in &case.agents {
        index.insert(agent.clone(), ["wg".to_string()].into());
    }
    index.check();
    let settings = Settings { strategy: case.strategy, local_margin_ms: case.margin_s * 1_000, ..Settings::default() };
    let costs: BTreeMap<(u32, u32), u32> = case.costs.iter().copied().collect();
    let cost = |from: u32, to: u32| costs.get(&(from, to)).copied().unwrap_or(0);
    let live = |site: u32| !case.dead_sites.contains(&site);
    let skills: BTreeMap<String, u32> = case.skills.iter().map(|(s, l)| (s.to_string(), *l)).collect();
    let exclude: BTreeSet<String> = case.exclude.iter().map(|s| s.to_string()).collect();
    let request = Request { workgroup: "wg", origin: case.origin, skills: &skills, exclude: &exclude, now_ms: NOW };
    let context = Context { settings: &settings, cost: &cost, site_live: &live, cursor: case.cursor };
    let indexed = select(&index, &request, &context);
    let reference = select_among(&case.agents, case.agents.len(), &request, &context);
    let name = case.name;
    assert_eq!(indexed.winner().map(|c| c.agent.as_str()), case.winner, "{name}: indexed select");
    assert_eq!(reference.winner().map(|c| c.agent.as_str()), case.winner, "{name}: reference ranking");
    assert_eq!(indexed.winner(), reference.winner(), "{name}: sort keys");
}

#[test]
fn longest_idle() {
    check(Case {
        name: "the longest idle wins",
        agents: vec![agent("a", 1, 10, &[]), agent("b", 1, 30, &[]), agent("c", 1, 20, &[])],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "equal idle: username order",
        agents: vec![agent("b", 1, 10, &[]), agent("a", 1, 10, &[])],
        winner: Some("a"),
        ..Case::default()
    });
    check(Case {
        name: "skills below the required level do not qualify",
        agents: vec![agent("a", 1, 50, &[("fr", 40)]), agent("b", 1, 10, &[("fr", 60)])],
        skills: &[("fr", 50)],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "a missing skill does not qualify",
        agents: vec![agent("a", 1, 50, &[("de", 90)])],
        skills: &[("fr", 1)],
        winner: None,
        ..Case::default()
    });
    check(Case {
        name: "every required skill counts",
        agents: vec![agent("a", 1, 50, &[("fr", 90)]), agent("b", 1, 10, &[("fr", 10), ("de", 10)])],
        skills: &[("fr", 5), ("de", 5)],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "an agent at a site whose lease is dead does not qualify",
        agents: vec![agent("a", 2, 50, &[]), agent("b", 3, 10, &[])],
        dead_sites: &[2],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "an agent that declined is skipped",
        agents: vec![agent("a", 1, 50, &[]), agent("b", 1, 10, &[])],
        exclude: &["a"],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case { name: "nobody eligible", winner: None, ..Case::default() });
}

#[test]
fn origin_site_preference_and_route_costs() {
    let agents = || vec![agent("local", 1, 100, &[]), agent("remote", 2, 105, &[])];
    check(Case {
        name: "without a margin the remote agent idle longer wins",
        agents: agents(),
        winner: Some("remote"),
        ..Case::default()
    });
    check(Case {
        name: "within the margin the origin site wins",
        agents: agents(),
        margin_s: 10,
        winner: Some("local"),
        ..Case::default()
    });
    check(Case {
        name: "beyond the margin the remote agent wins",
        agents: vec![agent("local", 1, 100, &[]), agent("remote", 2, 111, &[])],
        margin_s: 10,
        winner: Some("remote"),
        ..Case::default()
    });
    check(Case {
        name: "exactly at the margin the origin site keeps it (remote must be longer by more)",
        agents: vec![agent("local", 1, 100, &[]), agent("remote", 2, 110, &[])],
        margin_s: 10,
        winner: Some("local"),
        ..Case::default()
    });
    check(Case {
        name: "a route cost counts against the remote site",
        agents: vec![agent("near", 2, 100, &[]), agent("far", 3, 120, &[])],
        costs: &[((1, 3), 30_000)],
        winner: Some("near"),
        ..Case::default()
    });
    check(Case {
        name: "costs are per direction",
        agents: vec![agent("near", 2, 100, &[]), agent("far", 3, 120, &[])],
        costs: &[((3, 1), 30_000)],
        winner: Some("far"),
        ..Case::default()
    });
    check(Case {
        name: "the origin is where the interaction came in",
        agents: agents(),
        origin: 2,
        margin_s: 10,
        winner: Some("remote"),
        ..Case::default()
    });
}

#[test]
fn most_skilled() {
    check(Case {
        name: "the highest level wins over longer idle",
        strategy: Strategy::MostSkilled,
        agents: vec![agent("a", 1, 90, &[("fr", 50)]), agent("b", 1, 10, &[("fr", 80)])],
        skills: &[("fr", 20)],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "sum over the required skills",
        strategy: Strategy::MostSkilled,
        agents: vec![
            agent("a", 1, 90, &[("fr", 90), ("de", 10)]),
            agent("b", 1, 10, &[("fr", 60), ("de", 60)]),
            agent("c", 1, 10, &[("fr", 100), ("it", 100)]),
        ],
        skills: &[("fr", 1), ("de", 1)],
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "equal skill: longest idle, with the origin margin",
        strategy: Strategy::MostSkilled,
        margin_s: 30,
        agents: vec![agent("remote", 2, 40, &[("fr", 70)]), agent("local", 1, 20, &[("fr", 70)])],
        skills: &[("fr", 1)],
        winner: Some("local"),
        ..Case::default()
    });
    check(Case {
        name: "no required skills: longest idle",
        strategy: Strategy::MostSkilled,
        agents: vec![agent("a", 1, 10, &[("fr", 100)]), agent("b", 1, 20, &[])],
        winner: Some("b"),
        ..Case::default()
    });
}

#[test]
fn round_robin() {
    let agents = || vec![agent("a", 2, 10, &[]), agent("b", 3, 50, &[]), agent("c", 2, 30, &[])];
    check(Case {
        name: "no cursor: the first username",
        strategy: Strategy::RoundRobin,
        agents: agents(),
        winner: Some("a"),
        ..Case::default()
    });
    check(Case {
        name: "after the cursor",
        strategy: Strategy::RoundRobin,
        agents: agents(),
        cursor: Some("a"),
        winner: Some("b"),
        ..Case::default()
    });
    check(Case {
        name: "wraps around",
        strategy: Strategy::RoundRobin,
        agents: agents(),
        cursor: Some("c"),
        winner: Some("a"),
        ..Case::default()
    });
    check(Case {
        name: "a cursor that left the pool still orders",
        strategy: Strategy::RoundRobin,
        agents: agents(),
        cursor: Some("bb"),
        winner: Some("c"),
        ..Case::default()
    });
    check(Case {
        name: "origin-site agents take turns first",
        strategy: Strategy::RoundRobin,
        agents: agents(),
        origin: 2,
        cursor: Some("a"),
        winner: Some("c"),
        ..Case::default()
    });
    check(Case {
        name: "origin-site agents wrap among themselves",
        strategy: Strategy::RoundRobin,
        agents: agents(),
        origin: 2,
        cursor: Some("c"),
        winner: Some("a"),
        ..Case::default()
    });
}

/// Random pools, requests and settings: the index walk must pick exactly what ranking every
/// agent picks, and the index must stay consistent through removals and re-insertions.
#[test]
fn indexed_select_agrees_with_ranking_every_agent() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let sites = rng.gen_range(1..6u32);
        let skills = ["a", "b", "c", "d"];
        let mut index = Index::default();
        let mut agents: BTreeMap<String, Agent> = BTreeMap::new();
        for i in 0..rng.gen_range(0..40) {
            let mut have = BTreeMap::new();
            for skill in skills {
                if rng.gen_bool(0.5) {
                    have.insert(skill.to_string(), rng.gen_range(1..=5) * 20);
                }
            }
            let agent = Agent {
                key: Arc::from(format!("agent{i:02}")),
                site: rng.gen_range(1..=sites),
                // Coarse idle times so ties happen.
                idle_since_ms: NOW - rng.gen_range(0..6u64) * 10_000,
                skills: Arc::new(have),
            };
            let workgroups: BTreeSet<String> =
                ["wg", "other"].iter().filter(|_| rng.gen_bool(0.8)).map(|w| w.to_string()).collect();
            if workgroups.contains("wg") {
                agents.insert(agent.key.to_string(), agent.clone());
            }
            index.insert(agent, workgroups);
        }
        // Churn: some agents leave, some come back idle since now.
        for key in agents.keys().cloned().collect::<Vec<_>>() {
            if rng.gen_bool(0.2) {
                index.remove(&key);
                agents.remove(&key);
            }
        }
        index.check();
        let costs: BTreeMap<(u32, u32), u32> = (0..3)
            .map(|_| ((rng.gen_range(1..=sites), rng.gen_range(1..=sites)), rng.gen_range(0..4) * 10_000))
            .collect();
        let cost = |from: u32, to: u32| costs.get(&(from, to)).copied().unwrap_or(0);
        let dead = rng.gen_range(0..=sites + 2);
        let live = |site: u32| site != dead;
        for _ in 0..20 {
            let strategy = Strategy::ALL[rng.gen_range(0..3)];
            let settings = Settings { strategy, local_margin_ms: rng.gen_range(0..3) * 10_000, ..Settings::default() };
            let mut required = BTreeMap::new();
            for skill in skills {
                if rng.gen_bool(0.3) {
                    required.insert(skill.to_string(), rng.gen_range(0..=5) * 20 + 1);
                }
            }
            let exclude: BTreeSet<String> = agents.keys().filter(|_| rng.gen_bool(0.1)).cloned().collect();
            let cursor = agents.keys().nth(rng.gen_range(0..agents.len().max(1))).cloned();
            let request = Request {
                workgroup: "wg",
                origin: rng.gen_range(1..=sites),
                skills: &required,
                exclude: &exclude,
                now_ms: NOW,
            };
            let context = Context { settings: &settings, cost: &cost, site_live: &live, cursor: cursor.as_deref() };
            let indexed = select(&index, &request, &context);
            let reference = select_among(agents.values(), agents.len(), &request, &context);
            assert_eq!(
                indexed.winner(),
                reference.winner(),
                "seed {seed}: {strategy:?}, skills {required:?}, origin {}, cursor {cursor:?}",
                request.origin
            );
            assert!(indexed.examined <= reference.examined, "seed {seed}: the index examined more than every agent");
        }
    }
}
