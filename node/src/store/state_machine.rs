//! `StateMachineStore`: openraft's `RaftStateMachine`. The state lives in memory (`Shared`) and is
//! persisted as a snapshot; on restart the snapshot is loaded and later entries are re-applied.
//!
//! A snapshot is a file, `{data_dir}/snapshots/{snapshot_id}.snap`: [`SNAPSHOT_MAGIC`], the
//! encoded `SnapshotBody` (JSON), then the SHA-256 of everything before it. It is written to a
//! temporary name, fsynced and renamed; its metadata, naming the file, is then written to RocksDB
//! with `sync`, and older files are removed. The metadata is the commit point: a crash before it
//! leaves the previous snapshot current. The checksum is verified whenever the bytes are used:
//! loaded at start, read to be sent to a follower, received from a leader; every error names the
//! file (or the leader's snapshot id). Builds stream the state into the file, so no encoded copy
//! of it sits in memory or in a RocksDB memtable (at 1,000,000 users the encoded state is ~500
//! MB); sending a snapshot to a follower still reads the file into memory
//! (`get_current_snapshot`: the transfer sends the whole snapshot in one message).
//! Data directories from before kept the bytes without a checksum, in `{snapshot_id}.json` or in
//! RocksDB under `data`; they are still read, and the next snapshot replaces them.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use rocksdb::{WriteBatch, WriteOptions, DB};
use serde::{Deserialize, Serialize};

use super::CF_SNAPSHOT;
use crate::history::HistoryStore;
use crate::raft_types::{
    Applied, ApplyResult, LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig,
};
pub use crate::shared::Shared;
use collective_statemachine::State;

pub(super) const KEY_SNAPSHOT_META: &[u8] = b"meta";
/// Where data directories before snapshot files kept the encoded snapshot.
const KEY_SNAPSHOT_DATA: &[u8] = b"data";
/// Directory of snapshot files inside the data directory.
pub(crate) const SNAPSHOTS_DIR: &str = "snapshots";

/// What a snapshot holds: the state and the Raft bookkeeping that goes with it.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: State,
}

/// The snapshot metadata kept in RocksDB (`snapshot/meta`): openraft's, and the id naming the
/// snapshot's file. Its JSON is what openraft 0.9's `SnapshotMeta` wrote, so data directories of
/// builds on it still read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredMeta {
    pub(crate) last_log_id: Option<LogId>,
    pub(crate) last_membership: StoredMembership,
    pub(crate) snapshot_id: String,
}

impl StoredMeta {
    /// The metadata of a snapshot holding the state as of `last_log_id`; its id is unique per
    /// snapshot, since the applied log id is.
    pub(crate) fn new(last_log_id: Option<LogId>, last_membership: StoredMembership) -> StoredMeta {
        let snapshot_id = match last_log_id {
            Some(log_id) => format!("{}-{}", log_id.leader_id.term, log_id.index),
            None => "empty".to_string(),
        };
        StoredMeta { last_log_id, last_membership, snapshot_id }
    }

    /// openraft's view of it.
    pub(crate) fn raft(&self) -> SnapshotMeta {
        SnapshotMeta { last_log_id: self.last_log_id, last_membership: self.last_membership.clone() }
    }
}

/// A client's write to answer once its entry applied: openraft's responder and the outcomes.
type Answer = (openraft::storage::ApplyResponder<TypeConfig>, ApplyResult);

/// Most entries applied under one hold of the state lock (`apply` reads openraft's stream in
/// runs of at most this many).
const APPLY_RUN_MAX: usize = 1_024;

/// The first bytes of a snapshot file (and of a snapshot sent to a follower).
pub const SNAPSHOT_MAGIC: &[u8] = b"collective-raft-snapshot-v2\n";
/// Bytes of the SHA-256 that ends a snapshot file.
const DIGEST_BYTES: usize = 32;

/// Writes through to `inner` and hashes what it writes.
struct Hashing<W> {
    inner: W,
    digest: sha2::Sha256,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        sha2::Digest::update(&mut self.digest, &bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `body` in the snapshot format: magic, JSON, SHA-256.
fn write_snapshot(writer: &mut impl Write, body: &SnapshotBody) -> std::io::Result<()> {
    let mut hashing = Hashing { inner: writer, digest: <sha2::Sha256 as sha2::Digest>::new() };
    hashing.write_all(SNAPSHOT_MAGIC)?;
    serde_json::to_writer(&mut hashing, body).map_err(std::io::Error::other)?;
    let digest = sha2::Digest::finalize(hashing.digest);
    hashing.inner.write_all(&digest)
}

/// The body of snapshot bytes from `source` (a file, or a leader's snapshot) once their checksum
/// holds. Bytes without the magic are accepted only from `legacy` sources (files written before
/// snapshots had a checksum).
fn verified_body<'a>(data: &'a [u8], source: &str, legacy: bool) -> Result<&'a [u8], String> {
    let Some(rest) = data.strip_prefix(SNAPSHOT_MAGIC) else {
        if legacy && data.first() == Some(&b'{') {
            return Ok(data);
        }
        return Err(format!("{source} is not a collective snapshot (it does not start with the snapshot header)"));
    };
    if rest.len() < DIGEST_BYTES {
        return Err(format!("{source} is truncated ({} bytes)", data.len()));
    }
    let (body, digest) = rest.split_at(rest.len() - DIGEST_BYTES);
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut hasher, SNAPSHOT_MAGIC);
    sha2::Digest::update(&mut hasher, body);
    if sha2::Digest::finalize(hasher).as_slice() != digest {
        return Err(format!("{source} is damaged or truncated: its SHA-256 does not match its content"));
    }
    Ok(body)
}

/// Decodes snapshot bytes from `source`, checksum first.
fn decode_snapshot(data: &[u8], source: &str, legacy: bool) -> Result<SnapshotBody, String> {
    let body = verified_body(data, source, legacy)?;
    serde_json::from_slice(body).map_err(|e| format!("{source} passed its checksum but does not decode: {e}"))
}

/// The encoded snapshot holding `state` as of `last_applied` (for `snapshot restore`).
pub(crate) fn snapshot_bytes(
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: State,
) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    write_snapshot(&mut bytes, &SnapshotBody { last_applied, last_membership, state })?;
    Ok(bytes)
}

/// A stored snapshot: its metadata, the bytes of its file, and where they came from.
struct StoredSnapshot {
    meta: StoredMeta,
    data: Vec<u8>,
    /// The file's path, or the RocksDB key of an older build, for errors.
    source: String,
    /// Written before snapshots had a checksum.
    legacy: bool,
}

impl StoredSnapshot {
    /// The body, once the checksum holds.
    fn decode(&self) -> Result<SnapshotBody, String> {
        decode_snapshot(&self.data, &self.source, self.legacy)
    }

    /// Refuses the bytes unless their checksum holds.
    fn verify(&self) -> Result<(), String> {
        verified_body(&self.data, &self.source, self.legacy).map(|_| ())
    }
}

/// The Raft state machine over `Shared`.
pub struct StateMachineStore {
    db: Arc<DB>,
    /// `{data_dir}/snapshots`.
    snapshots: PathBuf,
    shared: Arc<Shared>,
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    /// Serialises snapshot writes, so a slow build never overwrites a newer installed snapshot.
    snapshot_write: Arc<std::sync::Mutex<()>>,
    /// The presence history, written as entries apply.
    history: Arc<HistoryStore>,
}

/// Builds one snapshot from a copy of the state taken when openraft asked for the builder.
///
/// openraft runs `build_snapshot` in a spawned task while entries keep being applied, so the
/// builder must not read the live state: it would hold entries beyond `last_applied`, and a
/// replica restored from it would apply them twice.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshots: PathBuf,
    body: SnapshotBody,
    snapshot_write: Arc<std::sync::Mutex<()>>,
    shared: Arc<Shared>,
    /// Flushed before the snapshot commits (its versions up to the snapshot must be durable).
    history: Arc<HistoryStore>,
    /// When openraft asked for the builder (the copy of the state is part of the build).
    started: std::time::Instant,
}

fn history_error(error: crate::history::HistoryError) -> io::Error {
    io::Error::other(format!("writing the presence history: {error}"))
}

/// An error about the snapshot `meta` names (or about the current one), `verb` naming what was
/// being done with it.
fn snapshot_error(meta: Option<&StoredMeta>, verb: &str, error: impl std::fmt::Display) -> io::Error {
    match meta {
        Some(meta) => io::Error::other(format!("{verb} snapshot {}: {error}", meta.snapshot_id)),
        None => io::Error::other(format!("{verb} the current snapshot: {error}")),
    }
}

impl StateMachineStore {
    pub(crate) async fn open(
        db: Arc<DB>,
        data_dir: &Path,
        shared: Arc<Shared>,
        history: Arc<HistoryStore>,
    ) -> crate::error::Result<StateMachineStore> {
        let snapshots = data_dir.join(SNAPSHOTS_DIR);
        std::fs::create_dir_all(&snapshots).map_err(crate::error::io("data_dir", &snapshots))?;
        remove_temporaries(&snapshots);
        let mut store = StateMachineStore {
            db,
            snapshots,
            shared,
            last_applied: None,
            last_membership: StoredMembership::default(),
            snapshot_write: Arc::default(),
            history,
        };
        if let Some(stored) = read_stored(&store.db, &store.snapshot_write, &store.snapshots)? {
            let body = stored.decode().map_err(|reason| {
                crate::error::Error::Snapshot(format!(
                    "the current snapshot cannot be loaded: {reason}; this member must not serve with this data: \
                     on a healthy member run `collective member remove ID`, move this data directory aside, \
                     then add the member back with an empty data directory"
                ))
            })?;
            store.shared.snapshots.bytes.store(stored.data.len() as u64, Ordering::Relaxed);
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

fn read_meta(db: &DB) -> io::Result<Option<StoredMeta>> {
    let cf = db.cf_handle(CF_SNAPSHOT).expect("column family created at open");
    let bytes = db.get_cf(cf, KEY_SNAPSHOT_META).map_err(|e| snapshot_error(None, "reading", e))?;
    bytes.map(|bytes| serde_json::from_slice(&bytes).map_err(|e| snapshot_error(None, "reading", e))).transpose()
}

/// The file holding the snapshot `meta` describes (ids are ours, `term-index`, but are reduced to
/// safe characters all the same: a leader's id names a file here).
fn snapshot_path(dir: &Path, meta: &StoredMeta) -> PathBuf {
    let id: String = meta
        .snapshot_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' })
        .take(128)
        .collect();
    dir.join(format!("{id}.snap"))
}

/// The current snapshot. Its metadata is read and its file opened under the snapshot lock, so a
/// build committing meanwhile cannot remove the file in between (an open file outlives its name).
/// Older builds' snapshots are read too: `{id}.json` files, or bytes in RocksDB under `data`.
fn read_stored(db: &DB, lock: &std::sync::Mutex<()>, dir: &Path) -> io::Result<Option<StoredSnapshot>> {
    enum Found {
        File(std::fs::File, PathBuf, bool),
        RocksDb(Vec<u8>),
    }
    let (meta, found) = {
        let _guard = lock.lock().expect("snapshot write lock");
        let Some(meta) = read_meta(db)? else { return Ok(None) };
        let path = snapshot_path(dir, &meta);
        let legacy_path = path.with_extension("json");
        let opened = match std::fs::File::open(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                std::fs::File::open(&legacy_path).map(|file| Found::File(file, legacy_path, true))
            }
            opened => opened.map(|file| Found::File(file, path.clone(), false)),
        };
        match opened {
            Ok(found) => (meta, found),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let cf = db.cf_handle(CF_SNAPSHOT).expect("column family created at open");
                let legacy = db.get_cf(cf, KEY_SNAPSHOT_DATA).map_err(|e| snapshot_error(Some(&meta), "reading", e))?;
                let legacy = legacy.ok_or_else(|| {
                    snapshot_error(Some(&meta), "reading", format!("snapshot file {} missing", path.display()))
                })?;
                (meta, Found::RocksDb(legacy))
            }
            Err(error) => {
                let error = format!("snapshot file {}: {error}", path.display());
                return Err(snapshot_error(Some(&meta), "reading", error));
            }
        }
    };
    let stored = match found {
        Found::File(mut file, path, legacy) => {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut file, &mut data).map_err(|e| {
                snapshot_error(Some(&meta), "reading", format!("snapshot file {}: {e}", path.display()))
            })?;
            StoredSnapshot { meta, data, source: format!("snapshot file {}", path.display()), legacy }
        }
        Found::RocksDb(data) => {
            StoredSnapshot { meta, data, source: "the snapshot kept in RocksDB (snapshot/data)".into(), legacy: true }
        }
    };
    Ok(Some(stored))
}

/// Removes temporaries a crash left in the snapshots directory (at open, before any writer).
fn remove_temporaries(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.path().extension().is_some_and(|e| e == "tmp") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Makes the snapshot `meta` current, unless a newer one already is: `write` fills a temporary
/// file (unique to this call, without the lock: encoding a large state takes seconds), which is
/// fsynced; then, under the lock, it is renamed to the snapshot's name, the metadata is written
/// with `sync`, and the other snapshot files are removed; `before_commit` runs under the lock
/// just before the rename (an install resets the history there). Returns the file's size (0 when a
/// newer snapshot was current and this one was dropped).
fn commit_snapshot(
    db: &DB,
    lock: &std::sync::Mutex<()>,
    dir: &Path,
    meta: &StoredMeta,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
    before_commit: impl FnOnce() -> io::Result<()>,
) -> io::Result<u64> {
    static TEMPORARIES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let error = |e: std::io::Error| snapshot_error(Some(meta), "writing", e);
    let path = snapshot_path(dir, meta);
    let temporary = path.with_extension(format!("{}.tmp", TEMPORARIES.fetch_add(1, Ordering::Relaxed)));
    let written = (|| {
        let mut writer = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&temporary)?);
        write(&mut writer)?;
        writer.flush()?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        file.metadata().map(|m| m.len())
    })();
    let bytes = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(error(e));
        }
    };
    let _guard = lock.lock().expect("snapshot write lock");
    if read_meta(db)?.is_some_and(|current| current.last_log_id > meta.last_log_id) {
        let _ = std::fs::remove_file(&temporary);
        return Ok(0);
    }
    before_commit()?;
    (|| {
        std::fs::rename(&temporary, &path)?;
        super::sync_dir(dir)
    })()
    .map_err(error)?;
    let cf = db.cf_handle(CF_SNAPSHOT).expect("column family created at open");
    let encoded = serde_json::to_vec(meta).map_err(|e| snapshot_error(Some(meta), "writing", e))?;
    let mut batch = WriteBatch::default();
    batch.put_cf(cf, KEY_SNAPSHOT_META, encoded);
    batch.delete_cf(cf, KEY_SNAPSHOT_DATA);
    let mut options = WriteOptions::default();
    options.set_sync(true);
    db.write_opt(batch, &options).map_err(|e| snapshot_error(Some(meta), "writing", e))?;
    // Older snapshots: nothing refers to them any more. Temporaries may be another writer's.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let old = entry.path();
            if old != path && old.extension().is_some_and(|e| e == "snap" || e == "json") {
                if let Err(error) = std::fs::remove_file(&old) {
                    tracing::warn!(%error, file = %old.display(), "removing an old snapshot file");
                }
            }
        }
    }
    Ok(bytes)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let meta = StoredMeta::new(self.body.last_applied, self.body.last_membership.clone());
        let body = &self.body;
        let history = &self.history;
        let bytes = commit_snapshot(
            &self.db,
            &self.snapshot_write,
            &self.snapshots,
            &meta,
            |writer| write_snapshot(writer, body),
            // The log up to the snapshot may be purged once it commits: the history of those
            // entries must be written first (the synced metadata write makes it durable).
            || history.flush().map_err(|e| snapshot_error(Some(&meta), "writing", e)),
        )?;
        let elapsed = self.started.elapsed();
        metrics::histogram!("collective_snapshot_build_seconds").record(elapsed.as_secs_f64());
        self.shared.snapshots.build_ms.store(elapsed.as_millis() as u64, Ordering::Relaxed);
        if bytes > 0 {
            metrics::gauge!("collective_snapshot_bytes").set(bytes as f64);
            self.shared.snapshots.bytes.store(bytes, Ordering::Relaxed);
        }
        // openraft keeps only the metadata of a built snapshot (`core/sm/worker.rs`); whoever
        // needs the bytes (a follower's transfer) reads them through `get_current_snapshot`. So
        // the encoded state is not read back into memory here.
        Ok(Snapshot { meta: meta.raft(), snapshot: Cursor::new(Vec::new()) })
    }
}

impl StateMachineStore {
    /// Applies one run of entries under one hold of the state lock and publishes their events;
    /// returns the responders to answer with their results, and whether the history must be
    /// flushed.
    fn apply_run(&mut self, run: Vec<EntryResponder<TypeConfig>>) -> io::Result<(Vec<Answer>, bool)> {
        let mut answers = Vec::new();
        let mut published = Vec::new();
        let mut flush_history = false;
        let mut state = self.shared.state.write().expect("state lock");
        for (entry, responder) in run {
            self.last_applied = Some(entry.log_id);
            // Only the member that proposed the entry answers its writes (openraft gives it the
            // responders); elsewhere each command's events go straight to the watch hub.
            let answering = responder.is_some();
            let outcomes = match entry.payload {
                EntryPayload::Blank => vec![],
                EntryPayload::Membership(membership) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    vec![]
                }
                EntryPayload::Normal(batch) => {
                    let entry_start = published.len();
                    let mut outcomes = Vec::with_capacity(if answering { batch.proposals.len() } else { 0 });
                    // The revision after each command: its last event's, or the one before it.
                    let mut revision = state.revision;
                    // Counted per entry: a labelled counter costs a registry lookup.
                    let mut applied_counts: BTreeMap<(&'static str, &'static str), u64> = BTreeMap::new();
                    for (proposal, outcome) in batch.proposals.iter().zip(state.apply_batch(&batch)) {
                        let result = if outcome.is_ok() { "ok" } else { "rejected" };
                        *applied_counts.entry((proposal.command.kind(), result)).or_default() += 1;
                        match outcome {
                            Ok(events) if answering => {
                                revision = events.last().map(|e| e.revision).unwrap_or(revision);
                                published.extend(events.iter().cloned());
                                outcomes.push(Ok(Applied { revision, events }));
                            }
                            // Copying the events into an answer no one reads, then dropping
                            // it, was 9 % of a follower's applying (perf, 1,000 streamed clients).
                            Ok(events) => published.extend(events),
                            Err(rejection) if answering => outcomes.push(Err(rejection)),
                            Err(_) => {}
                        }
                    }
                    for ((command, outcome), count) in applied_counts {
                        metrics::counter!("collective_commands_applied_total", "command" => command, "outcome" => outcome).increment(count);
                    }
                    // One entry shares one time: its versions are exact at that time.
                    let entry_events = &published[entry_start..];
                    flush_history |= self.history.record(&state, entry_events).map_err(history_error)?;
                    outcomes
                }
            };
            if let Some(responder) = responder {
                answers.push((responder, ApplyResult { outcomes }));
            }
            self.shared.check_invariants(&state);
        }
        self.shared.count_auth_failures(&published);
        // Published under the state lock: a reader that saw revision R never gets a watch
        // "from now" that starts at or below R.
        self.shared.publish(published);
        Ok((answers, flush_history))
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<S>(&mut self, entries: S) -> io::Result<()>
    where
        S: futures::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + openraft::OptionalSend,
    {
        let started = std::time::Instant::now();
        let mut entries = entries.ready_chunks(APPLY_RUN_MAX);
        let mut answers = Vec::new();
        let mut flush_history = false;
        let mut applied = 0;
        while let Some(run) = entries.next().await {
            let run = run.into_iter().collect::<io::Result<Vec<_>>>()?;
            applied += run.len();
            let (run_answers, flush) = self.apply_run(run)?;
            answers.extend(run_answers);
            flush_history |= flush;
        }
        if flush_history {
            self.history.flush().map_err(history_error)?;
        }
        // Answered once the history holds what the entries changed.
        for (responder, result) in answers {
            responder.send(result);
        }
        metrics::counter!("collective_proposals_applied_total").increment(applied as u64);
        metrics::histogram!("collective_apply_duration_seconds").record(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // Called between applies, so the copy matches `last_applied` exactly.
        let started = std::time::Instant::now();
        let state = self.shared.state.read().expect("state lock").clone();
        SnapshotBuilder {
            db: self.db.clone(),
            snapshots: self.snapshots.clone(),
            body: SnapshotBody {
                last_applied: self.last_applied,
                last_membership: self.last_membership.clone(),
                state,
            },
            snapshot_write: self.snapshot_write.clone(),
            shared: self.shared.clone(),
            history: self.history.clone(),
            started,
        }
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: SnapshotData) -> io::Result<()> {
        let started = std::time::Instant::now();
        let meta = StoredMeta::new(meta.last_log_id, meta.last_membership.clone());
        let data = snapshot.into_inner();
        // Checked before anything is written: a snapshot damaged on the way (or on the leader's
        // disk) is refused, never installed.
        let source = format!("the snapshot {} received from the leader", meta.snapshot_id);
        let body =
            decode_snapshot(&data, &source, false).map_err(|reason| snapshot_error(Some(&meta), "reading", reason))?;
        // The history is reset just before the commit: the synced metadata write makes it
        // durable through the shared WAL, so a crash never leaves a restored snapshot without its
        // history reset.
        let history = &self.history;
        let bytes = commit_snapshot(
            &self.db,
            &self.snapshot_write,
            &self.snapshots,
            &meta,
            |writer| writer.write_all(&data),
            || history.reset_to(&body.state).map_err(|e| snapshot_error(Some(&meta), "writing", e)),
        )?;
        drop(data);
        self.restore(body);
        let elapsed = started.elapsed();
        metrics::histogram!("collective_snapshot_install_seconds").record(elapsed.as_secs_f64());
        self.shared.snapshots.install_ms.store(elapsed.as_millis() as u64, Ordering::Relaxed);
        if bytes > 0 {
            metrics::gauge!("collective_snapshot_bytes").set(bytes as f64);
            self.shared.snapshots.bytes.store(bytes, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let Some(stored) = read_stored(&self.db, &self.snapshot_write, &self.snapshots)? else { return Ok(None) };
        // Checked before it is sent: a damaged file never reaches a follower. A snapshot of an
        // older build (no checksum) is sent in the current format, so followers can check it.
        stored.verify().map_err(|reason| snapshot_error(Some(&stored.meta), "reading", reason))?;
        let data = if stored.legacy {
            let body = stored.decode().map_err(|reason| snapshot_error(Some(&stored.meta), "reading", reason))?;
            let mut data = Vec::new();
            write_snapshot(&mut data, &body).map_err(|e| snapshot_error(Some(&stored.meta), "reading", e))?;
            data
        } else {
            stored.data
        };
        Ok(Some(Snapshot { meta: stored.meta.raft(), snapshot: Cursor::new(data) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A data directory from before snapshot files keeps the encoded snapshot in RocksDB under
    /// `data`: it still loads, and the next snapshot moves to a file and drops the old bytes. A
    /// temporary left by a build killed half-way is removed when the store opens.
    #[tokio::test]
    async fn a_snapshot_an_older_build_kept_in_rocksdb_loads_and_the_next_one_is_a_file() {
        let dir = tempfile::TempDir::new().unwrap();
        let mut state = State::new();
        state.revision = 42;
        {
            let shared = Arc::new(Shared::new(16));
            let (_log, mut store, _history) =
                crate::store::open(dir.path(), shared.clone(), &crate::environment::Environment::system())
                    .await
                    .unwrap();
            shared.reset(state);
            let snapshot = store.get_snapshot_builder().await.build_snapshot().await.unwrap();
            // As an older build stored it: the bytes under `data`, no file.
            let meta = StoredMeta::new(snapshot.meta.last_log_id, snapshot.meta.last_membership.clone());
            let path = snapshot_path(&store.snapshots, &meta);
            let file = std::fs::read(&path).unwrap();
            // Without the header and checksum, as older builds wrote it.
            let bytes = verified_body(&file, "test", false).unwrap().to_vec();
            std::fs::remove_file(&path).unwrap();
            let cf = store.db.cf_handle(CF_SNAPSHOT).unwrap();
            store.db.put_cf(cf, KEY_SNAPSHOT_DATA, &bytes).unwrap();
            // And a build was killed half-way through its temporary.
            std::fs::write(store.snapshots.join("1-9.3.tmp"), &bytes[..bytes.len() / 2]).unwrap();
        }
        let shared = Arc::new(Shared::new(16));
        let (_log, mut store, _history) =
            crate::store::open(dir.path(), shared.clone(), &crate::environment::Environment::system()).await.unwrap();
        assert_eq!(shared.state.read().unwrap().revision, 42, "the snapshot under `data` was not loaded");
        assert!(!store.snapshots.join("1-9.3.tmp").exists(), "a crashed build's temporary was left at open");
        let current = store.get_current_snapshot().await.unwrap().expect("a current snapshot");
        assert!(!current.snapshot.get_ref().is_empty(), "the current snapshot has no bytes");

        store.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let cf = store.db.cf_handle(CF_SNAPSHOT).unwrap();
        assert!(store.db.get_cf(cf, KEY_SNAPSHOT_DATA).unwrap().is_none(), "the old bytes stayed in RocksDB");
        let files: Vec<_> = std::fs::read_dir(&store.snapshots).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        assert!(files[0].extension().is_some_and(|e| e == "snap"), "{files:?}");
        let body = decode_snapshot(&std::fs::read(&files[0]).unwrap(), "test", false).unwrap();
        assert_eq!(body.state.revision, 42, "{files:?}");
    }
}
