//! What a node takes from its surroundings: the wall clock and the way it opens connections to
//! peers. Production uses the system clock and TCP; the turmoil simulations (`sim-tests`) pass
//! the simulated clock and network, and run this same node.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::transport::{Channel, Endpoint};

/// Milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;
/// Opens a lazily connecting channel to a configured endpoint.
pub type Connect = Arc<dyn Fn(Endpoint) -> Channel + Send + Sync>;
/// Fills a buffer with random bytes (password salts).
pub type Entropy = Arc<dyn Fn(&mut [u8]) + Send + Sync>;

/// The clock and the connector.
#[derive(Clone)]
pub struct Environment {
    /// The wall clock that stamps entries and judges leases.
    pub clock: Clock,
    /// How peer channels connect.
    pub connect: Connect,
    /// Where random bytes come from: the OS, or a simulation's seed.
    pub entropy: Entropy,
    /// Run CPU-heavy work (password hashing, history queries) and the log's fsyncs on the
    /// calling task instead of tokio's blocking pool. The simulations need it: a pool thread
    /// finishes after a real-time delay, so the simulated step it lands in would vary from run
    /// to run.
    pub inline_blocking: bool,
    /// Holds the Raft log's fsyncs while held: a simulation holds a leader's to show that its
    /// unsynced entries never count towards a commit. Never held in production.
    pub log_sync: SyncGate,
}

/// A gate the Raft log's syncer waits at before each fsync.
#[derive(Clone, Debug, Default)]
pub struct SyncGate(Arc<tokio::sync::watch::Sender<bool>>);

impl SyncGate {
    /// Holds every later fsync until [`SyncGate::release`].
    pub fn hold(&self) {
        self.0.send_replace(true);
    }

    /// Lets fsyncs run again.
    pub fn release(&self) {
        self.0.send_replace(false);
    }

    /// Returns once the gate is not held.
    pub async fn wait_released(&self) {
        let mut released = self.0.subscribe();
        // The sender lives in `self`: the wait cannot fail.
        let _ = released.wait_for(|held| !held).await;
    }
}

impl Environment {
    /// The system clock and TCP.
    pub fn system() -> Environment {
        Environment {
            clock: Arc::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)),
            connect: Arc::new(|endpoint| endpoint.connect_lazy()),
            entropy: Arc::new(|buffer| rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, buffer)),
            inline_blocking: false,
            log_sync: SyncGate::default(),
        }
    }

    /// Runs CPU-heavy `work` on tokio's blocking pool, or inline (see `inline_blocking`).
    pub async fn blocking<T, F>(&self, work: F) -> Result<T, tokio::task::JoinError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        if self.inline_blocking {
            Ok(work())
        } else {
            tokio::task::spawn_blocking(work).await
        }
    }

    /// `N` random bytes.
    pub fn random<const N: usize>(&self) -> [u8; N] {
        let mut bytes = [0; N];
        (self.entropy)(&mut bytes);
        bytes
    }

    /// Now, in milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }
}

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Environment").finish_non_exhaustive()
    }
}
