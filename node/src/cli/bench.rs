//! `collective bench`: load against a running cluster, latency in HdrHistogram, throughput,
//! errors by gRPC code. A benchmark, never a test.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use collective_proto::v1 as pb;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::presences_client::PresencesClient;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};

use super::client::Client;
use super::output::Format;

/// Site the benchmark's users live at.
const BENCH_SITE_ID: u32 = 999;
/// Statuses the presence workload cycles through (none needs an `until`).
const BENCH_STATUSES: [&str; 4] = ["Available", "Away from desk", "On Break", "Gone Home"];

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Concurrent presence writes (status set, logon/logoff, interaction start/end).
    Presence(PresenceArgs),
}

#[derive(Args, Debug)]
pub struct PresenceArgs {
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// gRPC connections shared by the clients (default: min(clients, 16)).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Users written to (created first if missing).
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// Percentage of status sets; the rest is split 2:1 between logon/logoff and interactions
    /// (the default 70 gives the 70/20/10 mix).
    #[arg(long, default_value_t = 70)]
    pub status_percent: u32,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let uri = if endpoint.starts_with("http") { endpoint.to_string() } else { format!("http://{endpoint}") };
    Ok(Endpoint::from_shared(uri)?.tcp_nodelay(true).timeout(Duration::from_secs(10)).connect().await?)
}

/// Runs a benchmark.
pub async fn run(client: &Client, command: BenchCommand, format: Format) -> anyhow::Result<()> {
    match command {
        BenchCommand::Presence(args) => presence(client, args, format).await,
    }
}

async fn prepare(client: &Client, users: u32) -> anyhow::Result<()> {
    let site = pb::AddSiteRequest {
        site: Some(pb::Site {
            id: BENCH_SITE_ID,
            name: "bench".into(),
            phone: "+1 555 0999".into(),
            active: true,
            servers: vec!["bench.local".into()],
            ..Default::default()
        }),
        password: "bench".into(),
    };
    match client
        .call(|c| {
            let r = site.clone();
            async move { DirectoryClient::new(c).add_site(r).await }
        })
        .await
    {
        Ok(_) => {}
        Err(status) if status.code() == tonic::Code::AlreadyExists => {}
        Err(status) => anyhow::bail!("creating the bench site: {}", super::describe(&status)),
    }
    let existing = client
        .call(|c| async move {
            DirectoryClient::new(c)
                .search(pb::SearchRequest { home_site: BENCH_SITE_ID, limit: 0, ..Default::default() })
                .await
        })
        .await?
        .into_inner()
        .entries
        .len() as u32;
    let create = (existing..users).map(|index| async move {
        let user = pb::User {
            username: format!("bench{index}"),
            display_name: format!("Bench User {index}"),
            email: format!("bench{index}@bench.local"),
            home_site: BENCH_SITE_ID,
            extension: format!("7{index:07}"),
            ..Default::default()
        };
        match client
            .call(|c| {
                let u = user.clone();
                async move { DirectoryClient::new(c).add_user(pb::UserRequest { user: Some(u) }).await }
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
            Err(status) => Err(anyhow::anyhow!("creating bench{index}: {}", super::describe(&status))),
        }
    });
    use futures::StreamExt;
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(create).buffer_unordered(64).collect().await;
    results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    Ok(())
}

#[derive(Default)]
struct Tally {
    histogram: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

async fn presence(client: &Client, args: PresenceArgs, format: Format) -> anyhow::Result<()> {
    if args.clients == 0 || args.users == 0 || args.duration == 0 || args.status_percent > 100 {
        anyhow::bail!("--clients, --users and --duration must be positive and --status-percent at most 100");
    }
    prepare(client, args.users).await?;
    let endpoints = client.endpoints();
    let connection_count = args.connections.unwrap_or(args.clients.min(16)).max(1);
    let mut channels = Vec::new();
    for index in 0..connection_count {
        channels.push(connect(&endpoints[index as usize % endpoints.len()]).await?);
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // Interaction ids must not collide with those a previous run left open.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    for index in 0..args.clients {
        let channel = channels[index as usize % channels.len()].clone();
        let (measuring, stop) = (measuring.clone(), stop.clone());
        let (users, status_percent, seed, clients) = (args.users, args.status_percent, args.seed, args.clients);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(index as u64));
            let mut presences = PresencesClient::new(channel);
            let mut tally = Tally {
                histogram: Some(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")),
                errors: BTreeMap::new(),
            };
            let mut logged_on = std::collections::BTreeSet::new();
            let mut on_call = std::collections::BTreeSet::new();
            let mut sequence = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let user = rng.gen_range(0..users);
                let username = format!("bench{user}");
                let roll = rng.gen_range(0..100);
                let started = Instant::now();
                // Each client owns the users congruent to its index for logon and interaction
                // state, so its requests are valid without coordination.
                let owned = user % clients == index;
                let result = if roll < status_percent || !owned {
                    let status_key = BENCH_STATUSES[rng.gen_range(0..BENCH_STATUSES.len())].to_string();
                    presences
                        .set_status(pb::SetStatusRequest {
                            username,
                            status_key,
                            until_ms: None,
                            detail: String::new(),
                        })
                        .await
                        .map(|_| ())
                } else if roll < status_percent + (100 - status_percent) * 2 / 3 {
                    if logged_on.remove(&user) {
                        // Logging off ends the user's interactions.
                        on_call.retain(|(u, _)| *u != user);
                        presences.log_off(pb::LogOffRequest { username, reason: "user".into() }).await.map(|_| ())
                    } else {
                        logged_on.insert(user);
                        presences
                            .log_on(pb::LogOnRequest { username, site: BENCH_SITE_ID, server: String::new() })
                            .await
                            .map(|_| ())
                    }
                } else if let Some(id) = on_call.iter().find(|(u, _)| *u == user).cloned() {
                    on_call.remove(&id);
                    presences
                        .end_interaction(pb::InteractionRequest { username, interaction_id: id.1 })
                        .await
                        .map(|_| ())
                } else {
                    sequence += 1;
                    let interaction_id = format!("c{run}-{index}-{sequence}");
                    on_call.insert((user, interaction_id.clone()));
                    presences.start_interaction(pb::InteractionRequest { username, interaction_id }).await.map(|_| ())
                };
                if measuring.load(Ordering::Relaxed) {
                    match result {
                        Ok(()) => {
                            let micros = started.elapsed().as_micros() as u64;
                            tally.histogram.as_mut().expect("histogram").saturating_record(micros.max(1));
                        }
                        Err(status) => *tally.errors.entry(format!("{:?}", status.code())).or_default() += 1,
                    }
                }
            }
            tally
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.warmup)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for task in tasks {
        let tally = task.await?;
        histogram.add(tally.histogram.expect("histogram"))?;
        for (code, count) in tally.errors {
            *errors.entry(code).or_default() += count;
        }
    }
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "workload": "presence",
        "clients": args.clients,
        "connections": connection_count,
        "duration_s": elapsed,
        "ok": histogram.len(),
        "throughput_per_s": histogram.len() as f64 / elapsed,
        "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": histogram.max() as f64 / 1000.0,
        "errors": errors,
    });
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            println!("workload  clients  conns  ok        ops/s     p50 ms  p90 ms  p99 ms  p999 ms  max ms   errors");
            println!(
                "presence  {:<7}  {:<5}  {:<8}  {:<8.0}  {:<6.2}  {:<6.2}  {:<6.2}  {:<7.2}  {:<7.2}  {:?}",
                args.clients,
                connection_count,
                histogram.len(),
                histogram.len() as f64 / elapsed,
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(0.999),
                histogram.max() as f64 / 1000.0,
                errors
            );
        }
    }
    Ok(())
}
