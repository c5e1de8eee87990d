//! Storage for openraft: the log's entries in files of their own (`raft-log/`, `log_files.rs`),
//! everything else in one RocksDB database:
//!
//! - `logs`: empty; where builds before the log files kept the entries (keyed by big-endian
//!   index). A start moves any it finds into the log files (`migrate_rocksdb_log`).
//! - `meta`: vote, last purged log id, committed log id.
//! - `snapshot`: the metadata of the latest state machine snapshot, whose body is a file in
//!   `snapshots/` beside the database (`state_machine.rs`).
//! - `history`: the presence history index (`crate::history`).
//!
//! Durability: an append is written without `sync` and reported flushed to openraft only after
//! the log files' next sync (`log_store.rs`, its syncer); truncations are synced before they
//! return, votes and purge points written to RocksDB with `sync = true`. Queued appends share
//! one fsync.

mod integrity;
mod log_files;
mod log_store;
mod marker;
mod recover;
mod state_machine;

use std::path::Path;
use std::sync::Arc;

use crate::environment::Environment;
use crate::error::{invalid, Error};
use crate::history::{HistoryStore, CF_HISTORY};
pub use integrity::{Damaged, REFUSED};
pub use log_files::LOG_DIR;
use log_files::{LogFiles, OpenError};
pub use log_store::LogStore;
pub use marker::{acknowledged_index, MARKER_FILE};
pub use recover::{recover, Recovered};
use rocksdb::{ColumnFamilyDescriptor, IteratorMode, Options, WriteOptions, DB};
pub use state_machine::{Shared, StateMachineStore};

/// Memory all memtables of a node's RocksDB may take together.
pub const MEMTABLES_BYTES_MAX: usize = 64 << 20;
/// The history's memtable: half of [`MEMTABLES_BYTES_MAX`], as it takes most writes.
const HISTORY_MEMTABLE_BYTES: usize = MEMTABLES_BYTES_MAX / 2;
/// Sorted runs of the history before universal compaction merges some.
const HISTORY_RUNS_BEFORE_MERGE: i32 = 8;
/// Column family where builds before the log files kept the entries.
pub const CF_LOGS: &str = "logs";
/// Column family of Raft metadata.
pub const CF_META: &str = "meta";
/// Column family of the snapshot.
pub const CF_SNAPSHOT: &str = "snapshot";

/// Opens (or creates) the database under `dir` and builds the stores over it: the Raft log, the
/// state machine and the presence history it maintains. The log's fsyncs go where `environment`
/// runs blocking work.
pub async fn open(
    dir: &Path,
    shared: Arc<Shared>,
    environment: &Environment,
) -> crate::error::Result<(LogStore, StateMachineStore, Arc<HistoryStore>)> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    // Memtables of all column families together stay under MEMTABLES_BYTES_MAX (each column
    // family's default is 64 MiB, two of them, which at a million users held hundreds of MiB of
    // log entries and history already on disk); the fullest is flushed when they reach it.
    options.set_db_write_buffer_size(MEMTABLES_BYTES_MAX);
    // RocksDB's default recovery (point in time) stops replaying the write-ahead log at the first
    // record whose checksum fails and opens with everything after it dropped: acknowledged
    // entries, the vote. This mode refuses such a log instead, and still opens after a torn
    // last record (a write whose fsync never returned, so never acknowledged).
    // A WAL cut short (at a record boundary, or inside a record, which this mode takes for a
    // torn tail) still opens: the MANIFEST's record of closed WALs' sizes catches that for
    // older WALs, and our marker (`marker.rs`) and the contiguity scan (`integrity.rs`) for the
    // newest one. RocksDB's error does not name the WAL; `Damaged` does.
    options.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
    options.set_track_and_verify_wals_in_manifest(true);
    options.set_paranoid_checks(true);
    let families = [CF_LOGS, CF_META, CF_SNAPSHOT, CF_HISTORY].map(|name| {
        let mut family = Options::default();
        if name != CF_HISTORY {
            family.set_write_buffer_size(MEMTABLES_BYTES_MAX / 4);
        } else {
            // History keys lead with the user, so every flush spans the whole key range. With
            // level compaction (dynamic level sizes) each L0 compaction merged into the whole
            // history while it was under the base level's 256 MiB: compaction CPU grew run after
            // run (0.5 to 4.6 s per 10-second stream run, three members) and the CPU per write
            // with it (20.7 to 32.8 µs). Universal compaction merges sorted runs of like size:
            // 0.4 to 2.7 s per run, no growth, at the price of up to twice the history's size
            // on disk while a full merge runs. Opening a database that level compaction wrote
            // works: each level is taken as one sorted run.
            family.set_compaction_style(rocksdb::DBCompactionStyle::Universal);
            // Fewer, larger sorted runs: a flush of twice the memtable and a merge only once
            // eight runs have gathered (RocksDB's default is four) halved the history's
            // compaction (7.6 and 5.8 s against 2.9 and 3.1 s of `rocksdb:low` over six stream
            // runs, three members). A history question may read up to eight runs instead of
            // four.
            family.set_write_buffer_size(HISTORY_MEMTABLE_BYTES);
            family.set_level_zero_file_num_compaction_trigger(HISTORY_RUNS_BEFORE_MERGE);
        }
        ColumnFamilyDescriptor::new(name, family)
    });
    let (marker, acknowledged) = marker::Marker::open(dir).map_err(Damaged::Marker)?;
    // Named before RocksDB opens: recovery may start a new one.
    let wal = integrity::newest_wal(dir);
    let db = DB::open_cf_descriptors(&options, dir, families).map_err(|source| match source.kind() {
        rocksdb::ErrorKind::Corruption => Error::from(Damaged::Database { dir: dir.into(), wal: wal.clone(), source }),
        _ => Error::Database { dir: dir.into(), source },
    })?;
    let db = Arc::new(db);
    let hole = |what: String| Error::from(Damaged::Hole { dir: dir.into(), what });
    let log_error = |error: OpenError| match error {
        OpenError::Hole(what) => hole(what),
        OpenError::Unusable(reason) => invalid("data_dir", reason),
    };
    let purged = integrity::last_purged(&db).map_err(hole)?;
    let files =
        LogFiles::open(&dir.join(LOG_DIR), log_files::SEGMENT_BYTES, purged.map(|p| p.index)).map_err(log_error)?;
    migrate_rocksdb_log(&db, &files).map_err(log_error)?;
    integrity::check(dir, &wal, &db, &files, &marker, acknowledged)?;
    let log_dir = dir.join(LOG_DIR);
    files.finish_open().map_err(|source| Error::Io { field: "data_dir".into(), path: log_dir, source })?;
    let log_store = LogStore::new(files, db.clone(), environment.clone(), Arc::new(marker));
    let history = HistoryStore::new(db.clone());
    let state_machine = StateMachineStore::open(db, dir, shared, history.clone()).await?;
    Ok((log_store, state_machine, history))
}

/// Moves a log kept in RocksDB (`CF_LOGS`, builds before the log files) into the log files:
/// they are cleared and written again from RocksDB's entries, synced, and only then are
/// RocksDB's deleted (synced). A crash in between repeats it at the next start: while RocksDB
/// holds entries, they are the log. Entries that do not follow one another are a hole.
fn migrate_rocksdb_log(db: &DB, files: &LogFiles) -> Result<(), OpenError> {
    let unusable = |what: &str, error: &dyn std::fmt::Display| OpenError::Unusable(format!("{what}: {error}"));
    let logs = db.cf_handle(CF_LOGS).expect("column family created at open");
    let mut entries = db.iterator_cf(logs, IteratorMode::Start).peekable();
    if entries.peek().is_none() {
        return Ok(());
    }
    files.clear().map_err(|e| unusable("clearing the log files to move the log out of RocksDB", &e))?;
    let mut chunk = Vec::new();
    let mut last = None;
    for item in entries {
        let (key, value) = item.map_err(|e| unusable("reading the log kept in RocksDB", &e))?;
        let key: [u8; 8] =
            key.as_ref().try_into().map_err(|_| OpenError::Hole(format!("a log key of {} bytes", key.len())))?;
        let index = u64::from_be_bytes(key);
        if let Some(last) = last.filter(|last: &u64| index != last + 1) {
            return Err(OpenError::Hole(format!(
                "entries {}..{index} are missing between {last} and {index}",
                last + 1
            )));
        }
        last = Some(index);
        chunk.push((index, value.to_vec()));
        if chunk.len() == 1_024 {
            files.append(&chunk).map_err(|e| unusable("moving the log out of RocksDB", &e))?;
            chunk.clear();
        }
    }
    files.append(&chunk).and_then(|()| files.sync()).map_err(|e| unusable("moving the log out of RocksDB", &e))?;
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    let last = last.expect("at least one entry");
    db.delete_range_cf_opt(logs, index_key(0), index_key(last + 1), &synced)
        .map_err(|e| unusable("deleting the log kept in RocksDB once moved", &e))?;
    tracing::info!(entries_up_to = last, "moved the Raft log out of RocksDB into its own files");
    Ok(())
}

/// Bytes of the files under `dir` (the database, its write-ahead logs, snapshot files), as far
/// as they can be read: what the member takes on its volume.
pub fn data_size_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => data_size_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Makes `dir`'s entries durable (a file created, renamed or removed in it).
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Big-endian bytes of a log index, so keys sort in index order.
pub(crate) fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Format name of the file `collective snapshot save` writes (JSON, then its SHA-256).
pub const SNAPSHOT_FILE_FORMAT: &str = "collective-snapshot-v1";

/// The whole state as `snapshot save` writes it and `snapshot restore` reads it.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotFile {
    /// [`SNAPSHOT_FILE_FORMAT`].
    pub format: String,
    /// The state's revision.
    pub revision: u64,
    /// The state.
    pub state: collective_statemachine::State,
}

/// [`SnapshotFile`] borrowing its state, so saving does not copy the whole state.
#[derive(serde::Serialize)]
struct SnapshotFileRef<'a> {
    format: &'a str,
    revision: u64,
    state: &'a collective_statemachine::State,
}

impl SnapshotFile {
    /// The encoded file of `state` (without its checksum).
    pub fn encode(state: &collective_statemachine::State) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&SnapshotFileRef { format: SNAPSHOT_FILE_FORMAT, revision: state.revision, state })
    }

    /// Checks a saved file's checksum and format and decodes it.
    pub fn decode(bytes: &[u8]) -> crate::error::Result<SnapshotFile> {
        use sha2::Digest;
        if bytes.len() < 32 {
            return Err(Error::Snapshot(format!("the snapshot file is truncated ({} bytes)", bytes.len())));
        }
        let (body, digest) = bytes.split_at(bytes.len() - 32);
        if sha2::Sha256::digest(body).as_slice() != digest {
            return Err(Error::Snapshot(
                "the snapshot file is damaged or truncated (its SHA-256 does not match)".into(),
            ));
        }
        let file: SnapshotFile = serde_json::from_slice(body)?;
        if file.format != SNAPSHOT_FILE_FORMAT {
            return Err(Error::Snapshot(format!("snapshot format {:?} is not {SNAPSHOT_FILE_FORMAT:?}", file.format)));
        }
        Ok(file)
    }
}

/// Restores a saved state into a new data directory, as the first entry of a new cluster of
/// `members` (etcdctl `snapshot restore`): every member restores the same file into its own
/// directory and starts with the same `initial_cluster`; they elect a leader among themselves
/// and serve the saved state at its revision.
pub async fn restore(
    dir: &Path,
    file: SnapshotFile,
    members: std::collections::BTreeMap<crate::raft_types::NodeId, openraft::BasicNode>,
) -> crate::error::Result<()> {
    use openraft::storage::{RaftLogStorage, RaftStateMachine};
    if dir.exists() && std::fs::read_dir(dir).map_err(crate::error::io("--data-dir", dir))?.next().is_some() {
        return Err(invalid(
            "--data-dir",
            format!("{} is not empty; restore only into a new directory", dir.display()),
        ));
    }
    let shared = Arc::new(Shared::new(1));
    let (mut log_store, mut state_machine, _history) = open(dir, shared, &Environment::system()).await?;
    let log_id = crate::raft_types::LogId::new(crate::raft_types::CommittedLeaderId::new(1), 1);
    let voters: std::collections::BTreeSet<_> = members.keys().copied().collect();
    let membership = openraft::Membership::new(vec![voters], members)
        .map_err(|e| invalid("initial cluster", format!("not a valid membership: {e}")))?;
    let membership = crate::raft_types::StoredMembership::new(Some(log_id), membership);
    let data = state_machine::snapshot_bytes(Some(log_id), membership.clone(), file.state)?;
    let meta = crate::raft_types::SnapshotMeta { last_log_id: Some(log_id), last_membership: membership };
    state_machine.install_snapshot(&meta, std::io::Cursor::new(data)).await?;
    log_store.purge(log_id).await?;
    log_store.save_committed(Some(log_id)).await?;
    Ok(())
}
