//! The openraft type configuration: what an entry carries and what applying it returns.

use std::io::Cursor;

use collective_statemachine::{Envelope, EventRecord, Rejection};
use serde::{Deserialize, Serialize};

/// Raft node id; equals the member id of `--initial-cluster`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The type configuration of collective's Raft group.
    pub TypeConfig:
        D = Envelope,
        R = ApplyResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// What applying one entry returned: the events, or why the command was refused. Blank and
/// membership entries return an empty success.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    /// Events with their revisions, or the rejection.
    pub outcome: Result<Applied, Rejection>,
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
pub type Raft = openraft::Raft<TypeConfig>;
/// Stored and replicated entries.
pub type Entry = openraft::Entry<TypeConfig>;
/// Log ids.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors.
pub type StorageError = openraft::StorageError<NodeId>;
