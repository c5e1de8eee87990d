//! The openraft type configuration: what an entry carries and what applying it returns.

use collective_statemachine::{Batch, EventRecord, Rejection};
use serde::{Deserialize, Serialize};

/// Raft node id; equals the member id of `--initial-cluster`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The type configuration of collective's Raft group.
    pub TypeConfig:
        D = Batch,
        R = ApplyResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        // Standard Raft: one leader per term (what 0.9's `single-term-leader` chose; the
        // default lets several candidates lead one term).
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, NodeId>,
        AsyncRuntime = crate::runtime::Runtime,
);

/// What applying one entry returned: per command of its batch, the events or why the command
/// was refused. Blank and membership entries return no outcomes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// One outcome per proposal of the batch, in order.
    pub outcomes: Vec<Result<Applied, Rejection>>,
}

/// A successful apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// State revision after the entry.
    pub revision: u64,
    /// Events the entry produced.
    pub events: Vec<EventRecord>,
}

/// Shorthands for openraft's generic types.
pub type Raft = openraft::Raft<TypeConfig, crate::store::StateMachineStore>;
/// Stored and replicated entries.
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
/// Log ids.
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
/// The leader id a log id names (the term).
pub type CommittedLeaderId = openraft::alias::CommittedLeaderIdOf<TypeConfig>;
/// Votes.
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
/// The membership a log entry or snapshot stored.
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
/// A snapshot: metadata and the snapshot file's bytes.
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, SnapshotData>;
/// What a snapshot's bytes travel in.
pub type SnapshotData = std::io::Cursor<Vec<u8>>;
/// Storage errors.
pub type StorageError = openraft::StorageError<TypeConfig>;
