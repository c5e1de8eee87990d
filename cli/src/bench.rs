//! `collective bench`: load against a running cluster, latency in HdrHistogram, throughput,
//! errors by gRPC code. A benchmark, never a test.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use collective_proto::v1 as pb;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::presence_change::Change;
use collective_proto::v1::presences_client::PresencesClient;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};

use super::bench_h2::{EtcdPutRequest, H2Channel, ETCD_PUT};
use super::client::{Client, Conn};
use super::output::Format;
use super::submit::Submitter;

/// Site the benchmark's users live at.
pub(super) const BENCH_SITE_ID: u32 = 999;
/// Statuses the presence workload cycles through (none needs an `until`).
const BENCH_STATUSES: [&str; 4] = ["Available", "Away from desk", "On Break", "Gone Home"];

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Concurrent presence writes (status set, logon/logoff, interaction start/end).
    Presence(PresenceArgs),
    /// Sites sending events to each other, each receiving and acknowledging its deliveries.
    Messages(super::bench_messages::MessagesArgs),
    /// Calls routed to agents across sites, each accepted and ended by its agent.
    Route(super::bench_route::RouteArgs),
    /// Presence reads of random users, linearizable or serializable.
    Read(super::bench_read::ReadArgs),
    /// Watchers receiving a writer's status changes: fan-out latency from write to each watcher.
    Watch(super::bench_read::WatchArgs),
    /// Kill the leader under a write load, again and again (real processes on this machine,
    /// restarted afterwards): how long writes pause each time.
    Failover(super::bench_failover::FailoverArgs),
    /// Supervisors' boards open on the live feed while a presence load runs: the writes lost to
    /// them (rounds without and with boards) and how fast a change reaches every board.
    Board(super::bench_board::BoardArgs),
    /// Fill the collective to a scale (sites, workgroups, users with skills), then report each
    /// member's memory and snapshot figures.
    Load(super::bench_load::LoadArgs),
    /// How long an append and its fdatasync take in a directory, into a growing file (as
    /// RocksDB's WAL) and into one written beforehand. Local: needs no cluster.
    Disk(super::bench_disk::DiskArgs),
}

/// The closed-loop load options every request benchmark shares.
#[derive(Args, Debug)]
pub struct Load {
    /// Concurrent clients (each one request at a time).
    #[arg(long, default_value_t = 64)]
    pub clients: u32,
    /// gRPC connections shared by the clients (default: min(clients, 16)).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Measure this many requests (answered or failed) instead of --duration seconds; the window
    /// closes once they are done (at most an hour), so a few more may complete in it.
    #[arg(long)]
    pub count: Option<u64>,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Total requests per second across the clients (default: as fast as they are answered).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Also report the CPU time (user + system) per measured request of these processes (the
    /// members, when they run on this machine; comma-separated pids) and of the bench itself:
    /// on a shared machine, CPU per request is steadier than throughput.
    #[arg(long, value_delimiter = ',')]
    pub cpu_of: Vec<u32>,
}

/// What a measurement window took: its seconds, and the CPU seconds spent in it by the bench
/// (`self`) and by each process of `--cpu-of` (by pid). CPU times come from `/proc` (Linux).
pub(super) struct Window {
    pub(super) elapsed: f64,
    pub(super) cpu_s: Vec<(String, f64)>,
}

/// CPU seconds (user + system) a process has used so far: `self` or a pid, from
/// `/proc/<pid>/stat` in clock ticks of 1/100 s (Linux's fixed USER_HZ). `None` when unreadable.
fn cpu_seconds(process: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces; utime and stime are
    // fields 14 and 15, so the 12th and 13th after it.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The processes whose CPU a window reports, and their CPU seconds when it opened.
struct CpuMeter(Vec<(String, Option<f64>)>);

impl CpuMeter {
    fn start(pids: &[u32]) -> CpuMeter {
        let processes = std::iter::once("self".to_string()).chain(pids.iter().map(u32::to_string));
        CpuMeter(processes.map(|process| (process.clone(), cpu_seconds(&process))).collect())
    }

    /// CPU seconds each used since `start`; a process unreadable at either end is left out.
    fn stop(self) -> Vec<(String, f64)> {
        self.0
            .into_iter()
            .filter_map(|(process, started)| Some((process.clone(), cpu_seconds(&process)? - started?)))
            .collect()
    }
}

/// Longest window a `--count` run measures.
const COUNT_WINDOW_MAX_S: u64 = 3_600;

impl Load {
    /// Checks the options; the error names them.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        if self.clients == 0 || self.duration == 0 || self.count == Some(0) {
            anyhow::bail!("--clients, --duration and --count must be positive");
        }
        if let Some(pid) = self.cpu_of.iter().find(|pid| cpu_seconds(&pid.to_string()).is_none()) {
            anyhow::bail!("--cpu-of: no process {pid} whose CPU time can be read (/proc/{pid}/stat)");
        }
        Ok(())
    }

    /// Opens the measurement window after the warm-up and closes it after `--duration`, or once
    /// `--count` requests were measured (`measured` counts them); returns the measured seconds and
    /// the CPU spent in them (`--cpu-of`).
    pub(super) async fn window(&self, measured: &AtomicU64, measuring: &AtomicBool, stop: &AtomicBool) -> Window {
        let Some(count) = self.count else {
            return measure_window(self.warmup, self.duration, &self.cpu_of, measuring, stop).await;
        };
        tokio::time::sleep(Duration::from_secs(self.warmup)).await;
        measuring.store(true, Ordering::Relaxed);
        let (started, cpu) = (Instant::now(), CpuMeter::start(&self.cpu_of));
        let limit = Duration::from_secs(COUNT_WINDOW_MAX_S);
        while measured.load(Ordering::Relaxed) < count && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        measuring.store(false, Ordering::Relaxed);
        let window = Window { elapsed: started.elapsed().as_secs_f64(), cpu_s: cpu.stop() };
        stop.store(true, Ordering::Relaxed);
        window
    }

    /// Connections to open: `--connections`, or one per client up to 16.
    pub(super) fn connection_count(&self) -> u32 {
        self.connections.unwrap_or(self.clients.min(16)).max(1)
    }
}

#[derive(Args, Debug)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub load: Load,
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
    /// What to load: this collective, or an etcd cluster given by --endpoints (the same writes
    /// as puts of serialized presence records), for a side-by-side comparison.
    #[arg(long, value_enum, default_value = "collective")]
    pub target: Target,
    /// Which members the connections go to: the current leader, or spread over --endpoints (a
    /// follower hands each write on to the leader). The same for either target.
    #[arg(long, value_enum, default_value = "leader")]
    pub send_to: SendTo,
    /// How collective receives the changes: one unary call each, or over one `Submit` stream
    /// per connection, each change still a write of its own, answered on its own. etcd has no
    /// streamed put: its target takes only `unary`.
    #[arg(long, value_enum, default_value = "unary")]
    pub api: Api,
    /// How unary calls travel: through tonic's channel (TLS, tokens, reconnection), or straight
    /// over plaintext HTTP/2 connections, which costs the bench less CPU per call where it shares
    /// the cores with the members it measures. The same for either target.
    #[arg(long, value_enum, default_value = "tonic")]
    pub transport: Transport,
}

/// How a write benchmark's unary calls travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// tonic's channel, as the CLI's other commands use it.
    Tonic,
    /// One HTTP/2 connection each, the calling task sending and reading its own frames
    /// (plaintext only; `cli/src/bench_h2.rs`).
    H2,
}

/// How a write benchmark sends its changes to collective.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Api {
    /// One unary call per change (`SetStatus`, `LogOn`, ...).
    Unary,
    /// The changes of a connection's clients over one `Presences/Submit` stream.
    Stream,
}

/// Where a write benchmark's connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendTo {
    /// The current leader: no member hands the writes on.
    Leader,
    /// Every endpoint in turn.
    All,
}

/// A benchmark target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// A collective cluster.
    Collective,
    /// An etcd v3 cluster.
    Etcd,
}

/// Runs a benchmark.
pub async fn run(client: &Client, command: BenchCommand, format: Format) -> anyhow::Result<()> {
    match command {
        BenchCommand::Presence(args) => presence(client, args, format).await,
        BenchCommand::Messages(args) => super::bench_messages::messages(client, args, format).await,
        BenchCommand::Route(args) => super::bench_route::route(client, args, format).await,
        BenchCommand::Read(args) => super::bench_read::read(client, args, format).await,
        BenchCommand::Watch(args) => super::bench_read::watch(client, args, format).await,
        BenchCommand::Board(args) => super::bench_board::board(client, args, format).await,
        BenchCommand::Load(args) => super::bench_load::load(client, args, format).await,
        BenchCommand::Failover(args) => super::bench_failover::failover(client, args, format).await,
        BenchCommand::Disk(args) => super::bench_disk::disk(args, format).await,
    }
}

/// Warms up, opens the measurement window for `duration_s`, then tells the workers to stop;
/// returns the measured seconds and the CPU the bench and the `cpu_of` processes spent in them.
/// Workers record only while `measuring` is set.
pub(super) async fn measure_window(
    warmup_s: u64,
    duration_s: u64,
    cpu_of: &[u32],
    measuring: &AtomicBool,
    stop: &AtomicBool,
) -> Window {
    tokio::time::sleep(Duration::from_secs(warmup_s)).await;
    measuring.store(true, Ordering::Relaxed);
    let (started, cpu) = (Instant::now(), CpuMeter::start(cpu_of));
    tokio::time::sleep(Duration::from_secs(duration_s)).await;
    measuring.store(false, Ordering::Relaxed);
    let window = Window { elapsed: started.elapsed().as_secs_f64(), cpu_s: cpu.stop() };
    stop.store(true, Ordering::Relaxed);
    window
}

/// Spaces one client's requests to a rate: each request has a scheduled start, and latency is
/// measured from it (a slow answer delays the next request but is not forgiven, so coordinated
/// omission does not flatter the percentiles). Without a rate, requests go back to back.
pub(super) struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    /// `rate` requests per second in total, shared by `clients`.
    pub(super) fn new(rate: Option<u32>, clients: u32) -> Pacer {
        let interval =
            rate.filter(|rate| *rate > 0).map(|rate| Duration::from_secs_f64(f64::from(clients) / f64::from(rate)));
        Pacer { interval, next: Instant::now() }
    }

    /// Waits for the next slot; returns the time latency is measured from.
    pub(super) async fn slot(&mut self) -> Instant {
        let Some(interval) = self.interval else { return Instant::now() };
        let scheduled = self.next;
        self.next += interval;
        tokio::time::sleep_until(scheduled.into()).await;
        scheduled
    }
}

/// A latency histogram in µs (1 µs to 60 s, 3 significant digits).
pub(super) fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// Prints a benchmark's result as one table row or as JSON (the fields `deploy/bench-vs-etcd.sh`
/// reads), with the CPU per measured request of the bench and each `--cpu-of` process.
#[allow(clippy::too_many_arguments)]
pub(super) fn print_report(
    format: Format,
    workload: &str,
    target: &str,
    clients: u32,
    connections: u32,
    window: &Window,
    histogram: &Histogram<u64>,
    errors: &BTreeMap<String, u64>,
) -> anyhow::Result<()> {
    let elapsed = window.elapsed;
    let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
    let requests = (histogram.len() + errors.values().sum::<u64>()).max(1) as f64;
    let cpu_us_per_request: BTreeMap<&str, f64> =
        window.cpu_s.iter().map(|(process, seconds)| (process.as_str(), seconds * 1e6 / requests)).collect();
    let report = serde_json::json!({
        "workload": workload,
        "target": target,
        "clients": clients,
        "connections": connections,
        "duration_s": elapsed,
        "ok": histogram.len(),
        "throughput_per_s": histogram.len() as f64 / elapsed,
        "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "max_ms": histogram.max() as f64 / 1000.0,
        "errors": errors,
        "cpu_us_per_request": cpu_us_per_request,
    });
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            crate::outln!("workload  target      clients  conns  ok        ops/s     p50 ms  p90 ms  p99 ms  p999 ms  max ms   errors");
            crate::outln!(
                "{:<8}  {:<10}  {:<7}  {:<5}  {:<8}  {:<8.0}  {:<6.2}  {:<6.2}  {:<6.2}  {:<7.2}  {:<7.2}  {:?}",
                workload,
                target,
                clients,
                connections,
                histogram.len(),
                histogram.len() as f64 / elapsed,
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(0.999),
                histogram.max() as f64 / 1000.0,
                errors
            );
            let cpu: Vec<String> =
                cpu_us_per_request.iter().map(|(process, us)| format!("{process} {us:.1}")).collect();
            crate::outln!("CPU µs per request: {}", cpu.join(", "));
        }
    }
    Ok(())
}

/// Waits for the workers of a benchmark, reporting any that failed.
pub(super) async fn join_workers(tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>) {
    for task in tasks {
        if let Ok(Err(error)) = task.await {
            eprintln!("a bench task failed: {error:#}");
        }
    }
}

/// Adds an active benchmark site unless it exists.
pub(super) async fn ensure_site(client: &Client, id: u32, name: &str) -> anyhow::Result<()> {
    let site = pb::AddSiteRequest {
        site: Some(pb::Site {
            id,
            name: name.into(),
            phone: format!("+1 555 {id:04}"),
            active: Some(true),
            servers: vec![format!("{name}.local")],
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
        Ok(_) => Ok(()),
        Err(status) if status.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(status) => anyhow::bail!("creating bench site {id}: {}", super::describe(&status)),
    }
}

/// Creates the bench site and users `bench0..bench{users}` that are missing.
pub(super) async fn prepare(client: &Client, users: u32) -> anyhow::Result<()> {
    ensure_site(client, BENCH_SITE_ID, "bench").await?;
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

/// What the clients of a closed-loop benchmark measured: one latency histogram and the errors by
/// code, shared by all clients. One histogram (~136 KiB of counters, of which a run touches a few
/// lines) stays in cache; one per client (1,000 of them) missed it on most records, which cost
/// the bench ~5 % of its CPU, taken from the cluster under test on a shared machine.
#[derive(Clone)]
pub(super) struct Tally(Arc<std::sync::Mutex<Measured>>);

/// Latencies in µs, and errors by code.
type Measured = (Histogram<u64>, BTreeMap<String, u64>);

impl Tally {
    pub(super) fn new() -> Tally {
        Tally(Arc::new(std::sync::Mutex::new((histogram(), BTreeMap::new()))))
    }

    /// One request's outcome: its latency since `started`, or its error code.
    pub(super) fn record(&self, started: Instant, result: Result<(), String>) {
        match result {
            Ok(()) => self.latencies([started.elapsed().as_micros() as u64]),
            Err(code) => self.error(code),
        }
    }

    /// Latencies in µs, under one lock.
    pub(super) fn latencies(&self, micros: impl IntoIterator<Item = u64>) {
        let mut tally = self.0.lock().expect("tally lock");
        for micros in micros {
            tally.0.saturating_record(micros.max(1));
        }
    }

    /// One failure, by code.
    pub(super) fn error(&self, code: String) {
        *self.0.lock().expect("tally lock").1.entry(code).or_default() += 1;
    }

    /// The histogram and the errors, once the clients are done.
    pub(super) fn take(&self) -> Measured {
        std::mem::replace(&mut *self.0.lock().expect("tally lock"), (histogram(), BTreeMap::new()))
    }
}

/// One client of a closed-loop benchmark: each call is one timed request.
pub(super) trait Worker: Send + 'static {
    /// Sends the next request and waits for its answer (`Err` names the error code).
    fn call(&mut self) -> impl std::future::Future<Output = Result<(), String>> + Send + '_;
}

/// Runs one closed-loop task per client (`--clients`), each paced by `--rate`, until the
/// measured window ends; only requests started inside the window count. Hands the workers back,
/// so a benchmark of several phases keeps each client's state (who it logged on) across them.
pub(super) async fn closed_loop<W: Worker>(load: &Load, workers: Vec<W>) -> anyhow::Result<(Window, Measured, Vec<W>)> {
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let measured = Arc::new(AtomicU64::new(0));
    let tally = Tally::new();
    let mut tasks = Vec::new();
    for mut worker in workers {
        let (measuring, stop, measured, tally) = (measuring.clone(), stop.clone(), measured.clone(), tally.clone());
        let mut pacer = Pacer::new(load.rate, load.clients);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let started = pacer.slot().await;
                let result = worker.call().await;
                if measuring.load(Ordering::Relaxed) {
                    measured.fetch_add(1, Ordering::Relaxed);
                    tally.record(started, result);
                }
            }
            worker
        }));
    }
    let window = load.window(&measured, &measuring, &stop).await;
    let mut workers = Vec::with_capacity(tasks.len());
    for task in tasks {
        workers.push(task.await?);
    }
    Ok((window, tally.take(), workers))
}

/// One client of `bench presence`: its own draw of the workload, sent to its connection.
pub(super) struct PresenceWorker {
    sink: Sink,
    workload: Workload,
}

impl Worker for PresenceWorker {
    async fn call(&mut self) -> Result<(), String> {
        let op = self.workload.next();
        self.sink.execute(op).await
    }
}

/// One presence change of the workload.
enum Op {
    SetStatus { user: u32, status_key: &'static str },
    LogOn { user: u32 },
    LogOff { user: u32 },
    StartInteraction { user: u32, interaction_id: String },
    EndInteraction { user: u32, interaction_id: String },
}

/// Draws the workload of one client. Each client owns the users congruent to its index for
/// logon and interaction state, so its requests are valid without coordination; status sets go
/// to any user.
struct Workload {
    rng: rand::rngs::StdRng,
    index: u32,
    clients: u32,
    users: u32,
    status_percent: u32,
    run: u128,
    sequence: u64,
    logged_on: std::collections::BTreeSet<u32>,
    on_call: std::collections::BTreeMap<u32, String>,
}

impl Workload {
    fn next(&mut self) -> Op {
        let roll = self.rng.gen_range(0..100);
        let owned = if self.index < self.users { (self.users - self.index).div_ceil(self.clients) } else { 0 };
        if roll < self.status_percent || owned == 0 {
            let status_key = BENCH_STATUSES[self.rng.gen_range(0..BENCH_STATUSES.len())];
            return Op::SetStatus { user: self.rng.gen_range(0..self.users), status_key };
        }
        let user = self.index + self.clients * self.rng.gen_range(0..owned);
        if roll < self.status_percent + (100 - self.status_percent) * 2 / 3 {
            if self.logged_on.remove(&user) {
                // Logging off ends the user's interactions.
                self.on_call.remove(&user);
                Op::LogOff { user }
            } else {
                self.logged_on.insert(user);
                Op::LogOn { user }
            }
        } else if let Some(interaction_id) = self.on_call.remove(&user) {
            Op::EndInteraction { user, interaction_id }
        } else {
            self.sequence += 1;
            let interaction_id = format!("c{}-{}-{}", self.run, self.index, self.sequence);
            self.on_call.insert(user, interaction_id.clone());
            Op::StartInteraction { user, interaction_id }
        }
    }
}

/// Where the load goes.
enum Sink {
    Collective(PresencesClient<Conn>),
    /// collective's `Submit` stream, shared by the clients of one connection.
    Stream(Arc<Submitter>),
    /// etcd: one put of the equivalent serialized presence record per change.
    Etcd(Box<etcd_client::KvClient>),
    /// collective's unary calls over `--transport h2`.
    CollectiveH2(H2Channel),
    /// etcd's puts over `--transport h2`.
    EtcdH2(H2Channel),
}

impl Op {
    /// The change collective is asked for.
    fn change(self) -> Change {
        match self {
            Op::SetStatus { user, status_key } => Change::SetStatus(pb::SetStatusRequest {
                username: format!("bench{user}"),
                status_key: status_key.to_string(),
                until_ms: None,
                detail: String::new(),
            }),
            Op::LogOn { user } => Change::LogOn(pb::LogOnRequest {
                username: format!("bench{user}"),
                site: BENCH_SITE_ID,
                server: String::new(),
            }),
            Op::LogOff { user } => {
                Change::LogOff(pb::LogOffRequest { username: format!("bench{user}"), reason: "user".into() })
            }
            Op::StartInteraction { user, interaction_id } => {
                Change::StartInteraction(pb::InteractionRequest { username: format!("bench{user}"), interaction_id })
            }
            Op::EndInteraction { user, interaction_id } => {
                Change::EndInteraction(pb::InteractionRequest { username: format!("bench{user}"), interaction_id })
            }
        }
    }

    /// The etcd put standing for this change: the key and the serialized presence record.
    fn etcd_put(self) -> (String, String) {
        let (user, status_key, logged_on, on_phone) = match self {
            Op::SetStatus { user, status_key } => (user, status_key, false, false),
            Op::LogOn { user } => (user, "Available", true, false),
            Op::LogOff { user } => (user, "Available", false, false),
            Op::StartInteraction { user, .. } => (user, "Available", true, true),
            Op::EndInteraction { user, .. } => (user, "Available", true, false),
        };
        let record = serde_json::json!({
            "username": format!("bench{user}"), "status_key": status_key, "detail": "",
            "current_site": if logged_on { BENCH_SITE_ID } else { 0 }, "on_phone": on_phone,
            "since_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        });
        (format!("presence/bench{user}"), record.to_string())
    }
}

impl Sink {
    /// Executes one change; the error is the gRPC code (or etcd's error kind).
    async fn execute(&mut self, op: Op) -> Result<(), String> {
        match self {
            Sink::Collective(presences) => {
                let result = match op.change() {
                    Change::SetStatus(request) => presences.set_status(request).await,
                    Change::LogOn(request) => presences.log_on(request).await,
                    Change::LogOff(request) => presences.log_off(request).await,
                    Change::StartInteraction(request) => presences.start_interaction(request).await,
                    Change::EndInteraction(request) => presences.end_interaction(request).await,
                };
                result.map(|_| ()).map_err(|status| format!("{:?}", status.code()))
            }
            Sink::Stream(submitter) => {
                submitter.submit(op.change()).await.map(|_| ()).map_err(|status| format!("{:?}", status.code()))
            }
            Sink::Etcd(kv) => {
                let (key, value) = op.etcd_put();
                kv.put(key, value, None).await.map(|_| ()).map_err(|e| format!("etcd: {e}"))
            }
            Sink::CollectiveH2(channel) => match op.change() {
                Change::SetStatus(request) => channel.unary("/collective.v1.Presences/SetStatus", &request).await,
                Change::LogOn(request) => channel.unary("/collective.v1.Presences/LogOn", &request).await,
                Change::LogOff(request) => channel.unary("/collective.v1.Presences/LogOff", &request).await,
                Change::StartInteraction(request) => {
                    channel.unary("/collective.v1.Presences/StartInteraction", &request).await
                }
                Change::EndInteraction(request) => {
                    channel.unary("/collective.v1.Presences/EndInteraction", &request).await
                }
            },
            Sink::EtcdH2(channel) => {
                let (key, value) = op.etcd_put();
                channel.unary(ETCD_PUT, &EtcdPutRequest { key: key.into_bytes(), value: value.into_bytes() }).await
            }
        }
    }
}

/// The index in `endpoints` of the etcd leader: the member whose status names itself as the
/// leader. Members that do not answer are skipped; the error lists what each one said.
async fn etcd_leader_index(endpoints: &[String]) -> anyhow::Result<usize> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(super::client::CONNECT_TIMEOUT_MS))
        .with_timeout(Duration::from_secs(10));
    let mut answers = Vec::with_capacity(endpoints.len());
    for (index, endpoint) in endpoints.iter().enumerate() {
        let status = match etcd_client::Client::connect([endpoint.clone()], Some(options.clone())).await {
            Ok(mut etcd) => etcd.status().await,
            Err(error) => Err(error),
        };
        match status {
            Ok(status) => {
                let member = status.header().map(|header| header.member_id());
                if status.leader() != 0 && member == Some(status.leader()) {
                    return Ok(index);
                }
                answers.push(match status.leader() {
                    0 => format!("{endpoint}: knows no leader"),
                    leader => format!("{endpoint}: a follower of {leader:x}"),
                });
            }
            Err(error) => answers.push(format!("{endpoint}: {error}")),
        }
    }
    anyhow::bail!("no etcd leader among --endpoints ({}): name it there", answers.join("; "))
}

async fn presence(client: &Client, args: PresenceArgs, format: Format) -> anyhow::Result<()> {
    let (workers, connection_count) = presence_workers(client, &args).await?;
    let (window, (histogram, errors), _) = closed_loop(&args.load, workers).await?;
    let target = format!("{:?}", args.target).to_lowercase();
    let workload = match args.api {
        Api::Unary => "presence",
        Api::Stream => "presence-stream",
    };
    print_report(format, workload, &target, args.load.clients, connection_count, &window, &histogram, &errors)
}

/// The clients of a presence load (`--clients`, over `--connections`), after checking the
/// options and creating the bench users; returns them and the number of connections.
pub(super) async fn presence_workers(
    client: &Client,
    args: &PresenceArgs,
) -> anyhow::Result<(Vec<PresenceWorker>, u32)> {
    args.load.check()?;
    if args.users == 0 || args.status_percent > 100 {
        anyhow::bail!("--users must be positive and --status-percent at most 100");
    }
    let endpoints = client.endpoints();
    let connection_count = args.load.connection_count();
    if args.transport == Transport::H2 && args.api == Api::Stream {
        anyhow::bail!("--transport h2 carries unary calls; --api stream runs over tonic (use --transport tonic)");
    }
    super::bench_h2::check(client, args.target, args.transport)?;
    let mut sinks = Vec::new();
    match args.target {
        Target::Collective => {
            prepare(client, args.users).await?;
            let leader = match args.send_to {
                SendTo::Leader => Some(client.leader_index().await?),
                SendTo::All => None,
            };
            for index in 0..connection_count {
                let index = leader.unwrap_or(index as usize);
                if args.transport == Transport::H2 {
                    let endpoint = &endpoints[index % endpoints.len()];
                    sinks.push(Sink::CollectiveH2(H2Channel::open(client, args.target, endpoint).await?));
                    continue;
                }
                let conn = client.dedicated(index).await?;
                sinks.push(match args.api {
                    Api::Unary => Sink::Collective(PresencesClient::new(conn)),
                    Api::Stream => Sink::Stream(Arc::new(Submitter::open(conn).await?)),
                });
            }
        }
        Target::Etcd if args.api == Api::Stream => {
            anyhow::bail!("--api stream is collective's Submit stream; etcd has no streamed put (use --api unary)")
        }
        Target::Etcd => {
            let leader = match args.send_to {
                SendTo::Leader => Some(etcd_leader_index(endpoints).await?),
                SendTo::All => None,
            };
            for index in 0..connection_count {
                let endpoint = endpoints[leader.unwrap_or(index as usize % endpoints.len())].clone();
                if args.transport == Transport::H2 {
                    sinks.push(Sink::EtcdH2(H2Channel::open(client, args.target, &endpoint).await?));
                    continue;
                }
                let etcd = etcd_client::Client::connect([endpoint.clone()], None)
                    .await
                    .map_err(|e| anyhow::anyhow!("etcd at {endpoint}: {e}"))?;
                sinks.push(Sink::Etcd(Box::new(etcd.kv_client())));
            }
        }
    }
    // Interaction ids must not collide with those a previous run left open.
    let run = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    let workers = (0..args.load.clients)
        .map(|index| PresenceWorker {
            sink: match &sinks[index as usize % sinks.len()] {
                Sink::Collective(presences) => Sink::Collective(presences.clone()),
                Sink::Stream(submitter) => Sink::Stream(submitter.clone()),
                Sink::Etcd(kv) => Sink::Etcd(kv.clone()),
                Sink::CollectiveH2(channel) => Sink::CollectiveH2(channel.clone()),
                Sink::EtcdH2(channel) => Sink::EtcdH2(channel.clone()),
            },
            workload: Workload {
                rng: rand::rngs::StdRng::seed_from_u64(args.seed.wrapping_mul(1_000_003).wrapping_add(index as u64)),
                index,
                clients: args.load.clients,
                users: args.users,
                status_percent: args.status_percent,
                run,
                sequence: 0,
                logged_on: Default::default(),
                on_call: Default::default(),
            },
        })
        .collect();
    Ok((workers, connection_count))
}
