//! What a simulation observed: client operations with their simulated invoke and complete
//! times, watch sessions, leaders per term, faults, and the trace whose hash proves a seed
//! replays identically.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// A client operation on one key (a register: a user's presence detail or display name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// The client (host name) that ran it.
    pub client: String,
    /// `presence/<user>` or `name/<user>`.
    pub key: String,
    /// Written or read value.
    pub kind: OpKind,
    /// Simulated ms when the request was sent.
    pub invoked_ms: u64,
    /// Simulated ms when the answer arrived; `None` for a write whose outcome is unknown.
    pub completed_ms: Option<u64>,
    /// The revision a write was acknowledged at, or a presence read's modification revision.
    pub revision: Option<u64>,
    /// A read of the final phase (after healing, every key once).
    pub fin: bool,
}

/// Write or read of a register.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Set the register to the value.
    Write(String),
    /// The register held the value.
    Read(String),
}

impl Op {
    /// An acknowledged write (applied, with a revision).
    pub fn acked(&self) -> bool {
        matches!(self.kind, OpKind::Write(_)) && self.completed_ms.is_some()
    }

    /// A write that may or may not have applied.
    pub fn maybe(&self) -> bool {
        matches!(self.kind, OpKind::Write(_)) && self.completed_ms.is_none()
    }
}

/// One watch stream, from (re)connection until it ended.
#[derive(Debug, Clone, Default)]
pub struct WatchSession {
    /// The node watched.
    pub node: String,
    /// Requested start revision (0: from now).
    pub start: u64,
    /// Revisions received, in order, with a digest of each event.
    pub events: Vec<(u64, String)>,
}

/// Everything recorded during one run.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Completed (or abandoned) client operations, in completion order.
    pub ops: Vec<Op>,
    /// Watch sessions.
    pub watches: Vec<WatchSession>,
    /// Leaders seen per term: term → node ids that claimed to lead it.
    pub leaders: BTreeMap<u64, Vec<u64>>,
    /// Faults injected (for the summary and the trace).
    pub faults: Vec<String>,
    /// Liveness failures (no leader or no completed write within the bound after healing).
    pub liveness: Vec<String>,
    /// Hash of everything observed, in order.
    trace: TraceHasher,
    /// Print every trace line to stderr (to diff two runs of a seed).
    echo: bool,
}

impl Recorder {
    /// An empty recorder; `echo` prints every trace line to stderr.
    pub fn new(echo: bool) -> Recorder {
        Recorder { echo, ..Recorder::default() }
    }

    /// Adds a line to the trace (anything observable that a replay must reproduce).
    pub fn trace(&mut self, line: impl Hash + std::fmt::Debug) {
        if self.echo {
            eprintln!("trace {}: {line:?}", self.trace.1);
        }
        line.hash(&mut self.trace.0);
        self.trace.1 += 1;
    }

    /// Records an operation and traces it.
    pub fn op(&mut self, op: Op) {
        self.trace((&op.client, &op.key, &op.kind, op.invoked_ms, op.completed_ms, op.revision));
        self.ops.push(op);
    }

    /// Records a leader observation.
    pub fn leader(&mut self, term: u64, node: u64) {
        let leaders = self.leaders.entry(term).or_default();
        if !leaders.contains(&node) {
            leaders.push(node);
            self.trace(("leader", term, node));
        }
    }

    /// Records a fault.
    pub fn fault(&mut self, at_ms: u64, description: String) {
        self.trace(("fault", at_ms, &description));
        self.faults.push(format!("{at_ms} ms: {description}"));
    }

    /// The trace hash and how many lines went into it.
    pub fn trace_hash(&self) -> (u64, u64) {
        (self.trace.0.finish(), self.trace.1)
    }
}

/// SipHash with fixed keys: the same lines give the same hash in every run of this binary.
#[derive(Debug)]
struct TraceHasher(std::hash::DefaultHasher, u64);

impl Default for TraceHasher {
    fn default() -> Self {
        TraceHasher(std::hash::DefaultHasher::new(), 0)
    }
}

/// Inter-site messages of a run: what clients sent and what the receiving site got.
#[derive(Debug, Default)]
pub struct MessageLog {
    /// (sequence number, message id if acknowledged; `None`: outcome unknown).
    pub sends: Vec<(i64, Option<u64>)>,
    /// (message id, sequence number, position in its subscription session), in arrival order.
    pub deliveries: Vec<(u64, i64, usize)>,
    /// Subscription sessions that ended.
    pub sessions: usize,
}

impl MessageLog {
    /// Whether every acknowledged send has been delivered.
    pub fn caught_up(&self) -> bool {
        let delivered: std::collections::BTreeSet<u64> = self.deliveries.iter().map(|d| d.0).collect();
        self.sends.iter().filter_map(|(_, id)| *id).all(|id| delivered.contains(&id))
    }
}

/// What the run's callers were told about routing.
#[derive(Debug, Default)]
pub struct RoutingLog {
    /// Acknowledged routes: (interaction id, agent it was reserved to; `None`: queued).
    pub routed: Vec<(String, Option<String>)>,
    /// Acknowledged accepts: (interaction id, agent).
    pub accepted: Vec<(String, String)>,
}
