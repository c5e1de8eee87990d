//! What a start checks before the member may take part: that RocksDB opened without dropping
//! anything, and that it and the log files still hold everything the member acknowledged (the
//! marker, `marker.rs`), with no hole between the purged log, the snapshot and the log.
//!
//! A member that forgot an entry it acknowledged, or its vote, can make a committed entry vanish
//! or elect a second leader in one term: Raft's safety rests on never forgetting. So every check
//! here refuses the start with [`Damaged`], which names the file and the way out, as etcd refuses
//! a WAL whose CRC fails.

use std::path::{Path, PathBuf};

use rocksdb::DB;

use super::log_files::LogFiles;
use super::marker::{Acknowledged, Marker};
use super::{CF_META, CF_SNAPSHOT};
use crate::raft_types::{LogId, Vote};

/// The way out of every refusal: the member's data cannot be trusted, so it rejoins empty and
/// receives the leader's snapshot.
const WAY_OUT: &str = concat!(
    "this member must not serve with this data", // REFUSED, below
    ": on a healthy member run \
                       `collective member remove ID`, move this data directory aside, then add the member \
                       back with an empty data directory (`collective member add ID ADDR`, then \
                       `member promote ID`); it receives a copy from the leader"
);

/// The words every refusal of a damaged data directory carries (for supervisors, tests and the
/// simulations that tell a refusal from another failure to start).
pub const REFUSED: &str = "this member must not serve with this data";

/// Why a data directory was refused at start.
#[derive(Debug, thiserror::Error)]
pub enum Damaged {
    /// RocksDB refused to open: a checksum failed in its write-ahead log or a table file.
    #[error("the database in {dir} is damaged ({source}); newest write-ahead log: {wal}; {WAY_OUT}")]
    Database {
        /// The data directory.
        dir: PathBuf,
        /// The newest `*.log` file, where a recent record would be.
        wal: String,
        /// RocksDB's error.
        source: rocksdb::Error,
    },
    /// The log ends before an index the member acknowledged.
    #[error(
        "the Raft log in {dir} ends at index {found:?}, but {marker} records that this member acknowledged \
         entries up to {acknowledged}: its log files lost records (cut short or damaged; newest: {newest}); \
         {WAY_OUT}"
    )]
    LostEntries {
        /// The data directory.
        dir: PathBuf,
        /// The marker file.
        marker: String,
        /// The newest log segment (`log_files.rs`).
        newest: String,
        /// The last index the log holds (entries or purged).
        found: Option<u64>,
        /// The last index the member acknowledged.
        acknowledged: u64,
    },
    /// The saved vote is older than one the member gave.
    #[error(
        "the vote saved in {dir} is {found}, but {marker} records that this member voted {acknowledged}: its \
         write-ahead log lost records (newest: {wal}); {WAY_OUT}"
    )]
    LostVote {
        /// The data directory.
        dir: PathBuf,
        /// The marker file.
        marker: String,
        /// The newest `*.log` file.
        wal: String,
        /// The vote RocksDB holds.
        found: String,
        /// The vote the marker holds.
        acknowledged: String,
    },
    /// Entries are missing between the purged part and the log, or the purged part has no
    /// snapshot.
    #[error("the Raft log in {dir} has a hole: {what}; {WAY_OUT}")]
    Hole {
        /// The data directory.
        dir: PathBuf,
        /// What is missing.
        what: String,
    },
    /// The marker itself cannot be read.
    #[error("{0}; {WAY_OUT}")]
    Marker(String),
}

/// The newest write-ahead log file of `dir`, for error messages.
pub(crate) fn newest_wal(dir: &Path) -> String {
    let newest = std::fs::read_dir(dir).ok().and_then(|entries| {
        entries.flatten().map(|entry| entry.path()).filter(|path| path.extension().is_some_and(|e| e == "log")).max()
    });
    newest.map(|path| path.display().to_string()).unwrap_or_else(|| "none".into())
}

/// What the log files and RocksDB hold of the Raft bookkeeping.
struct Found {
    first_index: Option<u64>,
    last_index: Option<u64>,
    last_purged: Option<LogId>,
    vote: Option<Vote>,
    snapshot: Option<LogId>,
}

fn meta(db: &DB, family: &str, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
    db.get_cf(db.cf_handle(family).expect("column family created at open"), key).map_err(|e| e.to_string())
}

/// The last purged log id RocksDB holds.
pub(crate) fn last_purged(db: &DB) -> Result<Option<LogId>, String> {
    match meta(db, CF_META, super::log_store::KEY_LAST_PURGED)? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("the last purged log id: {e}")),
        None => Ok(None),
    }
}

/// Reads the bookkeeping. The log files' entries follow one another without a gap (their open
/// checks it: a record lost in the middle of the log shows there).
fn read_found(db: &DB, files: &LogFiles) -> Result<Found, String> {
    let bounds = files.bounds();
    let vote: Option<Vote> = match meta(db, CF_META, super::log_store::KEY_VOTE)? {
        Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| format!("the saved vote: {e}"))?),
        None => None,
    };
    let snapshot = match meta(db, CF_SNAPSHOT, super::state_machine::KEY_SNAPSHOT_META)? {
        Some(bytes) => {
            let meta: super::state_machine::StoredMeta =
                serde_json::from_slice(&bytes).map_err(|e| format!("the snapshot metadata: {e}"))?;
            meta.last_log_id
        }
        None => None,
    };
    Ok(Found {
        first_index: bounds.map(|(first, _)| first),
        last_index: bounds.map(|(_, last)| last),
        last_purged: last_purged(db)?,
        vote,
        snapshot,
    })
}

/// Checks the log files' and RocksDB's content against the marker and itself, then records it
/// in the marker.
pub(crate) fn check(
    dir: &Path,
    wal: &str,
    db: &DB,
    files: &LogFiles,
    marker: &Marker,
    acknowledged: Option<Acknowledged>,
) -> Result<(), Damaged> {
    let found = read_found(db, files).map_err(|what| Damaged::Hole { dir: dir.into(), what })?;
    let purged_index = found.last_purged.map(|log_id| log_id.index);
    let last_index = found.last_index.max(purged_index);
    let marker_name = marker.path().display().to_string();
    if let Some(acknowledged) = &acknowledged {
        if let Some(index) = acknowledged.last_index.filter(|index| last_index.is_none_or(|last| last < *index)) {
            return Err(Damaged::LostEntries {
                dir: dir.into(),
                marker: marker_name,
                newest: files.newest(),
                found: last_index,
                acknowledged: index,
            });
        }
        if let Some(vote) = acknowledged.vote {
            // A vote of the same term for another candidate is not comparable: lost as well.
            let kept = found.vote.and_then(|saved| saved.partial_cmp(&vote));
            if !matches!(kept, Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)) {
                return Err(Damaged::LostVote {
                    dir: dir.into(),
                    marker: marker_name,
                    wal: wal.to_string(),
                    found: found.vote.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
                    acknowledged: vote.to_string(),
                });
            }
        }
    }
    if let Some(purged) = purged_index {
        if found.snapshot.is_none_or(|snapshot| snapshot.index < purged) {
            let what = format!(
                "the log is purged up to index {purged} but the snapshot covers only up to {:?}",
                found.snapshot.map(|s| s.index)
            );
            return Err(Damaged::Hole { dir: dir.into(), what });
        }
    }
    // openraft's first entry has index 0 (1 in a restored directory); after a purge the log
    // resumes right after the purged index.
    let expected_first = purged_index.map(|p| p + 1).unwrap_or(1);
    if let Some(first) = found.first_index.filter(|first| *first > expected_first) {
        let what = format!(
            "the first entry is {first}, but the log is purged only up to {purged_index:?}: entries {expected_first}..{first} are missing"
        );
        return Err(Damaged::Hole { dir: dir.into(), what });
    }
    marker
        .reset(Acknowledged { last_index, vote: found.vote })
        .map_err(|e| Damaged::Marker(format!("{marker_name}: {e}")))
}
