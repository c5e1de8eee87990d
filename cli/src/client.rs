//! A failover-aware connection to the cluster for the CLI: tries `--endpoints` in order and moves
//! on when an endpoint is unreachable or answers `UNAVAILABLE` (for example `NOT_LEADER`).
//! Every call carries the CLI's credentials ([`Transport`]).

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use collective_client::Bearer;
use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// How long connecting to one endpoint may take.
pub const CONNECT_TIMEOUT_MS: u64 = 2_000;

/// A connection to one member with the CLI's credentials: what every service client is built on.
pub type Conn = InterceptedService<Channel, Bearer>;

/// How the CLI reaches the cluster: TLS (the cluster CA, optionally a client certificate) and a
/// bearer token (an administrator token or a site's session token).
#[derive(Clone, Default)]
pub struct Transport {
    tls: Option<ClientTlsConfig>,
    credentials: Bearer,
}

fn read_file(flag: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("{flag}: {}: {e}", path.display()))
}

impl Transport {
    /// From the global flags: `--cacert` turns TLS on; `--cert` and `--key` present a client
    /// certificate; the token is the first line of `--token-file`, or `COLLECTIVE_TOKEN`.
    pub fn from_flags(
        cacert: Option<&Path>,
        cert: Option<&Path>,
        key: Option<&Path>,
        token_file: Option<&Path>,
    ) -> anyhow::Result<Transport> {
        let tls = match (cacert, cert, key) {
            (None, None, None) => None,
            (None, _, _) => anyhow::bail!("--cert: a client certificate needs --cacert (the cluster CA)"),
            (Some(_), Some(_), None) | (Some(_), None, Some(_)) => {
                anyhow::bail!("--cert: --cert and --key go together")
            }
            (Some(ca), cert, key) => {
                collective::auth::tls::install_crypto_provider();
                let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_file("--cacert", ca)?));
                if let (Some(cert), Some(key)) = (cert, key) {
                    tls = tls.identity(Identity::from_pem(read_file("--cert", cert)?, read_file("--key", key)?));
                }
                Some(tls)
            }
        };
        let token = match token_file {
            Some(path) => {
                let text = String::from_utf8(read_file("--token-file", path)?)
                    .map_err(|_| anyhow::anyhow!("--token-file: {} is not text", path.display()))?;
                Some(text.lines().next().unwrap_or("").trim().to_string())
            }
            None => std::env::var("COLLECTIVE_TOKEN").ok().map(|token| token.trim().to_string()),
        };
        let transport = Transport { tls, credentials: Bearer::default() };
        match token.filter(|token| !token.is_empty()) {
            Some(token) => transport.with_token(&token),
            None => Ok(transport),
        }
    }

    /// The same transport with this bearer token.
    pub fn with_token(&self, token: &str) -> anyhow::Result<Transport> {
        Ok(Transport { tls: self.tls.clone(), credentials: Bearer::new(Some(token))? })
    }

    /// Opens a connection to `endpoint` (`host:port`, or a URL whose scheme must match).
    pub async fn connect(&self, endpoint: &str, timeout: Duration) -> Result<Conn, tonic::Status> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let uri = match endpoint.split_once("://") {
            None => format!("{scheme}://{endpoint}"),
            Some((given, _)) if given == scheme => endpoint.to_string(),
            Some((given, _)) => {
                return Err(tonic::Status::invalid_argument(format!(
                    "endpoint {endpoint}: {given}:// does not match {} (use host:port)",
                    if self.tls.is_some() { "--cacert (TLS)" } else { "a plaintext connection (no --cacert)" }
                )))
            }
        };
        let mut builder = Endpoint::from_shared(uri)
            .map_err(|e| tonic::Status::invalid_argument(format!("endpoint {endpoint}: {e}")))?
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .timeout(timeout)
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            builder = builder
                .tls_config(tls.clone())
                .map_err(|e| tonic::Status::invalid_argument(format!("endpoint {endpoint}: {}", chain(&e))))?;
        }
        let channel = builder.connect().await.map_err(|e| {
            let cause = chain(&e);
            if cause.contains("dns error") {
                let host = endpoint.rsplit_once(':').map_or(endpoint, |(host, _)| host);
                return tonic::Status::unavailable(format!(
                    "endpoint {endpoint}: the host {host:?} does not resolve (check the name in --endpoints): {cause}"
                ));
            }
            let hint = if self.tls.is_some() {
                "the TLS handshake or connection failed; check --cacert, and that the member serves TLS"
            } else {
                "if the cluster serves TLS, pass --cacert with the cluster CA"
            };
            tonic::Status::unavailable(format!("endpoint {endpoint}: {cause} ({hint})"))
        })?;
        Ok(InterceptedService::new(channel, self.credentials.clone()))
    }
}

impl Transport {
    /// A call that died with its connection names the endpoint and, for a plaintext client, the
    /// likely cause: a TLS member drops a plaintext connection after the HTTP/2 preface, which
    /// the client sees only at its first call. The code stays what it was, so a write whose
    /// answer was lost is never silently sent to the next endpoint.
    fn explain(&self, endpoint: &str, status: tonic::Status) -> tonic::Status {
        let message = status.message();
        let connection_lost =
            matches!(status.code(), tonic::Code::Cancelled | tonic::Code::Unknown | tonic::Code::Internal)
                && !message.contains("Timeout expired")
                && ["operation was canceled", "transport error", "connection", "h2 protocol error"]
                    .iter()
                    .any(|symptom| message.contains(symptom));
        if !connection_lost {
            return status;
        }
        let hint =
            if self.tls.is_some() { "" } else { " (if the cluster serves TLS, pass --cacert with the cluster CA)" };
        tonic::Status::new(status.code(), format!("endpoint {endpoint}: the connection failed: {message}{hint}"))
    }
}

/// An error and its sources, in one line ("transport error: connection reset by peer").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Endpoints and the index of the last one that answered.
pub struct Client {
    endpoints: Vec<String>,
    channels: Vec<tokio::sync::OnceCell<Conn>>,
    preferred: AtomicUsize,
    timeout: Duration,
    transport: Arc<Transport>,
}

impl Client {
    /// A client over comma-separated `host:port` endpoints, with a per-call deadline.
    pub fn new(endpoints: &str, timeout: Duration, transport: Transport) -> anyhow::Result<Client> {
        let endpoints: Vec<String> =
            endpoints.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_string).collect();
        if endpoints.is_empty() {
            anyhow::bail!("--endpoints: at least one host:port is needed");
        }
        let channels = endpoints.iter().map(|_| tokio::sync::OnceCell::new()).collect();
        Ok(Client { endpoints, channels, preferred: AtomicUsize::new(0), timeout, transport: Arc::new(transport) })
    }

    /// The same endpoints and credentials with another per-call deadline (new connections).
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        let channels = self.endpoints.iter().map(|_| tokio::sync::OnceCell::new()).collect();
        Client {
            endpoints: self.endpoints.clone(),
            channels,
            preferred: AtomicUsize::new(self.preferred.load(Ordering::Relaxed)),
            timeout,
            transport: self.transport.clone(),
        }
    }

    /// A client of endpoint `index` alone (no failover), with the same credentials.
    pub fn only(&self, index: usize) -> Client {
        Client {
            endpoints: vec![self.endpoints[index].clone()],
            channels: vec![tokio::sync::OnceCell::new()],
            preferred: AtomicUsize::new(0),
            timeout: self.timeout,
            transport: self.transport.clone(),
        }
    }

    /// The endpoints, in the order given.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// Whether connections use TLS (`--cacert`).
    pub fn uses_tls(&self) -> bool {
        self.transport.tls.is_some()
    }

    /// The `authorization` header every call carries, if there is a token.
    pub fn authorization(&self) -> Option<http::HeaderValue> {
        let value = self.transport.credentials.header()?;
        http::HeaderValue::from_bytes(value.as_encoded_bytes()).ok()
    }

    /// A connection of its own to endpoint `index` (modulo their count), for benchmark workers.
    pub async fn dedicated(&self, index: usize) -> anyhow::Result<Conn> {
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        Ok(self.transport.connect(endpoint, Duration::from_secs(10)).await?)
    }

    /// The index in `--endpoints` of the leader, as the first member that answers knows it: where
    /// a write goes without a follower forwarding it. The error names the leader when it is not
    /// among the endpoints.
    pub async fn leader_index(&self) -> anyhow::Result<usize> {
        let status = self
            .call(|c| async move { ClusterClient::new(c).status(pb::ClusterStatusRequest {}).await })
            .await?
            .into_inner();
        self.endpoints
            .iter()
            .position(|endpoint| {
                let endpoint = endpoint.trim_start_matches("http://").trim_start_matches("https://");
                !status.leader_addr.is_empty() && endpoint == status.leader_addr
            })
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the leader is {:?} at {:?}, which is not among --endpoints {:?}: name it there",
                    status.leader_id,
                    status.leader_addr,
                    self.endpoints
                )
            })
    }

    async fn channel(&self, index: usize) -> Result<Conn, tonic::Status> {
        let endpoint = &self.endpoints[index];
        self.channels[index].get_or_try_init(|| self.transport.connect(endpoint, self.timeout)).await.cloned()
    }

    /// Runs `call` against the endpoints until one gives an answer other than `UNAVAILABLE`.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..self.endpoints.len() {
            let index = (start + offset) % self.endpoints.len();
            let result = match self.channel(index).await {
                Ok(channel) => {
                    call(channel).await.map_err(|status| self.transport.explain(&self.endpoints[index], status))
                }
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
