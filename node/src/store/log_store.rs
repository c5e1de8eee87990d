//! `LogStore`: openraft's `RaftLogStorage` on RocksDB, fsync before acknowledge, with the most
//! recent entries also kept decoded in memory ([`Recent`]).
//!
//! openraft reads every entry back at least twice after appending it: to apply it, and on the
//! leader once per follower to replicate it. Decoding each from RocksDB cost more than a tenth of
//! a member's CPU under write load; the cache serves those reads with a clone, which shares the
//! entry's commands (`Batch.proposals` is an `Arc`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::marker::Marker;
use super::{index_key, CF_LOGS, CF_META};
use crate::codec;
use crate::environment::Environment;
use crate::raft_types::{Entry, LogId, NodeId, StorageError, TypeConfig};

pub(super) const KEY_VOTE: &[u8] = b"vote";
pub(super) const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Most entries [`Recent`] holds.
pub const RECENT_ENTRIES_MAX: usize = 1_024;
/// Most encoded bytes of the entries [`Recent`] holds (decoded, they take a few times more).
pub const RECENT_BYTES_MAX: usize = 4 << 20;

/// The last entries appended, decoded: a contiguous run of the log's tail. It only ever holds
/// what RocksDB holds (filled after the write, emptied of a range before it is deleted), so a
/// read may take any part of it and the rest from RocksDB.
#[derive(Default)]
struct Recent {
    /// Entries with consecutive indexes, each with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    fn push(&mut self, entry: Entry, size: usize) {
        let next = self.entries.back().map(|(last, _)| last.log_id.index + 1);
        if next.is_some_and(|next| next != entry.log_id.index) {
            // Not contiguous (openraft truncates before it overwrites): start again.
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        while self.entries.len() > RECENT_ENTRIES_MAX || (self.bytes > RECENT_BYTES_MAX && self.entries.len() > 1) {
            let (_, size) = self.entries.pop_front().expect("not empty");
            self.bytes -= size;
        }
    }

    /// Forgets entries at and after `index`.
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(entry, _)| entry.log_id.index >= index) {
            let (_, size) = self.entries.pop_back().expect("not empty");
            self.bytes -= size;
        }
    }

    /// Forgets entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(entry, _)| entry.log_id.index <= index) {
            let (_, size) = self.entries.pop_front().expect("not empty");
            self.bytes -= size;
        }
    }
}

/// The Raft log. Cheap to clone: clones share the database and the cache of recent entries.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    recent: Arc<Mutex<Recent>>,
    /// Where the fsyncs run (`write_synced`).
    environment: Environment,
    /// What this member acknowledged, recorded outside RocksDB after each synced write, so the
    /// next start can tell whether RocksDB lost any of it (`integrity.rs`).
    marker: Arc<Marker>,
}

fn io_error(subject: ErrorSubject<NodeId>, verb: ErrorVerb, error: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::new(subject, verb, openraft::AnyError::new(&error)).into()
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl LogStore {
    pub(crate) fn new(db: Arc<DB>, environment: Environment, marker: Arc<Marker>) -> LogStore {
        LogStore { db, recent: Arc::default(), environment, marker }
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("recent entries lock")
    }

    /// Entries of `range` from `start` on, from RocksDB.
    fn read_entries(
        &self,
        start: u64,
        range: &impl RangeBounds<u64>,
        entries: &mut Vec<Entry>,
    ) -> Result<(), StorageError> {
        let iter = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::From(&index_key(start), Direction::Forward));
        for item in iter {
            let (key, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = u64::from_be_bytes(key.as_ref().try_into().expect("log keys are 8 bytes"));
            if !range.contains(&index) {
                break;
            }
            entries.push(codec::decode(&value).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?);
        }
        Ok(())
    }

    /// Writes a batch and syncs the WAL, on the blocking pool (`Environment::blocking`; inline
    /// in the simulations), so the fsync (~4 ms here, stalls near 100 ms) holds no runtime
    /// worker: inline, it took one of the two workers from every gRPC call for as long as it
    /// lasted. openraft 0.9.25 waits for each append to be flushed before the next
    /// (`RaftCore::append_to_log`), so appends do not overlap either way.
    async fn write_synced(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let db = self.db.clone();
        self.environment
            .blocking(move || db.write_opt(batch, &synced()))
            .await
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, std::io::Error::other(e)))?
            .map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    /// Appends `entries` in one synced `WriteBatch` (one fsync for all of them), then records
    /// them in the marker and the cache. openraft's `append` and the offline `recover` use it.
    pub(crate) async fn write_entries(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let mut written = Vec::new();
        let mut last_index = None;
        for entry in entries {
            last_index = Some(entry.log_id.index);
            let value = codec::encode(&entry).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            batch.put_cf(self.cf(CF_LOGS), index_key(entry.log_id.index), &value);
            written.push((entry, value.len()));
        }
        let started = Instant::now();
        let result = self.write_synced(batch).await;
        metrics::histogram!("collective_disk_wal_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("collective_log_append_batch_entries").record(written.len() as f64);
        result?;
        // Only once the write is synced: the marker never claims more than the log holds.
        if let Some(index) = last_index {
            self.marker.flushed(index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        }
        let mut recent = self.recent();
        for (entry, size) in written {
            recent.push(entry, size);
        }
        Ok(())
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column family created at open")
    }

    fn get_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let bytes = self.db.get_cf(self.cf(CF_META), key).map_err(|e| io_error(subject.clone(), ErrorVerb::Read, e))?;
        bytes.map(|bytes| serde_json::from_slice(&bytes).map_err(|e| io_error(subject, ErrorVerb::Read, e))).transpose()
    }

    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
        sync: bool,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(value).map_err(|e| io_error(subject.clone(), ErrorVerb::Write, e))?;
        let options = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(self.cf(CF_META), key, bytes, &options).map_err(|e| io_error(subject, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(index) => *index + 1,
            Bound::Unbounded => 0,
        };
        let mut entries = Vec::new();
        let mut next = start;
        {
            let recent = self.recent();
            if let Some(first) = recent.first_index().filter(|first| *first <= start) {
                for (entry, _) in recent.entries.iter().skip((start - first) as usize) {
                    if !range.contains(&entry.log_id.index) {
                        return Ok(entries);
                    }
                    entries.push(entry.clone());
                    next = entry.log_id.index + 1;
                }
            }
        }
        // Before the cache, or appended after the lock was released: RocksDB has it (usually the
        // cache answered the whole range, and RocksDB is not asked).
        if range.contains(&next) {
            self.read_entries(next, &range, &mut entries)?;
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last = self.db.iterator_cf(self.cf(CF_LOGS), IteratorMode::End).next();
        let last_log_id = match last {
            None => None,
            Some(item) => {
                let (_, value) = item.map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                let entry: Entry =
                    codec::decode(&value).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(entry.log_id)
            }
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED, ErrorSubject::Store)?;
        Ok(LogState { last_purged_log_id, last_log_id: last_log_id.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError> {
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote, true)?;
        self.marker.voted(vote).map_err(|e| io_error(ErrorSubject::Vote, ErrorVerb::Write, e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced: after a crash a smaller committed index only means re-applying later.
        self.put_meta(KEY_COMMITTED, &committed, ErrorSubject::Store, false)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get_meta::<Option<LogId>>(KEY_COMMITTED, ErrorSubject::Store)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.write_entries(entries).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(error) => {
                callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                Err(error)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Out of the marker and the cache before RocksDB: a crash in between leaves the marker
        // behind the log (never ahead), and no read finds an entry RocksDB no longer has.
        self.marker.truncating(log_id.index).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.recent().truncate(log_id.index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(log_id.index), index_key(u64::MAX));
        self.write_synced(batch).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: entries at or below it are ignored even if a crash
        // leaves some of them behind.
        self.put_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Store, true)?;
        self.recent().purge(log_id.index);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(0), index_key(log_id.index + 1));
        self.db.write(batch).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Blank }
    }

    fn indexes(recent: &Recent) -> Vec<u64> {
        recent.entries.iter().map(|(entry, _)| entry.log_id.index).collect()
    }

    #[test]
    fn recent_keeps_a_bounded_contiguous_tail() {
        let mut recent = Recent::default();
        for index in 1..=RECENT_ENTRIES_MAX as u64 + 10 {
            recent.push(entry(index), 1);
        }
        assert_eq!(recent.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(recent.first_index(), Some(11));
        assert_eq!(recent.bytes, RECENT_ENTRIES_MAX);

        recent.truncate(RECENT_ENTRIES_MAX as u64 + 5);
        assert_eq!(recent.entries.back().map(|(e, _)| e.log_id.index), Some(RECENT_ENTRIES_MAX as u64 + 4));
        recent.purge(20);
        assert_eq!(recent.first_index(), Some(21));
        assert_eq!(recent.bytes, recent.entries.len());

        // A gap (never produced by openraft without a truncate) starts the cache again.
        recent.push(entry(RECENT_ENTRIES_MAX as u64 + 100), 7);
        assert_eq!(indexes(&recent), vec![RECENT_ENTRIES_MAX as u64 + 100]);
        assert_eq!(recent.bytes, 7);
    }

    #[test]
    fn recent_is_bounded_by_bytes_but_keeps_the_last_entry() {
        let mut recent = Recent::default();
        recent.push(entry(1), RECENT_BYTES_MAX);
        recent.push(entry(2), RECENT_BYTES_MAX + 1);
        assert_eq!(indexes(&recent), vec![2]);
    }
}
