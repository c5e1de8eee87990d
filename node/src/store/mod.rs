//! RocksDB storage for openraft: one database, three column families.
//!
//! - `logs`: log entries keyed by big-endian index, JSON values.
//! - `meta`: vote, last purged log id, committed log id.
//! - `snapshot`: the latest state machine snapshot.
//! - `history`: the presence history index (`crate::history`).
//!
//! Durability: every append, vote and truncate is written with `sync = true`, so the data is on
//! disk before openraft is told it is done. Many entries share one `WriteBatch` and one fsync.

mod log_store;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use crate::history::{HistoryStore, CF_HISTORY};
pub use log_store::LogStore;
use rocksdb::{ColumnFamilyDescriptor, Options, DB};
pub use state_machine::{Shared, StateMachineStore};

/// Column family of log entries.
pub const CF_LOGS: &str = "logs";
/// Column family of Raft metadata.
pub const CF_META: &str = "meta";
/// Column family of the snapshot.
pub const CF_SNAPSHOT: &str = "snapshot";

/// Opens (or creates) the database under `dir` and builds the stores over it: the Raft log, the
/// state machine and the presence history it maintains.
pub async fn open(dir: &Path, shared: Arc<Shared>) -> anyhow::Result<(LogStore, StateMachineStore, Arc<HistoryStore>)> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Small WAL-bound writes dominate; a bigger write buffer keeps compactions rare.
    options.set_write_buffer_size(64 << 20);
    let families =
        [CF_LOGS, CF_META, CF_SNAPSHOT, CF_HISTORY].map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = Arc::new(DB::open_cf_descriptors(&options, dir, families)?);
    let log_store = LogStore::new(db.clone());
    let history = HistoryStore::new(db.clone());
    let state_machine = StateMachineStore::open(db, shared, history.clone()).await?;
    Ok((log_store, state_machine, history))
}

/// Big-endian bytes of a log index, so keys sort in index order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}
