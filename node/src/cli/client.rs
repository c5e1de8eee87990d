//! A failover-aware connection to the cluster for the CLI: tries `--endpoints` in order and moves
//! on when an endpoint is unreachable or answers `UNAVAILABLE` (for example `NOT_LEADER`).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

/// How long connecting to one endpoint may take.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// Endpoints and the index of the last one that answered.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<tokio::sync::OnceCell<Channel>>,
    preferred: AtomicUsize,
    timeout: Duration,
}

impl Client {
    /// A client over comma-separated `host:port` endpoints, with a per-call deadline.
    pub fn new(endpoints: &str, timeout: Duration) -> anyhow::Result<Client> {
        let endpoints: Vec<String> =
            endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string).collect();
        if endpoints.is_empty() {
            anyhow::bail!("--endpoints: at least one host:port is needed");
        }
        let channels = endpoints.iter().map(|_| tokio::sync::OnceCell::new()).collect();
        Ok(Client { endpoints, channels, preferred: AtomicUsize::new(0), timeout })
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    async fn channel(&self, index: usize) -> Result<Channel, tonic::Status> {
        let endpoint = &self.endpoints[index];
        self.channels[index]
            .get_or_try_init(|| async {
                let uri = if endpoint.starts_with("http") { endpoint.clone() } else { format!("http://{endpoint}") };
                Endpoint::from_shared(uri)
                    .map_err(|e| tonic::Status::invalid_argument(format!("endpoint {endpoint}: {e}")))?
                    .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
                    .timeout(self.timeout)
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| tonic::Status::unavailable(format!("endpoint {endpoint}: {e}")))
            })
            .await
            .cloned()
    }

    /// Runs `call` against the endpoints until one gives an answer other than `UNAVAILABLE`.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..self.endpoints.len() {
            let index = (start + offset) % self.endpoints.len();
            let result = match self.channel(index).await {
                Ok(channel) => call(channel).await,
                Err(status) => Err(status),
            };
            match result {
                Err(status) if status.code() == tonic::Code::Unavailable => last_error = Some(status),
                other => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return other;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| tonic::Status::unavailable("no endpoint answered")))
    }
}
