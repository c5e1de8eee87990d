//! Property test: the RocksDB presence history answers exactly what a brute-force replay of the
//! same seeded history answers — presence at T, who was available in a workgroup or at a site at
//! T, time per status — also after pruning, a reopen, and a start from a snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use collective::environment::Environment;
use collective::history::{HistoryError, HistoryStore};
use collective::shared::Shared;
use collective::store;
use collective_sim_tests::workload::next_command;
use collective_statemachine::{Batch, Principal, Proposal, State, StatusGroup};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

const USERS: usize = 24;

/// The states after each entry, with the entry's time.
fn timeline(seed: u64, entries: usize) -> Vec<(u64, State, Vec<collective_statemachine::EventRecord>)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = State::new();
    let mut at_ms = 1_000_000u64;
    let mut steps = Vec::new();
    for _ in 0..entries {
        at_ms += rng.gen_range(0..400);
        let proposals: Vec<_> = (0..rng.gen_range(1..4))
            .map(|_| Proposal { principal: Principal::System, command: next_command(&mut rng, &state, at_ms) })
            .collect();
        let records: Vec<_> =
            state.apply_batch(&Batch { at_ms, proposals: proposals.into() }).into_iter().flatten().flatten().collect();
        steps.push((at_ms, state.clone(), records));
    }
    steps
}

fn state_at(steps: &[(u64, State, Vec<collective_statemachine::EventRecord>)], at_ms: u64) -> State {
    steps.iter().rev().find(|(at, _, _)| *at <= at_ms).map(|(_, state, _)| state.clone()).unwrap_or_default()
}

fn check_presence(history: &HistoryStore, expected: &State, at_ms: u64) {
    for index in 0..USERS {
        let key = format!("user{index}");
        let want = expected
            .presence
            .get(key.as_str())
            .map(|p| (p.status_key.clone(), p.logon.as_ref().map(|l| l.site), p.on_phone()));
        let got = history.presence_at(&key, at_ms).unwrap().map(|(_, v)| (v.status_key, v.logged_on_site, v.on_phone));
        assert_eq!(got, want, "presence of {key} at {at_ms}");
    }
    for workgroup in ["support", "sales", "billing"] {
        let want: BTreeSet<String> = expected
            .users
            .iter()
            .filter(|(key, user)| {
                let presence = &expected.presence[*key];
                user.workgroups.contains(workgroup)
                    && presence.logon.is_some()
                    && expected.catalog[&presence.status_key].group == StatusGroup::Available
            })
            .map(|(_, user)| user.username.clone())
            .collect();
        let got: BTreeSet<String> = history
            .users_at(at_ms, |v| v.available() && v.workgroups.contains(workgroup))
            .unwrap()
            .into_iter()
            .map(|v| v.username)
            .collect();
        assert_eq!(got, want, "available in {workgroup} at {at_ms}");
    }
}

fn brute_durations(
    steps: &[(u64, State, Vec<collective_statemachine::EventRecord>)],
    key: &str,
    from: u64,
    to: u64,
) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    let mut points: Vec<u64> = vec![from];
    points.extend(steps.iter().map(|(at, _, _)| *at).filter(|at| *at > from && *at < to));
    points.push(to);
    points.dedup();
    for window in points.windows(2) {
        if let Some(presence) = state_at(steps, window[0]).presence.get(key) {
            *totals.entry(presence.status_key.clone()).or_insert(0) += window[1] - window[0];
        }
    }
    totals.retain(|_, ms| *ms > 0);
    totals
}

async fn open(dir: &std::path::Path) -> Arc<HistoryStore> {
    store::open(dir, Arc::new(Shared::new(100)), &Environment::system()).await.unwrap().2
}

#[tokio::test]
async fn history_matches_brute_force_replay() {
    for seed in 1..=4u64 {
        let steps = timeline(seed, 600);
        let dir = TempDir::new().unwrap();
        let history = open(dir.path()).await;
        for (index, (_, state, records)) in steps.iter().enumerate() {
            history.record(state, records).unwrap();
            // Half written, half still gathered: every answer below must see both.
            if index == steps.len() / 2 {
                history.flush().unwrap();
            }
        }
        let first = steps[0].0;
        let last = steps.last().unwrap().0;
        let mut rng = StdRng::seed_from_u64(seed + 100);
        for _ in 0..25 {
            let at_ms = rng.gen_range(first - 1_000..last + 1_000);
            check_presence(&history, &state_at(&steps, at_ms), at_ms);
        }
        for _ in 0..25 {
            let from = rng.gen_range(first..last);
            let to = rng.gen_range(from + 1..last + 2_000);
            let key = format!("user{}", rng.gen_range(0..USERS));
            assert_eq!(
                history.durations(&key, from, to).unwrap(),
                brute_durations(&steps, &key, from, to),
                "seed {seed} durations of {key}"
            );
        }

        // Pruning keeps every answer from the cutoff on, and refuses earlier ones by name.
        let cutoff = (first + last) / 2;
        assert!(history.prune(cutoff).unwrap() > 0, "seed {seed}: nothing pruned");
        for _ in 0..15 {
            let at_ms = rng.gen_range(cutoff..last + 1_000);
            check_presence(&history, &state_at(&steps, at_ms), at_ms);
        }
        let error = history.presence_at("user1", cutoff - 1).unwrap_err();
        assert!(matches!(error, HistoryError::Compacted { oldest_ms, .. } if oldest_ms == cutoff), "{error:?}");

        // A reopen answers the same.
        drop(history);
        let history = open(dir.path()).await;
        check_presence(&history, &state_at(&steps, last), last);

        // A node that starts from a snapshot knows nothing before it, and everything after.
        let (_, snapshot_state, _) = &steps[steps.len() / 3];
        // The snapshot knows the state as of its last applied change.
        let snapshot_at = &snapshot_state.last_at_ms;
        let fresh_dir = TempDir::new().unwrap();
        let fresh = open(fresh_dir.path()).await;
        fresh.reset_to(snapshot_state).unwrap();
        for (_, state, records) in &steps[steps.len() / 3 + 1..] {
            fresh.record(state, records).unwrap();
        }
        assert!(matches!(fresh.presence_at("user1", snapshot_at - 1), Err(HistoryError::Compacted { .. })));
        for _ in 0..15 {
            let at_ms = rng.gen_range(*snapshot_at..last + 1_000);
            check_presence(&fresh, &state_at(&steps, at_ms), at_ms);
        }
    }
}
