//! The `collective` binary: `serve` and the administrative command line.

use clap::Parser;

/// mimalloc instead of glibc's malloc: glibc kept every freed peak in its per-thread arenas
/// (Argon2id's 19 MiB blocks on the blocking pool alone held ~350 MiB on the member that hashed
/// site passwords), and memory is what bounds the collective's scale.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    if let Err(error) = collective::cli::run(cli).await {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
}
