//! `StateMachineStore`: openraft's `RaftStateMachine`. The state lives in memory (`Shared`) and is
//! persisted as a snapshot; on restart the snapshot is loaded and later entries are re-applied.

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageIOError,
    StoredMembership,
};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::CF_SNAPSHOT;
use crate::history::HistoryStore;
use crate::raft_types::{Applied, ApplyResult, Entry, LogId, NodeId, StorageError, TypeConfig};
pub use crate::shared::Shared;
use collective_statemachine::State;

const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";

/// What a snapshot holds: the state and the Raft bookkeeping that goes with it.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    state: State,
}

/// The encoded body of a snapshot holding `state` as of `last_applied` (for `snapshot restore`).
pub(crate) fn snapshot_body(
    last_applied: Option<LogId>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    state: State,
) -> serde_json::Result<Vec<u8>> {
    serde_json::to_vec(&SnapshotBody { last_applied, last_membership, state })
}

/// A stored snapshot: its metadata and the encoded `SnapshotBody`.
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// The Raft state machine over `Shared`.
pub struct StateMachineStore {
    db: Arc<DB>,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    /// Serialises snapshot writes, so a slow build never overwrites a newer installed snapshot.
    snapshot_write: Arc<std::sync::Mutex<()>>,
    /// The presence history, written as entries apply.
    history: Arc<HistoryStore>,
}

/// Builds one snapshot from a copy of the state taken when openraft asked for the builder.
///
/// openraft 0.9 runs `build_snapshot` in a spawned task while entries keep being applied, so the
/// builder must not read the live state: it would hold entries beyond `last_applied`, and a
/// replica restored from it would apply them twice.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    body: SnapshotBody,
    snapshot_write: Arc<std::sync::Mutex<()>>,
}

fn snapshot_error(
    meta: Option<&SnapshotMeta<NodeId, BasicNode>>,
    verb: ErrorVerb,
    error: impl std::error::Error + 'static,
) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(meta.map(|m| m.signature())), verb, openraft::AnyError::new(&error))
        .into()
}

impl StateMachineStore {
    pub(crate) async fn open(
        db: Arc<DB>,
        shared: Arc<Shared>,
        history: Arc<HistoryStore>,
    ) -> anyhow::Result<StateMachineStore> {
        let mut store = StateMachineStore {
            db,
            shared,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot_write: Arc::default(),
            history,
        };
        if let Some(stored) = read_stored(&store.db)? {
            let body: SnapshotBody = serde_json::from_slice(&stored.data)?;
            store.restore(body);
        }
        Ok(store)
    }

    fn restore(&mut self, body: SnapshotBody) {
        self.last_applied = body.last_applied;
        self.last_membership = body.last_membership;
        self.shared.reset(body.state);
    }
}

fn read_meta(db: &DB) -> Result<Option<SnapshotMeta<NodeId, BasicNode>>, StorageError> {
    let cf = db.cf_handle(CF_SNAPSHOT).expect("column family created at open");
    let bytes = db.get_cf(cf, KEY_SNAPSHOT_META).map_err(|e| snapshot_error(None, ErrorVerb::Read, e))?;
    bytes.map(|bytes| serde_json::from_slice(&bytes).map_err(|e| snapshot_error(None, ErrorVerb::Read, e))).transpose()
}

fn read_stored(db: &DB) -> Result<Option<StoredSnapshot>, StorageError> {
    let Some(meta) = read_meta(db)? else { return Ok(None) };
    let cf = db.cf_handle(CF_SNAPSHOT).expect("column family created at open");
    let data = db.get_cf(cf, KEY_SNAPSHOT_DATA).map_err(|e| snapshot_error(Some(&meta), ErrorVerb::Read, e))?;
    let data = data
        .ok_or_else(|| snapshot_error(Some(&meta), ErrorVerb::Read, std::io::Error::other("snapshot data missing")))?;
    Ok(Some(StoredSnapshot { meta, data }))
}

/// Stores a snapshot (metadata as JSON, data as raw bytes, one synced batch) unless a newer one
/// is already stored.
fn write_stored(db: &DB, lock: &std::sync::Mutex<()>, stored: &StoredSnapshot) -> Result<(), StorageError> {
    let _guard = lock.lock().expect("snapshot write lock");
    if let Some(current) = read_meta(db)? {
        if current.last_log_id > stored.meta.last_log_id {
            return Ok(());
        }
    }
    let cf = db.cf_handle(CF_SNAPSHOT).expect("column family created at open");
    let meta = serde_json::to_vec(&stored.meta).map_err(|e| snapshot_error(Some(&stored.meta), ErrorVerb::Write, e))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf, KEY_SNAPSHOT_META, meta);
    batch.put_cf(cf, KEY_SNAPSHOT_DATA, &stored.data);
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options).map_err(|e| snapshot_error(Some(&stored.meta), ErrorVerb::Write, e))
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let data = serde_json::to_vec(&self.body).map_err(|e| snapshot_error(None, ErrorVerb::Write, e))?;
        // The id only has to be unique per snapshot; the applied log id is.
        let snapshot_id = match self.body.last_applied {
            Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: self.body.last_applied,
            last_membership: self.body.last_membership.clone(),
            snapshot_id,
        };
        let stored = StoredSnapshot { meta: meta.clone(), data };
        write_stored(&self.db, &self.snapshot_write, &stored)?;
        metrics::gauge!("collective_snapshot_bytes").set(stored.data.len() as f64);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(stored.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership<NodeId, BasicNode>), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut results = Vec::new();
        let mut published = Vec::new();
        {
            let mut state = self.shared.state.write().expect("state lock");
            for entry in entries {
                self.last_applied = Some(entry.log_id);
                let outcomes = match entry.payload {
                    EntryPayload::Blank => vec![],
                    EntryPayload::Membership(membership) => {
                        self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                        vec![]
                    }
                    EntryPayload::Normal(batch) => {
                        let entry_start = published.len();
                        let mut outcomes = Vec::with_capacity(batch.proposals.len());
                        // The revision after each command: its last event's, or the one before it.
                        let mut revision = state.revision;
                        for (proposal, outcome) in batch.proposals.iter().zip(state.apply_batch(&batch)) {
                            let outcome = outcome.map(|events| {
                                revision = events.last().map(|e| e.revision).unwrap_or(revision);
                                Applied { revision, events }
                            });
                            if let Ok(applied) = &outcome {
                                published.extend(applied.events.iter().cloned());
                            }
                            let result = if outcome.is_ok() { "ok" } else { "rejected" };
                            metrics::counter!("collective_commands_applied_total", "command" => proposal.command.kind(), "outcome" => result).increment(1);
                            outcomes.push(outcome);
                        }
                        // One entry shares one time: its versions are exact at that time.
                        let entry_events = &published[entry_start..];
                        self.history.record(&state, entry_events).map_err(|e| {
                            StorageIOError::new(
                                ErrorSubject::StateMachine,
                                ErrorVerb::Write,
                                openraft::AnyError::new(&e),
                            )
                        })?;
                        outcomes
                    }
                };
                results.push(ApplyResult { outcomes });
                self.shared.check_invariants(&state);
            }
            // Published under the state lock: a reader that saw revision R never gets a watch
            // "from now" that starts at or below R.
            self.shared.publish(published);
        }
        metrics::counter!("collective_proposals_applied_total").increment(results.len() as u64);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies, so the copy matches `last_applied` exactly.
        let state = self.shared.state.read().expect("state lock").clone();
        SnapshotBuilder {
            db: self.db.clone(),
            body: SnapshotBody {
                last_applied: self.last_applied,
                last_membership: self.last_membership.clone(),
                state,
            },
            snapshot_write: self.snapshot_write.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let body: SnapshotBody =
            serde_json::from_slice(&data).map_err(|e| snapshot_error(Some(meta), ErrorVerb::Read, e))?;
        // The history is reset first: the synced snapshot write below makes it durable through
        // the shared WAL, so a crash never leaves a restored snapshot without its history reset.
        self.history.reset_to(&body.state).map_err(|e| snapshot_error(Some(meta), ErrorVerb::Write, e))?;
        write_stored(&self.db, &self.snapshot_write, &StoredSnapshot { meta: meta.clone(), data })?;
        self.restore(body);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(read_stored(&self.db)?
            .map(|stored| Snapshot { meta: stored.meta, snapshot: Box::new(Cursor::new(stored.data)) }))
    }
}
