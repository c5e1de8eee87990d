//! The safety checks, one per file. Each takes what the run recorded and returns violations,
//! each a sentence naming what went wrong.

pub mod acked_writes;
pub mod convergence;
pub mod damaged_logs;
pub mod invariants;
pub mod leaders;
pub mod linearizable;
pub mod messages;
pub mod routing;
pub mod watch;

/// A broken rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which check: `acked-writes`, `linearizable`, `convergence`, `one-leader-per-term`,
    /// `watch-gap-free`, `invariants`, `messages`, `routing`, `damaged-log` or `liveness`.
    pub check: &'static str,
    /// What happened.
    pub detail: String,
}

impl Violation {
    /// A violation of `check`.
    pub fn new(check: &'static str, detail: impl Into<String>) -> Violation {
        Violation { check, detail: detail.into() }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.check, self.detail)
    }
}
