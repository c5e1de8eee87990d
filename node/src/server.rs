//! Serving: the gRPC server (client services, the internal Raft service, health, reflection),
//! the HTTP server (`/livez`, `/readyz`, `/metrics`) and the metrics task.

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use collective_proto::raft::raft_server::RaftServer;
use collective_proto::v1::alerts_server::AlertsServer;
use collective_proto::v1::auth_server::AuthServer;
use collective_proto::v1::cluster_server::ClusterServer;
use collective_proto::v1::config_server::ConfigServer;
use collective_proto::v1::directory_server::DirectoryServer;
use collective_proto::v1::history_server::HistoryServer;
use collective_proto::v1::messages_server::MessagesServer;
use collective_proto::v1::notes_server::NotesServer;
use collective_proto::v1::presences_server::PresencesServer;
use collective_proto::v1::routing_server::RoutingServer;
use collective_proto::v1::sources_server::SourcesServer;
use metrics_exporter_prometheus::PrometheusHandle;
use tonic::server::NamedService;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;

use crate::api::alerts::AlertsService;
use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::config::ConfigService;
use crate::api::directory::DirectoryService;
use crate::api::history::HistoryService;
use crate::api::messages::MessagesService;
use crate::api::notes::NotesService;
use crate::api::presence::PresenceService;
use crate::api::routing::RoutingService;
use crate::api::sources::SourcesService;
use crate::auth::gate::GateLayer;
use crate::config::NodeConfig;
use crate::dispatch::{ServiceSet, Services};
use crate::error::{invalid, Error};
use crate::network::PEER_MESSAGE_BYTES_MAX;
use crate::node::Node;
use crate::raft_service::RaftService;

/// Most concurrent gRPC streams per connection.
pub const GRPC_CONCURRENT_STREAMS_MAX: u32 = 1_024;

/// Starts a node and serves it until the process ends.
pub async fn serve(config: NodeConfig) -> crate::error::Result<()> {
    crate::auth::tls::install_crypto_provider();
    let prometheus = crate::telemetry::install()?;
    let grpc_listener = tokio::net::TcpListener::bind(&config.grpc_addr)
        .await
        .map_err(|e| invalid("grpc_addr", format!("{}: {e}", config.grpc_addr)))?;
    let http_listener = tokio::net::TcpListener::bind(&config.http_addr)
        .await
        .map_err(|e| invalid("http_addr", format!("{}: {e}", config.http_addr)))?;
    let http_tls = match (config.http_tls, &config.tls_cert_file, &config.tls_key_file) {
        (true, Some(cert), Some(key)) => Some(crate::http_tls::server_config(cert, key)?),
        _ => None,
    };
    crate::join::set_aside_if_removed(&config, &crate::environment::Environment::system()).await?;
    tokio::spawn(warn_unresolved(config.clone()));
    let node = Node::start(config).await?;
    tracing::info!(id = node.id, grpc = %node.config.grpc_addr, http = %node.config.http_addr, "collective node started");
    tokio::spawn(serve_http(http_listener, http_tls, node.clone(), prometheus));
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself; ours is bound early (to
    // fail fast on a taken port), so Nagle is switched off here, or replies sit ~40 ms behind
    // delayed ACKs.
    let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
    // A member whose Raft core stopped cannot recover by itself (a full disk, a damaged log, a
    // panic): it exits non-zero so its supervisor restarts it, and the restart's checks decide
    // whether its data may serve again.
    tokio::select! {
        served = serve_grpc(node.clone(), incoming) => served,
        signal = stop_signal() => {
            // SIGTERM (Kubernetes, Docker, systemd) or SIGINT: a leader hands over first, so a
            // rolling restart pauses writes for about a lease instead of an election.
            tracing::info!(signal, "stopping");
            node.stop().await;
            tracing::info!("stopped");
            Ok(())
        }
        reason = node.wait_core_stopped() => {
            // Long enough for a probe or a client to see NOT_SERVING, short enough for a restart.
            tokio::time::sleep(Duration::from_millis(CORE_STOPPED_EXIT_DELAY_MS)).await;
            Err(Error::Raft(format!("{reason}; exiting so a supervisor can restart this member")))
        }
    }
}

/// The name of the first stop signal (SIGTERM or SIGINT) this process receives.
async fn stop_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut terminate), Ok(mut interrupt)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = interrupt.recv() => "SIGINT",
    }
}

/// Names every `initial_cluster` and `advertise_addr` host that does not resolve, every 5 s until
/// all do: the member waits for them (a StatefulSet's DNS names appear as its pods start), but
/// a typo should not look like a slow start.
async fn warn_unresolved(config: NodeConfig) {
    let mut addrs: Vec<(String, String)> = config
        .initial_members()
        .unwrap_or_default()
        .into_iter()
        .map(|(id, addr)| (format!("initial_cluster member {id}"), addr))
        .collect();
    if let Some(addr) = &config.advertise_addr {
        addrs.push(("advertise_addr".into(), addr.clone()));
    }
    loop {
        let mut unresolved = 0;
        for (what, addr) in &addrs {
            if let Err(error) = tokio::net::lookup_host(addr.as_str()).await {
                unresolved += 1;
                tracing::warn!(%addr, %error, "{what}: the host does not resolve (yet); waiting for it");
            }
        }
        if unresolved == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// How long a member whose Raft core stopped keeps answering (unhealthy) before it exits.
pub const CORE_STOPPED_EXIT_DELAY_MS: u64 = 1_000;

/// Serves a started node's gRPC services (client API, the internal Raft service, health,
/// reflection) on `incoming` connections until it ends, keeps the health status and Raft gauges
/// current, and bootstraps the initial cluster. The simulations call this with turmoil's
/// listener.
pub async fn serve_grpc<I, IO, IE>(node: Arc<Node>, incoming: I) -> crate::error::Result<()>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    // tonic-health starts "" as SERVING: a member that knows no leader yet must not say so (a
    // starting member's bootstrap takes SERVING to mean "already in a cluster").
    for service in HEALTH_SERVICES {
        health_reporter.set_service_status(service, ServingStatus::NotServing).await;
    }
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;

    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = &node.security.tls {
        server = server.tls_config(tls.server())?;
    }
    let grpc = server
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .max_concurrent_streams(GRPC_CONCURRENT_STREAMS_MAX)
        // Every request is counted (refusals too), then passes the gate before its service.
        .layer(crate::grpc_metrics::GrpcMetricsLayer::new(&[
            collective_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]))
        .layer(GateLayer::new(node.clone()))
        .serve_with_incoming(
            Services::new(ServiceSet {
                presences: PresencesServer::new(PresenceService::new(node.clone())),
                raft: RaftServer::new(RaftService::new(node.clone()))
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
                directory: DirectoryServer::new(DirectoryService { node: node.clone() }),
                auth: AuthServer::new(AuthService { node: node.clone() }),
                cluster: ClusterServer::new(ClusterService { node: node.clone() }),
                history: HistoryServer::new(HistoryService { node: node.clone() }),
                messages: MessagesServer::new(MessagesService { node: node.clone() }),
                notes: NotesServer::new(NotesService { node: node.clone() }),
                routing: RoutingServer::new(RoutingService { node: node.clone() }),
                sources: SourcesServer::new(SourcesService { node: node.clone() }),
                alerts: AlertsServer::new(AlertsService { node: node.clone() }),
                config: ConfigServer::new(ConfigService { node: node.clone() })
                    .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
                    .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX),
                health: health_service,
                reflection_v1,
                reflection_v1alpha,
            }),
            incoming,
        );

    tokio::spawn(report_metrics(node.clone(), health_reporter));
    tokio::spawn(report_backlog(node.clone()));
    tokio::spawn(crate::source::run_polls(node.clone()));
    tokio::spawn(crate::webhook::run_webhooks(node.clone()));
    tokio::spawn(node.clone().bootstrap());
    tokio::spawn(crate::join::join(node.clone()));
    grpc.await?;
    Ok(())
}

/// What reflection describes: the client API, health, and the `google.rpc` error details our
/// errors carry (so `grpcurl` and `buf curl` decode `ErrorInfo`); not the members' own Raft
/// service, which only members may call.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    use prost::Message;
    let mut client_api =
        prost_types::FileDescriptorSet::decode(collective_proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
    client_api.file.retain(|file| file.package() != "collective.raft.v1");
    tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(client_api)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// The names `grpc.health.v1` answers for: the whole server ("") and each client service. Each
/// serves while this member knows a leader and its Raft core runs (every one of them needs a
/// quorum).
const HEALTH_SERVICES: [&str; 12] = [
    "",
    <AuthServer<AuthService> as NamedService>::NAME,
    <ClusterServer<ClusterService> as NamedService>::NAME,
    <ConfigServer<ConfigService> as NamedService>::NAME,
    <DirectoryServer<DirectoryService> as NamedService>::NAME,
    <HistoryServer<HistoryService> as NamedService>::NAME,
    <MessagesServer<MessagesService> as NamedService>::NAME,
    <NotesServer<NotesService> as NamedService>::NAME,
    <PresencesServer<PresenceService> as NamedService>::NAME,
    <RoutingServer<RoutingService> as NamedService>::NAME,
    <SourcesServer<SourcesService> as NamedService>::NAME,
    <AlertsServer<AlertsService> as NamedService>::NAME,
];

/// Least time between two reports of the Raft gauges and the health status. openraft's metrics
/// change several times per write (appended, flushed, replicated, committed, applied); reporting
/// each change took a noticeable share of a lone write's CPU. Health lags a leader change by at
/// most this long.
pub const METRICS_REPORT_INTERVAL_MS: u64 = 50;

/// Keeps the Raft gauges and the gRPC health status current.
async fn report_metrics(node: Arc<Node>, health: tonic_health::server::HealthReporter) {
    let mut metrics = node.raft.metrics();
    let mut last_leader = None;
    let mut last_status = None;
    let mut followers = std::collections::BTreeSet::new();
    let mut stopping = node.stopping.subscribe();
    let mut first = true;
    loop {
        if !first {
            tokio::time::sleep(Duration::from_millis(METRICS_REPORT_INTERVAL_MS)).await;
        }
        first = false;
        let snapshot = metrics.borrow_and_update().clone();
        let has_leader = snapshot.current_leader.is_some();
        metrics::gauge!("collective_server_has_leader").set(if has_leader { 1.0 } else { 0.0 });
        metrics::gauge!("collective_server_is_leader").set(if snapshot.current_leader == Some(node.id) {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("collective_raft_term").set(snapshot.current_term as f64);
        metrics::gauge!("collective_raft_last_log_index").set(snapshot.last_log_index.unwrap_or(0) as f64);
        metrics::gauge!("collective_raft_applied_index")
            .set(snapshot.last_applied.map(|l| l.index).unwrap_or(0) as f64);
        metrics::gauge!("collective_revision").set(node.shared.revision() as f64);
        report_followers(&snapshot, &mut followers);
        if snapshot.current_leader != last_leader && snapshot.current_leader.is_some() {
            metrics::counter!("collective_leader_changes_seen_total").increment(1);
            last_leader = snapshot.current_leader;
        }
        let serving = has_leader && node.core_stopped().is_none() && !node.is_stopping();
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last_status != Some(status) {
            for service in HEALTH_SERVICES {
                health.set_service_status(service, status).await;
            }
            last_status = Some(status);
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() {
                // The core ended: its metrics change no more.
                node.wait_core_stopped().await;
            },
            _ = async { stopping.wait_for(|stopping| *stopping).await.map(|_| ()) }, if !node.is_stopping() => {}
            _ = node.wait_core_stopped() => {}
        }
        if node.core_stopped().is_some() {
            for service in HEALTH_SERVICES {
                health.set_service_status(service, ServingStatus::NotServing).await;
            }
            metrics::gauge!("collective_server_has_leader").set(0.0);
            metrics::gauge!("collective_server_is_leader").set(0.0);
            return;
        }
    }
}

/// On the leader, each follower's match index and lag (entries it lacks); elsewhere the lag of
/// every follower seen reads 0, so a former leader's last figures do not linger as an alert.
fn report_followers(
    snapshot: &openraft::RaftMetrics<crate::raft_types::TypeConfig>,
    followers: &mut std::collections::BTreeSet<crate::raft_types::NodeId>,
) {
    let last = snapshot.last_log_index.unwrap_or(0);
    let replication = snapshot.replication.clone().unwrap_or_default();
    for (member, matched) in &replication {
        if *member == snapshot.id {
            continue;
        }
        followers.insert(*member);
        let matched = matched.map_or(0, |log_id| log_id.index);
        metrics::gauge!("collective_raft_follower_match_index", "member" => member.to_string()).set(matched as f64);
        metrics::gauge!("collective_raft_follower_lag_entries", "member" => member.to_string())
            .set(last.saturating_sub(matched) as f64);
    }
    for member in followers.iter().filter(|member| !replication.contains_key(member)) {
        metrics::gauge!("collective_raft_follower_lag_entries", "member" => member.to_string()).set(0.0);
    }
}

/// The data directory's size is measured every this many backlog reports (a directory walk).
const DB_SIZE_REPORT_TICKS: u64 = 10;

/// How often the per-site message backlog gauges are refreshed.
pub const BACKLOG_REPORT_INTERVAL_MS: u64 = 1_000;

/// Keeps `collective_open_requests`, the routing totals, the process's memory and the data
/// directory's size current (the per-site and per-rule families are read from the state at
/// each scrape: `telemetry::render_state_families`).
async fn report_backlog(node: Arc<Node>) {
    let mut interval = tokio::time::interval(Duration::from_millis(BACKLOG_REPORT_INTERVAL_MS));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        interval.tick().await;
        let (open, routing) = {
            let state = node.shared.state.read().expect("state lock");
            let index = &state.routing.index;
            let queued: usize = state.workgroups.keys().map(|wg| index.queue(wg).count()).sum();
            let routed: u64 = state.routing.counters.values().map(|c| c.routed).sum();
            let accepted: u64 = state.routing.counters.values().map(|c| c.accepted).sum();
            (state.messaging.requests.len(), (queued, index.eligible.len(), routed, accepted))
        };
        metrics::gauge!("collective_open_requests").set(open as f64);
        ticks += 1;
        if ticks % DB_SIZE_REPORT_TICKS == 1 {
            let dir = node.config.data_dir.clone();
            // Through the environment: the simulations run this inline, since a blocking-pool
            // thread of tokio's would make their seeded runs diverge.
            if let Ok(bytes) = node.environment.blocking(move || crate::store::data_size_bytes(&dir)).await {
                metrics::gauge!("collective_db_size_bytes").set(bytes as f64);
            }
        }
        if let Some(bytes) = resident_memory_bytes() {
            metrics::gauge!("collective_process_resident_memory_bytes").set(bytes as f64);
        }
        // Routing totals (per workgroup they are in `collective route stats`: label sets of up
        // to 100,000 workgroups do not belong in Prometheus).
        metrics::gauge!("collective_routing_queued").set(routing.0 as f64);
        metrics::gauge!("collective_routing_agents_available").set(routing.1 as f64);
        metrics::gauge!("collective_routing_routed").set(routing.2 as f64);
        metrics::gauge!("collective_routing_accepted").set(routing.3 as f64);
    }
}

/// This process's resident set size (`None` where the system does not say).
pub(crate) fn resident_memory_bytes() -> Option<u64> {
    metrics_process::collector::collect().resident_memory_bytes
}

async fn serve_http(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    node: Arc<Node>,
    (prometheus, process): (PrometheusHandle, metrics_process::Collector),
) {
    let ready_node = node.clone();
    let live_node = node.clone();
    let metrics_node = node.clone();
    let app = axum::Router::new()
        // Liveness never depends on quorum: the process answers and its Raft core runs.
        .route(
            "/livez",
            get(move || {
                let stopped = live_node.core_stopped();
                async move {
                    match stopped {
                        None => (axum::http::StatusCode::OK, "ok\n".to_string()),
                        Some(reason) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("not live: {reason}\n")),
                    }
                }
            }),
        )
        // Readiness needs a known leader and a linearizable read that completes.
        .route(
            "/readyz",
            get(move || {
                let node = ready_node.clone();
                async move {
                    match tokio::time::timeout(Duration::from_secs(2), node.read_barrier(false)).await {
                        Ok(Ok(())) => (axum::http::StatusCode::OK, "ok\n".to_string()),
                        Ok(Err(error)) => {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {error}\n"))
                        }
                        Err(_) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no quorum within 2 s\n".to_string(),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                // Process metrics are read when scraped, as Prometheus' own client libraries do.
                process.collect();
                let mut text = prometheus.render();
                crate::telemetry::render_state_families(
                    &metrics_node.shared.state.read().expect("state lock"),
                    &mut text,
                );
                std::future::ready(text)
            }),
        )
        .merge(crate::board::routes(node.clone()));
    let served = match tls {
        Some(config) => match crate::http_tls::TlsListener::new(listener, config) {
            Ok(listener) => axum::serve(listener, app).await,
            Err(error) => Err(error),
        },
        None => axum::serve(listener, app).await,
    };
    if let Err(error) = served {
        tracing::error!(%error, "http server stopped");
    }
}
