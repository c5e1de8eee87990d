//! `collective bench read` and `collective bench watch`, against this collective or (for the
//! side-by-side comparison) an etcd cluster holding the same presence records as keys.
//!
//! - **read:** clients get the presence of random users, linearizable (a quorum-confirmed read
//!   index, etcd's default) or serializable (the contacted member's state).
//! - **watch:** W watchers follow the bench users' status changes while one writer sets statuses
//!   at a fixed rate, each carrying its send time; the latency is from the write's send to each
//!   watcher's receipt (fan-out), and the throughput counts deliveries.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use collective_proto::v1 as pb;
use collective_proto::v1::presences_client::PresencesClient;
use rand::{Rng, SeedableRng};

use super::bench::{closed_loop, measure_window, prepare, print_report, Load, Pacer, Tally, Target, Transport, Worker};
use super::bench_h2::{EtcdRangeRequest, H2Channel, ETCD_RANGE};
use super::client::{Client, Conn};
use super::output::Format;

/// Most watchers one run opens.
pub const WATCHERS_MAX: u32 = 10_000;

#[derive(Args, Debug)]
pub struct ReadArgs {
    #[command(flatten)]
    pub load: Load,
    /// Users read (created first if missing).
    #[arg(long, default_value_t = 1_000)]
    pub users: u32,
    /// Serve each read from the contacted member without a quorum check.
    #[arg(long)]
    pub serializable: bool,
    /// Seed of the workload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// This collective, or an etcd cluster given by --endpoints (gets of `presence/benchN`).
    #[arg(long, value_enum, default_value = "collective")]
    pub target: Target,
    /// How the reads travel: through tonic's channel, or straight over plaintext HTTP/2
    /// connections (as `bench presence --transport`).
    #[arg(long, value_enum, default_value = "tonic")]
    pub transport: Transport,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Watchers, each its own stream.
    #[arg(long, default_value_t = 100)]
    pub watchers: u32,
    /// gRPC connections shared by the watchers and the writer (default: min(watchers, 16)).
    #[arg(long)]
    pub connections: Option<u32>,
    /// Status changes per second written (one writer).
    #[arg(long, default_value_t = 100)]
    pub rate: u32,
    /// Measured duration in seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Warm-up seconds before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: u64,
    /// Users written to (created first if missing).
    #[arg(long, default_value_t = 100)]
    pub users: u32,
    /// This collective, or an etcd cluster given by --endpoints (a prefix watch on `presence/`).
    #[arg(long, value_enum, default_value = "collective")]
    pub target: Target,
}

pub(super) fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Connections for a run: this collective's members, or etcd clients.
enum Connections {
    Collective(Vec<Conn>),
    Etcd(Vec<etcd_client::Client>),
}

async fn connect(client: &Client, target: Target, count: u32) -> anyhow::Result<Connections> {
    let endpoints = client.endpoints();
    Ok(match target {
        Target::Collective => {
            let mut conns = Vec::new();
            for index in 0..count as usize {
                conns.push(client.dedicated(index).await?);
            }
            Connections::Collective(conns)
        }
        Target::Etcd => {
            let mut clients = Vec::new();
            for index in 0..count as usize {
                let endpoint = endpoints[index % endpoints.len()].clone();
                let etcd = etcd_client::Client::connect([endpoint.clone()], None)
                    .await
                    .map_err(|e| anyhow::anyhow!("etcd at {endpoint}: {e}"))?;
                clients.push(etcd);
            }
            Connections::Etcd(clients)
        }
    })
}

/// Puts a presence record per bench user into etcd, so reads find something of the same size.
async fn prepare_etcd(etcd: &mut etcd_client::Client, users: u32) -> anyhow::Result<()> {
    for user in 0..users {
        let record = serde_json::json!({
            "username": format!("bench{user}"), "status_key": "Available", "detail": "",
            "current_site": 0, "on_phone": false, "since_ms": 0,
        });
        etcd.put(format!("presence/bench{user}"), record.to_string(), None).await?;
    }
    Ok(())
}

/// `collective bench read`.
pub async fn read(client: &Client, args: ReadArgs, format: Format) -> anyhow::Result<()> {
    args.load.check()?;
    if args.users == 0 {
        anyhow::bail!("--users must be positive");
    }
    super::bench_h2::check(client, args.target, args.transport)?;
    let connection_count = args.load.connection_count();
    // Over `--transport h2` one tonic connection prepares the users; the reads have their own.
    let direct = args.transport == Transport::H2;
    let connections = connect(client, args.target, if direct { 1 } else { connection_count }).await?;
    match &connections {
        Connections::Collective(_) => prepare(client, args.users).await?,
        Connections::Etcd(clients) => prepare_etcd(&mut clients[0].clone(), args.users).await?,
    }
    let mut channels = Vec::new();
    if direct {
        let endpoints = client.endpoints();
        for index in 0..connection_count as usize {
            channels.push(H2Channel::open(client, args.target, &endpoints[index % endpoints.len()]).await?);
        }
    }
    let workers = (0..args.load.clients)
        .map(|index| {
            let slot = index as usize % connection_count as usize;
            ReadWorker {
                reader: match &connections {
                    _ if direct => Reader::H2(args.target, channels[slot].clone()),
                    Connections::Collective(conns) => Reader::Collective(PresencesClient::new(conns[slot].clone())),
                    Connections::Etcd(clients) => Reader::Etcd(Box::new(clients[slot].kv_client())),
                },
                rng: rand::rngs::StdRng::seed_from_u64(
                    args.seed.wrapping_mul(1_000_003).wrapping_add(u64::from(index)),
                ),
                users: args.users,
                serializable: args.serializable,
            }
        })
        .collect();
    let (window, (total, errors), _) = closed_loop(&args.load, workers).await?;
    let target = format!("{:?}", args.target).to_lowercase();
    let workload = if args.serializable { "read-serializable" } else { "read" };
    print_report(format, workload, &target, args.load.clients, connection_count, &window, &total, &errors)
}

/// One client of `bench read`: random users read over its connection.
struct ReadWorker {
    reader: Reader,
    rng: rand::rngs::StdRng,
    users: u32,
    serializable: bool,
}

impl Worker for ReadWorker {
    async fn call(&mut self) -> Result<(), String> {
        let user = self.rng.gen_range(0..self.users);
        self.reader.get(user, self.serializable).await
    }
}

/// One reader's connection.
enum Reader {
    Collective(PresencesClient<Conn>),
    Etcd(Box<etcd_client::KvClient>),
    /// Either target over `--transport h2`.
    H2(Target, H2Channel),
}

impl Reader {
    /// Reads one user's presence; the error is the gRPC code (or etcd's error).
    async fn get(&mut self, user: u32, serializable: bool) -> Result<(), String> {
        match self {
            Reader::Collective(presences) => {
                let request = pb::GetPresenceRequest { usernames: vec![format!("bench{user}")], serializable };
                presences.get_presence(request).await.map(|_| ()).map_err(|status| format!("{:?}", status.code()))
            }
            Reader::Etcd(kv) => {
                let options = serializable.then(|| etcd_client::GetOptions::new().with_serializable());
                kv.get(format!("presence/bench{user}"), options).await.map(|_| ()).map_err(|e| format!("etcd: {e}"))
            }
            Reader::H2(Target::Collective, channel) => {
                let request = pb::GetPresenceRequest { usernames: vec![format!("bench{user}")], serializable };
                channel.unary("/collective.v1.Presences/GetPresence", &request).await
            }
            Reader::H2(Target::Etcd, channel) => {
                let request = EtcdRangeRequest { key: format!("presence/bench{user}").into_bytes(), serializable };
                channel.unary(ETCD_RANGE, &request).await
            }
        }
    }
}

/// `collective bench watch`.
pub async fn watch(client: &Client, args: WatchArgs, format: Format) -> anyhow::Result<()> {
    if args.watchers == 0 || args.watchers > WATCHERS_MAX || args.users == 0 || args.duration == 0 || args.rate == 0 {
        anyhow::bail!("--watchers must be within 1..={WATCHERS_MAX}; --users, --duration and --rate must be positive");
    }
    let connection_count = args.connections.unwrap_or(args.watchers.min(16)).max(1);
    let connections = connect(client, args.target, connection_count).await?;
    if let Connections::Collective(_) = &connections {
        prepare(client, args.users).await?;
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Tally::new();
    let mut watchers = Vec::new();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(args.watchers as usize);
    for index in 0..args.watchers as usize {
        let (measuring, stop, ready) = (measuring.clone(), stop.clone(), ready_tx.clone());
        let mut watcher = match &connections {
            Connections::Collective(conns) => {
                let mut presences = PresencesClient::new(conns[index % conns.len()].clone());
                let request = pb::WatchRequest { kinds: vec!["StatusChanged".into()], ..Default::default() };
                Watcher::Collective(presences.watch(request).await?.into_inner())
            }
            Connections::Etcd(clients) => {
                let mut etcd = clients[index % clients.len()].clone();
                let options = etcd_client::WatchOptions::new().with_prefix();
                Watcher::Etcd(etcd.watch("presence/", Some(options)).await?)
            }
        };
        let tally = tally.clone();
        watchers.push(tokio::spawn(async move {
            let _ = ready.send(()).await;
            drop(ready);
            while !stop.load(Ordering::Relaxed) {
                let next = tokio::time::timeout(std::time::Duration::from_millis(200), watcher.next_send_times());
                let sent = match next.await {
                    Err(_) => continue,
                    Ok(Ok(sent)) => sent,
                    Ok(Err(error)) => {
                        tally.error(error);
                        break;
                    }
                };
                if measuring.load(Ordering::Relaxed) {
                    let now = now_us();
                    tally.latencies(sent.into_iter().map(|sent| now.saturating_sub(sent)));
                }
            }
        }));
    }
    drop(ready_tx);
    while ready_rx.recv().await.is_some() {}

    // One writer at the given rate; each change carries its send time.
    let writer_stop = stop.clone();
    let mut writer = match &connections {
        Connections::Collective(conns) => Writer::Collective(PresencesClient::new(conns[0].clone())),
        Connections::Etcd(clients) => Writer::Etcd(Box::new(clients[0].kv_client())),
    };
    let (users, rate) = (args.users, args.rate);
    let writing = tokio::spawn(async move {
        let mut pacer = Pacer::new(Some(rate), 1);
        let mut failures = BTreeMap::<String, u64>::new();
        let mut sequence = 0u32;
        while !writer_stop.load(Ordering::Relaxed) {
            pacer.slot().await;
            sequence = sequence.wrapping_add(1);
            if let Err(code) = writer.write(sequence % users, sequence / users).await {
                *failures.entry(code).or_default() += 1;
            }
        }
        failures
    });
    let window = measure_window(args.warmup, args.duration, &[], &measuring, &stop).await;
    let failures = writing.await?;
    for watcher in watchers {
        watcher.await?;
    }
    let (total, mut errors) = tally.take();
    for (code, count) in failures {
        *errors.entry(code).or_default() += count;
    }
    let target = format!("{:?}", args.target).to_lowercase();
    print_report(format, "watch", &target, args.watchers, connection_count, &window, &total, &errors)
}

/// One watcher's stream.
enum Watcher {
    Collective(tonic::Streaming<pb::Event>),
    Etcd(etcd_client::WatchStream),
}

impl Watcher {
    /// The send times (µs) carried by the next batch of changes.
    async fn next_send_times(&mut self) -> Result<Vec<u64>, String> {
        match self {
            Watcher::Collective(stream) => match stream.message().await {
                Ok(Some(event)) => Ok(match event.body {
                    Some(pb::event::Body::StatusChanged(change)) => change.detail.parse().ok().into_iter().collect(),
                    _ => Vec::new(),
                }),
                Ok(None) => Err("stream ended".into()),
                Err(status) => Err(format!("{:?}", status.code())),
            },
            Watcher::Etcd(stream) => match stream.message().await {
                Ok(Some(response)) => Ok(response
                    .events()
                    .iter()
                    .filter_map(|event| event.kv())
                    .filter_map(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).ok())
                    .filter_map(|record| record["detail"].as_str().and_then(|d| d.parse().ok()))
                    .collect()),
                Ok(None) => Err("etcd: stream ended".into()),
                Err(error) => Err(format!("etcd: {error}")),
            },
        }
    }
}

/// The writer's connection.
enum Writer {
    Collective(PresencesClient<Conn>),
    Etcd(Box<etcd_client::KvClient>),
}

impl Writer {
    /// Sets user `bench{user}` to a status (each user's writes alternate, so every write is a
    /// change) with the send time as the detail.
    async fn write(&mut self, user: u32, round: u32) -> Result<(), String> {
        let status_key = if round.is_multiple_of(2) { "Available" } else { "Away from desk" };
        let detail = now_us().to_string();
        match self {
            Writer::Collective(presences) => {
                let request = pb::SetStatusRequest {
                    username: format!("bench{user}"),
                    status_key: status_key.into(),
                    until_ms: None,
                    detail,
                };
                presences.set_status(request).await.map(|_| ()).map_err(|status| format!("{:?}", status.code()))
            }
            Writer::Etcd(kv) => {
                let record = serde_json::json!({
                    "username": format!("bench{user}"), "status_key": status_key, "detail": detail,
                    "current_site": 0, "on_phone": false, "since_ms": 0,
                });
                kv.put(format!("presence/bench{user}"), record.to_string(), None)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("etcd: {e}"))
            }
        }
    }
}
