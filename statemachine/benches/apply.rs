//! CPU per presence change inside the state machine: what every member pays for each write it
//! applies (`State::apply_batch`) and records in its history (`history::versions`).
//!
//! `cargo bench -p collective-statemachine --bench apply` applies batches of 1,024 commands in
//! the mix of `collective bench presence` (70 % status sets, 20 % logon/logoff, 10 % interaction
//! start/end) to a state of 1,000 users, and prints the median and best ns per command over the
//! batches. Two populations: `plain` users as `collective bench` creates them (no workgroups),
//! and `agents`, members of two workgroups at a site holding a lease, so every change also
//! passes through routing's eligibility index. Numbers move with the host's speed: compare two
//! builds by alternating runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use collective_statemachine::{history, Batch, Command, Principal, Proposal, SiteSpec, State, TrustedAccess, UserSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const USERS: u32 = 1_000;
const BATCH: usize = 1_024;
const BATCHES: usize = 400;
const SITE: u32 = 1;
const STATUSES: [&str; 4] = ["Available", "Away from desk", "On Break", "Gone Home"];

fn admin() -> Principal {
    Principal::Admin("bench".into())
}

fn must(state: &mut State, at_ms: u64, command: Command) {
    let batch = Batch { at_ms, proposals: Arc::from(vec![Proposal { principal: admin(), command }]) };
    for outcome in state.apply_batch(&batch) {
        outcome.expect("setup command applies");
    }
}

fn populate(agents: bool) -> State {
    let mut state = State::new();
    must(
        &mut state,
        1,
        Command::AddSite(SiteSpec {
            id: SITE,
            name: "bench".into(),
            phone: "+1 555 0001".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
            note_id_dial_string: String::new(),
            active: true,
            servers: vec!["bench.local".into()],
            trusted_access: TrustedAccess::default(),
        }),
    );
    if agents {
        for name in ["sales", "support"] {
            let command =
                Command::AddWorkgroup { name: name.into(), spans_sites: false, required_skills: BTreeMap::new() };
            must(&mut state, 2, command);
        }
        must(&mut state, 3, Command::GrantLease { site: SITE, ttl_ms: 300_000 });
    }
    for index in 0..USERS {
        let skills = if agents { BTreeMap::from([("english".to_string(), 50)]) } else { BTreeMap::new() };
        let spec = UserSpec {
            username: format!("bench{index}"),
            display_name: format!("Bench User {index}"),
            email: format!("bench{index}@bench.local"),
            home_site: SITE,
            extension: format!("7{index:07}"),
            skills,
            licences: BTreeSet::new(),
        };
        must(&mut state, 4, Command::AddUser(spec));
        if agents {
            for workgroup in ["sales", "support"] {
                let command =
                    Command::AddWorkgroupMember { workgroup: workgroup.into(), username: format!("bench{index}") };
                must(&mut state, 5, command);
            }
        }
    }
    state
}

/// The presence mix, valid against the state it is drawn for (logons and calls tracked here).
struct Mix {
    rng: StdRng,
    logged_on: BTreeSet<u32>,
    on_call: BTreeMap<u32, String>,
    sequence: u64,
}

impl Mix {
    fn next(&mut self) -> Command {
        let roll = self.rng.gen_range(0..100);
        let user = self.rng.gen_range(0..USERS);
        let username = format!("bench{user}");
        if roll < 70 {
            let status_key = STATUSES[self.rng.gen_range(0..STATUSES.len())].to_string();
            return Command::SetStatus { username, status_key, until_ms: None, detail: String::new() };
        }
        if roll < 90 {
            if self.logged_on.remove(&user) {
                self.on_call.remove(&user);
                return Command::LogOff { username, reason: "user".into() };
            }
            self.logged_on.insert(user);
            return Command::LogOn { username, site: SITE, server: String::new() };
        }
        if let Some(interaction_id) = self.on_call.remove(&user) {
            return Command::EndInteraction { username, interaction_id };
        }
        self.sequence += 1;
        let interaction_id = format!("c{}", self.sequence);
        self.on_call.insert(user, interaction_id.clone());
        Command::StartInteraction { username, interaction_id }
    }
}

fn run(label: &str, agents: bool) {
    let mut state = populate(agents);
    let mut mix =
        Mix { rng: StdRng::seed_from_u64(9), logged_on: BTreeSet::new(), on_call: BTreeMap::new(), sequence: 0 };
    let (mut apply_ns, mut versions_ns, mut rejected) = (Vec::new(), Vec::new(), 0);
    for i in 0..BATCHES {
        // Drawn just before it applies, as a member applies an entry it has just decoded.
        let batch = Batch {
            at_ms: 10_000 + i as u64,
            proposals: (0..BATCH).map(|_| Proposal { principal: admin(), command: mix.next() }).collect(),
        };
        let started = Instant::now();
        let outcomes = state.apply_batch(&batch);
        let applied = started.elapsed();
        let records: Vec<_> =
            outcomes.into_iter().filter_map(|outcome| outcome.map_err(|_| rejected += 1).ok()).flatten().collect();
        let started = Instant::now();
        let touched = history::versions(&state, &records).len();
        let versioned = started.elapsed();
        assert!(touched > 0, "every batch touches users");
        apply_ns.push(applied.as_nanos() as f64 / BATCH as f64);
        versions_ns.push(versioned.as_nanos() as f64 / BATCH as f64);
    }
    // The mix tracks logons and calls, so every command it draws is valid: a refusal would mean
    // the benchmark no longer measures what it says.
    assert_eq!(rejected, 0, "the mix stays valid");
    state.check_invariants();
    for (what, mut ns) in [("apply_batch", apply_ns), ("history::versions", versions_ns)] {
        ns.sort_by(f64::total_cmp);
        println!("{label:<7} {what:<18} median {:>7.0} ns/command   best {:>7.0}", ns[ns.len() / 2], ns[0]);
    }
}

fn main() {
    run("plain", false);
    run("agents", true);
}
