//! A write commits only once a majority holds it on disk: the leader's unsynced copy never
//! counts (`collective_sim_tests::durability`).

use collective_sim_tests::durability::run;

#[test]
fn the_leader_counts_only_its_synced_entries_and_replicates_while_it_syncs() {
    for seed in 1..=3 {
        let outcome = run(seed);
        assert!(
            !outcome.committed_with_one_synced_copy,
            "seed {seed}: a write committed while only one member had synced it: {outcome:?}"
        );
        assert!(outcome.committed_after_release, "seed {seed}: the held write never committed: {outcome:?}");
        assert!(
            outcome.committed_with_leader_held,
            "seed {seed}: the followers' synced copies did not commit a write while the leader's fsync was held \
             (replication waits for the leader's fsync): {outcome:?}"
        );
    }
}
