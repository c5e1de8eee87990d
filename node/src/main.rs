//! The `collective` binary: `serve` and the administrative command line.

use clap::Parser;

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
