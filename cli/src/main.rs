//! The `collective` binary: `serve` and the administrative command line.

use clap::Parser;

/// jemalloc instead of glibc's malloc, with its background thread returning freed memory to the
/// system (`collective::memory`): glibc kept every freed peak in its per-thread arenas (Argon2id's
/// 19 MiB blocks on the blocking pool alone held ~350 MiB), and mimalloc purges only when the
/// freeing thread allocates again, so a snapshot's transient copy of the state stayed resident.
/// Its options (larger thread caches) are built in: `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    // Without the LIFO slot, a task woken by another runs after the tasks already queued rather
    // than next. When a log entry commits, hundreds of request tasks are woken together; each
    // one's response wakes its HTTP/2 connection task, which (from the LIFO slot) ran at once and
    // wrote that single response: ~0.8 `writev` per acknowledged write on the leader. Queued
    // behind the other responses instead, it writes them together (one `writev` per ~13 writes).
    // Measured with 1,000 bench clients: leader 21.0-21.5 against 22.9-23.9 us of CPU per write,
    // the bench client 14.7-15.0 against 16.5-17.6 (etcd as the target gains too: its members
    // 70 against 72-74 us per put). It needs `--cfg tokio_unstable`, which `.cargo/config.toml`
    // sets for every build; without it the runtime keeps tokio's default.
    #[cfg(tokio_unstable)]
    runtime.disable_lifo_slot();
    let runtime = runtime.build().unwrap_or_else(|error| {
        eprintln!("Error: cannot start the async runtime: {error}");
        std::process::exit(1);
    });
    runtime.block_on(run());
}

async fn run() {
    let cli = collective_cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("COLLECTIVE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if matches!(cli.command, collective_cli::Command::Serve(_)) {
            "info,openraft=warn"
        } else {
            "warn"
        })
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        collective_cli::LogFormat::Json => logs.json().init(),
        // Colour codes only where a person reads them, never into a file or a container's log.
        collective_cli::LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
    }
    if matches!(cli.command, collective_cli::Command::Serve(_)) {
        collective::memory::start_background_purging();
        #[cfg(not(tokio_unstable))]
        tracing::warn!(
            "built without --cfg tokio_unstable (RUSTFLAGS replaced .cargo/config.toml's): the runtime keeps \
             tokio's LIFO slot and spends ~10 % more CPU per write on the leader"
        );
    }
    if let Err(error) = collective_cli::run(cli).await {
        eprintln!("Error: {error:#}");
        std::process::exit(1);
    }
}
