//! The commit quorum counts only entries on disk: three real nodes in turmoil, with the Raft log's
//! fsyncs of chosen members held (`Environment::log_sync`).
//!
//! - With the leader's fsync held, a write commits on the followers' synced copies: the leader
//!   replicates while its own write is in flight (what makes a lone write cost one fsync's time).
//! - With the leader's and one follower's fsyncs held, a write must not commit: only one member
//!   holds it on disk. A leader that counted its own unsynced entry would commit it with the
//!   other follower, and a crash of the leader and that follower could then lose an
//!   acknowledged write. Once the fsyncs run again, it commits.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::{Duration, UNIX_EPOCH};

use collective::config::NodeConfig;
use collective::environment::SyncGate;
use collective::node::Node;
use collective_proto::v1 as pb;
use collective_proto::v1::directory_client::DirectoryClient;

use crate::net;

/// How long a write is watched while it must not commit. Shorter than a follower's lease
/// (`election_timeout_max_ms`), so the held follower does not campaign meanwhile.
const HELD_MS: u64 = 250;

/// Each member's fsync gate and node, by id.
type Members = Rc<RefCell<BTreeMap<u64, (SyncGate, Weak<Node>)>>>;

/// What the scenario saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The write sent with only the leader's fsync held committed while it was held.
    pub committed_with_leader_held: bool,
    /// The write sent with the leader's and one follower's fsyncs held was acknowledged (or
    /// committed on the leader) while they were held: the violation this scenario looks for.
    pub committed_with_one_synced_copy: bool,
    /// That write committed once the fsyncs ran again.
    pub committed_after_release: bool,
}

fn host(id: u64) -> String {
    format!("n{id}")
}

async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Adds site `id`: one write through the leader.
async fn add_site(leader: &str, id: u32) -> Result<(), tonic::Status> {
    let site = Some(crate::run::site(id));
    let mut request = tonic::Request::new(pb::AddSiteRequest { site, password: "sim".into() });
    request.set_timeout(Duration::from_millis(5_000));
    DirectoryClient::new(net::channel(leader)).add_site(request).await.map(drop)
}

/// The leader's id, once one leads.
async fn leader(members: &Members) -> u64 {
    loop {
        let found =
            members.borrow().iter().find_map(|(id, (_, node))| node.upgrade().filter(|n| n.leads()).map(|_| *id));
        if let Some(id) = found {
            return id;
        }
        sleep_ms(10).await;
    }
}

/// The leader's committed log index.
fn committed(members: &Members, id: u64) -> u64 {
    let node = members.borrow()[&id].1.upgrade().expect("the leader runs");
    let committed = node.raft.metrics().borrow().cluster_committed.map_or(0, |log_id| log_id.index);
    committed
}

fn gate(members: &Members, id: u64) -> SyncGate {
    members.borrow()[&id].0.clone()
}

/// Runs the scenario with `seed`.
pub fn run(seed: u64) -> Outcome {
    collective::runtime::seed_thread_rng(seed);
    let data = tempfile::TempDir::new().expect("a temporary directory");
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .simulation_duration(Duration::from_secs(120))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(5))
        .rng_seed(seed)
        .build();
    let members: Members = Rc::default();
    let initial_cluster = (1..=3u64).map(|id| format!("{id}={}:{}", host(id), net::GRPC_PORT)).collect::<Vec<_>>();
    for id in 1..=3u64 {
        let config = NodeConfig {
            id,
            data_dir: data.path().join(host(id)),
            grpc_addr: format!("0.0.0.0:{}", net::GRPC_PORT),
            http_addr: "0.0.0.0:8000".into(),
            initial_cluster: initial_cluster.join(","),
            history_prune_interval_ms: 0,
            plaintext: true,
            no_auth: true,
            ..NodeConfig::default()
        };
        let members = members.clone();
        sim.host(host(id), move || {
            let (config, members) = (config.clone(), members.clone());
            async move {
                let environment = net::environment(seed ^ (id << 32));
                let gate = environment.log_sync.clone();
                let node = Node::start_in(config, environment).await.map_err(|e| e.to_string())?;
                members.borrow_mut().insert(id, (gate, Arc::downgrade(&node)));
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", net::GRPC_PORT)).await?;
                collective::server::serve_grpc(node, net::incoming(listener)).await.map_err(|e| e.to_string())?;
                Ok(())
            }
        });
    }
    let outcome = Rc::new(RefCell::new(Outcome::default()));
    {
        let (members, outcome) = (members.clone(), outcome.clone());
        sim.client("driver", async move {
            let id = leader(&members).await;
            let (leader_host, followers) = (host(id), (1..=3).filter(|f| *f != id).collect::<Vec<_>>());
            // A first write with every fsync running: the cluster serves.
            add_site(&leader_host, 1).await?;

            // The leader's fsync held: the followers' copies commit it.
            gate(&members, id).hold();
            let write = tokio::time::timeout(Duration::from_millis(HELD_MS), add_site(&leader_host, 2)).await;
            outcome.borrow_mut().committed_with_leader_held = matches!(write, Ok(Ok(())));
            gate(&members, id).release();
            sleep_ms(100).await;

            // The leader's and one follower's fsyncs held: one synced copy, no commit.
            let before = committed(&members, id);
            gate(&members, id).hold();
            gate(&members, followers[1]).hold();
            let leader_host2 = leader_host.clone();
            let write = tokio::spawn(async move { add_site(&leader_host2, 3).await });
            sleep_ms(HELD_MS).await;
            let moved = committed(&members, id) > before;
            outcome.borrow_mut().committed_with_one_synced_copy = write.is_finished() || moved;
            gate(&members, id).release();
            gate(&members, followers[1]).release();
            let written = write.await.map_err(|e| e.to_string())?;
            outcome.borrow_mut().committed_after_release = written.is_ok();
            Ok(())
        });
    }
    let result = sim.run();
    drop(sim);
    if let Err(error) = result {
        panic!("seed {seed}: the durability scenario failed: {error}");
    }
    Rc::try_unwrap(outcome).map(RefCell::into_inner).unwrap_or_else(|_| panic!("the outcome is still shared"))
}
