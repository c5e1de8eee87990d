//! The `collective` binary: `serve` and the administrative command line.

use clap::Parser;

/// jemalloc instead of glibc's malloc, with its background thread returning freed memory to the
/// system (`collective::memory`): glibc kept every freed peak in its per-thread arenas (Argon2id's
/// 19 MiB blocks on the blocking pool alone held ~350 MiB), and mimalloc purges only when the
/// freeing thread allocates again, so a snapshot's transient copy of the state stayed resident.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let cli = collective::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("COLLECTIVE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if matches!(cli.command, collective::cli::Command::Serve(_)) {
            "info,openraft=warn"
        } else {
            "warn"
        })
    });
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    if matches!(cli.command, collective::cli::Command::Serve(_)) {
        collective::memory::start_background_purging();
    }
    if let Err(error) = collective::cli::run(cli).await {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
}
