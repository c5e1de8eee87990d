//! One seed, one trace: the same seed run twice (each in a fresh process, as its replay
//! command runs it) gives the same trace hash: every operation with its simulated times and
//! results, every fault, every leader, the final state hashes.

use std::process::Command;

fn trace_of(seed: u64) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_collective-sim"))
        .args(["--seed", &seed.to_string()])
        .output()
        .expect("collective-sim runs");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "seed {seed} failed:\n{stdout}");
    let stats = stdout.lines().find(|line| line.starts_with("stats ")).expect("a stats line");
    let trace = stats.split_whitespace().find_map(|pair| pair.strip_prefix("trace=")).expect("a trace hash");
    let lines: u64 = trace.split('/').nth(1).and_then(|n| n.parse().ok()).expect("a trace length");
    assert!(lines > 100, "seed {seed} traced only {lines} lines");
    trace.to_string()
}

#[test]
fn the_same_seed_replays_the_same_trace() {
    for seed in [3, 8] {
        assert_eq!(trace_of(seed), trace_of(seed), "seed {seed} gave two different traces");
    }
    assert_ne!(trace_of(11), trace_of(12), "two seeds gave the same trace");
}
