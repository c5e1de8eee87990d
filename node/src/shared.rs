//! `Shared`: the applied state and the recent event history, shared by the Raft state machine
//! (the only writer) and the gRPC services (readers and watchers).

use std::sync::{Arc, Mutex, RwLock};

use collective_statemachine::{EventRecord, State};
use collective_sync::hub::Hub;

/// Most concurrent watch subscriptions per node.
pub const WATCHERS_MAX: usize = 10_000;
/// Most invariant violations remembered (the first ones matter).
const VIOLATIONS_MAX: usize = 16;

/// State shared between the state machine and the services.
///
/// `state` is a `std::sync::RwLock`, not a tokio one: no lock is ever held across an `.await`,
/// and reads are short.
pub struct Shared {
    /// The materialised views.
    pub state: RwLock<State>,
    /// Recent events for watchers, numbered by revision (see `collective_sync::hub`). Each is
    /// shared: a watcher's batch clones pointers, not events (a thousand watchers read each one).
    pub events: Arc<Hub<Arc<EventRecord>>>,
    /// Run `State::check_invariants` after every applied entry (simulations; costly).
    check_invariants: bool,
    /// Invariant violations seen (with `check_invariants`).
    violations: Mutex<Vec<String>>,
    /// Size and timings of this node's snapshots, for `Cluster.Status`.
    pub snapshots: SnapshotStats,
    /// This member's id and failure limiter, once authentication is set up: the failed
    /// authentications other members record through the log are counted here as they apply
    /// (`count_auth_failures`), so the limit holds across the cluster.
    failure_limiter: std::sync::OnceLock<(u64, Arc<crate::auth::limiter::Limiter>)>,
}

/// This node's last snapshot: its size, and how long the last build and install took (0: none).
#[derive(Debug, Default)]
pub struct SnapshotStats {
    pub bytes: std::sync::atomic::AtomicU64,
    pub build_ms: std::sync::atomic::AtomicU64,
    pub install_ms: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Empty shared state retaining at most `history_events_max` events.
    pub fn new(history_events_max: usize) -> Shared {
        Shared::with_checks(history_events_max, false)
    }

    /// Like `new`; with `check_invariants`, every applied entry is followed by
    /// `State::check_invariants` and violations are kept for `violations()`.
    pub fn with_checks(history_events_max: usize, check_invariants: bool) -> Shared {
        Shared {
            state: RwLock::new(State::new()),
            events: Arc::new(Hub::new(1, history_events_max, WATCHERS_MAX)),
            check_invariants,
            violations: Mutex::new(Vec::new()),
            snapshots: SnapshotStats::default(),
            failure_limiter: std::sync::OnceLock::new(),
        }
    }

    /// Makes applied `AuthenticationFailed` events of other members count in `limiter`.
    pub fn set_failure_limiter(&self, member: u64, limiter: Arc<crate::auth::limiter::Limiter>) {
        let _ = self.failure_limiter.set((member, limiter));
    }

    /// Counts, in this member's limiter, the failed authentications that other members recorded
    /// in `records` (its own were counted when they happened), at each entry's time.
    pub fn count_auth_failures(&self, records: &[EventRecord]) {
        let Some((own, limiter)) = self.failure_limiter.get() else { return };
        for record in records {
            if let collective_statemachine::Event::AuthenticationFailed { member, site, source } = &record.event {
                if member != own {
                    limiter.fail(&crate::auth::limiter::keys(*site, source.parse().ok()), record.at_ms);
                }
            }
        }
    }

    /// Replaces the whole state (restart or snapshot install); history restarts after it.
    pub fn reset(&self, state: State) {
        let revision = state.revision;
        *self.state.write().expect("state lock") = state;
        self.events.reset(revision + 1);
    }

    /// Records newly applied events (gap-free, following the last published) and wakes watchers.
    pub fn publish(&self, records: Vec<EventRecord>) {
        if records.is_empty() {
            return;
        }
        // One comparison per applied entry; our crates build without debug assertions.
        assert_eq!(
            records.first().map(|r| r.revision),
            Some(self.events.next_sequence()),
            "published events follow the last published, without a gap"
        );
        self.events.publish(records.into_iter().map(Arc::new));
    }

    /// Latest applied revision: the hub numbers events by revision, so it is the one before
    /// the hub's next.
    pub fn revision(&self) -> u64 {
        self.events.next_sequence() - 1
    }

    /// With `check_invariants`: checks the state (the caller holds no lock on it) and keeps the
    /// violation. A violation is a bug in `collective-statemachine`; the node keeps serving so
    /// a simulation can report it with its seed.
    pub fn check_invariants(&self, state: &State) {
        if !self.check_invariants {
            return;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.check_invariants()));
        if let Err(panic) = outcome {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "invariant violated".to_string());
            tracing::error!(revision = state.revision, %message, "state invariant violated");
            let mut violations = self.violations.lock().expect("violations lock");
            if violations.len() < VIOLATIONS_MAX {
                violations.push(format!("at revision {}: {message}", state.revision));
            }
        }
    }

    /// Invariant violations seen so far (empty unless `check_invariants`).
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().expect("violations lock").clone()
    }
}
