//! `collective endpoint health|status`: each of `--endpoints` asked on its own, etcdctl style,
//! so an operator sees which member is down, behind or without a leader.

use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use collective_proto::v1::directory_client::DirectoryClient;
use serde::Serialize;

use super::client::Client;
use super::describe;
use super::output::{print, Format};

/// Subcommands of `endpoint`.
#[derive(clap::Subcommand, Debug)]
pub enum EndpointCommand {
    /// Whether each endpoint serves a linearizable read (it knows a leader and reaches a quorum).
    /// Exits 1 when any is unhealthy.
    Health,
    /// Each endpoint's member id, leader, term, indexes, revision, database size and latency.
    /// Exits 1 when any does not answer.
    Status,
}

#[derive(Serialize)]
struct Health {
    endpoint: String,
    health: bool,
    took_ms: f64,
    error: String,
}

#[derive(Serialize)]
struct Status {
    endpoint: String,
    id: u64,
    is_leader: bool,
    leader: u64,
    term: u64,
    raft_index: u64,
    applied_index: u64,
    revision: u64,
    db_size_bytes: u64,
    took_ms: f64,
    error: String,
}

/// Runs an `endpoint` subcommand over every endpoint, concurrently.
pub async fn endpoint(client: &Client, command: EndpointCommand, format: Format) -> anyhow::Result<()> {
    let endpoints = client.endpoints().to_vec();
    let clients: Vec<Client> = (0..endpoints.len()).map(|index| client.only(index)).collect();
    let failed = match command {
        EndpointCommand::Health => {
            let rows = futures::future::join_all(clients.iter().zip(&endpoints).map(|(c, e)| health(c, e))).await;
            let failed = rows.iter().filter(|row| !row.health).count();
            print(format, &serde_json::json!({ "endpoints": rows }), Some("endpoints"));
            failed
        }
        EndpointCommand::Status => {
            let rows = futures::future::join_all(clients.iter().zip(&endpoints).map(|(c, e)| status(c, e))).await;
            let failed = rows.iter().filter(|row| !row.error.is_empty()).count();
            print(format, &serde_json::json!({ "endpoints": rows }), Some("endpoints"));
            failed
        }
    };
    if failed > 0 {
        anyhow::bail!("{failed} of {} endpoints failed", endpoints.len());
    }
    Ok(())
}

fn millis(elapsed: Duration) -> f64 {
    (elapsed.as_secs_f64() * 10_000.0).round() / 10.0
}

async fn health(client: &Client, endpoint: &str) -> Health {
    let started = Instant::now();
    // A linearizable read: it needs the leader's confirmation from a quorum.
    let read = client
        .call(|c| async move {
            DirectoryClient::new(c).list_statuses(pb::ListStatusesRequest { serializable: false }).await
        })
        .await;
    Health {
        endpoint: endpoint.to_string(),
        health: read.is_ok(),
        took_ms: millis(started.elapsed()),
        error: read.err().map(|status| describe(&status)).unwrap_or_default(),
    }
}

async fn status(client: &Client, endpoint: &str) -> Status {
    let started = Instant::now();
    let answer = client.call(|c| async move { ClusterClient::new(c).status(pb::ClusterStatusRequest {}).await }).await;
    let took_ms = millis(started.elapsed());
    match answer {
        Ok(status) => {
            let status = status.into_inner();
            Status {
                endpoint: endpoint.to_string(),
                id: status.id,
                is_leader: status.leader_id != 0 && status.leader_id == status.id,
                leader: status.leader_id,
                term: status.term,
                raft_index: status.last_log_index,
                applied_index: status.applied_index,
                revision: status.revision,
                db_size_bytes: status.db_size_bytes,
                took_ms,
                error: String::new(),
            }
        }
        Err(error) => Status {
            endpoint: endpoint.to_string(),
            id: 0,
            is_leader: false,
            leader: 0,
            term: 0,
            raft_index: 0,
            applied_index: 0,
            revision: 0,
            db_size_bytes: 0,
            took_ms,
            error: describe(&error),
        },
    }
}

/// Flags of `probe`.
#[derive(clap::Args, Debug)]
pub struct ProbeArgs {
    /// The path to ask: /readyz (a leader and a quorum read) or /livez (the process and its
    /// Raft core run).
    #[arg(default_value = "/readyz")]
    pub path: String,
    /// The member's HTTP address (its `http_addr`; 0.0.0.0 means this host).
    #[arg(long, env = "COLLECTIVE_HTTP_ADDR", default_value = "127.0.0.1:8001")]
    pub http_addr: String,
}

/// `collective probe`: GETs `path` from the member's HTTP port and succeeds on 200 only, for a
/// container's health check in an image that has no curl.
pub async fn probe(args: ProbeArgs, timeout: Duration) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !args.path.starts_with('/') || args.path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        anyhow::bail!("path {:?}: must start with / and hold no spaces", args.path);
    }
    let addr = args.http_addr.replace("0.0.0.0", "127.0.0.1");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(&addr).await?;
        stream.write_all(format!("GET {} HTTP/1.0\r\nHost: {addr}\r\n\r\n", args.path).as_bytes()).await?;
        let mut response = Vec::new();
        stream.take(64 * 1024).read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}{}: no answer within {} ms", args.path, timeout.as_millis()))?
        .map_err(|e| anyhow::anyhow!("{addr}{}: {e}", args.path))?;
    let status_line = response.lines().next().unwrap_or_default();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.trim()).unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        crate::outln!("{}{}: {body}", addr, args.path);
        Ok(())
    } else {
        anyhow::bail!("{addr}{}: {status_line}: {body}", args.path)
    }
}
