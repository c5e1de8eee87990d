//! `collective bench load`: fills a collective to a given scale (sites, workgroups, users with
//! skills and a workgroup each), then reports how fast it went and what each member holds:
//! resident memory, users, snapshot size. The writes are ordinary commands with many in flight,
//! so the leader packs hundreds into each log entry (one fsync per entry).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use collective_proto::v1::directory_client::DirectoryClient;
use futures::StreamExt;

use super::client::{Client, Conn};
use super::output::Format;

/// Skill names users draw from.
const SKILLS: [&str; 20] = [
    "english",
    "french",
    "german",
    "spanish",
    "dutch",
    "italian",
    "polish",
    "billing",
    "sales",
    "support",
    "retention",
    "claims",
    "loans",
    "cards",
    "travel",
    "premium",
    "technical",
    "returns",
    "orders",
    "vip",
];
/// Connections to the leader the writes share.
const CONNECTIONS: usize = 8;
/// Most writes one run keeps in flight (the leader queues at most 50,000).
const CONCURRENCY_MAX: usize = 4_096;

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Sites, with ids 1..=N (site ids end at 999).
    #[arg(long, default_value_t = 999, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub sites: u32,
    /// Users, spread evenly over the sites.
    #[arg(long, default_value_t = 1_000_000)]
    pub users: u32,
    /// Workgroups per site; each user joins one of its home site's.
    #[arg(long, default_value_t = 4)]
    pub workgroups_per_site: u32,
    /// Skills per user (levels 1..=100).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(0..=20))]
    pub skills: u32,
    /// Writes in flight.
    #[arg(long, default_value_t = 1_024)]
    pub concurrency: usize,
}

/// Counts a phase's writes and prints progress every few seconds.
struct Progress {
    done: AtomicU64,
    started: Instant,
}

impl Progress {
    fn new() -> Arc<Progress> {
        Arc::new(Progress { done: AtomicU64::new(0), started: Instant::now() })
    }

    fn rate(&self) -> f64 {
        self.done.load(Ordering::Relaxed) as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// Attempts of one write before the load gives up.
const ATTEMPTS: u32 = 5;

/// Runs `write` until it succeeds; a write that already happened (a repeated run, or a retried
/// write whose first attempt applied) counts as done; UNAVAILABLE and RESOURCE_EXHAUSTED (a
/// full queue, an election) are retried with a growing pause, ATTEMPTS times in all.
async fn write_once<F, Fut>(what: &str, write: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<pb::WriteResponse>, tonic::Status>>,
{
    let mut attempt = 1;
    loop {
        match write().await {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == tonic::Code::AlreadyExists => return Ok(()),
            Err(status)
                if attempt < ATTEMPTS
                    && matches!(status.code(), tonic::Code::Unavailable | tonic::Code::ResourceExhausted) =>
            {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            Err(status) => anyhow::bail!("{what}: {}", super::describe(&status)),
        }
    }
}

/// Runs `write(i)` for `0..count` with `concurrency` in flight, each making `writes_each` writes,
/// reporting progress on stderr; returns the seconds taken and the writes per second.
async fn phase<F, Fut>(
    name: &str,
    count: u64,
    writes_each: u64,
    concurrency: usize,
    write: F,
) -> anyhow::Result<(f64, f64)>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let progress = Progress::new();
    // A bar on a terminal; elsewhere (a log, CI) a plain line every 5 s.
    let bar = super::output::progress(name, Some(count * writes_each), super::output::Counted::Writes);
    let reporter = (!super::output::stderr_is_terminal()).then(|| {
        let progress = progress.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let done = progress.done.load(Ordering::Relaxed);
                eprintln!("{name}: {done}/{} writes, {:.0}/s", count * writes_each, progress.rate());
            }
        })
    });
    let writes = futures::stream::iter(0..count).map(&write).buffer_unordered(concurrency);
    futures::pin_mut!(writes);
    let mut result = Ok(());
    while let Some(outcome) = writes.next().await {
        match outcome {
            Ok(()) => {
                progress.done.fetch_add(writes_each, Ordering::Relaxed);
                bar.inc(writes_each);
            }
            Err(error) => {
                result = Err(error);
                break;
            }
        }
    }
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    bar.finish_and_clear();
    result?;
    let elapsed = progress.started.elapsed().as_secs_f64();
    eprintln!("{name}: {} writes in {elapsed:.1} s, {:.0}/s", progress.done.load(Ordering::Relaxed), progress.rate());
    Ok((elapsed, progress.rate()))
}

fn workgroup_name(site: u32, k: u32) -> String {
    format!("load-s{site}-wg{k}")
}

/// The user with global index `i`: home site, skills and workgroup derived from it.
fn user(args: &LoadArgs, i: u64) -> (pb::User, String) {
    let site = (i % u64::from(args.sites)) as u32 + 1;
    let mut skills = std::collections::HashMap::new();
    for s in 0..u64::from(args.skills) {
        let skill = SKILLS[((i / 7 + s * 13) % SKILLS.len() as u64) as usize];
        skills.insert(skill.to_string(), ((i * 31 + s * 17) % 100 + 1) as u32);
    }
    let user = pb::User {
        username: format!("load{i}"),
        display_name: format!("Load User {i}"),
        email: format!("load{i}@load.example"),
        home_site: site,
        extension: format!("{}", 10_000_000 + i),
        skills: skills.into_iter().collect(),
        ..Default::default()
    };
    let workgroup = workgroup_name(site, ((i / u64::from(args.sites)) % u64::from(args.workgroups_per_site)) as u32);
    (user, workgroup)
}

pub async fn load(client: &Client, args: LoadArgs, format: Format) -> anyhow::Result<()> {
    if args.users == 0 || args.workgroups_per_site == 0 || args.concurrency == 0 {
        anyhow::bail!("--users, --workgroups-per-site and --concurrency must be positive");
    }
    if args.concurrency > CONCURRENCY_MAX {
        anyhow::bail!("--concurrency must be at most {CONCURRENCY_MAX}");
    }
    // Writes go to the leader (a follower would forward each one), over a few connections.
    let connections = leader_connections(client, CONNECTIONS).await?;
    let directory = |i: u64| DirectoryClient::new(connections[i as usize % connections.len()].clone());
    let directory = &directory;
    let started = Instant::now();
    let (sites_s, _) = phase("sites", u64::from(args.sites), 1, args.concurrency.min(64), |i| async move {
        let id = i as u32 + 1;
        super::bench::ensure_site(client, id, &format!("load-site-{id}")).await?;
        Ok(())
    })
    .await?;
    let workgroups = u64::from(args.sites) * u64::from(args.workgroups_per_site);
    let (workgroups_s, _) = phase("workgroups", workgroups, 1, args.concurrency, |i| async move {
        let site = (i / u64::from(args.workgroups_per_site)) as u32 + 1;
        let k = (i % u64::from(args.workgroups_per_site)) as u32;
        let request = pb::AddWorkgroupRequest {
            workgroup: Some(pb::Workgroup { name: workgroup_name(site, k), ..Default::default() }),
        };
        write_once("adding a workgroup", || {
            let (mut directory, request) = (directory(i), request.clone());
            async move { directory.add_workgroup(request).await }
        })
        .await?;
        Ok(())
    })
    .await?;
    let args_ref = &args;
    let (users_s, writes_per_s) = phase("users", u64::from(args.users), 2, args.concurrency, |i| async move {
        let (user, workgroup) = user(args_ref, i);
        let username = user.username.clone();
        let request = pb::UserRequest { user: Some(user) };
        write_once(&format!("adding {username}"), || {
            let (mut directory, request) = (directory(i), request.clone());
            async move { directory.add_user(request).await }
        })
        .await?;
        let member = pb::WorkgroupMemberRequest { workgroup, username };
        let what = format!("adding {} to {}", member.username, member.workgroup);
        write_once(&what, || {
            let (mut directory, member) = (directory(i), member.clone());
            async move { directory.add_workgroup_member(member).await }
        })
        .await?;
        Ok(())
    })
    .await?;
    let total_s = started.elapsed().as_secs_f64();
    let members = member_status(client).await;
    let report = serde_json::json!({
        "sites": args.sites,
        "workgroups": workgroups,
        "users": args.users,
        "skills_per_user": args.skills,
        "sites_s": sites_s,
        "workgroups_s": workgroups_s,
        "users_s": users_s,
        "user_writes_per_s": writes_per_s,
        "total_s": total_s,
        "members": members.iter().map(|m| serde_json::json!({
            "id": m.id, "state": m.state, "users": m.users, "sites": m.sites,
            "resident_memory_bytes": m.resident_memory_bytes, "heap_allocated_bytes": m.heap_allocated_bytes,
            "snapshot_bytes": m.snapshot_bytes,
            "snapshot_build_ms": m.snapshot_build_ms, "snapshot_install_ms": m.snapshot_install_ms,
        })).collect::<Vec<_>>(),
    });
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            crate::outln!(
                "loaded {} sites, {workgroups} workgroups, {} users ({} skills each, one workgroup) in {total_s:.1} s",
                args.sites,
                args.users,
                args.skills
            );
            crate::outln!("  sites {sites_s:.1} s, workgroups {workgroups_s:.1} s, users {users_s:.1} s ({writes_per_s:.0} writes/s: user + membership)");
            print_members(&members);
        }
    }
    Ok(())
}

/// `count` connections to the leader (`Client::leader_index`).
async fn leader_connections(client: &Client, count: usize) -> anyhow::Result<Vec<Conn>> {
    let index = client.leader_index().await?;
    let mut connections = Vec::with_capacity(count);
    for _ in 0..count {
        connections.push(client.dedicated(index).await?);
    }
    Ok(connections)
}

/// Every endpoint's own status (unreachable members are left out).
pub(super) async fn member_status(client: &Client) -> Vec<pb::ClusterStatus> {
    let mut members = Vec::new();
    for index in 0..client.endpoints().len() {
        let Ok(conn) = client.dedicated(index).await else { continue };
        if let Ok(status) = ClusterClient::new(conn).status(pb::ClusterStatusRequest {}).await {
            members.push(status.into_inner());
        }
    }
    members
}

/// One line per member: role, users, RSS and snapshot figures.
pub(super) fn print_members(members: &[pb::ClusterStatus]) {
    crate::outln!("  member  state      users      RSS MiB  heap MiB  snapshot MiB  build ms  install ms");
    for m in members {
        crate::outln!(
            "  {:<6}  {:<9}  {:<9}  {:<7.0}  {:<8.0}  {:<12.1}  {:<8}  {}",
            m.id,
            m.state,
            m.users,
            m.resident_memory_bytes as f64 / (1 << 20) as f64,
            m.heap_allocated_bytes as f64 / (1 << 20) as f64,
            m.snapshot_bytes as f64 / (1 << 20) as f64,
            m.snapshot_build_ms,
            m.snapshot_install_ms
        );
    }
}
