//! The harness can fail: a deliberately broken client that reads from any node without the
//! read barrier (serializable reads, as from a stale follower) but records them as
//! linearizable must be caught by the linearizability check.

use collective_sim_tests::run::{run, Options};

#[test]
fn stale_follower_reads_are_caught() {
    let caught: Vec<u64> = (1..=4)
        .filter(|&seed| {
            let report = run(&Options { seed, nodes: Some(3), stale_reads: true, trace: false });
            report.violations.iter().any(|v| v.check == "linearizable")
        })
        .collect();
    assert!(!caught.is_empty(), "no seed caught a stale read");
}
