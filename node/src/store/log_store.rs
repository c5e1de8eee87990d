//! `LogStore`: openraft's `RaftLogStorage` on RocksDB, fsync before acknowledge, with the most
//! recent entries also kept decoded in memory ([`Recent`]).
//!
//! Appends are written by a thread of their own ([`LogWriter`]): `append` puts the entries in the
//! cache, where readers find them at once, and queues them; the writer puts every queued append
//! in one synced RocksDB write and then calls their callbacks, which is when openraft counts them
//! as persisted. openraft asks for this (`append` "should return immediately ... avoid
//! blocking"): a synced write inline held a runtime worker for the whole fsync (~4 ms here,
//! stalls near 100 ms), and the Raft core could neither take proposals nor count acknowledgements
//! meanwhile. Truncate, purge and the log state first wait for the queued appends
//! ([`LogStore::barrier`]), so they act on what RocksDB holds.
//!
//! openraft reads every entry back at least twice after appending it: to apply it, and on the
//! leader once per follower to replicate it. Decoding each from RocksDB cost more than a tenth of
//! a member's CPU under write load; the cache serves those reads with a clone, which shares the
//! entry's commands (`Batch.proposals` is an `Arc`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError, Vote};
use rocksdb::{Direction, IteratorMode, WriteBatch, WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{index_key, CF_LOGS, CF_META};
use crate::codec;
use crate::raft_types::{Entry, LogId, NodeId, StorageError, TypeConfig};

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";

/// Most entries [`Recent`] holds.
pub const RECENT_ENTRIES_MAX: usize = 1_024;
/// Most encoded bytes of the entries [`Recent`] holds (decoded, they take a few times more).
pub const RECENT_BYTES_MAX: usize = 4 << 20;

/// Most appends waiting for the log writer; `append` waits for room beyond them.
pub const LOG_APPENDS_QUEUED_MAX: usize = 1_024;
/// Most appends one synced write covers.
const LOG_APPENDS_PER_WRITE_MAX: usize = 256;

/// The last entries appended, decoded: a contiguous run of the log's tail, including appends the
/// writer has not written yet. It drops from its front only entries RocksDB holds (at or below
/// `durable`), and a range leaves it before RocksDB deletes it, so a read may take any part of
/// it and the rest from RocksDB.
#[derive(Default)]
struct Recent {
    /// Entries with consecutive indexes, each with its encoded size.
    entries: VecDeque<(Entry, usize)>,
    bytes: usize,
    /// The last index the writer has written (and synced); entries after it are only here.
    durable: Option<u64>,
}

impl Recent {
    fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(entry, _)| entry.log_id.index)
    }

    /// Whether an entry at `index` would extend the run (or start it).
    fn continues_at(&self, index: u64) -> bool {
        self.entries.back().is_none_or(|(last, _)| last.log_id.index + 1 == index)
    }

    /// Adds an entry. One that does not continue the run starts it again: the caller makes
    /// sure the writer has written the run first (`LogStore::append`).
    fn push(&mut self, entry: Entry, size: usize) {
        if !self.continues_at(entry.log_id.index) {
            self.entries.clear();
            self.bytes = 0;
        }
        self.entries.push_back((entry, size));
        self.bytes += size;
        self.evict();
    }

    /// Records that the writer has written everything up to `index`.
    fn written(&mut self, index: u64) {
        self.durable = self.durable.max(Some(index));
        self.evict();
    }

    /// Drops written entries from the front while over the bounds (the last entry stays).
    fn evict(&mut self) {
        while (self.entries.len() > RECENT_ENTRIES_MAX || (self.bytes > RECENT_BYTES_MAX && self.entries.len() > 1))
            && self.entries.front().is_some_and(|(entry, _)| Some(entry.log_id.index) <= self.durable)
        {
            let (_, size) = self.entries.pop_front().expect("not empty");
            self.bytes -= size;
        }
    }

    /// Forgets entries at and after `index` (also as written: the writer will not write them).
    fn truncate(&mut self, index: u64) {
        while self.entries.back().is_some_and(|(entry, _)| entry.log_id.index >= index) {
            let (_, size) = self.entries.pop_back().expect("not empty");
            self.bytes -= size;
        }
        self.durable = self.durable.min(index.checked_sub(1));
    }

    /// Forgets entries up to and including `index`.
    fn purge(&mut self, index: u64) {
        while self.entries.front().is_some_and(|(entry, _)| entry.log_id.index <= index) {
            let (_, size) = self.entries.pop_front().expect("not empty");
            self.bytes -= size;
        }
    }
}

/// Encoded entries (index, value) to write, synced, and whom to tell once they are.
struct Append {
    values: Vec<(u64, Vec<u8>)>,
    callback: LogFlushed<TypeConfig>,
}

/// What the log writer does next.
enum Job {
    /// Write an append.
    Append(Append),
    /// Answer once every append queued before this one is written.
    Barrier(tokio::sync::oneshot::Sender<()>),
}

/// The thread that writes appends: it takes every append queued (at most
/// `LOG_APPENDS_PER_WRITE_MAX`), writes them in one synced batch, marks them written in the
/// cache and calls their callbacks in order. It stops when every `LogStore` is gone. It holds the
/// database weakly, so dropping the stores closes it at once (a reopen in the same process finds
/// it unlocked) however late the writer sees its queue close.
struct LogWriter {
    db: Weak<DB>,
    recent: Arc<Mutex<Recent>>,
    jobs: mpsc::Receiver<Job>,
}

impl LogWriter {
    async fn run(mut self) {
        while let Some(first) = self.jobs.recv().await {
            let mut appends = Vec::new();
            let mut barriers = Vec::new();
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Append(append) => appends.push(append),
                    Job::Barrier(done) => barriers.push(done),
                }
                if appends.len() < LOG_APPENDS_PER_WRITE_MAX {
                    next = self.jobs.try_recv().ok();
                }
            }
            self.write(appends);
            // The queue is in order: every append queued before a barrier taken in this round
            // was taken before it, and is written now.
            for done in barriers {
                let _ = done.send(());
            }
        }
    }

    fn write(&self, appends: Vec<Append>) {
        let last = appends.iter().rev().find_map(|append| append.values.last().map(|(index, _)| *index));
        let Some(db) = self.db.upgrade() else {
            for append in appends {
                append.callback.log_io_completed(Err(std::io::Error::other("the log is closed")));
            }
            return;
        };
        let mut batch = WriteBatch::default();
        let cf = db.cf_handle(CF_LOGS).expect("column family created at open");
        let mut entries = 0;
        for append in &appends {
            for (index, value) in &append.values {
                batch.put_cf(cf, index_key(*index), value);
            }
            entries += append.values.len();
        }
        let started = Instant::now();
        let result = if entries == 0 { Ok(()) } else { db.write_opt(batch, &synced()) };
        metrics::histogram!("collective_disk_wal_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("collective_log_append_batch_entries").record(entries as f64);
        match result {
            Ok(()) => {
                if let Some(last) = last {
                    self.recent.lock().expect("recent entries lock").written(last);
                }
                for append in appends {
                    append.callback.log_io_completed(Ok(()));
                }
            }
            Err(error) => {
                tracing::error!(%error, "writing the Raft log failed");
                for append in appends {
                    append.callback.log_io_completed(Err(std::io::Error::other(error.to_string())));
                }
            }
        }
    }
}

/// The Raft log. Cheap to clone: clones share the database, the cache of recent entries and
/// the writer.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    recent: Arc<Mutex<Recent>>,
    writer: mpsc::Sender<Job>,
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
    pub(crate) fn new(db: Arc<DB>) -> std::io::Result<LogStore> {
        let recent = Arc::new(Mutex::new(Recent::default()));
        let (writer, jobs) = mpsc::channel(LOG_APPENDS_QUEUED_MAX);
        let log_writer = LogWriter { db: Arc::downgrade(&db), recent: recent.clone(), jobs };
        // A thread of its own, so the fsync holds no runtime worker. On a current-thread runtime
        // (the turmoil simulations) a task instead: a second thread would make the moment an
        // append completes depend on the OS, and a seed would no longer replay one trace.
        let single_threaded = tokio::runtime::Handle::try_current()
            .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread);
        if single_threaded {
            tokio::spawn(log_writer.run());
        } else {
            std::thread::Builder::new()
                .name("raft-log-writer".into())
                .spawn(move || futures::executor::block_on(log_writer.run()))?;
        }
        Ok(LogStore { db, recent, writer })
    }

    /// Waits until every append queued so far is written.
    async fn barrier(&self) -> Result<(), StorageError> {
        let stopped =
            || io_error(ErrorSubject::Logs, ErrorVerb::Write, std::io::Error::other("the log writer stopped"));
        let (done, written) = tokio::sync::oneshot::channel();
        self.writer.send(Job::Barrier(done)).await.map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())
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
        self.barrier().await?;
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
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote, true)
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
        let mut values = Vec::new();
        let mut decoded = Vec::new();
        for entry in entries {
            let value = codec::encode(&entry).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))?;
            decoded.push((entry, value.len()));
            values.push((decoded.last().expect("pushed").0.log_id.index, value));
        }
        // A run that does not continue the cached one (never after a truncate) replaces it:
        // only once the writer has written what it replaces.
        if values.first().is_some_and(|(index, _)| !self.recent().continues_at(*index)) {
            self.barrier().await?;
        }
        {
            let mut recent = self.recent();
            for (entry, size) in decoded {
                recent.push(entry, size);
            }
        }
        // One synced write for every append queued meanwhile (`LogWriter`); the callback says
        // when these entries are persisted.
        self.writer.send(Job::Append(Append { values, callback })).await.map_err(|_| {
            io_error(ErrorSubject::Logs, ErrorVerb::Write, std::io::Error::other("the log writer stopped"))
        })
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Out of the cache before RocksDB, so no read finds an entry RocksDB no longer has.
        self.recent().truncate(log_id.index);
        // Queued appends of the entries cut here land first, then go.
        self.barrier().await?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(self.cf(CF_LOGS), index_key(log_id.index), index_key(u64::MAX));
        self.db.write_opt(batch, &synced()).map_err(|e| io_error(ErrorSubject::Logs, ErrorVerb::Write, e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: entries at or below it are ignored even if a crash
        // leaves some of them behind.
        self.barrier().await?;
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
            recent.written(index);
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
        recent.written(1);
        recent.push(entry(2), RECENT_BYTES_MAX + 1);
        assert_eq!(indexes(&recent), vec![2]);
    }

    #[test]
    fn recent_keeps_entries_the_writer_has_not_written() {
        let mut recent = Recent::default();
        for index in 1..=RECENT_ENTRIES_MAX as u64 + 10 {
            recent.push(entry(index), 1);
        }
        // Nothing is written yet: nothing may leave, or a read would find it nowhere.
        assert_eq!(recent.entries.len(), RECENT_ENTRIES_MAX + 10);
        recent.written(5);
        assert_eq!(recent.first_index(), Some(6));
        recent.written(RECENT_ENTRIES_MAX as u64 + 10);
        assert_eq!(recent.first_index(), Some(11));

        // Entries cut by a truncate are no longer written; their replacements are not yet.
        recent.truncate(RECENT_ENTRIES_MAX as u64);
        assert_eq!(recent.durable, Some(RECENT_ENTRIES_MAX as u64 - 1));
        for index in RECENT_ENTRIES_MAX as u64..RECENT_ENTRIES_MAX as u64 + 50 {
            recent.push(entry(index), 1);
        }
        // Back within bounds by dropping written entries from the front only.
        assert_eq!(recent.entries.len(), RECENT_ENTRIES_MAX);
        assert_eq!(recent.first_index(), Some(50));
        assert_eq!(recent.entries.back().map(|(e, _)| e.log_id.index), Some(RECENT_ENTRIES_MAX as u64 + 49));
    }
}
