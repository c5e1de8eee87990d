//! The CI set of whole-cluster simulations: seeds 1..=50, two at a time, each in its own
//! `collective-sim` process (so each is exactly what its replay command reproduces). Any
//! failing seed prints its violations and its replay command. A soak runs any number:
//! `cargo run -p collective-sim-tests --bin collective-sim -- --seeds 1000`.

use std::process::Command;

#[test]
fn fifty_seeds_pass_every_check() {
    let output = Command::new(env!("CARGO_BIN_EXE_collective-sim"))
        .args(["--seeds", "50", "--first", "1", "--jobs", "2"])
        .output()
        .expect("collective-sim runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    let summary = stdout.lines().find(|line| line.starts_with("summary: ")).expect("a summary line");
    assert!(summary.contains("50 seeds") && summary.contains(" 0 failed"), "{summary}");
    assert!(output.status.success(), "collective-sim failed: {summary}");
}
