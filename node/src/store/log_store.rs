//! `LogStore`: openraft's `RaftLogStorage`: entries in the log files (`log_files.rs`), the vote
//! and the purge point in RocksDB, fsync before acknowledge, with the most recent entries also
//! kept decoded in memory ([`Recent`]).
//!
//! openraft reads every entry back at least twice after appending it: to apply it, and on the
//! leader once per follower to replicate it. Decoding each from storage cost more than a tenth
//! of a member's CPU under write load; the cache serves those reads with a clone, which shares
//! the entry's commands (`Batch.proposals` is an `Arc`).

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use rocksdb::{WriteOptions, DB};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::log_files::LogFiles;
use super::marker::Marker;
use super::CF_META;
use crate::codec;
use crate::environment::Environment;
use crate::raft_types::{Entry, LogId, TypeConfig, Vote};

pub(super) const KEY_VOTE: &[u8] = b"vote";
pub(super) const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";
/// How often at most `save_committed` writes the committed id.
const COMMITTED_SAVE_INTERVAL_MS: u64 = 100;

/// Most entries [`Recent`] holds.
pub const RECENT_ENTRIES_MAX: usize = 1_024;
/// Most encoded bytes of the entries [`Recent`] holds (decoded, they take a few times more).
pub const RECENT_BYTES_MAX: usize = 4 << 20;

/// The last entries appended, decoded: a contiguous run of the log's tail. It only ever holds
/// what the log files hold (filled after the write, emptied of a range before it is removed),
/// so a read may take any part of it and the rest from the files.
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

/// Most appends waiting for the log's next fsync (each holds openraft's callback; openraft
/// submits at most a few batches ahead of the flushes).
pub const APPENDS_AWAITING_SYNC_MAX: usize = 4_096;

/// The Raft log. Cheap to clone: clones share the files, the database, the cache of recent
/// entries and the syncer.
#[derive(Clone)]
pub struct LogStore {
    files: Arc<LogFiles>,
    /// The vote, the purge point and the committed id (`CF_META`).
    db: Arc<DB>,
    recent: Arc<Mutex<Recent>>,
    /// Where the fsyncs of `on_files` run, and whether the syncer runs inline.
    environment: Environment,
    /// What this member acknowledged, recorded beside the log after each synced write, so the
    /// next start can tell whether the log lost any of it (`integrity.rs`).
    marker: Arc<Marker>,
    /// Appends written but not yet synced, in order, for the syncer (`append`).
    unsynced: mpsc::Sender<Unsynced>,
    /// Bumped by every truncation, under this lock; the syncer records a synced append in the
    /// marker, under the same lock, only if no truncation came after its write (the entries it
    /// names may be gone, or replaced by others not yet synced).
    truncations: Arc<Mutex<u64>>,
    /// When `save_committed` last wrote the committed id (it writes at most once per
    /// [`COMMITTED_SAVE_INTERVAL_MS`], by the environment's clock).
    committed_saved_ms: Option<u64>,
}

/// What the syncer needs of the store.
struct Syncer {
    files: std::sync::Weak<LogFiles>,
    environment: Environment,
    marker: Arc<Marker>,
    truncations: Arc<Mutex<u64>>,
}

impl Syncer {
    /// Syncs the log files once for every append in `waiting` (a sync makes every earlier
    /// append durable) and only then reports them flushed to openraft,
    /// which counts this member's copy of an entry (as leader, in the commit quorum; as
    /// follower, in its answer to the leader) from that report on. Blocks for the fsync.
    fn sync(&self, waiting: &mut Vec<Unsynced>) {
        let started = Instant::now();
        let synced = match self.files.upgrade() {
            Some(files) => files.sync().map_err(|e| e.to_string()),
            None => Err("the log files were closed".to_string()),
        };
        metrics::histogram!("collective_disk_wal_fsync_duration_seconds").record(started.elapsed().as_secs_f64());
        if synced.is_ok() {
            // Only once synced: the marker never claims more than the log holds.
            let truncations = self.truncations.lock().expect("truncations lock");
            let last = waiting.iter().filter(|append| append.truncations == *truncations).map(|a| a.last_index).max();
            if let Some(Err(error)) = last.map(|index| self.marker.flushed(index)) {
                tracing::error!(%error, marker = %self.marker.path().display(), "recording synced entries in the marker");
            }
        }
        for append in waiting.drain(..) {
            let result = synced.clone().map_err(|error| io_error("syncing the Raft log", error));
            append.callback.io_completed(result);
        }
    }

    /// The syncer's thread: takes every append queued since the last sync and syncs them
    /// together (group commit: while one fsync runs, the next appends queue for the next). A
    /// thread of its own, not tokio's blocking pool: one hand-off per sync instead of a task
    /// wake and a pool dispatch, which a lone write paid for on every member. Ends when every
    /// clone of the store is dropped.
    fn run_thread(self, mut queue: mpsc::Receiver<Unsynced>) {
        let mut waiting = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            waiting.push(first);
            while waiting.len() < APPENDS_AWAITING_SYNC_MAX {
                match queue.try_recv() {
                    Ok(append) => waiting.push(append),
                    Err(_) => break,
                }
            }
            futures::executor::block_on(self.environment.log_sync.wait_released());
            self.sync(&mut waiting);
        }
    }

    /// The syncer as a task on the calling runtime, syncing inline: the simulations', whose
    /// steps must not depend on another thread's timing (`Environment::inline_blocking`).
    async fn run_inline(self, mut queue: mpsc::Receiver<Unsynced>) {
        let mut waiting = Vec::new();
        while queue.recv_many(&mut waiting, APPENDS_AWAITING_SYNC_MAX).await > 0 {
            self.environment.log_sync.wait_released().await;
            self.sync(&mut waiting);
        }
    }
}

/// An append written to the log files without `sync`, waiting for the next fsync.
struct Unsynced {
    last_index: u64,
    /// `truncations` when it was written.
    truncations: u64,
    callback: IOFlushed<TypeConfig>,
}

fn io_error(context: &str, error: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("{context}: {error}"))
}

fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

impl LogStore {
    /// The log in `files`, its metadata in `db`; starts its syncer (a thread, or a task of the
    /// current runtime in the simulations).
    pub(crate) fn new(files: LogFiles, db: Arc<DB>, environment: Environment, marker: Arc<Marker>) -> LogStore {
        let (unsynced, queue) = mpsc::channel(APPENDS_AWAITING_SYNC_MAX);
        let files = Arc::new(files);
        let recent = Arc::default();
        let store = LogStore {
            files,
            db,
            recent,
            environment,
            marker,
            unsynced,
            truncations: Arc::default(),
            committed_saved_ms: None,
        };
        let syncer = Syncer {
            // Weak: a dropped store closes its files at once (a restart reopens them in the same
            // process), whether or not the syncer has run since.
            files: Arc::downgrade(&store.files),
            environment: store.environment.clone(),
            marker: store.marker.clone(),
            truncations: store.truncations.clone(),
        };
        if store.environment.inline_blocking {
            tokio::spawn(syncer.run_inline(queue));
        } else {
            let spawned =
                std::thread::Builder::new().name("raft-log-sync".into()).spawn(move || syncer.run_thread(queue));
            // Without its syncer no append is ever reported flushed: the member cannot serve.
            spawned.expect("starting the Raft log's syncer thread");
        }
        store
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().expect("recent entries lock")
    }

    /// Entries of `range` from `start` on, from the log files.
    fn read_entries(&self, start: u64, range: &impl RangeBounds<u64>, entries: &mut Vec<Entry>) -> io::Result<()> {
        let end = match range.end_bound() {
            Bound::Included(index) => *index,
            Bound::Excluded(0) => return Ok(()),
            Bound::Excluded(index) => *index - 1,
            Bound::Unbounded => u64::MAX,
        };
        for (index, bytes) in self.files.read(start, end)? {
            entries.push(codec::decode(&bytes).map_err(|e| io_error(&format!("decoding log entry {index}"), e))?);
        }
        Ok(())
    }

    /// Runs `work` on the log files on the blocking pool (`Environment::blocking`; inline in
    /// the simulations), so an fsync (stalls near 100 ms here) holds no runtime worker: inline,
    /// it took one of the two workers from every gRPC call for as long as it lasted.
    async fn on_files(
        &self,
        what: &str,
        work: impl FnOnce(&LogFiles) -> io::Result<()> + Send + 'static,
    ) -> io::Result<()> {
        let files = self.files.clone();
        self.environment
            .blocking(move || work(&files))
            .await
            .map_err(|e| io_error(what, e))?
            .map_err(|e| io_error(what, e))
    }

    /// Writes `entries` into the log files without `sync`: they are served at once (the leader
    /// replicates them while they reach the disk), and the next sync makes them durable.
    /// Records them in the cache. Returns the last index written.
    fn write_unsynced(&self, entries: impl IntoIterator<Item = Entry>) -> io::Result<Option<u64>> {
        let mut encoded = Vec::new();
        let mut written = Vec::new();
        for entry in entries {
            let value = codec::encode(&entry).map_err(|e| io_error("encoding a log entry", e))?;
            encoded.push((entry.log_id.index, value));
            written.push(entry);
        }
        metrics::histogram!("collective_log_append_batch_entries").record(written.len() as f64);
        self.files.append(&encoded).map_err(|e| io_error("writing the Raft log", e))?;
        let mut recent = self.recent();
        for (entry, (_, value)) in written.into_iter().zip(&encoded) {
            recent.push(entry, value.len());
        }
        Ok(encoded.last().map(|(index, _)| *index))
    }

    /// Appends `entries` and syncs them before returning, recording them in the marker (the
    /// offline `recover` uses it).
    pub(crate) async fn write_entries(&mut self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let last_index = self.write_unsynced(entries)?;
        self.on_files("syncing the Raft log", |files| files.sync()).await?;
        match last_index {
            Some(index) => self.marker.flushed(index),
            None => Ok(()),
        }
    }

    fn meta(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_META).expect("column family created at open")
    }

    fn get_meta<T: DeserializeOwned>(&self, key: &[u8]) -> io::Result<Option<T>> {
        let what = || format!("reading {} from the Raft metadata", String::from_utf8_lossy(key));
        let bytes = self.db.get_cf(self.meta(), key).map_err(|e| io_error(&what(), e))?;
        bytes.map(|bytes| serde_json::from_slice(&bytes).map_err(|e| io_error(&what(), e))).transpose()
    }

    fn put_meta<T: Serialize>(&self, key: &[u8], value: &T, sync: bool) -> io::Result<()> {
        let what = || format!("writing {} to the Raft metadata", String::from_utf8_lossy(key));
        let bytes = serde_json::to_vec(value).map_err(|e| io_error(&what(), e))?;
        let options = if sync { synced() } else { WriteOptions::default() };
        self.db.put_cf_opt(self.meta(), key, bytes, &options).map_err(|e| io_error(&what(), e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
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
        // Before the cache, or appended after the lock was released: the files have it (usually
        // the cache answered the whole range, and the files are not read).
        if range.contains(&next) {
            self.read_entries(next, &range, &mut entries)?;
        }
        Ok(entries)
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_meta(KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let last = match self.files.bounds() {
            Some((_, last)) => self.files.read(last, last)?.pop(),
            None => None,
        };
        let last_log_id = match last {
            None => None,
            Some((_, bytes)) => {
                let entry: Entry = codec::decode(&bytes).map_err(|e| io_error("decoding the last log entry", e))?;
                Some(entry.log_id)
            }
        };
        let last_purged_log_id: Option<LogId> = self.get_meta(KEY_LAST_PURGED)?;
        Ok(LogState { last_purged_log_id, last_log_id: last_log_id.or(last_purged_log_id) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    /// Synced before it returns (RocksDB's WAL), and the log files first: openraft takes a
    /// saved vote as flushing every append before it (its I/O ids order a vote after them, and a
    /// follower's answer waits for the flushed id to pass its entries), as RocksDB's one ordered
    /// WAL once did. Votes are rare; the sync is one `fdatasync`.
    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        // The same gate as the syncer's: a simulation holding this member's fsyncs holds this one.
        self.environment.log_sync.wait_released().await;
        self.on_files("syncing the Raft log before a vote", |files| files.sync()).await?;
        self.put_meta(KEY_VOTE, vote, true)?;
        self.marker.voted(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        // Not synced, and not every time: after a crash a smaller committed index only means
        // applying less at the start and the rest once the leader is heard from. openraft calls
        // this for every entry committed (thousands a second under load), and the write was
        // ~1.5 % of a follower's CPU.
        let now_ms = self.environment.now_ms();
        // A clock set back saves at once.
        if self
            .committed_saved_ms
            .is_some_and(|at| (at..at.saturating_add(COMMITTED_SAVE_INTERVAL_MS)).contains(&now_ms))
        {
            return Ok(());
        }
        self.committed_saved_ms = Some(now_ms);
        self.put_meta(KEY_COMMITTED, &committed, false)
    }

    /// The committed id saved, or the last entry held (or purged) if that is earlier: the
    /// committed id is in RocksDB and the entries in the log files, so a power loss can keep the
    /// id (RocksDB's WAL synced by a later vote or snapshot) and lose the entries' last unsynced
    /// writes. Every entry held up to the saved id is committed (this member saved it only over
    /// a log that matched the leader's), so the start applies those and learns the rest from the
    /// leader.
    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        let Some(committed) = self.get_meta::<Option<LogId>>(KEY_COMMITTED)?.flatten() else { return Ok(None) };
        let held = self.get_log_state().await?.last_log_id;
        Ok(Some(committed).min(held))
    }

    /// Writes the entries without `sync` and returns: openraft replicates them at once, and
    /// counts this member's copy only once the syncer reports them flushed (`Syncer`).
    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let truncations = *self.truncations.lock().expect("truncations lock");
        let Some(last_index) = self.write_unsynced(entries)? else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        let unsynced = Unsynced { last_index, truncations, callback };
        if let Err(error) = self.unsynced.send(unsynced).await {
            let message = "the Raft log's syncer stopped";
            error.0.callback.io_completed(Err(io::Error::other(message)));
            return Err(io::Error::other(message));
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let first_removed = last_log_id.map_or(0, |log_id| log_id.index + 1);
        // Out of the marker and the cache before the files: a crash in between leaves the marker
        // behind the log (never ahead), and no read finds an entry the files no longer have.
        {
            let mut truncations = self.truncations.lock().expect("truncations lock");
            *truncations += 1;
            self.marker.truncating(first_removed)?;
        }
        self.recent().truncate(first_removed);
        self.on_files("truncating the Raft log", move |files| files.truncate_from(first_removed)).await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        // Record the purge point first: entries at or below it are ignored even if a crash
        // leaves some of them behind.
        self.put_meta(KEY_LAST_PURGED, &log_id, true)?;
        self.recent().purge(log_id.index);
        self.files.purge_through(log_id.index).map_err(|e| io_error("purging the Raft log", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_types::CommittedLeaderId;
    use openraft::EntryPayload;

    fn entry(index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1), index), payload: EntryPayload::Blank }
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
