//! Decision latency inside `collective-routing` at 1,000 / 10,000 / 100,000 eligible agents.
//!
//! `cargo bench -p collective-routing` prints, per strategy and pool size, the p50/p99/max time
//! of one `select` (the indexed search) and of one reservation's index update (the winner
//! leaves every ordering, as it does when `apply` reserves it). Agents are spread over 1,000
//! sites with 3 of 20 skills each; every request comes from a random site, needs one random
//! skill at a random minimum level, and 50 site pairs carry a route cost.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use collective_routing::{select, Agent, Context, Index, Request, Settings, Strategy};
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SITES: u32 = 1_000;
const SKILLS: usize = 20;
const REQUESTS: usize = 20_000;

fn skill(i: usize) -> String {
    format!("skill-{i:02}")
}

fn build(agents: usize, rng: &mut StdRng) -> Index {
    let mut index = Index::default();
    let workgroups: BTreeSet<String> = ["support".to_string()].into();
    for i in 0..agents {
        let mut skills = BTreeMap::new();
        while skills.len() < 3 {
            skills.insert(skill(rng.gen_range(0..SKILLS)), rng.gen_range(1..=100));
        }
        let agent = Agent {
            key: Arc::from(format!("agent-{i:07}")),
            site: rng.gen_range(1..=SITES),
            idle_since_ms: 1_000_000 - rng.gen_range(0..3_600_000u64).min(999_999),
            skills: Arc::new(skills),
        };
        index.insert(agent, workgroups.clone());
    }
    index
}

fn micros(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

fn main() {
    let mut rng = StdRng::seed_from_u64(6);
    let costs: BTreeMap<(u32, u32), u32> =
        (0..50).map(|_| ((rng.gen_range(1..=SITES), rng.gen_range(1..=SITES)), rng.gen_range(1..60_000))).collect();
    let cost = |from: u32, to: u32| costs.get(&(from, to)).copied().unwrap_or(0);
    let live = |_site: u32| true;
    println!(
        "{:<13} {:>8} {:>10} {:>10} {:>10} {:>12} {:>12} {:>10}",
        "strategy", "agents", "p50 µs", "p99 µs", "max µs", "update p50", "update p99", "examined"
    );
    for agents in [1_000, 10_000, 100_000] {
        let mut index = build(agents, &mut rng);
        for strategy in Strategy::ALL {
            let settings = Settings { strategy, local_margin_ms: 5_000, ..Settings::default() };
            let mut decide = Histogram::<u64>::new(3).expect("histogram");
            let mut update = Histogram::<u64>::new(3).expect("histogram");
            let mut examined = 0u64;
            let exclude = BTreeSet::new();
            let mut cursor: Option<String> = None;
            for _ in 0..REQUESTS {
                let skills: BTreeMap<String, u32> = [(skill(rng.gen_range(0..SKILLS)), rng.gen_range(1..=60))].into();
                let request = Request {
                    workgroup: "support",
                    origin: rng.gen_range(1..=SITES),
                    skills: &skills,
                    exclude: &exclude,
                    now_ms: 1_000_000,
                };
                let context = Context { settings: &settings, cost: &cost, site_live: &live, cursor: cursor.as_deref() };
                let started = Instant::now();
                let decision = select(&index, &request, &context);
                decide.record(started.elapsed().as_nanos() as u64).expect("in range");
                examined += decision.examined;
                // Reserve the winner and give it back as freshly idle, as accept/end would.
                if let Some(winner) = decision.winner() {
                    let started = Instant::now();
                    let mut agent = index.agent(&winner.agent).expect("indexed").clone();
                    let workgroups = index.workgroups_of(&agent.key).expect("indexed").clone();
                    index.remove(&agent.key);
                    agent.idle_since_ms = rng.gen_range(900_000..1_000_000);
                    index.insert(agent, workgroups);
                    update.record(started.elapsed().as_nanos() as u64).expect("in range");
                    cursor = Some(winner.agent.clone());
                }
            }
            println!(
                "{:<13} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>12.1} {:>12.1} {:>10.0}",
                strategy.as_str(),
                agents,
                micros(&decide, 0.5),
                micros(&decide, 0.99),
                decide.max() as f64 / 1_000.0,
                micros(&update, 0.5),
                micros(&update, 0.99),
                examined as f64 / REQUESTS as f64
            );
        }
    }
}
