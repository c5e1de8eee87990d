//! The openraft type configuration: what an entry carries and what applying it returns.

use std::io::Cursor;

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
        SnapshotData = Cursor<Vec<u8>>,
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
pub type Raft = openraft::Raft<TypeConfig>;
/// Stored and replicated entries.
pub type Entry = openraft::Entry<TypeConfig>;
/// Log ids.
pub type LogId = openraft::LogId<NodeId>;
/// Storage errors.
pub type StorageError = openraft::StorageError<NodeId>;
