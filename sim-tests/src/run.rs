//! One seeded simulation of a whole cluster: real nodes (openraft, the tonic transport, RocksDB)
//! in turmoil hosts, concurrent clients and a watcher, a fault schedule, then healing, a
//! liveness bound, final reads and the checks.
//!
//! Phases, in simulated time:
//! 1. setup: a client waits for a leader and creates a site and `USERS` users;
//! 2. safety (until `SAFETY_END_MS`): clients write and read while faults come and go;
//! 3. liveness: every fault healed, every node running; each client must complete
//!    `LIVENESS_WRITES` writes within `LIVENESS_BOUND_MS`;
//! 4. final: every key read once (linearizably), the nodes must converge, and the checks run.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use collective::config::NodeConfig;
use collective::node::Node;
use collective::shared::Shared;
use collective_proto::v1 as pb;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::messages_client::MessagesClient;
use collective_proto::v1::presences_client::PresencesClient;
use collective_proto::v1::routing_client::RoutingClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::checks::{self, Violation};
use crate::history::{Op, OpKind, Recorder, WatchSession};
use crate::net;

/// Users (each gives two registers: presence detail and display name).
pub const USERS: usize = 6;
/// Sites: the clients send inter-site messages from site 1 to site 2, which receives them.
pub const SITES: usize = 2;
/// The site that receives the messages.
const RECEIVING_SITE: u32 = 2;
/// Agents of the routing workload, logged on at site 2 in workgroup Support.
pub const AGENTS: usize = 4;
/// Concurrent workload clients.
pub const CLIENTS: usize = 3;
/// End of the safety phase (simulated ms since start).
pub const SAFETY_END_MS: u64 = 25_000;
/// Faults start after this (the cluster elects and the setup runs first).
pub const FAULTS_FROM_MS: u64 = 4_000;
/// After healing, each client must complete this many writes...
pub const LIVENESS_WRITES: usize = 2;
/// ...within this many simulated ms.
pub const LIVENESS_BOUND_MS: u64 = 20_000;
/// After the workload, the nodes must converge within this many simulated ms.
pub const CONVERGENCE_BOUND_MS: u64 = 20_000;
/// Deadline of every client request (turmoil's TCP does not retransmit: a lost segment stalls a
/// request until its deadline).
pub const REQUEST_DEADLINE_MS: u64 = 2_000;
/// The simulated wall clock starts here (2027-01-15), the same in every run.
const EPOCH_S: u64 = 1_800_000_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything derives from it.
    pub seed: u64,
    /// 3 or 5; `None`: drawn from the seed.
    pub nodes: Option<usize>,
    /// The deliberately broken client: reads from any node without a read barrier
    /// (serializable) but records them as linearizable. The checks must catch it.
    pub stale_reads: bool,
    /// Print every trace line to stderr.
    pub trace: bool,
}

impl Options {
    /// The default run of `seed`.
    pub fn seed(seed: u64) -> Options {
        Options { seed, nodes: None, stale_reads: false, trace: false }
    }
}

/// What one run found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// Faults injected.
    pub faults: Vec<String>,
    /// Writes checked (acknowledged and unknown).
    pub writes: usize,
    /// Reads checked.
    pub reads: usize,
    /// Watch events checked.
    pub watch_events: usize,
    /// Inter-site messages sent (acknowledged or of unknown outcome).
    pub messages: usize,
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Keys whose linearizability search ran out of steps.
    pub inconclusive: Vec<String>,
    /// Hash of the trace (operations, faults, leaders, final states) and its length.
    pub trace: (u64, u64),
    /// Simulated time the run took.
    pub simulated_ms: u64,
}

impl Report {
    /// The command that replays this seed.
    pub fn replay_command(&self, stale_reads: bool) -> String {
        format!(
            "cargo run -p collective-sim-tests --bin collective-sim -- --seed {}{}",
            self.seed,
            if stale_reads { " --stale-reads" } else { "" }
        )
    }
}

/// Phase of the run, as the driver advances it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Setup,
    Safety,
    Liveness,
    Final,
    Done,
}

/// State shared by the driver and the simulated clients (one thread: `Rc<RefCell>`).
struct World {
    seed: u64,
    phase: Phase,
    recorder: Recorder,
    /// Each key's value after setup.
    initial: BTreeMap<String, String>,
    /// Every node instance started, by host name (restarts add more).
    instances: Vec<(String, Weak<Node>, Arc<Shared>)>,
    /// Clients that finished the liveness phase.
    live_clients: usize,
    /// Hosts whose start was refused because their data was damaged: they stay down.
    refused: std::collections::BTreeSet<String>,
    /// Every successful start: the host, when (simulated ms) and its log's last index then.
    starts: Vec<(String, u64, Option<u64>)>,
    /// Inter-site messages.
    messages: crate::history::MessageLog,
    /// Routing as the callers were told it.
    routing: crate::history::RoutingLog,
    final_reads_done: bool,
}

type SharedWorld = Rc<RefCell<World>>;

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn host(id: u64) -> String {
    format!("n{id}")
}

/// Runs one seed and checks it.
pub fn run(options: &Options) -> Report {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let nodes = options.nodes.unwrap_or(if rng.gen_bool(0.5) { 3 } else { 5 });
    // openraft's election timeouts come from this thread's generator (every host runs here).
    collective::runtime::seed_thread_rng(rng.gen());
    let data = sim_temp_dir();
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_S))
        .simulation_duration(Duration::from_secs(3_600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(4_096)
        .rng_seed(rng.gen())
        .build();
    let world: SharedWorld = Rc::new(RefCell::new(World {
        seed: options.seed,
        phase: Phase::Setup,
        recorder: Recorder::new(options.trace),
        initial: BTreeMap::new(),
        instances: Vec::new(),
        live_clients: 0,
        refused: Default::default(),
        starts: Vec::new(),
        messages: crate::history::MessageLog::default(),
        routing: crate::history::RoutingLog::default(),
        final_reads_done: false,
    }));
    let initial_cluster =
        (1..=nodes as u64).map(|id| format!("{id}={}:{}", host(id), net::GRPC_PORT)).collect::<Vec<_>>().join(",");
    for id in 1..=nodes as u64 {
        let config = NodeConfig {
            id,
            data_dir: data.path().join(host(id)),
            grpc_addr: format!("0.0.0.0:{}", net::GRPC_PORT),
            http_addr: "0.0.0.0:8000".into(),
            initial_cluster: initial_cluster.clone(),
            // Small, so snapshots, compaction and snapshot installs happen within a run.
            snapshot_after_entries: 200,
            forward_timeout_ms: 1_500,
            history_prune_interval_ms: 0,
            check_invariants: true,
            plaintext: true,
            no_auth: true,
            ..NodeConfig::default()
        };
        let world = world.clone();
        sim.host(host(id), move || serve(config.clone(), world.clone()));
    }
    let hosts: Vec<String> = (1..=nodes as u64).map(host).collect();
    let client_names: Vec<String> = (1..=CLIENTS).map(|i| format!("c{i}")).collect();
    {
        let (world, hosts) = (world.clone(), hosts.clone());
        sim.client("setup", async move { setup(world, hosts).await });
    }
    for name in &client_names {
        let (world, hosts, name2) = (world.clone(), hosts.clone(), name.clone());
        let client_rng = StdRng::seed_from_u64(rng.gen());
        let stale_reads = options.stale_reads;
        sim.client(name.as_str(), async move { workload(world, hosts, name2, client_rng, stale_reads).await });
    }
    {
        let (world, hosts) = (world.clone(), hosts.clone());
        let watch_rng = StdRng::seed_from_u64(rng.gen());
        sim.client("watcher", async move { watcher(world, hosts, watch_rng).await });
    }
    {
        let (world, hosts) = (world.clone(), hosts.clone());
        sim.client("verifier", async move { verifier(world, hosts).await });
    }
    {
        let (world, hosts) = (world.clone(), hosts.clone());
        let receive_rng = StdRng::seed_from_u64(rng.gen());
        sim.client("receiver", async move { receiver(world, hosts, receive_rng).await });
    }

    let schedule = crate::faults::schedule(&mut rng, nodes, FAULTS_FROM_MS, SAFETY_END_MS);
    let mut faults = crate::faults::Injector::new(schedule, hosts.clone(), data.path().to_path_buf());
    let mut violations = Vec::new();
    let mut converged: Option<Vec<checks::convergence::Position>> = None;
    loop {
        match sim.step() {
            Ok(_) => {}
            Err(error) => {
                violations.push(Violation::new("liveness", format!("the simulation failed: {error}")));
                break;
            }
        }
        let now = sim.elapsed().as_millis() as u64;
        observe_leaders(&world);
        let phase = world.borrow().phase;
        match phase {
            Phase::Setup | Phase::Safety => {
                if phase == Phase::Safety {
                    let leader = current_leader(&world);
                    let mut w = world.borrow_mut();
                    faults.tick(&mut sim, now, leader, &mut w.recorder);
                }
                if now >= SAFETY_END_MS {
                    if phase == Phase::Setup {
                        violations.push(Violation::new("liveness", "the setup did not finish in the safety phase"));
                        break;
                    }
                    faults.heal_all(&mut sim, now, &mut world.borrow_mut().recorder);
                    world.borrow_mut().phase = Phase::Liveness;
                }
            }
            Phase::Liveness => {
                let mut w = world.borrow_mut();
                if w.live_clients == CLIENTS {
                    w.phase = Phase::Final;
                } else if now > SAFETY_END_MS + LIVENESS_BOUND_MS + 1_000 {
                    let detail = format!(
                        "only {} of {CLIENTS} clients completed {LIVENESS_WRITES} writes within {LIVENESS_BOUND_MS} ms \
                         of healing",
                        w.live_clients
                    );
                    w.recorder.liveness.push(detail);
                    w.phase = Phase::Final;
                }
            }
            Phase::Final => {
                let caught_up = world.borrow().messages.caught_up();
                if world.borrow().final_reads_done && caught_up {
                    if let Some(positions) = positions_if_converged(&world, nodes) {
                        converged = Some(positions);
                        world.borrow_mut().phase = Phase::Done;
                        break;
                    }
                }
                if now > SAFETY_END_MS + LIVENESS_BOUND_MS + CONVERGENCE_BOUND_MS + 5_000 {
                    break;
                }
            }
            Phase::Done => break,
        }
    }
    let simulated_ms = sim.elapsed().as_millis() as u64;
    // Dropping the simulation drops every host (closing its RocksDB) and client.
    drop(sim);
    let world = Rc::try_unwrap(world)
        .map(RefCell::into_inner)
        .unwrap_or_else(|_| panic!("the simulation still holds the world after it was dropped"));
    finish(options, nodes, world, violations, converged, simulated_ms, faults.damaged)
}

fn finish(
    options: &Options,
    nodes: usize,
    mut world: World,
    mut violations: Vec<Violation>,
    converged: Option<Vec<checks::convergence::Position>>,
    simulated_ms: u64,
    damaged: Option<crate::faults::Damage>,
) -> Report {
    for liveness in &world.recorder.liveness {
        violations.push(Violation::new("liveness", liveness.clone()));
    }
    match &converged {
        Some(positions) => {
            violations.extend(checks::convergence::check(positions));
            for position in positions {
                world.recorder.trace(("final", position));
            }
        }
        None if world.final_reads_done => violations.push(Violation::new(
            "convergence",
            format!("the nodes did not reach the same applied index within {CONVERGENCE_BOUND_MS} ms"),
        )),
        None => violations.push(Violation::new("liveness", "the final reads did not complete")),
    }
    let recorder = &world.recorder;
    violations.extend(checks::acked_writes::check(&recorder.ops, &world.initial));
    let linearizable = checks::linearizable::check(&recorder.ops, &world.initial);
    violations.extend(linearizable.violations);
    violations.extend(checks::leaders::check(&recorder.leaders));
    let (watch_violations, watch_events) = checks::watch::check(&recorder.watches);
    violations.extend(watch_violations);
    let per_node: Vec<(String, Vec<String>)> =
        world.instances.iter().map(|(host, _, shared)| (host.clone(), shared.violations())).collect();
    violations.extend(checks::invariants::check(&per_node));
    violations.extend(checks::messages::check(&world.messages));
    let refused = damaged.as_ref().is_some_and(|damage| world.refused.contains(&damage.host));
    violations.extend(checks::damaged_logs::check(damaged.as_ref(), refused, &world.starts));
    // The nodes converged (or that is already a violation): any final state will do, but not
    // the last state of a member refused on its damaged data, which stopped where it crashed.
    if let Some((_, _, shared)) = world.instances.iter().rev().find(|(host, _, _)| !world.refused.contains(host)) {
        violations.extend(checks::routing::check(&world.routing, &shared.state.read().expect("state lock")));
    }
    Report {
        seed: options.seed,
        nodes,
        faults: recorder.faults.clone(),
        writes: recorder.ops.iter().filter(|op| matches!(op.kind, OpKind::Write(_))).count(),
        reads: recorder.ops.iter().filter(|op| matches!(op.kind, OpKind::Read(_))).count(),
        watch_events,
        messages: world.messages.sends.len(),
        violations,
        inconclusive: linearizable.inconclusive,
        trace: recorder.trace_hash(),
        simulated_ms,
    }
}

/// Node data lives on tmpfs when there is one: fsync there is free, and a simulated crash
/// loses nothing the OS had accepted either way (the process lives on).
fn sim_temp_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("collective-sim-").tempdir_in(shm);
    builder.or_else(|_| tempfile::Builder::new().prefix("collective-sim-").tempdir()).expect("a temporary directory")
}

/// A host's software: the real node, served over turmoil's network.
async fn serve(config: NodeConfig, world: SharedWorld) -> turmoil::Result {
    let host = host(config.id);
    // Each start of a node draws its randomness from its id and how many instances ran before.
    let instance = world.borrow().instances.len() as u64;
    let entropy_seed = world.borrow().seed ^ (config.id << 32) ^ instance;
    let node = match Node::start_in(config, net::environment(entropy_seed)).await {
        Ok(node) => node,
        // A damaged data directory: the member must not serve; it stays down (an operator
        // would remove it and add it back empty).
        Err(error) if format!("{error:#}").contains(collective::store::REFUSED) => {
            {
                let mut w = world.borrow_mut();
                w.recorder.fault(now_ms(), format!("{host} refused to start on its damaged data"));
                w.refused.insert(host);
            }
            std::future::pending::<()>().await;
            return Ok(());
        }
        Err(error) => return Err(error.to_string().into()),
    };
    let last_log_index = node.raft.metrics().borrow().last_log_index;
    {
        let mut w = world.borrow_mut();
        w.starts.push((host.clone(), now_ms(), last_log_index));
        w.instances.push((host, Arc::downgrade(&node), node.shared.clone()));
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", net::GRPC_PORT)).await?;
    collective::server::serve_grpc(node, net::incoming(listener)).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Every running node's view of itself: a leader of term T records (T, id).
fn observe_leaders(world: &SharedWorld) {
    let mut w = world.borrow_mut();
    let mut seen = Vec::new();
    for (_, node, _) in &w.instances {
        if let Some(node) = node.upgrade() {
            let metrics = node.raft.metrics();
            let metrics = metrics.borrow();
            if metrics.current_leader == Some(node.id) {
                seen.push((metrics.current_term, node.id));
            }
        }
    }
    for (term, id) in seen {
        w.recorder.leader(term, id);
    }
}

/// The node that leads the highest term, if any (for faults aimed at the leader).
fn current_leader(world: &SharedWorld) -> Option<u64> {
    world.borrow().recorder.leaders.iter().next_back().and_then(|(_, nodes)| nodes.first().copied())
}

/// Applied index and state hash of every running node, once all are equal in index (or
/// `None` while some node is behind or not running).
fn positions_if_converged(world: &SharedWorld, nodes: usize) -> Option<Vec<checks::convergence::Position>> {
    let w = world.borrow();
    let mut latest: BTreeMap<&str, Arc<Node>> = BTreeMap::new();
    for (host, node, _) in &w.instances {
        if let Some(node) = node.upgrade() {
            latest.insert(host, node);
        }
    }
    if latest.len() != nodes - w.refused.len() {
        return None;
    }
    let mut positions = Vec::new();
    for node in latest.values() {
        let metrics = node.raft.metrics().borrow().clone();
        let applied = metrics.last_applied.map(|l| l.index).unwrap_or(0);
        if metrics.last_log_index != Some(applied) {
            return None;
        }
        let state = node.shared.state.read().expect("state lock");
        let bytes = serde_json::to_vec(&*state).expect("the state serializes");
        let mut hasher = std::hash::DefaultHasher::new();
        bytes.hash(&mut hasher);
        positions.push((node.id, applied, hasher.finish()));
    }
    let first = positions[0].1;
    positions.iter().all(|p| p.1 == first).then_some(positions)
}

fn deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(Duration::from_millis(REQUEST_DEADLINE_MS));
    request
}

/// Errors after which a write certainly did not apply; any other may hide a commit.
fn certainly_not_applied(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
    )
}

/// Site `id` as the simulations add it (password "sim").
pub(crate) fn site(id: u32) -> pb::Site {
    pb::Site {
        id,
        name: format!("Site {id}"),
        phone: "+1 555 0100".into(),
        active: Some(true),
        servers: vec![format!("cic{id}")],
        ..pb::Site::default()
    }
}

fn user(i: usize, display_name: &str) -> pb::User {
    pb::User {
        username: format!("user{i}"),
        display_name: display_name.to_string(),
        email: format!("user{i}@example.com"),
        home_site: 1,
        extension: format!("{}", 100 + i),
        ..pb::User::default()
    }
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Creates the site and the users, retrying each step until it is acknowledged (or exists).
async fn setup(world: SharedWorld, hosts: Vec<String>) -> turmoil::Result {
    let channels: Vec<Channel> = hosts.iter().map(|h| net::channel(h)).collect();
    let mut attempt = 0usize;
    let mut step = 0usize;
    let routing_steps = 2 + 3 * AGENTS;
    while step < SITES + USERS + routing_steps {
        let mut directory = DirectoryClient::new(channels[attempt % channels.len()].clone());
        attempt += 1;
        let result = if step >= SITES + USERS {
            setup_routing(channels[attempt % channels.len()].clone(), step - SITES - USERS).await
        } else if step < SITES {
            let site = site(step as u32 + 1);
            directory
                .add_site(deadline(pb::AddSiteRequest { site: Some(site), password: "sim".into() }))
                .await
                .map(drop)
        } else {
            let user = user(step - SITES, &format!("User {}", step - SITES));
            directory.add_user(deadline(pb::UserRequest { user: Some(user) })).await.map(drop)
        };
        match result {
            Ok(_) => step += 1,
            Err(status) if status.code() == Code::AlreadyExists => step += 1,
            Err(status) if certainly_not_applied(status.code()) => {
                return Err(format!("setup step {step} was refused: {status}").into());
            }
            Err(_) => sleep_ms(200).await,
        }
    }
    let mut w = world.borrow_mut();
    for i in 0..USERS {
        w.initial.insert(format!("presence/user{i}"), String::new());
        w.initial.insert(format!("name/user{i}"), format!("User {i}"));
    }
    w.phase = Phase::Safety;
    w.recorder.trace(("setup done", now_ms()));
    Ok(())
}

/// Step `step` of the routing setup: workgroup Support, site 2's lease, then per agent: add,
/// join Support, log on at site 2.
async fn setup_routing(channel: Channel, step: usize) -> Result<(), Status> {
    let mut directory = DirectoryClient::new(channel.clone());
    if step == 0 {
        let workgroup = pb::Workgroup { name: "Support".into(), spans_sites: true, ..pb::Workgroup::default() };
        return directory
            .add_workgroup(deadline(pb::AddWorkgroupRequest { workgroup: Some(workgroup) }))
            .await
            .map(drop);
    }
    if step == 1 {
        // Longer than any run, so the agents stay reachable without keepalives.
        return directory.grant_lease(deadline(pb::GrantLeaseRequest { site: 2, ttl_ms: 300_000 })).await.map(drop);
    }
    let (agent, part) = ((step - 2) / 3, (step - 2) % 3);
    let username = format!("agent{agent}");
    match part {
        0 => {
            let user = pb::User {
                username: username.clone(),
                display_name: username.clone(),
                email: format!("{username}@example.com"),
                home_site: 2,
                extension: format!("{}", 900 + agent),
                ..pb::User::default()
            };
            directory.add_user(deadline(pb::UserRequest { user: Some(user) })).await.map(drop)
        }
        1 => {
            let member = pb::WorkgroupMemberRequest { workgroup: "Support".into(), username };
            directory.add_workgroup_member(deadline(member)).await.map(drop)
        }
        _ => {
            // A retried logon of a user already logged on there is a no-op.
            let logon = pb::LogOnRequest { username, site: 2, server: String::new() };
            PresencesClient::new(channel).log_on(deadline(logon)).await.map(drop)
        }
    }
}

/// One routing step of a workload client: route a new call, or act on one it routed before
/// (accept, reject, cancel, or end an accepted one). Acknowledged routes and accepts are
/// recorded for the routing check.
async fn route_step(
    world: &SharedWorld,
    client: &str,
    channel: Channel,
    rng: &mut StdRng,
    calls: &mut Vec<(String, Option<String>, bool)>,
    counter: u64,
) {
    let mut routing = RoutingClient::new(channel.clone());
    let open = calls.len();
    if open == 0 || rng.gen_bool(0.4) {
        let id = format!("{client}-call-{counter}");
        let request = pb::RouteRequest {
            interaction_id: id.clone(),
            media: "call".into(),
            origin_site: rng.gen_range(1..=2),
            workgroup: "Support".into(),
            skills: Default::default(),
            priority: rng.gen_range(0..3),
        };
        let result = routing.route(deadline(request)).await;
        let mut w = world.borrow_mut();
        match result {
            Ok(response) => {
                // Ids are never reused, so every answer is the first decision (not a repeat).
                let interaction = response.into_inner().interaction.unwrap_or_default();
                let agent = (interaction.stage == "reserved").then(|| interaction.agent.clone());
                w.recorder.trace(("routed", client, &id, &agent));
                w.routing.routed.push((id.clone(), agent.clone()));
                calls.push((id, agent, false));
            }
            Err(status) => w.recorder.trace(("route failed", client, &id, status.code() as i32)),
        }
        return;
    }
    let index = rng.gen_range(0..open);
    let (id, agent, accepted) = calls[index].clone();
    let outcome = match (agent, accepted) {
        (Some(agent), true) => {
            let end = pb::InteractionRequest { username: agent.clone(), interaction_id: id.clone() };
            PresencesClient::new(channel).end_interaction(deadline(end)).await.map(|_| "ended")
        }
        (Some(agent), false) if rng.gen_bool(0.7) => {
            let accept = pb::AcceptRequest { interaction_id: id.clone(), agent: agent.clone() };
            let result = routing.accept(deadline(accept)).await;
            if result.is_ok() {
                world.borrow_mut().routing.accepted.push((id.clone(), agent.clone()));
                calls[index].2 = true;
                world.borrow_mut().recorder.trace(("accepted", client, &id, &agent));
                return;
            }
            result.map(|_| "accept")
        }
        (Some(agent), false) => {
            let reject = pb::RejectRequest { interaction_id: id.clone(), not_answering: false, agent };
            routing.reject(deadline(reject)).await.map(|_| "rejected")
        }
        (None, _) => {
            routing.cancel(deadline(pb::InteractionIdRequest { interaction_id: id.clone() })).await.map(|_| "cancelled")
        }
    };
    world.borrow_mut().recorder.trace(("routing", client, &id, outcome.as_ref().map_err(|s| s.code() as i32).copied()));
    // Done with it either way: acted on, or it moved on (expired, re-routed) under our feet.
    calls.swap_remove(index);
}

/// One write; `Some(true)` acknowledged, `Some(false)` unknown outcome, `None` certainly not applied.
/// A presence write goes as a unary call, or `streamed` as the one change of a `Submit` stream.
async fn write(
    world: &SharedWorld,
    client: &str,
    channel: Channel,
    key_user: usize,
    presence: bool,
    streamed: bool,
    value: String,
) -> Option<bool> {
    let invoked_ms = now_ms();
    let result = if presence {
        let request = pb::SetStatusRequest {
            username: format!("user{key_user}"),
            status_key: "Available".into(),
            until_ms: None,
            detail: value.clone(),
        };
        if streamed {
            submit(channel, request).await
        } else {
            PresencesClient::new(channel).set_status(deadline(request)).await
        }
    } else {
        DirectoryClient::new(channel)
            .update_user(deadline(pb::UserRequest { user: Some(user(key_user, &value)) }))
            .await
    };
    let key = format!("{}/user{key_user}", if presence { "presence" } else { "name" });
    let (completed_ms, revision, outcome) = match result {
        Ok(response) => (Some(now_ms()), Some(response.into_inner().revision), Some(true)),
        Err(status) if certainly_not_applied(status.code()) => {
            world.borrow_mut().recorder.trace(("refused", client, &key, status.code() as i32));
            return None;
        }
        Err(_) => (None, None, Some(false)),
    };
    let op = Op {
        client: client.to_string(),
        key,
        kind: OpKind::Write(value),
        invoked_ms,
        completed_ms,
        revision,
        fin: false,
    };
    world.borrow_mut().recorder.op(op);
    outcome
}

/// A status change as the one change of a `Submit` stream, its outcome as the unary call's:
/// the `ChangeError`'s code; UNAVAILABLE when the stream broke, DEADLINE_EXCEEDED when no
/// outcome came within the request deadline (an unknown outcome either way).
async fn submit(channel: Channel, request: pb::SetStatusRequest) -> Result<tonic::Response<pb::WriteResponse>, Status> {
    use pb::presence_outcome::Outcome;
    let change = pb::PresenceChange { id: 1, change: Some(pb::presence_change::Change::SetStatus(request)) };
    let outcome = async move {
        let mut outcomes =
            PresencesClient::new(channel).submit(deadline(tokio_stream::iter([change]))).await?.into_inner();
        outcomes.message().await?.ok_or_else(|| Status::unavailable("the stream ended without an outcome"))
    };
    match tokio::time::timeout(Duration::from_millis(REQUEST_DEADLINE_MS), outcome).await {
        Err(_) => Err(Status::deadline_exceeded("no outcome within the request deadline")),
        // The change may have gone out before the stream failed, whatever its code says.
        Ok(Err(status)) => Err(Status::unavailable(format!("the stream failed: {status}"))),
        Ok(Ok(outcome)) => match outcome.outcome {
            Some(Outcome::Written(response)) => Ok(tonic::Response::new(response)),
            Some(Outcome::Error(error)) => Err(Status::new(Code::from_i32(error.code), error.message)),
            None => Err(Status::internal("an outcome without a result")),
        },
    }
}

/// One read; recorded when it answered.
async fn read(
    world: &SharedWorld,
    client: &str,
    channel: Channel,
    key_user: usize,
    presence: bool,
    serializable: bool,
    fin: bool,
) -> bool {
    let invoked_ms = now_ms();
    let username = format!("user{key_user}");
    let result = if presence {
        let request = pb::GetPresenceRequest { usernames: vec![username.clone()], serializable };
        PresencesClient::new(channel).get_presence(deadline(request)).await.map(|response| {
            let presence = response.into_inner().presences.into_iter().next().unwrap_or_default();
            (presence.detail, Some(presence.revision))
        })
    } else {
        let request = pb::GetUserRequest { username: username.clone(), serializable };
        DirectoryClient::new(channel)
            .get_user(deadline(request))
            .await
            .map(|response| (response.into_inner().user.map(|u| u.display_name).unwrap_or_default(), None))
    };
    let Ok((value, revision)) = result else { return false };
    let key = format!("{}/{username}", if presence { "presence" } else { "name" });
    let op = Op {
        client: client.to_string(),
        key,
        kind: OpKind::Read(value),
        invoked_ms,
        completed_ms: Some(now_ms()),
        revision,
        fin,
    };
    world.borrow_mut().recorder.op(op);
    true
}

async fn wait_for(world: &SharedWorld, phase: Phase) {
    while world.borrow().phase < phase {
        sleep_ms(10).await;
    }
}

/// A workload client: random writes and reads against random nodes during the safety phase,
/// then `LIVENESS_WRITES` writes that must complete after healing.
async fn workload(
    world: SharedWorld,
    hosts: Vec<String>,
    name: String,
    mut rng: StdRng,
    stale_reads: bool,
) -> turmoil::Result {
    let channels: Vec<Channel> = hosts.iter().map(|h| net::channel(h)).collect();
    let client_no: i64 = name.trim_start_matches('c').parse().unwrap_or(0);
    wait_for(&world, Phase::Safety).await;
    let mut counter = 0u64;
    let mut calls = Vec::new();
    while world.borrow().phase == Phase::Safety {
        let channel = channels[rng.gen_range(0..channels.len())].clone();
        let key_user = rng.gen_range(0..USERS);
        let presence = rng.gen_bool(0.6);
        if rng.gen_bool(0.12) {
            counter += 1;
            route_step(&world, &name, channel, &mut rng, &mut calls, counter).await;
        } else if rng.gen_bool(0.15) {
            counter += 1;
            send_message(&world, &name, channel, client_no * 1_000_000 + counter as i64).await;
        } else if rng.gen_bool(0.5) {
            counter += 1;
            let streamed = presence && rng.gen_bool(0.5);
            write(&world, &name, channel, key_user, presence, streamed, format!("{name}-{counter}")).await;
        } else {
            read(&world, &name, channel, key_user, presence, stale_reads, false).await;
        }
        sleep_ms(rng.gen_range(0..60)).await;
    }
    let mut done = 0;
    while done < LIVENESS_WRITES && world.borrow().phase == Phase::Liveness {
        let channel = channels[rng.gen_range(0..channels.len())].clone();
        counter += 1;
        let key_user = rng.gen_range(0..USERS);
        let streamed = rng.gen_bool(0.5);
        if write(&world, &name, channel, key_user, true, streamed, format!("{name}-{counter}")).await == Some(true) {
            done += 1;
        } else {
            sleep_ms(100).await;
        }
    }
    if done == LIVENESS_WRITES {
        world.borrow_mut().live_clients += 1;
    }
    Ok(())
}

/// Reads every key once, linearizably, after the workload (retrying until each answers).
async fn verifier(world: SharedWorld, hosts: Vec<String>) -> turmoil::Result {
    let channels: Vec<Channel> = hosts.iter().map(|h| net::channel(h)).collect();
    wait_for(&world, Phase::Final).await;
    let mut attempt = 0;
    for key_user in 0..USERS {
        for presence in [true, false] {
            loop {
                attempt += 1;
                if read(&world, "verifier", channels[attempt % channels.len()].clone(), key_user, presence, false, true)
                    .await
                {
                    break;
                }
                if world.borrow().phase == Phase::Done {
                    return Ok(());
                }
                sleep_ms(100).await;
            }
        }
    }
    world.borrow_mut().final_reads_done = true;
    Ok(())
}

/// Watches every event on a random node; on a broken stream, resumes on another node from the
/// next revision (or from now, if that was compacted).
async fn watcher(world: SharedWorld, hosts: Vec<String>, mut rng: StdRng) -> turmoil::Result {
    let channels: Vec<Channel> = hosts.iter().map(|h| net::channel(h)).collect();
    wait_for(&world, Phase::Safety).await;
    let mut next = 0u64;
    while world.borrow().phase < Phase::Final {
        let index = rng.gen_range(0..channels.len());
        let mut client = PresencesClient::new(channels[index].clone());
        let mut session = WatchSession { node: hosts[index].clone(), start: next, events: Vec::new() };
        let stream = tokio::time::timeout(
            Duration::from_millis(REQUEST_DEADLINE_MS),
            client.watch(pb::WatchRequest { start_revision: next, ..pb::WatchRequest::default() }),
        )
        .await;
        let mut stream = match stream {
            Ok(Ok(stream)) => stream.into_inner(),
            Ok(Err(status)) => {
                if status.code() == Code::OutOfRange {
                    next = 0;
                }
                sleep_ms(100).await;
                continue;
            }
            Err(_) => continue,
        };
        // A stream that stays silent this long is abandoned (its node may be partitioned).
        let silence = Duration::from_millis(rng.gen_range(1_000..4_000));
        loop {
            if world.borrow().phase >= Phase::Final {
                break;
            }
            match tokio::time::timeout(silence, stream.message()).await {
                Ok(Ok(Some(event))) => {
                    let digest = format!("{:?}", event.body);
                    next = event.revision + 1;
                    session.events.push((event.revision, digest));
                }
                Ok(Err(status)) if status.code() == Code::OutOfRange => {
                    next = 0;
                    break;
                }
                Ok(_) | Err(_) => break,
            }
        }
        let mut w = world.borrow_mut();
        w.recorder.trace(("watch", &session.node, session.start, session.events.len()));
        w.recorder.watches.push(session);
    }
    Ok(())
}

/// Sends one inter-site event from site 1 to the receiving site carrying `seq`.
async fn send_message(world: &SharedWorld, client: &str, channel: Channel, seq: i64) {
    let request = pb::SendEventRequest {
        from_site: 1,
        to_site: RECEIVING_SITE,
        object_id: "Orders".into(),
        event_id: "New".into(),
        elements: vec![pb::Element { value: Some(pb::element::Value::Integer(seq)) }],
    };
    let result = MessagesClient::new(channel).send_event(deadline(request)).await;
    let id = match result {
        Ok(sent) => Some(sent.into_inner().message_ids.first().copied().unwrap_or(0)),
        Err(status) if certainly_not_applied(status.code()) => return,
        Err(_) => None,
    };
    let mut w = world.borrow_mut();
    w.recorder.trace(("send", client, seq, id));
    w.messages.sends.push((seq, id));
}

/// The receiving site: subscribes on a random node, records and acknowledges every delivery,
/// resubscribes elsewhere when a stream breaks or goes silent, until it has everything that was
/// acknowledged and the run is in its final phase.
async fn receiver(world: SharedWorld, hosts: Vec<String>, mut rng: StdRng) -> turmoil::Result {
    let channels: Vec<Channel> = hosts.iter().map(|h| net::channel(h)).collect();
    wait_for(&world, Phase::Safety).await;
    loop {
        {
            let w = world.borrow();
            if w.phase == Phase::Done || (w.phase >= Phase::Final && w.messages.caught_up()) {
                return Ok(());
            }
        }
        let index = rng.gen_range(0..channels.len());
        let mut client = MessagesClient::new(channels[index].clone());
        let request = pb::SubscribeRequest { site: RECEIVING_SITE, filters: vec![] };
        let stream = tokio::time::timeout(Duration::from_millis(REQUEST_DEADLINE_MS), client.subscribe(request)).await;
        let Ok(Ok(stream)) = stream else {
            sleep_ms(100).await;
            continue;
        };
        let mut stream = stream.into_inner();
        let silence = Duration::from_millis(rng.gen_range(1_000..3_000));
        let mut session = 0usize;
        while let Ok(Ok(Some(delivery))) = tokio::time::timeout(silence, stream.message()).await {
            let seq = match delivery.elements.first().and_then(|e| e.value.clone()) {
                Some(pb::element::Value::Integer(seq)) => seq,
                _ => -1,
            };
            {
                let mut w = world.borrow_mut();
                w.recorder.trace(("delivered", &hosts[index], delivery.id, seq));
                w.messages.deliveries.push((delivery.id, seq, session));
            }
            session += 1;
            let ack = pb::AckRequest { site: RECEIVING_SITE, ids: vec![delivery.id] };
            let _ = client.ack(deadline(ack)).await;
        }
        world.borrow_mut().messages.sessions += 1;
    }
}
