//! `collective bench route`: contact-center calls through the collective. Agents are logged on
//! at several sites in one spanning workgroup; each client routes a call, the reserved agent
//! accepts it and ends it, and the client routes the next. Measures routed calls/s end to end
//! and the latency of the routing request (the decision as a caller sees it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use clap::Args;
use collective_proto::v1 as pb;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::presences_client::PresencesClient;
use collective_proto::v1::routing_client::RoutingClient;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use super::client::{Client, Conn};
use super::output::Format;

/// The benchmark's sites are numbered from here.
const FIRST_ROUTE_SITE: u32 = 800;
/// The benchmark's workgroup.
const WORKGROUP: &str = "bench-route";
/// Languages agents speak (two each, besides the `general` skill every agent has).
const LANGUAGES: [&str; 5] = ["english", "french", "german", "spanish", "dutch"];
/// Setup writes in flight at once.
const SETUP_CONCURRENCY: usize = 32;

#[derive(Args, Debug)]
pub struct RouteArgs {
    /// Agents (created and logged on first if missing).
    #[arg(long, default_value_t = 500)]
    pub agents: u32,
    /// Sites the agents and calls are spread over.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub sites: u32,
    /// Concurrent callers (each one call at a time; keep below --agents so an agent is free).
    #[arg(long, default_value_t = 32)]
    pub clients: u32,
    /// longest-idle, most-skilled or round-robin.
    #[arg(long, default_value = "longest-idle")]
    pub strategy: String,
    /// Percentage of calls that also need a random language at level 30 or more.
    #[arg(long, default_value_t = 30)]
    pub language_percent: u32,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Seed of the agents' skills and the calls.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

fn agent_name(i: u32) -> String {
    format!("route-agent-{i:06}")
}

/// Runs `write` for every item with bounded concurrency; `AlreadyExists` and "already logged on"
/// count as done, so the setup can be repeated against the same cluster.
async fn each<T, F, Fut>(items: Vec<T>, write: F) -> anyhow::Result<()>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Result<(), tonic::Status>> + Send + 'static,
{
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        if running.len() >= SETUP_CONCURRENCY {
            running.join_next().await.expect("running")??;
        }
        running.spawn(write(item));
    }
    while let Some(done) = running.join_next().await {
        done??;
    }
    Ok(())
}

fn tolerate_existing(result: Result<impl Sized, tonic::Status>) -> Result<(), tonic::Status> {
    match result {
        Err(status) if status.code() != tonic::Code::AlreadyExists => Err(status),
        _ => Ok(()),
    }
}

async fn prepare(client: &Client, channel: Conn, args: &RouteArgs) -> anyhow::Result<()> {
    let sites: Vec<u32> = (FIRST_ROUTE_SITE..FIRST_ROUTE_SITE + args.sites).collect();
    for &site in &sites {
        super::bench::ensure_site(client, site, &format!("route-{site}")).await?;
        let lease = pb::GrantLeaseRequest { site, ttl_ms: 300_000 };
        client.call(|c| async move { DirectoryClient::new(c).grant_lease(lease).await }).await?;
    }
    let workgroup = pb::Workgroup { name: WORKGROUP.into(), spans_sites: true, ..Default::default() };
    let request = pb::AddWorkgroupRequest { workgroup: Some(workgroup) };
    tolerate_existing(
        client
            .call(|c| {
                let r = request.clone();
                async move { DirectoryClient::new(c).add_workgroup(r).await }
            })
            .await,
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let agents: Vec<(u32, u32, BTreeMap<String, u32>)> = (0..args.agents)
        .map(|i| {
            let mut skills = BTreeMap::from([("general".to_string(), rng.gen_range(1..=100))]);
            while skills.len() < 3 {
                skills.insert(LANGUAGES[rng.gen_range(0..LANGUAGES.len())].to_string(), rng.gen_range(1..=100));
            }
            (i, sites[i as usize % sites.len()], skills)
        })
        .collect();
    let dir = DirectoryClient::new(channel.clone());
    each(agents.clone(), |(i, site, skills)| {
        let mut dir = dir.clone();
        async move {
            let user = pb::User {
                username: agent_name(i),
                display_name: format!("Route agent {i}"),
                email: format!("{}@bench.local", agent_name(i)),
                home_site: site,
                extension: format!("7{i:06}"),
                skills: skills.into_iter().collect(),
                ..Default::default()
            };
            tolerate_existing(dir.add_user(pb::UserRequest { user: Some(user) }).await)?;
            let member = pb::WorkgroupMemberRequest { workgroup: WORKGROUP.into(), username: agent_name(i) };
            tolerate_existing(dir.add_workgroup_member(member).await)
        }
    })
    .await?;
    let presence = PresencesClient::new(channel);
    each(agents, |(i, site, _)| {
        let mut presence = presence.clone();
        async move {
            let logon = pb::LogOnRequest { username: agent_name(i), site, server: String::new() };
            presence.log_on(logon).await?;
            let available = pb::SetStatusRequest {
                username: agent_name(i),
                status_key: "Available".into(),
                until_ms: None,
                detail: String::new(),
            };
            presence.set_status(available).await.map(|_| ())
        }
    })
    .await?;
    let settings = pb::RoutingSettings {
        workgroup: WORKGROUP.into(),
        strategy: args.strategy.clone(),
        not_answering_on_timeout: true,
        ..Default::default()
    };
    client
        .call(|c| {
            let r = settings.clone();
            async move { RoutingClient::new(c).set_settings(r).await }
        })
        .await?;
    Ok(())
}

/// Runs the benchmark and prints its result.
pub async fn route(client: &Client, args: RouteArgs, format: Format) -> anyhow::Result<()> {
    let endpoints = client.endpoints().to_vec();
    let mut channels = Vec::new();
    for index in 0..endpoints.len() {
        channels.push(client.dedicated(index).await?);
    }
    let prepared = Instant::now();
    prepare(client, channels[0].clone(), &args).await?;
    eprintln!("{} agents ready at {} sites in {:.1} s", args.agents, args.sites, prepared.elapsed().as_secs_f64());
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let queued = Arc::new(AtomicU64::new(0));
    let route_latency = Arc::new(Mutex::new(histogram()));
    let call_latency = Arc::new(Mutex::new(histogram()));
    let examined = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();
    for caller in 0..args.clients {
        let channel = channels[caller as usize % channels.len()].clone();
        let (measuring, stop, calls, queued) = (measuring.clone(), stop.clone(), calls.clone(), queued.clone());
        let (route_latency, call_latency, examined, errors) =
            (route_latency.clone(), call_latency.clone(), examined.clone(), errors.clone());
        let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ (u64::from(caller) << 20));
        let (sites, language_percent, run) = (args.sites, args.language_percent, run.clone());
        tasks.push(tokio::spawn(async move {
            let mut routing = RoutingClient::new(channel.clone());
            let mut presence = PresencesClient::new(channel);
            let count_error = |status: &tonic::Status| {
                *errors.lock().expect("errors lock").entry(format!("{:?}", status.code())).or_default() += 1;
            };
            let mut sequence = 0u64;
            while !stop.load(Ordering::Relaxed) {
                sequence += 1;
                let id = format!("bench-{run}-{caller}-{sequence}");
                let mut skills = BTreeMap::from([("general".to_string(), 1)]);
                if rng.gen_range(0..100) < language_percent {
                    skills.insert(LANGUAGES[rng.gen_range(0..LANGUAGES.len())].to_string(), 30);
                }
                let request = pb::RouteRequest {
                    interaction_id: id.clone(),
                    media: "call".into(),
                    origin_site: FIRST_ROUTE_SITE + rng.gen_range(0..sites),
                    workgroup: WORKGROUP.into(),
                    skills,
                    priority: rng.gen_range(0..10),
                };
                let begun = Instant::now();
                let routed = match routing.route(request).await {
                    Ok(response) => response.into_inner().interaction.unwrap_or_default(),
                    Err(status) => {
                        count_error(&status);
                        continue;
                    }
                };
                let decided = begun.elapsed();
                if routed.stage != "reserved" {
                    // Nobody qualified (every agent with the language busy): hang up.
                    queued.fetch_add(1, Ordering::Relaxed);
                    let _ = routing.cancel(pb::InteractionIdRequest { interaction_id: id }).await;
                    continue;
                }
                let accept = pb::AcceptRequest { interaction_id: id.clone(), agent: routed.agent.clone() };
                if let Err(status) = routing.accept(accept).await {
                    count_error(&status);
                    continue;
                }
                let end = pb::InteractionRequest { username: routed.agent.clone(), interaction_id: id };
                if let Err(status) = presence.end_interaction(end).await {
                    count_error(&status);
                    continue;
                }
                if measuring.load(Ordering::Relaxed) {
                    calls.fetch_add(1, Ordering::Relaxed);
                    let _ = route_latency.lock().expect("lock").record(decided.as_micros().max(1) as u64);
                    let _ = call_latency.lock().expect("lock").record(begun.elapsed().as_micros().max(1) as u64);
                    let scanned = routed.decisions.first().map_or(0, |d| d.examined);
                    let _ = examined.lock().expect("lock").record(scanned.max(1));
                }
            }
            anyhow::Ok(())
        }));
    }
    let elapsed = super::bench::measure_window(args.warmup, args.duration, &[], &measuring, &stop).await.elapsed;
    super::bench::join_workers(tasks).await;
    let calls = calls.load(Ordering::Relaxed);
    let route = route_latency.lock().expect("lock").clone();
    let call = call_latency.lock().expect("lock").clone();
    let examined = examined.lock().expect("lock").clone();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1_000.0;
    let result = serde_json::json!({
        "agents": args.agents,
        "sites": args.sites,
        "clients": args.clients,
        "strategy": args.strategy,
        "seconds": elapsed,
        "calls": calls,
        "calls_per_second": calls as f64 / elapsed,
        "queued_and_cancelled": queued.load(Ordering::Relaxed),
        "route_ms": {"p50": ms(&route, 0.5), "p90": ms(&route, 0.9), "p99": ms(&route, 0.99), "p999": ms(&route, 0.999), "max": route.max() as f64 / 1_000.0},
        "call_ms": {"p50": ms(&call, 0.5), "p99": ms(&call, 0.99), "max": call.max() as f64 / 1_000.0},
        "agents_examined": {"p50": examined.value_at_quantile(0.5), "p99": examined.value_at_quantile(0.99)},
        "errors": *errors.lock().expect("errors lock"),
    });
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&result)?),
        Format::Table => crate::outln!(
            "{} agents at {} sites, {} callers, {}, {:.1} s: {:.0} calls/s routed, accepted and ended; \
             route p50 {:.2} ms p99 {:.2} ms; whole call p50 {:.2} ms p99 {:.2} ms; \
             agents examined p50 {} p99 {}; queued {}; errors {}",
            args.agents,
            args.sites,
            args.clients,
            args.strategy,
            elapsed,
            calls as f64 / elapsed,
            ms(&route, 0.5),
            ms(&route, 0.99),
            ms(&call, 0.5),
            ms(&call, 0.99),
            examined.value_at_quantile(0.5),
            examined.value_at_quantile(0.99),
            result["queued_and_cancelled"],
            serde_json::to_string(&result["errors"])?
        ),
    }
    Ok(())
}
