//! `collective-sim`: whole-cluster simulations, one seed or many (a soak), with a summary. A
//! failing seed prints its violations and the command that replays it.
//!
//! ```text
//! cargo run -p collective-sim-tests --bin collective-sim -- --seeds 1000 --jobs 2
//! cargo run -p collective-sim-tests --bin collective-sim -- --seed 42
//! ```
//!
//! Every seed runs in a process of its own: some state outlives a simulation inside a process
//! (tokio's global task-id counter decides the order in which a crashed host's tasks are
//! dropped), so a seed's trace is only reproducible from a fresh process, which is what the
//! replay command starts.

use std::io::Write;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use clap::Parser;
use collective_sim_tests::run::{run, Options, Report};

#[derive(Parser)]
#[command(name = "collective-sim", about = "Deterministic whole-cluster simulations of collective")]
struct Args {
    /// Run this one seed here and print its faults, checks and trace hash.
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Run this many seeds, from --first on, each in a child process.
    #[arg(long, default_value_t = 50)]
    seeds: u64,
    /// First seed of a --seeds run.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Child processes at once.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    jobs: u64,
    /// Cluster size, 3 or 5 (default: drawn from each seed).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["3", "5"]))]
    nodes: Option<String>,
    /// The deliberately broken client that reads from followers as if linearizably.
    #[arg(long)]
    stale_reads: bool,
    /// Print every trace line (operations, faults, leaders, final states) to stderr, to diff two
    /// runs of a seed.
    #[arg(long)]
    trace: bool,
    /// With --seeds: print every seed's line, not only failures.
    #[arg(long)]
    verbose: bool,
}

/// Log lines carry the simulated time (ms since the start of the run).
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match turmoil::sim_elapsed() {
            Some(elapsed) => write!(w, "{:>8} ms", elapsed.as_millis()),
            None => write!(w, "{:>8}   ", "-"),
        }
    }
}

/// One seed's numbers, as a child prints them on its `stats` line.
#[derive(Default)]
struct Stats {
    faults: u64,
    writes: u64,
    reads: u64,
    watch: u64,
    messages: u64,
    inconclusive: u64,
    violations: u64,
}

fn stats_line(report: &Report) -> String {
    format!(
        "stats seed={} nodes={} faults={} writes={} reads={} watch={} messages={} inconclusive={} violations={} simulated_ms={} trace={:016x}/{}",
        report.seed,
        report.nodes,
        report.faults.len(),
        report.writes,
        report.reads,
        report.watch_events,
        report.messages,
        report.inconclusive.len(),
        report.violations.len(),
        report.simulated_ms,
        report.trace.0,
        report.trace.1
    )
}

fn parse_stats(output: &str) -> Option<Stats> {
    let line = output.lines().find(|line| line.starts_with("stats "))?;
    let field = |name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|pair| pair.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Stats {
        faults: field("faults"),
        writes: field("writes"),
        reads: field("reads"),
        watch: field("watch"),
        messages: field("messages"),
        inconclusive: field("inconclusive"),
        violations: field("violations"),
    })
}

fn main() {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("COLLECTIVE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    tracing_subscriber::fmt().with_env_filter(filter).with_timer(SimTime).with_writer(std::io::stderr).init();
    match args.seed {
        Some(seed) => run_one(&args, seed),
        None => run_many(&args),
    }
}

/// Runs one seed in this process.
fn run_one(args: &Args, seed: u64) {
    let nodes = args.nodes.as_deref().map(|n| n.parse().expect("3 or 5"));
    let report = run(&Options { seed, nodes, stale_reads: args.stale_reads, trace: args.trace });
    println!("{}", stats_line(&report));
    for fault in &report.faults {
        println!("fault at {fault}");
    }
    for key in &report.inconclusive {
        println!("inconclusive: the linearizability search for {key} ran out of steps");
    }
    if report.violations.is_empty() {
        println!("seed {seed} passed");
        return;
    }
    println!("seed {seed} FAILED ({} violations):", report.violations.len());
    for violation in &report.violations {
        println!("  {violation}");
    }
    println!("  replay: {}", report.replay_command(args.stale_reads));
    std::process::exit(1);
}

/// Runs seeds in child processes, `--jobs` at a time, and prints a summary.
fn run_many(args: &Args) {
    let exe = std::env::current_exe().expect("the path of this program");
    let next = AtomicU64::new(args.first);
    let end = args.first + args.seeds;
    let totals = Mutex::new((Stats::default(), Vec::<u64>::new()));
    let started = std::time::Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..args.jobs {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed >= end {
                    return;
                }
                let mut command = Command::new(&exe);
                command.arg("--seed").arg(seed.to_string());
                if let Some(nodes) = &args.nodes {
                    command.arg("--nodes").arg(nodes);
                }
                if args.stale_reads {
                    command.arg("--stale-reads");
                }
                let output = command.output().expect("a child simulation starts");
                let stdout = String::from_utf8_lossy(&output.stdout).to_string();
                let stats = parse_stats(&stdout);
                let failed = !output.status.success() || stats.as_ref().is_none_or(|s| s.violations > 0);
                let mut totals = totals.lock().expect("totals lock");
                if failed || args.verbose {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(stdout.as_bytes());
                    if stats.is_none() {
                        let _ = writeln!(
                            out,
                            "seed {seed} crashed ({}):\n{}\n  replay: {exe:?} --seed {seed}",
                            output.status,
                            String::from_utf8_lossy(&output.stderr)
                        );
                    }
                }
                if let Some(stats) = stats {
                    totals.0.faults += stats.faults;
                    totals.0.writes += stats.writes;
                    totals.0.reads += stats.reads;
                    totals.0.watch += stats.watch;
                    totals.0.messages += stats.messages;
                    totals.0.inconclusive += stats.inconclusive;
                }
                if failed {
                    totals.1.push(seed);
                }
            });
        }
    });
    let (stats, mut failed) = totals.into_inner().expect("totals lock");
    failed.sort_unstable();
    println!(
        "summary: {} seeds in {:.0} s, {} failed {failed:?}; {} faults injected; {} writes, {} reads, {} watch events \
         and {} inter-site messages checked; {} keys inconclusive",
        args.seeds,
        started.elapsed().as_secs_f64(),
        failed.len(),
        stats.faults,
        stats.writes,
        stats.reads,
        stats.watch,
        stats.messages,
        stats.inconclusive
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
