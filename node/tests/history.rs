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

/// The stored versions as the specification has them: per user, by (time, revision), whether
/// each is a tombstone.
#[derive(Default)]
struct Model(BTreeMap<String, BTreeMap<(u64, u64), bool>>);

impl Model {
    fn record(&mut self, state: &State, records: &[collective_statemachine::EventRecord]) {
        for (user, at_ms, revision, version) in collective_statemachine::history::versions(state, records) {
            self.0.entry(user.into_owned()).or_default().insert((at_ms, revision), version.deleted);
        }
    }

    /// Pruning at `cutoff` keeps, per user, every version from the cutoff on and the last one
    /// before it (in time: an event may carry a time before its entry's, such as a status that
    /// became overdue), unless that one is a tombstone with nothing after it. Returns how many
    /// it deleted.
    fn prune(&mut self, cutoff: u64) -> u64 {
        let mut deleted = 0;
        for versions in self.0.values_mut() {
            let later = versions.range((cutoff, 0)..).count();
            let mut older: Vec<_> = versions.range(..(cutoff, 0)).map(|(key, tombstone)| (*key, *tombstone)).collect();
            if older.last().is_some_and(|(_, tombstone)| !tombstone || later > 0) {
                older.pop();
            }
            for (key, _) in older {
                versions.remove(&key);
                deleted += 1;
            }
        }
        deleted
    }
}

/// Prunes at rising cutoffs, between writes, after a reopen and again at the same time: every
/// answer from the cutoff on stays the brute force's, and each prune deletes exactly the versions
/// the specification (`Model::prune`) deletes, none skipped by the per-user seek or the floor.
#[tokio::test]
async fn repeated_prunes_delete_what_the_specification_does() {
    for seed in 11..=14u64 {
        let steps = timeline(seed, 600);
        let (first, last) = (steps[0].0, steps.last().unwrap().0);
        let at = |eighths: u64| first + (last - first) * eighths / 8;
        let dir = TempDir::new().unwrap();
        let mut history = open(dir.path()).await;
        let mut model = Model::default();
        let mut deleted = 0;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut recorded = 0;
        // (record the steps up to this time, then prune at this cutoff, reopening first?)
        let plan = [
            (at(3), at(1), false),
            (at(3), at(1), false),
            (at(3), at(1) + 1, false),
            (at(5), at(2), false),
            (at(5), at(2), true),
            (at(5), at(3), false),
            (at(8), at(4), false),
            (at(8), at(6), true),
            (at(8), at(6) + 1, false),
        ];
        for (record_until, cutoff, reopen) in plan {
            while recorded < steps.len() && steps[recorded].0 <= record_until {
                history.record(&steps[recorded].1, &steps[recorded].2).unwrap();
                model.record(&steps[recorded].1, &steps[recorded].2);
                recorded += 1;
            }
            if reopen {
                drop(history);
                history = open(dir.path()).await;
            }
            let pruned = history.prune(cutoff).unwrap();
            assert_eq!(pruned, model.prune(cutoff), "seed {seed}: versions deleted by pruning at {cutoff}");
            deleted += pruned;
            for _ in 0..10 {
                let at_ms = rng.gen_range(cutoff..record_until + 1);
                check_presence(&history, &state_at(&steps[..recorded], at_ms), at_ms);
            }
            let from = rng.gen_range(cutoff..record_until);
            let key = format!("user{}", rng.gen_range(0..USERS));
            assert_eq!(
                history.durations(&key, from, record_until).unwrap(),
                brute_durations(&steps[..recorded], &key, from, record_until),
                "seed {seed} durations of {key} after pruning at {cutoff}"
            );
        }
        assert_eq!(recorded, steps.len());
        // Just past the floor, the earliest version kept that is not a baseline: the prune must
        // not take that version for one it may skip.
        let floor = model.0.values().flat_map(|versions| versions.range((at(6) + 1, 0)..).next()).min().unwrap();
        let cutoff = floor.0 .0 + 1;
        let pruned = history.prune(cutoff).unwrap();
        assert_eq!(pruned, model.prune(cutoff), "seed {seed}: versions deleted by pruning just past the floor");
        deleted += pruned;
        assert!(deleted > 0, "seed {seed}: the plan deletes nothing");
    }
}

/// Builds before the history compacted universally left its files in levels (level compaction,
/// dynamic level sizes, so the bottom level). Such a data directory still opens, and answers
/// what it answered.
#[tokio::test]
async fn a_history_compacted_in_levels_opens_and_answers() {
    let steps = timeline(21, 400);
    let last = steps.last().unwrap().0;
    let dir = TempDir::new().unwrap();
    let history = open(dir.path()).await;
    for (index, (_, state, records)) in steps.iter().enumerate() {
        history.record(state, records).unwrap();
        if index % 100 == 99 {
            history.flush().unwrap();
        }
    }
    drop(history);
    // Reopened as those builds opened it, and compacted into the bottom level, with one more
    // flush above it.
    {
        let mut options = rocksdb::Options::default();
        options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        options.set_track_and_verify_wals_in_manifest(true);
        let families = rocksdb::DB::list_cf(&options, dir.path()).unwrap();
        let db = rocksdb::DB::open_cf(&options, dir.path(), &families).unwrap();
        let cf = db.cf_handle(collective::history::CF_HISTORY).unwrap();
        db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        let levels = db.property_value_cf(cf, "rocksdb.levelstats").unwrap().unwrap();
        let bottom = levels.lines().find(|line| line.trim_start().starts_with('6')).unwrap();
        assert_ne!(bottom.split_whitespace().nth(1), Some("0"), "nothing in the bottom level:\n{levels}");
        db.put_cf(cf, b"m/written-above-the-bottom-level", b"x").unwrap();
        db.flush_cf(cf).unwrap();
    }
    let history = open(dir.path()).await;
    for _ in 0..3 {
        check_presence(&history, &state_at(&steps, last), last);
        let middle = steps[steps.len() / 2].0;
        check_presence(&history, &state_at(&steps, middle), middle);
    }
}
