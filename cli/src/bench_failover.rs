//! `collective bench failover`: kills the leader under a write load, again and again, and
//! measures how long writes pause each time. A benchmark of real processes on this machine: it
//! SIGKILLs the leader's process and starts it again with the command line, working directory
//! and environment it had (read from `/proc`), so it needs the members' pids (`--pids`).
//!
//! The pause of one kill is the longest gap between two consecutive acknowledged writes from the
//! kill until `--settle` seconds after it: under load, writes are acknowledged every few ms, so
//! the gap that spans the kill is the time from the last write the old leader acknowledged to the
//! first the new leader did.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use collective_proto::v1::presences_client::PresencesClient;

use super::bench::prepare;
use super::client::Client;
use super::output::Format;

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// The members' process ids (comma-separated); each one's `--id` is read from its command line.
    #[arg(long, value_delimiter = ',', required = true)]
    pub pids: Vec<u32>,
    /// Leader kills to measure.
    #[arg(long, default_value_t = 20)]
    pub kills: u32,
    /// Concurrent writers, spread over --endpoints.
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// Users written to (created first if missing).
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// Seconds after each kill in which writes must resume (the pause is measured within it).
    #[arg(long, default_value_t = 5)]
    pub settle: u64,
    /// Where a restarted member's output goes (`member-ID.log`, appended).
    #[arg(long, default_value = "/tmp")]
    pub log_dir: PathBuf,
    /// How the leader is stopped: `kill` (SIGKILL, a crash) or `term` (SIGTERM, a graceful stop
    /// that hands leadership over first).
    #[arg(long, value_enum, default_value_t = StopSignal::Kill)]
    pub signal: StopSignal,
}

/// How `bench failover` stops the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StopSignal {
    /// SIGKILL: the process dies at once, as in a crash.
    Kill,
    /// SIGTERM: the member stops gracefully (a leader hands over first).
    Term,
}

/// Longest a member stopped with SIGTERM may take to exit.
const TERM_EXIT_WAIT_S: u64 = 15;

/// Most kills one run may ask for.
const KILLS_MAX: u32 = 1_000;
/// Longest a kill's measurement waits for writes to resume.
const RESUME_WAIT_MAX_S: u64 = 60;
/// Writes flow when one was acknowledged within this long.
const FLOWING_WITHIN_MS: u64 = 100;

/// A member process: its id, pid and how to start it again.
struct Member {
    id: u64,
    pid: u32,
    argv: Vec<String>,
    cwd: PathBuf,
    environment: Vec<(String, String)>,
}

impl Member {
    /// Reads a running member's command line, directory and environment from `/proc`.
    fn of(pid: u32) -> anyhow::Result<Member> {
        let read = |what: &str| {
            std::fs::read(format!("/proc/{pid}/{what}"))
                .map_err(|e| anyhow::anyhow!("--pids: process {pid}: /proc/{pid}/{what}: {e}"))
        };
        let split = |bytes: Vec<u8>| -> Vec<String> {
            bytes
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        let argv = split(read("cmdline")?);
        let environment = split(read("environ")?)
            .into_iter()
            .filter_map(|pair| pair.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
            .collect::<Vec<_>>();
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map_err(|e| anyhow::anyhow!("--pids: process {pid}: its directory: {e}"))?;
        let flag = argv.iter().position(|arg| arg == "--id").and_then(|at| argv.get(at + 1)).cloned();
        let inline = argv.iter().find_map(|arg| arg.strip_prefix("--id=").map(str::to_string));
        let from_env = environment.iter().find(|(k, _)| k == "COLLECTIVE_ID").map(|(_, v)| v.clone());
        let id = flag.or(inline).or(from_env).ok_or_else(|| {
            anyhow::anyhow!("--pids: process {pid} has no --id or COLLECTIVE_ID: is it `collective serve`?")
        })?;
        let id = id.parse().map_err(|_| anyhow::anyhow!("--pids: process {pid}: --id {id:?} is not a number"))?;
        Ok(Member { id, pid, argv, cwd, environment })
    }

    fn kill(&self, signal: StopSignal) -> anyhow::Result<()> {
        let flag = match signal {
            StopSignal::Kill => "-KILL",
            StopSignal::Term => "-TERM",
        };
        let status = std::process::Command::new("kill").args([flag, &self.pid.to_string()]).status()?;
        if !status.success() {
            anyhow::bail!("kill {flag} {} failed", self.pid);
        }
        Ok(())
    }

    /// Whether the process has exited (gone, or a zombie its parent has not reaped).
    fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => true,
            Ok(stat) => stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')),
        }
    }

    /// Starts the member again as it was started; it gets a new pid.
    fn restart(&mut self, log_dir: &std::path::Path) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("member-{}.log", self.id)))?;
        let child = std::process::Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .current_dir(&self.cwd)
            .env_clear()
            .envs(self.environment.iter().cloned())
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.pid = child.id();
        // Reaped by a thread of its own, so the killed process leaves no zombie behind.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }
}

/// The acknowledged writes' timeline: the last acknowledgement and the longest gap since reset.
#[derive(Default)]
struct Gaps {
    last: Option<Instant>,
    longest: Duration,
}

/// Runs the failover benchmark.
pub async fn failover(client: &Client, args: FailoverArgs, format: Format) -> anyhow::Result<()> {
    if args.kills == 0 || args.kills > KILLS_MAX || args.clients == 0 || args.users == 0 || args.settle == 0 {
        anyhow::bail!("--kills (1..={KILLS_MAX}), --clients, --users and --settle must be positive");
    }
    let mut members: Vec<Member> = args.pids.iter().map(|pid| Member::of(*pid)).collect::<anyhow::Result<_>>()?;
    prepare(client, args.users).await?;
    let gaps = Arc::new(Mutex::new(Gaps::default()));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for index in 0..args.clients {
        let connection = client.dedicated(index as usize).await?;
        let (gaps, errors, stop, users) = (gaps.clone(), errors.clone(), stop.clone(), args.users);
        workers.push(tokio::spawn(async move {
            let mut presences = PresencesClient::new(connection);
            let mut sequence = u64::from(index);
            while !stop.load(Ordering::Relaxed) {
                sequence += u64::from(users) / 7 + 1;
                let request = pb::SetStatusRequest {
                    username: format!("bench{}", sequence % u64::from(users)),
                    status_key: if sequence % 2 == 0 { "Available" } else { "Away from desk" }.into(),
                    until_ms: None,
                    detail: String::new(),
                };
                let mut call = tonic::Request::new(request);
                call.set_timeout(Duration::from_secs(2));
                match presences.set_status(call).await {
                    Ok(_) => {
                        let now = Instant::now();
                        let mut gaps = gaps.lock().expect("gaps lock");
                        if let Some(last) = gaps.last.filter(|last| now > *last) {
                            gaps.longest = gaps.longest.max(now - last);
                        }
                        gaps.last = Some(gaps.last.map_or(now, |last| last.max(now)));
                    }
                    Err(status) => {
                        *errors.lock().expect("errors lock").entry(format!("{:?}", status.code())).or_default() += 1;
                        // A dead member answers at once: do not spin on it.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut pauses_ms = Vec::new();
    let mut term_steps = Vec::new();
    for kill in 1..=args.kills {
        let status = wait_for_leader(client, Duration::from_secs(30)).await?;
        let Some(leader) = members.iter_mut().find(|m| m.id == status.leader_id) else {
            anyhow::bail!("the leader is member {}, whose pid is not in --pids", status.leader_id);
        };
        {
            let mut gaps = gaps.lock().expect("gaps lock");
            gaps.longest = Duration::ZERO;
        }
        let killed_at = Instant::now();
        leader.kill(args.signal)?;
        tokio::time::sleep(Duration::from_secs(args.settle)).await;
        // Writes that have not resumed yet (none acknowledged since the kill, or none lately:
        // answers already in flight at the kill can arrive after it): wait until they flow,
        // so the acknowledgement that closes the gap records it, up to a minute.
        let patience = Instant::now() + Duration::from_secs(RESUME_WAIT_MAX_S);
        let flowing = Duration::from_millis(FLOWING_WITHIN_MS);
        while gaps.lock().expect("gaps lock").last.is_none_or(|last| last <= killed_at || last.elapsed() > flowing) {
            if Instant::now() > patience {
                anyhow::bail!(
                    "kill {kill}: writes did not flow again within {RESUME_WAIT_MAX_S} s of the kill; members: {}; \
                     errors so far: {:?}",
                    describe_members(client).await,
                    errors.lock().expect("errors lock")
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let pause = gaps.lock().expect("gaps lock").longest;
        let after = wait_for_leader(client, Duration::from_secs(30)).await?;
        pauses_ms.push(pause.as_secs_f64() * 1e3);
        term_steps.push(after.term.saturating_sub(status.term));
        if matches!(format, Format::Table) {
            crate::outln!(
                "kill {kill:>3}: leader {} (term {}) killed; writes paused {:.0} ms; new leader {} in term {}",
                status.leader_id,
                status.term,
                pause.as_secs_f64() * 1e3,
                after.leader_id,
                after.term
            );
        }
        let exit_wait = Instant::now() + Duration::from_secs(TERM_EXIT_WAIT_S);
        while !leader.exited() {
            if Instant::now() > exit_wait {
                anyhow::bail!("kill {kill}: member {} did not exit within {TERM_EXIT_WAIT_S} s", leader.id);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        leader.restart(&args.log_dir)?;
        // The restarted member catches up before the next kill, so every kill leaves a quorum.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let errors = errors.lock().expect("errors lock").clone();
    report(format, &pauses_ms, &term_steps, &errors)
}

/// Each endpoint's view (leader, term, indexes, state), for a failure report.
async fn describe_members(client: &Client) -> String {
    let mut views = Vec::new();
    for index in 0..client.endpoints().len() {
        let view = match client.dedicated(index).await {
            Ok(connection) => match ClusterClient::new(connection).status(pb::ClusterStatusRequest {}).await {
                Ok(status) => {
                    let s = status.into_inner();
                    format!(
                        "{} {}: leader {} term {} log {} applied {}",
                        s.id, s.state, s.leader_id, s.term, s.last_log_index, s.applied_index
                    )
                }
                Err(status) => format!("{}: {:?} {}", client.endpoints()[index], status.code(), status.message()),
            },
            Err(error) => format!("{}: {error}", client.endpoints()[index]),
        };
        views.push(view);
    }
    views.join("; ")
}

/// The cluster's status once some member names a leader.
async fn wait_for_leader(client: &Client, patience: Duration) -> anyhow::Result<pb::ClusterStatus> {
    let deadline = Instant::now() + patience;
    loop {
        let status =
            client.call(|c| async move { ClusterClient::new(c).status(pb::ClusterStatusRequest {}).await }).await;
        match status {
            Ok(status) if status.get_ref().leader_id != 0 => return Ok(status.into_inner()),
            _ if Instant::now() > deadline => anyhow::bail!("no leader within {} s", patience.as_secs()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn report(format: Format, pauses_ms: &[f64], term_steps: &[u64], errors: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let mut sorted = pauses_ms.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1];
    let elections_after_the_first = term_steps.iter().map(|step| step.saturating_sub(1)).sum::<u64>();
    let report = serde_json::json!({
        "workload": "failover",
        "kills": pauses_ms.len(),
        "pause_ms": pauses_ms,
        "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": at(1.0),
        "terms_per_kill": term_steps,
        "extra_elections": elections_after_the_first,
        "errors": errors,
    });
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            crate::outln!(
                "failover: {} kills; write pause p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms; \
                 {} extra elections (split votes); errors {:?}",
                pauses_ms.len(),
                at(0.5),
                at(0.9),
                at(0.99),
                at(1.0),
                elections_after_the_first,
                errors
            );
        }
    }
    Ok(())
}
