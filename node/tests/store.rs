//! Storage tests: openraft's conformance suite on the RocksDB stores, and a write → drop →
//! reopen test the suite does not do.

use std::sync::Arc;

use collective::raft_types::{NodeId, TypeConfig};
use collective::shared::Shared;
use collective::store::{self, LogStore, StateMachineStore};
use collective_statemachine::{Batch, Command, Principal, Proposal};
use std::collections::BTreeMap;
use std::time::Duration;

use collective::network::{Network, Peers};
use collective::raft_types::Raft;
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, StorageError};
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = TempDir::new().expect("temp dir");
        let (log_store, state_machine, _history) =
            store::open(dir.path(), Arc::new(Shared::new(1_000))).await.expect("open store");
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

fn add_workgroup(name: &str) -> Command {
    Command::AddWorkgroup { name: name.into(), spans_sites: true, required_skills: Default::default() }
}

async fn single_node(dir: &std::path::Path, shared: Arc<Shared>) -> Raft {
    let (log, sm, _history) = store::open(dir, shared).await.unwrap();
    let config = Arc::new(
        openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 200,
            election_timeout_max: 400,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    Raft::new(
        1,
        config,
        Network {
            peers: Arc::new(Peers::new(collective::environment::Environment::system().connect, None, None).unwrap()),
        },
        log,
        sm,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn acknowledged_writes_survive_drop_and_reopen() {
    let dir = TempDir::new().unwrap();
    let written = 25u64;
    {
        let raft = single_node(dir.path(), Arc::new(Shared::new(100))).await;
        raft.initialize(BTreeMap::from([(1, BasicNode { addr: "127.0.0.1:1".into() })])).await.unwrap();
        for i in 0..written {
            let proposal = Proposal { principal: Principal::System, command: add_workgroup(&format!("wg{i}")) };
            let batch = Batch { at_ms: 1_000 + i, proposals: vec![proposal].into() };
            raft.client_write(batch).await.unwrap().data.outcomes[0].clone().unwrap();
        }
        raft.shutdown().await.unwrap();
    }
    let shared = Arc::new(Shared::new(100));
    let raft = single_node(dir.path(), shared.clone()).await;
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "re-elected after reopen").await.unwrap();
    // Every acknowledged write is applied again from the durable log.
    raft.ensure_linearizable().await.unwrap();
    let state = shared.state.read().unwrap().clone();
    assert_eq!(state.workgroups.len() as u64, written);
    assert_eq!(state.revision, written);
    state.check_invariants();
    drop(state);
    raft.shutdown().await.unwrap();
}
