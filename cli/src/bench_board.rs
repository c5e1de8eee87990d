//! `collective bench board`: what open supervisors' boards cost the writers, and how fast a
//! change reaches them. Rounds alternate a presence load without boards and the same load with
//! `--boards` live feeds (`GET /board/events`) open, so the ratio of the two throughputs is
//! measured on one machine in one run. While the boards are open, a probe sets the status of one
//! user the load never touches, `--probe-rate` times a second, with its send time in the detail;
//! every board reports when it sees it: the update latency from the change's send to the board.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use collective_proto::v1 as pb;
use collective_proto::v1::presences_client::PresencesClient;
use hdrhistogram::Histogram;

use super::bench::{closed_loop, prepare, presence_workers, PresenceArgs, Tally, Target, Window};
use super::bench_read::now_us;
use super::client::Client;
use super::output::Format;

/// Boards one run may open at most.
const BOARDS_MAX: u32 = 2_000;
/// How long the boards wait for the last probes after the probe stops.
const PROBE_GRACE: Duration = Duration::from_secs(1);
/// What precedes a probe's send time (µs since the epoch) in its status detail.
const PROBE_MARK: &[u8] = b"board-probe-";

#[derive(Args, Debug)]
pub struct BoardArgs {
    #[command(flatten)]
    pub presence: PresenceArgs,
    /// Board feeds open during the phases with boards.
    #[arg(long, default_value_t = 100)]
    pub boards: u32,
    /// The members' HTTP addresses (`http://host:port` or `https://host:port`), comma-separated;
    /// the boards are spread over them.
    #[arg(long, value_delimiter = ',', required = true)]
    pub board_urls: Vec<String>,
    /// The token the boards sign in with (first line of the file; an administrator token or a
    /// site session token). Without it the boards sign in with nothing (a `--no-auth` cluster).
    #[arg(long)]
    pub board_token_file: Option<PathBuf>,
    /// The CA (PEM) that signed the members' certificates, for `https://` board addresses.
    #[arg(long)]
    pub board_cacert: Option<PathBuf>,
    /// Rounds, each a phase without boards and then one with them.
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Probe changes per second while the boards are open.
    #[arg(long, default_value_t = 20)]
    pub probe_rate: u32,
}

/// One phase's figures.
struct Phase {
    boards: u32,
    window: Window,
    writes: Histogram<u64>,
    errors: std::collections::BTreeMap<String, u64>,
    /// From a probe's send to each board that saw it (µs); empty without boards.
    board_latency: Histogram<u64>,
    board_errors: std::collections::BTreeMap<String, u64>,
    /// Bytes the boards received in the phase.
    feed_bytes: u64,
}

impl Phase {
    fn throughput(&self) -> f64 {
        self.writes.len() as f64 / self.window.elapsed
    }
}

pub async fn board(client: &Client, args: BoardArgs, format: Format) -> anyhow::Result<()> {
    if args.presence.target != Target::Collective {
        anyhow::bail!("--target: the board is collective's; etcd has none");
    }
    if args.boards == 0 || args.boards > BOARDS_MAX || args.rounds == 0 || args.probe_rate == 0 {
        anyhow::bail!("--boards must be within 1..={BOARDS_MAX}; --rounds and --probe-rate must be positive");
    }
    let http = http_client(args.board_cacert.as_deref())?;
    let token = match &args.board_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--board-token-file: {}: {e}", path.display()))?
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string(),
        ),
        None => None,
    };
    let mut feeds = Vec::new();
    for url in &args.board_urls {
        let base = url.trim_end_matches('/').to_string();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            anyhow::bail!("--board-urls: {url} is not an http:// or https:// address");
        }
        let cookie = match &token {
            Some(token) => Some(sign_in(&http, &base, token).await?),
            None => None,
        };
        feeds.push((format!("{base}/board/events"), cookie));
    }
    // The probe's user is one past the load's.
    let probe_user = format!("bench{}", args.presence.users);
    prepare(client, args.presence.users + 1).await?;
    let (mut workers, _) = presence_workers(client, &args.presence).await?;
    let probe = PresencesClient::new(client.dedicated(client.leader_index().await?).await?);

    let mut phases = Vec::new();
    for round in 1..=args.rounds {
        for boards in [0, args.boards] {
            let (phase, back) = if boards == 0 {
                let (window, (writes, errors), back) = closed_loop(&args.presence.load, workers).await?;
                let (board_latency, board_errors) = (super::bench::histogram(), Default::default());
                (Phase { boards, window, writes, errors, board_latency, board_errors, feed_bytes: 0 }, back)
            } else {
                let open = OpenBoards::open(&http, &feeds, boards).await?;
                open.measuring.store(true, Ordering::Relaxed);
                let probing = Arc::new(AtomicBool::new(true));
                let prober =
                    tokio::spawn(run_probe(probe.clone(), probe_user.clone(), args.probe_rate, probing.clone()));
                let (window, (writes, errors), back) = closed_loop(&args.presence.load, workers).await?;
                probing.store(false, Ordering::Relaxed);
                let (sent, mut board_errors) = prober.await?;
                // The last probes' way to the boards.
                tokio::time::sleep(PROBE_GRACE).await;
                let (board_latency, feed_errors, feed_bytes) = open.close().await;
                for (code, count) in feed_errors {
                    *board_errors.entry(code).or_default() += count;
                }
                let expected = sent * u64::from(boards);
                if board_latency.len() != expected {
                    *board_errors
                        .entry(format!("probe sightings {} of {expected}", board_latency.len()))
                        .or_default() += 1;
                }
                (Phase { boards, window, writes, errors, board_latency, board_errors, feed_bytes }, back)
            };
            workers = back;
            if format == Format::Table {
                print_phase(round, &phase);
            }
            phases.push(phase);
        }
    }
    report(format, &args, &phases)
}

/// An HTTP client for the boards, trusting `cacert` for `https://` addresses.
fn http_client(cacert: Option<&std::path::Path>) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).pool_max_idle_per_host(0);
    if let Some(path) = cacert {
        let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("--board-cacert: {}: {e}", path.display()))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| anyhow::anyhow!("--board-cacert: {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(ca);
    }
    Ok(builder.build()?)
}

/// Signs in to a member's board with `token`; returns the session cookie (`name=value`).
async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<String> {
    let response = http
        .post(format!("{base}/board/session"))
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("signing in to {base}/board: {e}"))?;
    let status = response.status();
    let cookie = response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .map(str::to_string);
    match cookie {
        Some(cookie) if status.is_success() => Ok(cookie),
        _ => anyhow::bail!("signing in to {base}/board: {status}: {}", response.text().await.unwrap_or_default()),
    }
}

/// The boards of one phase: one task per feed.
struct OpenBoards {
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Tally,
    bytes: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OpenBoards {
    /// Opens `count` feeds spread over `feeds`; returns once every one answered 200.
    async fn open(http: &reqwest::Client, feeds: &[(String, Option<String>)], count: u32) -> anyhow::Result<Self> {
        let (measuring, stop, tally, bytes) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
            Tally::new(),
            Arc::new(AtomicU64::new(0)),
        );
        let mut tasks = Vec::with_capacity(count as usize);
        for index in 0..count as usize {
            let (url, cookie) = &feeds[index % feeds.len()];
            let mut request = http.get(url).header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(cookie) = cookie {
                request = request.header(reqwest::header::COOKIE, cookie);
            }
            let response = request.send().await.map_err(|e| anyhow::anyhow!("opening board {index} at {url}: {e}"))?;
            if !response.status().is_success() {
                anyhow::bail!("opening board {index} at {url}: {}", response.status());
            }
            let (measuring, stop, tally, bytes) = (measuring.clone(), stop.clone(), tally.clone(), bytes.clone());
            tasks.push(tokio::spawn(read_feed(response, measuring, stop, tally, bytes)));
        }
        Ok(OpenBoards { measuring, stop, tally, bytes, tasks })
    }

    /// Closes the feeds; returns what they measured and how many bytes they received.
    async fn close(self) -> (Histogram<u64>, std::collections::BTreeMap<String, u64>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let (latency, errors) = self.tally.take();
        (latency, errors, self.bytes.load(Ordering::Relaxed))
    }
}

/// Reads one board's feed until `stop`, recording each probe it sees while `measuring`.
async fn read_feed(
    mut response: reqwest::Response,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    tally: Tally,
    bytes: Arc<AtomicU64>,
) {
    let finder = memchr::memmem::Finder::new(PROBE_MARK);
    let mut pending = Vec::new();
    let mut sent = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let chunk = match tokio::time::timeout(Duration::from_millis(200), response.chunk()).await {
            Err(_) => continue,
            Ok(Ok(Some(chunk))) => chunk,
            Ok(Ok(None)) => return tally.error("feed ended".into()),
            Ok(Err(error)) => return tally.error(format!("feed: {error}")),
        };
        bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        scan_probes(&finder, &mut pending, &chunk, &mut sent);
        if measuring.load(Ordering::Relaxed) && !sent.is_empty() {
            let now = now_us();
            tally.latencies(sent.iter().map(|sent| now.saturating_sub(*sent)));
        }
        sent.clear();
    }
}

/// Finds the probes' send times in a feed's next `chunk`; `pending` keeps the end of the bytes
/// read so far that may hold the start of a probe cut by the chunk's end.
fn scan_probes(finder: &memchr::memmem::Finder, pending: &mut Vec<u8>, chunk: &[u8], sent: &mut Vec<u64>) {
    pending.extend_from_slice(chunk);
    let mut consumed = 0;
    loop {
        let Some(at) = finder.find(&pending[consumed..]) else {
            consumed = consumed.max(pending.len().saturating_sub(PROBE_MARK.len() - 1));
            break;
        };
        let digits_at = consumed + at + PROBE_MARK.len();
        let digits = pending[digits_at..].iter().take_while(|byte| byte.is_ascii_digit()).count();
        if digits_at + digits == pending.len() {
            // The number may go on in the next chunk.
            consumed += at;
            break;
        }
        if let Some(micros) =
            std::str::from_utf8(&pending[digits_at..digits_at + digits]).ok().and_then(|d| d.parse().ok())
        {
            sent.push(micros);
        }
        consumed = digits_at + digits;
    }
    pending.drain(..consumed);
}

/// Sets the probe user's status `rate` times a second while `probing`, its send time in the
/// detail; returns how many it wrote and its failures by code.
async fn run_probe(
    mut presences: PresencesClient<super::client::Conn>,
    username: String,
    rate: u32,
    probing: Arc<AtomicBool>,
) -> (u64, std::collections::BTreeMap<String, u64>) {
    let mut pacer = super::bench::Pacer::new(Some(rate), 1);
    let mut failures = std::collections::BTreeMap::new();
    let (mut sequence, mut written) = (0u64, 0u64);
    while probing.load(Ordering::Relaxed) {
        pacer.slot().await;
        sequence += 1;
        let request = pb::SetStatusRequest {
            username: username.clone(),
            status_key: if sequence % 2 == 0 { "Available" } else { "Away from desk" }.into(),
            until_ms: None,
            detail: format!("{}{}", String::from_utf8_lossy(PROBE_MARK), now_us()),
        };
        match presences.set_status(request).await {
            Ok(_) => written += 1,
            Err(status) => *failures.entry(format!("probe: {:?}", status.code())).or_default() += 1,
        }
    }
    (written, failures)
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

fn print_phase(round: u32, phase: &Phase) {
    if round == 1 && phase.boards == 0 {
        crate::outln!("round  boards  writes/s  write p99 ms  board p50 ms  board p99 ms  board max ms  feed MB/s  CPU µs per write          errors");
    }
    let board =
        |q: f64| if phase.boards == 0 { "-".to_string() } else { format!("{:.1}", ms(&phase.board_latency, q)) };
    let mut errors = phase.errors.clone();
    errors.extend(phase.board_errors.clone());
    let writes = phase.writes.len().max(1) as f64;
    let cpu: Vec<String> = phase
        .window
        .cpu_s
        .iter()
        .map(|(process, seconds)| format!("{process} {:.0}", seconds * 1e6 / writes))
        .collect();
    crate::outln!(
        "{:<5}  {:<6}  {:<8.0}  {:<12.2}  {:<12}  {:<12}  {:<12}  {:<9.1}  {:<24}  {:?}",
        round,
        phase.boards,
        phase.throughput(),
        ms(&phase.writes, 0.99),
        board(0.5),
        board(0.99),
        if phase.boards == 0 { "-".to_string() } else { format!("{:.1}", phase.board_latency.max() as f64 / 1000.0) },
        phase.feed_bytes as f64 / 1e6 / phase.window.elapsed,
        cpu.join(", "),
        errors
    );
}

/// The median throughput without and with boards, their ratio, and the boards' latency over
/// every phase with boards.
fn report(format: Format, args: &BoardArgs, phases: &[Phase]) -> anyhow::Result<()> {
    let median = |boards: u32| {
        let mut figures: Vec<f64> = phases.iter().filter(|p| p.boards == boards).map(Phase::throughput).collect();
        figures.sort_by(f64::total_cmp);
        figures[figures.len() / 2]
    };
    let (without, with) = (median(0), median(args.boards));
    let mut latency = super::bench::histogram();
    for phase in phases.iter().filter(|phase| phase.boards > 0) {
        latency.add(&phase.board_latency)?;
    }
    let summary = serde_json::json!({
        "clients": args.presence.load.clients,
        "boards": args.boards,
        "rounds": args.rounds,
        "writes_per_s_without_boards": without,
        "writes_per_s_with_boards": with,
        "ratio": with / without,
        "board_updates_seen": latency.len(),
        "board_p50_ms": ms(&latency, 0.5),
        "board_p99_ms": ms(&latency, 0.99),
        "board_max_ms": latency.max() as f64 / 1000.0,
    });
    match format {
        Format::Json => crate::outln!("{}", serde_json::to_string_pretty(&summary)?),
        Format::Table => crate::outln!(
            "median writes/s: {without:.0} without boards, {with:.0} with {} boards (ratio {:.2}); \
             board updates: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} probe sightings)",
            args.boards,
            with / without,
            ms(&latency, 0.5),
            ms(&latency, 0.99),
            latency.max() as f64 / 1000.0,
            latency.len()
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_cut_across_chunks_are_found_once() {
        let finder = memchr::memmem::Finder::new(PROBE_MARK);
        let feed = b"data: {\"detail\":\"board-probe-123\"}\n\ndata: {\"detail\":\"board-probe-4567\"}\n\n";
        for cut in 0..feed.len() {
            let (mut pending, mut sent) = (Vec::new(), Vec::new());
            scan_probes(&finder, &mut pending, &feed[..cut], &mut sent);
            scan_probes(&finder, &mut pending, &feed[cut..], &mut sent);
            assert_eq!(sent, vec![123, 4567], "cut at {cut}");
            assert!(pending.len() < PROBE_MARK.len(), "cut at {cut}: {pending:?} kept");
        }
    }
}
