//! `Node`: one collective member. Owns the Raft instance, stamps and proposes commands, forwards
//! writes and read-index requests to the leader, and bootstraps the initial cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collective_statemachine::{validate::validate, Batch, Command, Principal, Proposal, Rejection};
use collective_sync::pending::{Full, PendingTable, Waiter};
use openraft::error::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::mpsc;

use crate::api::error::ApiError;
use crate::auth::Security;
use crate::codec;
use crate::config::NodeConfig;
use crate::environment::Environment;
use crate::error::invalid;
use crate::history::HistoryStore;
use crate::network::{Network, Peers};
use crate::raft_service::Forwarded;
use crate::raft_types::{Applied, NodeId, Raft};
use crate::shared::Shared;
use crate::store;

/// Most writes waiting on the leader, queued or in a proposed batch; beyond it writers get
/// RESOURCE_EXHAUSTED.
pub const PROPOSALS_QUEUED_MAX: usize = 50_000;

/// How often the leader answers writes whose wait ran out (`Node::expire_writes`): about the
/// most a timed-out write hears late (plus scheduling delay on a busy node).
const WRITE_EXPIRY_SWEEP_MS: u64 = 50;

/// Most commands in one log entry.
pub const PROPOSALS_PER_BATCH_MAX: usize = 1_024;
/// Most batches proposed to Raft and not yet applied. While they are in flight, new commands
/// queue and form the next, larger batch: one fsync then covers many writes.
pub const BATCHES_IN_FLIGHT_MAX: usize = 2;
/// Deadline of a snapshot chunk RPC, including the install after the last one (see `Node::start_in`).
pub const SNAPSHOT_INSTALL_TIMEOUT_MS: u64 = 120_000;
/// Most writes in one forwarded batch.
pub const FORWARD_BATCH_MAX: usize = 1_024;
/// Forwarded batches in flight from one follower at once (more writes queue meanwhile).
pub const FORWARD_BATCHES_IN_FLIGHT_MAX: usize = 4;
/// How much longer than the leader's deadline a forwarded write waits for its answer.
const FORWARD_GRACE_MS: u64 = 1_000;
/// Argon2id hashes or checks at once on one node (see `Node::argon2`).
pub const ARGON2_CONCURRENT_MAX: usize = 2;

/// How often the leader looks for due timers (lease expiry); expiry lags the TTL by at most this.
pub const TIMER_CHECK_INTERVAL_MS: u64 = 100;
/// How often `run_elections` checks whether an election is due.
pub const ELECTION_CHECK_MS: u64 = 10;
/// Within how long a member that refused an outdated candidate campaigns (random below it).
pub const CAMPAIGN_SOON_MS: u64 = 50;
/// How long an import commit may take to commit and apply before its outcome is reported as
/// unknown (it plans and applies a whole configuration in one entry).
pub const IMPORT_COMMIT_WAIT_MS: u64 = 120_000;

/// A write's outcome, delivered through the pending table.
type Outcome = Result<Applied, ApiError>;

/// Waits for the next item, then takes whatever else is queued, up to `max` in all; `None` once
/// the queue is closed.
async fn next_batch<T>(queue: &mut mpsc::Receiver<T>, max: usize) -> Option<Vec<T>> {
    let first = queue.recv().await?;
    // Sized for what is queued: grown by doubling, a batch of a few hundred writes was copied
    // several times over (perf: the proposer's `memcpy`, 2 % of a loaded leader).
    let mut batch = Vec::with_capacity((queue.len() + 1).min(max));
    batch.push(first);
    while batch.len() < max {
        match queue.try_recv() {
            Ok(next) => batch.push(next),
            Err(_) => break,
        }
    }
    Some(batch)
}

/// The outcome of a write whose wait on the leader ended after `wait_ms`: unknown (it may still
/// commit), unless it arrived just as the wait ended.
fn gave_up(waiter: Waiter<Outcome, tokio::time::Instant>, wait_ms: u64) -> Outcome {
    waiter.cancel().unwrap_or_else(|| {
        metrics::counter!("collective_writes_timed_out_total").increment(1);
        timed_out(wait_ms)
    })
}

/// The answer to a write that waited `wait_ms` for its outcome in vain.
fn timed_out(wait_ms: u64) -> Outcome {
    Err(ApiError::Unavailable(format!(
        "the write did not commit within {wait_ms} ms (no quorum?); its outcome is unknown and it may still apply"
    )))
}

/// Far enough ahead of every write's deadline that a deposed leader's sweep answers them all.
const DEPOSED_HORIZON_S: u64 = 365 * 24 * 3_600;

/// The answer to a write waiting on a leader that was deposed.
fn deposed_outcome() -> Outcome {
    Err(ApiError::Unavailable(
        "this member is no longer the leader; the write's outcome is unknown and it may still apply".into(),
    ))
}

/// The answer to a write its queue (of `PROPOSALS_QUEUED_MAX`) could not take: full, or closed
/// because the node is stopping.
fn queue_error<T>(error: mpsc::error::TrySendError<T>, what: &str) -> ApiError {
    match error {
        mpsc::error::TrySendError::Full(_) => {
            ApiError::Rejected(Rejection::LimitReached { what: what.into(), limit: PROPOSALS_QUEUED_MAX as u64 })
        }
        mpsc::error::TrySendError::Closed(_) => ApiError::Unavailable("the node is shutting down".into()),
    }
}

/// A write waiting to be forwarded to the leader, and where its outcome goes.
struct ForwardPending {
    forwarded: Forwarded,
    reply: tokio::sync::oneshot::Sender<Result<Applied, ApiError>>,
}

/// A command waiting to be batched, and the pending-table id of the caller waiting for its
/// outcome (none for the node's own `RenewLeases`).
struct Pending {
    proposal: Proposal,
    waiter: Option<u64>,
}

/// One running member.
pub struct Node {
    /// Member id.
    pub id: NodeId,
    /// The Raft instance.
    pub raft: Raft,
    /// Applied state and event history.
    pub shared: Arc<Shared>,
    /// Validated configuration.
    pub config: NodeConfig,
    /// Channels to peers (also used for forwarding).
    pub peers: Arc<Peers>,
    /// TLS material and credentials (see `auth`).
    pub security: Arc<Security>,
    /// Commands waiting for the proposer task (leader only).
    proposals: mpsc::Sender<Pending>,
    /// Writes waiting for the forwarder task to send them to the leader (followers).
    forwards: mpsc::Sender<ForwardPending>,
    /// Writers waiting for their command's outcome (queued or proposed), bounded.
    waiting: Arc<PendingTable<Outcome, tokio::time::Instant>>,
    /// Clock and connector.
    pub environment: Environment,
    /// The last term whose first batch renewed the leases (0: none yet).
    leases_renewed_in_term: AtomicU64,
    /// This node's presence history index.
    pub history: Arc<HistoryStore>,
    /// Argon2id work (site password hashing and checks) running at once: each takes ~19 MiB
    /// and tens of ms, so unbounded it would let a burst of `AddSite` calls take gigabytes.
    pub argon2: tokio::sync::Semaphore,
    /// Linearizable reads waiting for a read-index round (see `read_index`).
    read_rounds: std::sync::Mutex<ReadRounds>,
    /// Why this member's Raft core stopped (a storage error, a panic), once it has: from then
    /// on the member answers no read or write, reports itself unhealthy, and `serve` exits
    /// (`watch_core`).
    core_stopped: tokio::sync::watch::Sender<Option<String>>,
    /// When this member started: the origin of `heard_at_ms`.
    started: tokio::time::Instant,
    /// When (ms after `started`) a leader was last heard from, or a vote last granted: what
    /// `run_elections` times its elections from.
    heard_at_ms: AtomicU64,
    /// Set when this member refused a candidate with an older log (`campaign_soon`).
    campaign_soon: std::sync::atomic::AtomicBool,
    /// Set by the leader's `TimeoutNow`: campaign as soon as the lease allows (`handover.rs`).
    pub(crate) campaign_at_lease: std::sync::atomic::AtomicBool,
    /// While true the proposer holds new writes (a leadership hand-over is under way).
    pub(crate) holding_writes: tokio::sync::watch::Sender<bool>,
    /// Set once this member is stopping: it refuses new client requests.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

/// The outcome of one read-index round, shared by every read it serves.
type RoundOutcome = Option<Result<u64, ApiError>>;

/// Concurrent linearizable reads share read-index rounds, as etcd batches its ReadIndex
/// requests: a read joins the round that has not started yet (`next`), so the round it gets its
/// index from began after it arrived. At most one round runs at a time; without this, every read
/// was its own quorum round (or its own RPC to the leader).
#[derive(Default)]
struct ReadRounds {
    /// The round the next readers join; taken when it starts.
    next: Option<tokio::sync::watch::Sender<RoundOutcome>>,
    /// Whether a task is running rounds.
    running: bool,
}

impl Node {
    /// Opens storage and starts Raft with the system clock and TCP. Serving gRPC is the
    /// caller's job (see `server`).
    pub async fn start(config: NodeConfig) -> crate::error::Result<Arc<Node>> {
        Node::start_in(config, Environment::system()).await
    }

    /// Like `start`, with the given clock and connector (the simulations' entry point).
    pub async fn start_in(config: NodeConfig, environment: Environment) -> crate::error::Result<Arc<Node>> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| invalid("data_dir", format!("{}: {e}", config.data_dir.display())))?;
        let shared = Arc::new(Shared::with_checks(config.watch_history_events_max as usize, config.check_invariants));
        let (log_store, state_machine, history) = store::open(&config.data_dir, shared.clone(), &environment).await?;
        let raft_config = openraft::Config {
            cluster_name: "collective".into(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: config.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(config.snapshot_after_entries),
            // Entries kept behind a snapshot for followers that lag a little; further behind,
            // they receive the snapshot.
            max_in_snapshot_log_to_keep: (config.snapshot_after_entries / 2).min(1_000),
            // Entries are batches; `network.rs` also splits requests over APPEND_ENTRIES_BYTES_MAX.
            max_payload_entries: 64,
            // The deadline of each snapshot chunk RPC, the last of which installs the snapshot
            // on the follower (decoding the state, resetting its history). openraft 0.9's
            // default of 200 ms made every install of a large state time out and restart from
            // the first chunk, forever: a wiped member never rejoined at 1,000,000 users.
            install_snapshot_timeout: SNAPSHOT_INSTALL_TIMEOUT_MS,
            // Elections are started by `run_elections`, with a fresh random delay each time.
            enable_elect: false,
            // Followers are sent an entry as soon as the leader's append is submitted, while the
            // leader's own fsync runs. By default openraft tells replication only on the core's
            // next turn, which for a lone write may be the leader's flush, putting its fsync back
            // in front of replication (no difference measured here, with ~0.25 ms fsyncs; our
            // proposer batches writes itself).
            broadcast_submitted_on_append: Some(true),
            ..Default::default()
        };
        let raft_config = Arc::new(raft_config.validate()?);
        let security = Arc::new(Security::load(&config)?);
        if let Some(auth) = security.auth.as_ref() {
            shared.set_failure_limiter(config.id, auth.failures.clone());
        }
        let peer_token = security.auth.as_ref().map(|auth| auth.peer_token().to_string());
        let peers = Arc::new(Peers::new(
            environment.connect.clone(),
            security.tls.as_ref().map(|tls| tls.client()),
            peer_token.as_deref(),
        )?);
        let network = Network { peers: peers.clone() };
        let raft = Raft::new(config.id, raft_config, network, log_store, state_machine).await?;
        let (proposals, queue) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        let (forwards, forward_queue) = mpsc::channel(PROPOSALS_QUEUED_MAX);
        let node = Arc::new(Node {
            id: config.id,
            raft,
            shared,
            config,
            peers,
            security,
            proposals,
            forwards,
            waiting: Arc::new(PendingTable::new(PROPOSALS_QUEUED_MAX)),
            environment,
            history,
            leases_renewed_in_term: AtomicU64::new(0),
            read_rounds: std::sync::Mutex::new(ReadRounds::default()),
            argon2: tokio::sync::Semaphore::new(ARGON2_CONCURRENT_MAX),
            core_stopped: tokio::sync::watch::channel(None).0,
            started: tokio::time::Instant::now(),
            heard_at_ms: AtomicU64::new(0),
            campaign_soon: std::sync::atomic::AtomicBool::new(false),
            campaign_at_lease: std::sync::atomic::AtomicBool::new(false),
            holding_writes: tokio::sync::watch::channel(false).0,
            stopping: tokio::sync::watch::channel(false).0,
        });
        tokio::spawn(node.clone().watch_core());
        if node.config.history_prune_interval_ms > 0 {
            tokio::spawn(node.clone().prune_history());
        }
        tokio::spawn(node.clone().propose_batches(queue));
        tokio::spawn(node.clone().forward_batches(forward_queue));
        tokio::spawn(node.clone().run_timers());
        tokio::spawn(node.clone().expire_writes());
        tokio::spawn(node.clone().run_elections());
        Ok(node)
    }

    /// Watches the Raft core and records why it stopped, once it does.
    ///
    /// openraft 0.9 reports a storage error that stops the core as `running_state = Err(Fatal)`
    /// on its metrics; a core that panicked only drops the metrics' sender (its last values,
    /// `running_state` still `Ok` and perhaps this node as leader, stay readable). Both end
    /// the member: its state may have diverged, and it cannot recover by itself.
    async fn watch_core(self: Arc<Self>) {
        let mut metrics = self.raft.metrics();
        let reason = loop {
            {
                let current = metrics.borrow_and_update();
                if let Err(fatal) = &current.running_state {
                    break format!("the Raft core stopped: {fatal}");
                }
                if current.state == openraft::ServerState::Shutdown {
                    break "the Raft core shut down".to_string();
                }
            }
            if metrics.changed().await.is_err() {
                break "the Raft core ended without a report (it panicked)".to_string();
            }
        };
        tracing::error!(%reason, "this member can no longer serve");
        self.core_stopped.send_replace(Some(reason));
    }

    /// Why the Raft core stopped, if it has.
    pub fn core_stopped(&self) -> Option<String> {
        self.core_stopped.borrow().clone()
    }

    /// Waits until the Raft core stops; returns why.
    pub async fn wait_core_stopped(&self) -> String {
        let mut stopped = self.core_stopped.subscribe();
        let reason = match stopped.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the node was dropped".to_string(),
        };
        reason
    }

    /// UNAVAILABLE when the Raft core stopped: nothing this member holds may be served.
    fn check_core(&self) -> Result<(), ApiError> {
        match self.core_stopped.borrow().as_ref() {
            Some(reason) => Err(ApiError::Unavailable(format!("this member cannot serve: {reason}; it is exiting"))),
            None => Ok(()),
        }
    }

    /// Keeps the history within `history_max_age_ms` and about `history_versions_max` versions.
    /// Each node prunes its own index: history is local, derived from the applied log.
    async fn prune_history(self: Arc<Self>) {
        let mut interval = tokio::time::interval(Duration::from_millis(self.config.history_prune_interval_ms));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let now = self.now_ms();
            let mut cutoff = now.saturating_sub(self.config.history_max_age_ms);
            if self.history.approximate_versions() > self.config.history_versions_max {
                // Over the count bound: forget the older half of the retained window.
                let base = self.history.oldest_ms().unwrap_or(0).max(cutoff);
                cutoff = base + now.saturating_sub(base) / 2;
            }
            let history = self.history.clone();
            let started = std::time::Instant::now();
            let pruned = self.environment.blocking(move || history.prune(cutoff)).await;
            let elapsed_ms = started.elapsed().as_millis() as u64;
            match pruned {
                Ok(Ok(deleted)) if deleted > 0 => {
                    tracing::info!(deleted, cutoff, elapsed_ms, "pruned presence history")
                }
                Ok(Ok(_)) => tracing::debug!(cutoff, elapsed_ms, "presence history: nothing to prune"),
                Ok(Err(error)) => tracing::warn!(%error, "pruning presence history"),
                Err(error) => tracing::warn!(%error, "pruning presence history"),
            }
        }
    }

    /// Records that a leader was just heard from (an AppendEntries or snapshot it accepted) or
    /// a candidate just given this member's vote: the election timer starts again.
    pub fn heard_from_leader(&self) {
        self.heard_at_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Asks `run_elections` to campaign within `CAMPAIGN_SOON_MS` if no leader has been heard
    /// for a lease: a candidate with an older log was refused here, so this member may be the
    /// one that can win.
    pub fn campaign_soon(&self) {
        self.campaign_soon.store(true, Ordering::Relaxed);
    }

    /// Starts elections: openraft's own timer is off (`enable_elect: false`) and this replaces it.
    ///
    /// openraft 0.9 draws each node's election timeout once, at start, checks it only on its
    /// tick (every 1.5 heartbeats) and adds the leader lease (the maximum timeout) on top:
    /// followers fired together often, and candidates that split the vote once split it again in
    /// every later term (3 of 6 leader kills split; a 5-node simulation livelocked, seed 1832).
    /// Here a voter that has heard no leader for `election_timeout_max_ms` (the other voters'
    /// lease, so they grant) plus a fresh random delay from `HANDOVER_RESERVED_MS` to
    /// `election_timeout_min_ms` starts an election, checked every `ELECTION_CHECK_MS`; while no
    /// leader emerges, it tries again after a new random delay in `election_timeout_min_ms..2 *
    /// election_timeout_min_ms`, as etcd draws one per election. Without pre-vote, a member whose log is behind would keep
    /// raising its term and refusing the up-to-date member's lower-term requests: it stands back
    /// for two leases once a peer refused it for its log (`Peers::outdated_at`), and a member that
    /// refused such a candidate campaigns soon (`campaign_soon`).
    async fn run_elections(self: Arc<Self>) {
        use rand::Rng;
        let (min_ms, max_ms) = (self.config.election_timeout_min_ms, self.config.election_timeout_max_ms);
        let mut heard_ms = u64::MAX;
        let mut due_ms = 0;
        // Until when (ms after `started`) a `TimeoutNow` stands (`handover.rs`).
        let mut handover_until_ms = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(ELECTION_CHECK_MS)).await;
            if self.core_stopped().is_some() {
                return;
            }
            let (leads, voter) = {
                let metrics = self.raft.metrics();
                let metrics = metrics.borrow();
                let voter = metrics.membership_config.membership().voter_ids().any(|id| id == self.id);
                (metrics.current_leader == Some(self.id), voter)
            };
            if leads {
                // A leader hears itself: once it steps down (a higher term seen), its timer
                // starts from then, not from the last AppendEntries it received as a follower,
                // or it would campaign at once and depose the leader that replaced it.
                self.heard_from_leader();
            }
            let now_ms = self.started.elapsed().as_millis() as u64;
            let heard = self.heard_at_ms.load(Ordering::Relaxed);
            if self.campaign_at_lease.swap(false, Ordering::Relaxed) {
                handover_until_ms = now_ms + 3 * max_ms;
            }
            // Handed over: campaign the moment the followers' leases have run out, with no random
            // delay, before any of them would.
            if !leads
                && voter
                && now_ms < handover_until_ms
                && now_ms >= heard + max_ms + crate::handover::HANDOVER_MARGIN_MS
            {
                handover_until_ms = 0;
                tracing::info!("leadership handed to this member: starting an election");
                if self.raft.trigger().elect(false).await.is_err() {
                    return;
                }
                due_ms = now_ms + min_ms + crate::runtime::ThreadRng.gen_range(0..min_ms);
                continue;
            }
            if leads || !voter || heard != heard_ms {
                // A leader (or a granted candidate) was heard: the next attempt is due a lease
                // and a fresh random delay after it, never inside the window kept for a voter
                // handed leadership, which campaigns first (`handover.rs`).
                heard_ms = heard;
                let reserved = crate::handover::HANDOVER_RESERVED_MS.min(min_ms / 2);
                due_ms = heard + max_ms + crate::runtime::ThreadRng.gen_range(reserved..min_ms);
                continue;
            }
            if self.campaign_soon.swap(false, Ordering::Relaxed) && now_ms >= heard + max_ms {
                due_ms = due_ms.min(now_ms + crate::runtime::ThreadRng.gen_range(0..CAMPAIGN_SOON_MS));
            }
            if now_ms < due_ms {
                continue;
            }
            let standing_back = Duration::from_millis(2 * max_ms);
            if self.peers.outdated_at().is_some_and(|at| at.elapsed() < standing_back) {
                due_ms = now_ms + min_ms + crate::runtime::ThreadRng.gen_range(0..min_ms);
                continue;
            }
            tracing::info!(silent_ms = now_ms.saturating_sub(heard), "no leader heard: starting an election");
            if self.raft.trigger().elect(false).await.is_err() {
                return;
            }
            due_ms = now_ms + min_ms + crate::runtime::ThreadRng.gen_range(0..min_ms);
        }
    }

    /// On the leader: propose a `Tick` whenever a lease is due. Followers only watch: expiry is
    /// decided by the Tick's entry time, identically on every replica. (Renewal after an election
    /// rides on the term's first batch; see `propose_batches`.)
    async fn run_timers(self: Arc<Self>) {
        let mut interval = tokio::time::interval(Duration::from_millis(TIMER_CHECK_INTERVAL_MS));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            if self.raft.metrics().borrow().current_leader != Some(self.id) {
                continue;
            }
            let due = self.shared.state.read().expect("state lock").next_timer_ms();
            if due.is_some_and(|due| due <= self.now_ms()) {
                if let Err(error) = self.write_as_leader(Principal::System, Command::Tick).await {
                    tracing::warn!(%error, "proposing a tick for due leases, notes or requests");
                }
            }
        }
    }

    /// Turns queued commands into batched log entries, at most `BATCHES_IN_FLIGHT_MAX` at once.
    async fn propose_batches(self: Arc<Self>, mut queue: mpsc::Receiver<Pending>) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT_MAX));
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let Some(mut pending) = next_batch(&mut queue, PROPOSALS_PER_BATCH_MAX).await else { return };
            // During a hand-over new writes wait; once it is done they meet the new leader's
            // refusal (NOT_LEADER, retryable) or, if it failed, commit here.
            let _ = self.holding_writes.subscribe().wait_for(|holding| !holding).await;
            // The first batch of each term starts with `RenewLeases` and is proposed alone: no
            // command of the new term (a site's keepalive that finds its lease overdue, a Tick)
            // can commit before the leases that lived through the election are extended.
            let term = self.raft.metrics().borrow().current_term;
            let renew = self.leases_renewed_in_term.load(Ordering::SeqCst) != term;
            let mut alone = None;
            if renew {
                let proposal = Proposal { principal: Principal::System, command: Command::RenewLeases };
                pending.insert(0, Pending { proposal, waiter: None });
                metrics::gauge!("collective_proposals_pending").increment(1.0);
                alone = in_flight.clone().acquire_many_owned((BATCHES_IN_FLIGHT_MAX - 1) as u32).await.ok();
            }
            let node = self.clone();
            tokio::spawn(async move {
                let _permits = (permit, alone);
                if node.propose(pending).await && renew {
                    node.leases_renewed_in_term.store(term, Ordering::SeqCst);
                }
            });
        }
    }

    /// Proposes one batch and answers its callers; true when it committed.
    async fn propose(&self, pending: Vec<Pending>) -> bool {
        let count = pending.len();
        let waiters: Vec<Option<u64>> = pending.iter().map(|p| p.waiter).collect();
        // Straight into the entry's shared slice (an exact-size iterator: one allocation, each
        // proposal moved once), not through a `Vec` copied into it.
        let proposals: Arc<[Proposal]> = pending.into_iter().map(|p| p.proposal).collect();
        // The entry's time is the leader's clock; `apply` never lets the state's time go back
        // (a new leader's clock may be behind, and two batches may commit out of stamp order).
        let batch = Batch { at_ms: self.now_ms(), proposals };
        metrics::histogram!("collective_proposal_batch_commands").record(count as f64);
        let term = self.raft.metrics().borrow().current_term;
        // A proposal openraft never answers (seen: a member restarted as the leader of its old
        // term, deposed at once, kept its first batch unanswered) would hold the proposer's
        // permits forever and the member, leader again later, would propose nothing. So a
        // proposal is given up once this member stops leading its term, or after the writes'
        // own wait: its outcome is unknown (it may still commit), which the waiters are told.
        let wait = Duration::from_millis(self.config.forward_timeout_ms.max(IMPORT_COMMIT_WAIT_MS) + FORWARD_GRACE_MS);
        let result = tokio::select! {
            result = tokio::time::timeout(wait, self.raft.client_write(batch)) => result.ok(),
            _ = self.leader_changed(term, Some(self.id)) => None,
        };
        metrics::gauge!("collective_proposals_pending").decrement(count as f64);
        let Some(result) = result else {
            let error = ApiError::Unavailable(
                "the leader was replaced or did not commit in time; the write's outcome is unknown and it may still apply"
                    .into(),
            );
            for id in waiters.into_iter().flatten() {
                self.waiting.complete(id, Err(error.clone()));
            }
            return false;
        };
        match result {
            Ok(response) => {
                metrics::counter!("collective_proposals_committed_total").increment(count as u64);
                for (waiter, outcome) in waiters.into_iter().zip(response.data.outcomes) {
                    if let Some(id) = waiter {
                        self.waiting.complete(id, outcome.map_err(ApiError::from));
                    }
                }
                true
            }
            Err(error) => {
                let error = match error {
                    // Replaced by a new leader's entries before it committed: never applied.
                    RaftError::APIError(
                        ClientWriteError::ForwardToLeader(_) | ClientWriteError::LogEntryDiscarded(_),
                    ) => self.not_leader(),
                    RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => ApiError::Internal(e.to_string()),
                    RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                        ApiError::Internal(e.to_string())
                    }
                    RaftError::Fatal(fatal) => ApiError::Unavailable(fatal.to_string()),
                };
                for id in waiters.into_iter().flatten() {
                    self.waiting.complete(id, Err(error.clone()));
                }
                false
            }
        }
    }

    /// Initialises the cluster from `initial_cluster` once every initial member answers, on the
    /// member with the lowest id only (so exactly one node initialises), unless already done,
    /// and unless another initial member already serves a cluster: after `recover`, or when this
    /// member's data was lost, initialising again would make a second cluster of the empty
    /// members beside the one that holds the data. Such a member waits to be added instead
    /// (`member add`, or `join`).
    pub async fn bootstrap(self: Arc<Self>) -> crate::error::Result<()> {
        let members = self.config.initial_members()?;
        if members.is_empty() || self.raft.is_initialized().await? {
            return Ok(());
        }
        if members.keys().next() != Some(&self.id) {
            tracing::info!("waiting for member {} to initialise the cluster", members.keys().next().unwrap_or(&0));
            return Ok(());
        }
        loop {
            let mut missing = Vec::new();
            for (id, addr) in &members {
                match self.health(addr).await {
                    None => missing.push(*id),
                    Some(true) if *id != self.id => {
                        tracing::warn!(
                            member = id,
                            %addr,
                            "initial member {id} already serves a cluster: this member does not initialise another \
                             one and waits to be added (member add, member promote)"
                        );
                        return Ok(());
                    }
                    Some(_) => {}
                }
            }
            if missing.is_empty() {
                break;
            }
            tracing::info!(?missing, "initial members not reachable yet");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let nodes: BTreeMap<NodeId, BasicNode> =
            members.into_iter().map(|(id, addr)| (id, BasicNode { addr })).collect();
        match self.raft.initialize(nodes).await {
            Ok(()) => tracing::info!("cluster initialised"),
            Err(RaftError::APIError(error)) => {
                tracing::info!(%error, "cluster already initialised")
            }
            Err(error) => return Err(error.into()),
        }
        Ok(())
    }

    /// Whether the node at `addr` answers a gRPC health check within a second (over the node's
    /// connector, so this works in the simulated network too).
    pub async fn answers(&self, addr: &str) -> bool {
        self.health(addr).await.is_some()
    }

    /// The node at `addr`'s gRPC health within a second: `Some(true)` when it serves (it knows a
    /// leader), `Some(false)` when it answers without serving, `None` when it does not answer.
    pub async fn health(&self, addr: &str) -> Option<bool> {
        use tonic_health::pb::health_check_response::ServingStatus;
        let channel = self.peers.channel(addr).ok()?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest { service: String::new() });
        request.set_timeout(Duration::from_secs(1));
        let answer = client.check(request).await.ok()?.into_inner();
        Some(answer.status == ServingStatus::Serving as i32)
    }

    /// Now, by this node's clock (ms since the Unix epoch).
    pub fn now_ms(&self) -> u64 {
        self.environment.now_ms()
    }

    /// The current leader and its address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        // Borrowed, not cloned: this runs on every request and the metrics hold the membership.
        let receiver = self.raft.metrics();
        let metrics = receiver.borrow();
        let leader = metrics.current_leader?;
        let addr = metrics.membership_config.membership().get_node(&leader).map(|n| n.addr.clone()).unwrap_or_default();
        Some((leader, addr))
    }

    /// Whether this node is the leader, as its Raft metrics say (without copying the leader's
    /// address, which `leader` does: this runs on every write).
    pub fn leads(&self) -> bool {
        // A stopped core's last metrics may still name this node.
        self.raft.metrics().borrow().current_leader == Some(self.id) && self.core_stopped.borrow().is_none()
    }

    /// NOT_LEADER, naming the leader when one is known.
    pub fn not_leader(&self) -> ApiError {
        let leader = self.leader();
        ApiError::NotLeader { leader_id: leader.as_ref().map(|l| l.0), leader_addr: leader.map(|l| l.1) }
    }

    /// Validates a command at the edge, then proposes it here or on the leader.
    pub async fn write(&self, principal: Principal, command: Command) -> Result<Applied, ApiError> {
        validate(&command)?;
        self.write_valid(principal, command).await
    }

    /// `write` for a command the caller has validated (`validate`).
    pub async fn write_valid(&self, principal: Principal, command: Command) -> Result<Applied, ApiError> {
        self.check_core()?;
        if self.leads() {
            return self.enqueue(principal, command).await;
        }
        match self.leader() {
            // Elected between the two reads of the metrics.
            Some((leader, _)) if leader == self.id => self.enqueue(principal, command).await,
            // Boxed: the forwarding future (a gRPC client call) is large, and inline it made every
            // write's future, which tonic boxes and moves per request, as large on the leader.
            Some((_, addr)) if !addr.is_empty() => Box::pin(self.forward(&addr, principal, command)).await,
            _ => Err(self.not_leader()),
        }
    }

    /// How long a write may wait for its outcome: `forward_timeout_ms`, or longer for an import
    /// commit, which applies a whole configuration in one entry (seconds at 100,000 users).
    fn wait_ms(&self, command: &Command) -> u64 {
        match command {
            Command::CommitImport { .. } => self.config.forward_timeout_ms.max(IMPORT_COMMIT_WAIT_MS),
            _ => self.config.forward_timeout_ms,
        }
    }

    /// Sends a write to the leader: with the other writes waiting to go (`forward_batches`), or
    /// alone when it may wait longer than a batch (an import commit).
    async fn forward(&self, addr: &str, principal: Principal, command: Command) -> Result<Applied, ApiError> {
        let wait_ms = self.wait_ms(&command);
        if wait_ms > self.config.forward_timeout_ms {
            return self.forward_one(addr, principal, command).await;
        }
        let (reply, outcome) = tokio::sync::oneshot::channel();
        let pending = ForwardPending { forwarded: Forwarded { principal, command }, reply };
        self.forwards.try_send(pending).map_err(|e| queue_error(e, "writes waiting to be forwarded to the leader"))?;
        match tokio::time::timeout(Duration::from_millis(wait_ms + 2 * FORWARD_GRACE_MS), outcome).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(ApiError::Unavailable("the forwarder stopped; the write's outcome is unknown".into())),
            Err(_) => Err(ApiError::Unavailable(format!(
                "no answer from the leader within {wait_ms} ms; the write's outcome is unknown and it may still apply"
            ))),
        }
    }

    /// Turns the writes waiting to be forwarded into `ForwardBatch` RPCs to the current leader,
    /// at most `FORWARD_BATCHES_IN_FLIGHT_MAX` at once: one RPC (and one wake-up of the leader's
    /// proposer) for many writes, instead of one each.
    async fn forward_batches(self: Arc<Self>, mut queue: mpsc::Receiver<ForwardPending>) {
        let in_flight = Arc::new(tokio::sync::Semaphore::new(FORWARD_BATCHES_IN_FLIGHT_MAX));
        loop {
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let Some(mut batch) = next_batch(&mut queue, FORWARD_BATCH_MAX).await else { return };
            // A write whose caller gave up (timed out, disconnected) is not sent: before it left
            // this node it has no effect, and its caller may be retrying it already.
            batch.retain(|pending| !pending.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let node = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                node.send_forwarded(batch).await;
            });
        }
    }

    /// One `ForwardBatch` RPC; every write in it gets its own outcome, or the RPC's failure.
    async fn send_forwarded(&self, batch: Vec<ForwardPending>) {
        let count = batch.len();
        let (forwarded, replies): (Vec<Forwarded>, Vec<_>) = batch.into_iter().map(|p| (p.forwarded, p.reply)).unzip();
        let outcomes = match self.leader() {
            // This node became the leader while the writes waited: it proposes them itself.
            Some((leader, _)) if leader == self.id => Ok(self.write_batch_as_leader(forwarded).await),
            Some((_, addr)) if !addr.is_empty() => self.forward_batch_rpc(&addr, &forwarded).await,
            _ => Err(self.not_leader()),
        };
        metrics::counter!("collective_proposals_forwarded_total").increment(count as u64);
        match outcomes {
            Ok(outcomes) if outcomes.len() == count => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Ok(outcomes) => {
                let error =
                    ApiError::Internal(format!("the leader answered {} of {count} forwarded writes", outcomes.len()));
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(error) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    async fn forward_batch_rpc(
        &self,
        addr: &str,
        batch: &[Forwarded],
    ) -> Result<Vec<Result<Applied, ApiError>>, ApiError> {
        let mut client =
            self.peers.client(addr).map_err(|e| ApiError::Unavailable(format!("leader at {addr}: {e}")))?;
        let payload = collective_proto::raft::Payload {
            body: codec::encode(batch).map_err(|e| ApiError::Internal(e.to_string()))?,
        };
        let mut request = tonic::Request::new(payload);
        // Longer than each write's own wait on the leader, so those answer first.
        request.set_timeout(Duration::from_millis(self.config.forward_timeout_ms + FORWARD_GRACE_MS));
        let (term, leader) = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            (metrics.current_term, metrics.current_leader)
        };
        // A leader that was deposed (paused, cut off) would hold these writes until their
        // deadline: once this member sees a newer term or another leader, they are answered.
        let response = tokio::select! {
            response = client.forward_batch(request) => response,
            changed = self.leader_changed(term, leader) => {
                return Err(ApiError::Unavailable(format!(
                    "the leader at {addr} was replaced ({changed}) while it held the writes; their outcome is \
                     unknown and they may still apply"
                )));
            }
        };
        let response = response.map_err(|status| {
            // The writes may have reached the leader before the call failed: their outcome is
            // unknown, so this is not NOT_LEADER (which tells a client it is safe to retry).
            ApiError::Unavailable(format!(
                "forwarding to the leader at {addr} failed ({:?}: {}); the outcome of the writes is unknown",
                status.code(),
                status.message()
            ))
        })?;
        codec::decode(&response.into_inner().body).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// Resolves once this member sees a term after `term` or a leader other than `leader`;
    /// says which.
    async fn leader_changed(&self, term: u64, leader: Option<NodeId>) -> String {
        let mut metrics = self.raft.metrics();
        let seen = metrics
            .wait_for(|m| m.current_term > term || (m.current_leader.is_some() && m.current_leader != leader))
            .await
            .map(|m| (m.current_term, m.current_leader));
        match seen {
            Ok((new_term, new_leader)) => format!("term {term} -> {new_term}, leader {new_leader:?}"),
            Err(_) => {
                // The core stopped: its metrics change no more (the RPC's own deadline ends it).
                std::future::pending::<String>().await
            }
        }
    }

    /// Forwards one write in its own RPC, with its own deadline.
    async fn forward_one(&self, addr: &str, principal: Principal, command: Command) -> Result<Applied, ApiError> {
        let mut client =
            self.peers.client(addr).map_err(|e| ApiError::Unavailable(format!("leader at {addr}: {e}")))?;
        let wait_ms = self.wait_ms(&command);
        let payload = collective_proto::raft::Payload {
            body: codec::encode(&Forwarded { principal, command }).map_err(|e| ApiError::Internal(e.to_string()))?,
        };
        let mut request = tonic::Request::new(payload);
        request.set_timeout(Duration::from_millis(wait_ms));
        metrics::counter!("collective_proposals_forwarded_total").increment(1);
        let response = client.forward(request).await.map_err(|status| match status.code() {
            tonic::Code::Unavailable => self.not_leader(),
            _ => ApiError::Unavailable(format!("forwarding to the leader at {addr}: {}", status.message())),
        })?;
        codec::decode::<Result<Applied, ApiError>>(&response.into_inner().body)
            .map_err(|e| ApiError::Internal(e.to_string()))?
    }

    /// For writes forwarded by a follower (already validated there) and the leader's own timers:
    /// queues the command if this node leads. `apply` validates every command again, so a bad
    /// one from a peer is still rejected deterministically.
    pub async fn write_as_leader(&self, principal: Principal, command: Command) -> Result<Applied, ApiError> {
        if !self.leads() {
            return Err(self.not_leader());
        }
        self.enqueue(principal, command).await
    }

    /// Queues the command for the next batch and waits for its outcome, `forward_timeout_ms`
    /// (answered by the next sweep after it, `WRITE_EXPIRY_SWEEP_MS`): then the outcome is
    /// unknown (the command may still commit), unless the outcome arrived first.
    async fn enqueue(&self, principal: Principal, command: Command) -> Result<Applied, ApiError> {
        let wait_ms = self.wait_ms(&command);
        if wait_ms > self.config.forward_timeout_ms {
            // Boxed: the rare longer wait keeps its own timer, which every write's future
            // would otherwise carry.
            return Box::pin(self.enqueue_waiting(principal, command, wait_ms)).await;
        }
        // The table answers the waiter at its deadline (`expire_writes`): no timer per write.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        self.queue(principal, command, Some(deadline))?.await
    }

    /// `enqueue` for a wait other than `forward_timeout_ms`, under a timer of its own.
    async fn enqueue_waiting(&self, principal: Principal, command: Command, wait_ms: u64) -> Outcome {
        let mut waiter = self.queue(principal, command, None)?;
        match tokio::time::timeout(Duration::from_millis(wait_ms), &mut waiter).await {
            Ok(outcome) => outcome,
            Err(_) => gave_up(waiter, wait_ms),
        }
    }

    /// Answers the writes whose wait of `forward_timeout_ms` has passed, every
    /// `WRITE_EXPIRY_SWEEP_MS` (so a timed-out write hears about that much late).
    async fn expire_writes(self: Arc<Self>) {
        let wait_ms = self.config.forward_timeout_ms;
        let mut sweep = tokio::time::interval(Duration::from_millis(WRITE_EXPIRY_SWEEP_MS));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            sweep.tick().await;
            let mut now = tokio::time::Instant::now();
            let deposed = !self.waiting.is_empty() && !self.leads();
            if deposed {
                // No longer the leader (a newer term was seen, or the core stopped): every write
                // waiting here is answered now rather than at its deadline. Their outcome is
                // unknown (entries already replicated may still commit under the new leader),
                // so this is UNAVAILABLE, not NOT_LEADER.
                now += Duration::from_secs(DEPOSED_HORIZON_S);
            }
            // Counted as each is answered, before its caller wakes: a caller that reads
            // `/metrics` after its answer sees it counted (a test did, and lost the race).
            self.waiting.expire(now, || {
                metrics::counter!("collective_writes_timed_out_total").increment(1);
                if deposed {
                    deposed_outcome()
                } else {
                    timed_out(wait_ms)
                }
            });
        }
    }

    /// Queues one command for the proposer; the waiter gets its outcome (from the table at
    /// `deadline`, if given).
    fn queue(
        &self,
        principal: Principal,
        command: Command,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Waiter<Outcome, tokio::time::Instant>, ApiError> {
        let waiter = PendingTable::register(&self.waiting, deadline).map_err(|Full { limit }| {
            ApiError::Rejected(Rejection::LimitReached {
                what: "writes waiting on the leader".into(),
                limit: limit as u64,
            })
        })?;
        let pending = Pending { proposal: Proposal { principal, command }, waiter: Some(waiter.id()) };
        self.proposals.try_send(pending).map_err(|e| queue_error(e, "queued proposals on the leader"))?;
        metrics::gauge!("collective_proposals_pending").increment(1.0);
        Ok(waiter)
    }

    /// For a batch forwarded by a follower: queues every write like `write_as_leader`, all
    /// under one deadline (kept by the pending table, like every write's). Outcomes are in the
    /// batch's order.
    pub async fn write_batch_as_leader(&self, batch: Vec<Forwarded>) -> Vec<Result<Applied, ApiError>> {
        if !self.leads() {
            return batch.iter().map(|_| Err(self.not_leader())).collect();
        }
        // One deadline for the batch, kept by the table (`expire_writes`).
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.forward_timeout_ms);
        let waiters: Vec<_> = batch.into_iter().map(|f| self.queue(f.principal, f.command, Some(deadline))).collect();
        let mut outcomes = Vec::with_capacity(waiters.len());
        for waiter in waiters {
            // Answers arrive in about queue order: waiting for each in turn costs no more than
            // waiting for all at once.
            outcomes.push(match waiter {
                Err(error) => Err(error),
                Ok(waiter) => waiter.await,
            });
        }
        outcomes
    }

    /// On the leader: the log index a linearizable read must see applied, once leadership is
    /// confirmed. Within the leader's lease (a quorum acknowledged it less than
    /// `election_timeout_max_ms` ago, and each of those followers refuses any other candidate's
    /// vote for that long after hearing from it: openraft's `handle_vote_req`) no message is
    /// needed; past it, openraft confirms with a heartbeat round shared by the reads waiting.
    /// Safe while clocks run at about the same rate on the members (the lease is measured on
    /// monotonic clocks, from the leader's send time, so the leader's ends first).
    pub async fn leader_read_index(&self) -> Result<u64, ApiError> {
        match self.raft.get_read_log_id(openraft::ReadPolicy::LeaseRead).await {
            Ok((read_log_id, _)) => Ok(read_log_id.index()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => Err(self.not_leader()),
            Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(e))) => {
                Err(ApiError::Unavailable(e.to_string()))
            }
            Err(RaftError::Fatal(fatal)) => Err(ApiError::Unavailable(fatal.to_string())),
        }
    }

    /// Waits until a read here is linearizable (unless `serializable`): the leader confirms its
    /// leadership and this node has applied everything committed before the read began.
    pub async fn read_barrier(self: &Arc<Self>, serializable: bool) -> Result<(), ApiError> {
        // Serializable reads too: a core that panicked may have left the state diverged.
        self.check_core()?;
        if serializable {
            return Ok(());
        }
        let index = self.read_index().await?;
        self.raft
            .wait(Some(Duration::from_millis(self.config.forward_timeout_ms)))
            .applied_index_at_least(Some(index), "linearizable read")
            .await
            .map_err(|e| ApiError::Unavailable(format!("waiting to apply index {index}: {e}")))?;
        Ok(())
    }

    /// A read index for a read arriving now: on the leader, from its lease; elsewhere, from a
    /// round shared with the reads around it.
    pub async fn read_index(self: &Arc<Self>) -> Result<u64, ApiError> {
        if self.leads() {
            metrics::counter!("collective_linearizable_reads_total").increment(1);
            return self.leader_read_index().await;
        }
        let (mut outcome, start) = {
            let mut rounds = self.read_rounds.lock().expect("read rounds lock");
            let outcome = match &rounds.next {
                Some(next) => next.subscribe(),
                None => {
                    let (next, outcome) = tokio::sync::watch::channel(None);
                    rounds.next = Some(next);
                    outcome
                }
            };
            (outcome, !std::mem::replace(&mut rounds.running, true))
        };
        metrics::counter!("collective_linearizable_reads_total").increment(1);
        if start {
            tokio::spawn(self.clone().run_read_rounds());
        }
        let outcome = outcome
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ApiError::Unavailable("the read-index round was abandoned".into()))?;
        outcome.clone().expect("waited for an outcome")
    }

    /// Runs rounds while readers wait for one.
    async fn run_read_rounds(self: Arc<Self>) {
        loop {
            let next = {
                let mut rounds = self.read_rounds.lock().expect("read rounds lock");
                match rounds.next.take() {
                    Some(next) => next,
                    None => {
                        rounds.running = false;
                        return;
                    }
                }
            };
            metrics::counter!("collective_read_index_rounds_total").increment(1);
            // A round that never ends would hold every later read: it is bounded like a
            // forwarded request.
            let deadline = Duration::from_millis(self.config.forward_timeout_ms);
            let outcome = tokio::time::timeout(deadline, self.read_index_round()).await.unwrap_or_else(|_| {
                Err(ApiError::Unavailable(format!("no read index within {} ms", self.config.forward_timeout_ms)))
            });
            let _ = next.send(Some(outcome));
        }
    }

    /// One read-index round: the leader confirms its leadership with a quorum; a follower asks
    /// the leader.
    async fn read_index_round(&self) -> Result<u64, ApiError> {
        let index = match self.leader() {
            Some((leader, _)) if leader == self.id => self.leader_read_index().await?,
            Some((_, addr)) if !addr.is_empty() => {
                let mut client = self.peers.client(&addr).map_err(|e| ApiError::Unavailable(e.to_string()))?;
                let mut request = tonic::Request::new(collective_proto::raft::ReadIndexRequest {});
                request.set_timeout(Duration::from_millis(self.config.forward_timeout_ms));
                client
                    .read_index(request)
                    .await
                    .map_err(|status| {
                        ApiError::Unavailable(format!("read index from the leader at {addr}: {}", status.message()))
                    })?
                    .into_inner()
                    .index
            }
            _ => return Err(self.not_leader()),
        };
        Ok(index)
    }

    /// Voters and learners of the current membership.
    pub fn members(&self) -> (BTreeSet<NodeId>, BTreeMap<NodeId, BasicNode>) {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeMap<NodeId, BasicNode> = membership.nodes().map(|(id, node)| (*id, node.clone())).collect();
        (voters, nodes)
    }
}
