//! `HistoryStore`: the presence history in RocksDB, indexed by user and time, bounded by age and
//! count. Written by the state machine as it applies.
//!
//! Writes are gathered ([`HISTORY_PENDING_MAX`] versions) and written as one sorted batch.
//! Versions are keyed by user, so the versions of one log entry land all over the memtable's
//! skip list, and inserting them one entry at a time was a tenth of a loaded member's CPU; the
//! versions of a hundred entries and more land densely, and the skip list reuses its search from
//! one key to the next. Every question flushes first, so answers include everything applied.
//!
//! Durability: written without sync. A snapshot flushes the gathered versions before its synced
//! metadata write, which makes them durable through RocksDB's shared WAL; entries after the last
//! snapshot are re-applied on restart, rewriting the same keys. So a crash loses nothing.
//!
//! Key layout in column family `history`:
//! - `u/<user key>\0<at_ms BE><revision BE>` → `PresenceVersion` (`crate::codec`; JSON from
//!   earlier builds still reads)
//! - `m/oldest_ms` → the earliest time this node answers for (BE u64)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use collective_statemachine::history::{versions, PresenceVersion};
use collective_statemachine::{EventRecord, State};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::codec;

/// Column family of the history.
pub const CF_HISTORY: &str = "history";
const KEY_OLDEST: &[u8] = b"m/oldest_ms";
const USER_PREFIX: &[u8] = b"u/";
/// The first key after every `u/…` key ('0' follows '/').
const USER_PREFIX_END: &[u8] = b"u0";
/// Most versions one `available` or `durations` answer reads.
pub const HISTORY_SCAN_VERSIONS_MAX: usize = 5_000_000;
/// Versions gathered before they are written (about 100 bytes each).
pub const HISTORY_PENDING_MAX: usize = 32_768;
/// Room for one gathered version (key and value) that a flush keeps for the next gathering.
const PENDING_VERSION_BYTES: usize = 128;

/// A stored version as builds before `overdue` wrote it: the same fields without the last.
#[derive(serde::Deserialize)]
struct VersionBeforeOverdue {
    username: String,
    status_key: String,
    status_group: collective_statemachine::StatusGroup,
    logged_on_site: Option<collective_statemachine::site::SiteId>,
    home_site: collective_statemachine::site::SiteId,
    on_phone: bool,
    workgroups: collective_statemachine::small::VecSet<String>,
    deleted: bool,
    #[serde(default)]
    since_ms: u64,
}

/// Decodes a stored version. Postcard lays fields out by position and `overdue` came last, so
/// a version stored before it ends one field early: it fails to decode as the current layout
/// (the bytes end where `overdue` would be) and reads as the earlier one, not overdue.
pub(crate) fn decode_version(bytes: &[u8]) -> Result<PresenceVersion, codec::CodecError> {
    match codec::decode::<PresenceVersion>(bytes) {
        Ok(version) => Ok(version),
        Err(error) => match codec::decode::<VersionBeforeOverdue>(bytes) {
            Ok(old) => Ok(PresenceVersion {
                username: old.username,
                status_key: old.status_key,
                status_group: old.status_group,
                logged_on_site: old.logged_on_site,
                home_site: old.home_site,
                on_phone: old.on_phone,
                workgroups: old.workgroups,
                deleted: old.deleted,
                since_ms: old.since_ms,
                overdue: false,
            }),
            Err(_) => Err(error),
        },
    }
}

/// Why a history question has no answer.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The time asked about is before what this node retains.
    #[error("{asked_ms} ms is before the retained history, which starts at {oldest_ms} ms")]
    Compacted {
        /// The time asked about.
        asked_ms: u64,
        /// The earliest time this node answers for.
        oldest_ms: u64,
    },
    /// RocksDB or decoding failed.
    #[error("history storage: {0}")]
    Storage(String),
}

fn storage(error: impl std::fmt::Display) -> HistoryError {
    HistoryError::Storage(error.to_string())
}

/// Encoded versions not yet written, keys and values side by side in one buffer: gathering a
/// version allocates nothing (it took a copy of each of its strings and two buffers).
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Where each version is in `bytes`: its start, then the lengths of its key and its value.
    spans: Vec<(usize, usize, usize)>,
}

impl Pending {
    /// Appends the version of `user_key` at (`at_ms`, `revision`).
    fn push(
        &mut self,
        user_key: &str,
        at_ms: u64,
        revision: u64,
        version: &impl serde::Serialize,
    ) -> Result<(), HistoryError> {
        let start = self.bytes.len();
        write_version_key(&mut self.bytes, user_key, at_ms, revision);
        let key_len = self.bytes.len() - start;
        if let Err(error) = codec::encode_into(version, &mut self.bytes) {
            self.bytes.truncate(start);
            return Err(storage(error));
        }
        self.spans.push((start, key_len, self.bytes.len() - start - key_len));
        Ok(())
    }

    fn key(&self, &(start, key_len, _): &(usize, usize, usize)) -> &[u8] {
        &self.bytes[start..start + key_len]
    }

    fn value(&self, &(start, key_len, value_len): &(usize, usize, usize)) -> &[u8] {
        &self.bytes[start + key_len..start + key_len + value_len]
    }

    fn len(&self) -> usize {
        self.spans.len()
    }

    /// An empty one with room for as many versions as this one holds, up to a full gathering of
    /// ordinary versions: one entry that touched every user (a site's id changed) must not make
    /// every later flush allocate that much again.
    fn with_room_of(&self) -> Pending {
        Pending {
            bytes: Vec::with_capacity(self.bytes.capacity().min(HISTORY_PENDING_MAX * PENDING_VERSION_BYTES)),
            spans: Vec::with_capacity(self.spans.capacity().min(HISTORY_PENDING_MAX)),
        }
    }

    /// Drops the versions after the first `count`.
    fn truncate(&mut self, count: usize) {
        if let Some(&(start, _, _)) = self.spans.get(count) {
            self.bytes.truncate(start);
            self.spans.truncate(count);
        }
    }

    /// Takes `other`'s versions in after these.
    fn append(&mut self, other: Pending) {
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.spans
            .extend(other.spans.into_iter().map(|(start, key_len, value_len)| (start + offset, key_len, value_len)));
    }
}

fn user_prefix(user_key: &str) -> Vec<u8> {
    let mut key = USER_PREFIX.to_vec();
    key.extend_from_slice(user_key.as_bytes());
    key.push(0);
    key
}

fn version_key(user_key: &str, at_ms: u64, revision: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(USER_PREFIX.len() + user_key.len() + 17);
    write_version_key(&mut key, user_key, at_ms, revision);
    key
}

fn write_version_key(out: &mut Vec<u8>, user_key: &str, at_ms: u64, revision: u64) {
    out.extend_from_slice(USER_PREFIX);
    out.extend_from_slice(user_key.as_bytes());
    out.push(0);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&revision.to_be_bytes());
}

/// Steps a few versions before seeking: a seek costs about ten steps, and most users keep few
/// versions.
const PRUNE_STEPS_BEFORE_SEEK: usize = 8;

/// Moves `versions` from one of a user's versions to the first key after the user's last
/// (`last_of_user`, from `last_version_key`).
fn skip_user(versions: &mut rocksdb::DBRawIterator<'_>, last_of_user: &[u8]) {
    for _ in 0..PRUNE_STEPS_BEFORE_SEEK {
        versions.next();
        if versions.key().is_none_or(|key| key > last_of_user) {
            return;
        }
    }
    versions.seek(last_of_user);
    if versions.key() == Some(last_of_user) {
        versions.next();
    }
}

/// The greatest key a version of `user` (a user key as stored) can have.
fn last_version_key(user: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(USER_PREFIX.len() + user.len() + 17);
    key.extend_from_slice(USER_PREFIX);
    key.extend_from_slice(user);
    key.push(0);
    key.extend_from_slice(&[0xff; 16]);
    key
}

/// Splits a version key into (user key, at_ms).
fn parse_key(key: &[u8]) -> Option<(&[u8], u64)> {
    let rest = key.strip_prefix(USER_PREFIX)?;
    let split = rest.len().checked_sub(17)?;
    let (user, tail) = rest.split_at(split);
    let at_ms = u64::from_be_bytes(tail[1..9].try_into().ok()?);
    Some((user, at_ms))
}

/// The history of one node.
pub struct HistoryStore {
    db: Arc<DB>,
    /// Held by `prune` and `reset_to`, which both move `oldest_ms`: neither may undo the other.
    /// It holds the prune floor: every stored version older than it is a user's baseline, which
    /// a prune up to the floor would keep (0 when not known: after an open or a reset).
    oldest_lock: Mutex<u64>,
    /// The earliest time of a version gathered since the last prune began (`u64::MAX`: none).
    gathered_since_prune_ms: AtomicU64,
    /// Encoded versions not yet written.
    pending: Mutex<Pending>,
    /// Held while pending versions are written and by `reset_to`, so a flush that took versions
    /// before a reset cannot write them after it.
    write_lock: Mutex<()>,
}

impl HistoryStore {
    /// The history over an open database (which has the `history` column family).
    pub fn new(db: Arc<DB>) -> Arc<HistoryStore> {
        Arc::new(HistoryStore {
            db,
            oldest_lock: Mutex::new(0),
            gathered_since_prune_ms: AtomicU64::new(u64::MAX),
            pending: Mutex::new(Pending::default()),
            write_lock: Mutex::new(()),
        })
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().expect("history pending lock")
    }

    /// Writes the gathered versions, in key order, in one batch (not synced: see the module).
    pub fn flush(&self) -> Result<(), HistoryError> {
        let _write = self.write_lock.lock().expect("history write lock");
        let mut versions = {
            let mut pending = self.pending();
            if pending.len() == 0 {
                return Ok(());
            }
            // The next versions gather in buffers as large (up to a full gathering), so they do
            // not grow them again.
            let room = pending.with_room_of();
            std::mem::replace(&mut *pending, room)
        };
        let mut spans = std::mem::take(&mut versions.spans);
        spans.sort_unstable_by(|a, b| versions.key(a).cmp(versions.key(b)));
        let mut batch = WriteBatch::default();
        for span in &spans {
            batch.put_cf(self.cf(), versions.key(span), versions.value(span));
        }
        versions.spans = spans;
        if let Err(error) = self.db.write(batch) {
            // Kept for the next flush: a snapshot that commits later would otherwise let the log
            // these versions came from be purged without them.
            let mut pending = self.pending();
            let newer = std::mem::replace(&mut *pending, versions);
            pending.append(newer);
            return Err(storage(error));
        }
        Ok(())
    }

    fn cf(&self) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(CF_HISTORY).expect("column family created at open")
    }

    /// The earliest time this node answers for (0: since the collective began).
    pub fn oldest_ms(&self) -> Result<u64, HistoryError> {
        let bytes = self.db.get_cf(self.cf(), KEY_OLDEST).map_err(storage)?;
        Ok(bytes.and_then(|b| b.as_slice().try_into().ok()).map(u64::from_be_bytes).unwrap_or(0))
    }

    /// Records the versions of the users `records` touched, as `state` has them after the records.
    /// Returns whether enough are gathered that the caller should `flush` (apply calls it after
    /// releasing the state lock, so readers do not wait for the write).
    pub fn record(&self, state: &State, records: &[EventRecord]) -> Result<bool, HistoryError> {
        let versions = versions(state, records);
        if let Some(earliest) = versions.iter().map(|(_, at_ms, _, _)| *at_ms).min() {
            self.gathered_since_prune_ms.fetch_min(earliest, Ordering::Relaxed);
        }
        let mut pending = self.pending();
        let before = pending.len();
        for (user_key, at_ms, revision, version) in &versions {
            if let Err(error) = pending.push(user_key, *at_ms, *revision, version) {
                // All of the entry's versions or none.
                pending.truncate(before);
                return Err(error);
            }
        }
        Ok(pending.len() >= HISTORY_PENDING_MAX)
    }

    /// After a snapshot replaced the state wholesale: this node knows nothing before the
    /// snapshot's time, so every user gets a baseline version there and answers start there.
    pub fn reset_to(&self, state: &State) -> Result<(), HistoryError> {
        let mut floor = self.oldest_lock.lock().expect("history lock");
        *floor = 0;
        let _write = self.write_lock.lock().expect("history write lock");
        // Versions of the state the snapshot replaces: the reset below supersedes them.
        *self.pending() = Pending::default();
        let mut batch = WriteBatch::default();
        // Nothing before the snapshot is answered any more, and users deleted while this node
        // was behind must not linger: start the per-user index afresh.
        batch.delete_range_cf(self.cf(), USER_PREFIX, USER_PREFIX_END);
        for user_key in state.users.keys() {
            if let Some(version) = PresenceVersion::of(state, user_key) {
                let value = codec::encode(&version).map_err(storage)?;
                batch.put_cf(self.cf(), version_key(user_key, state.last_at_ms, state.revision), value);
            }
        }
        let oldest = self.oldest_ms()?.max(state.last_at_ms);
        batch.put_cf(self.cf(), KEY_OLDEST, oldest.to_be_bytes());
        self.db.write(batch).map_err(storage)
    }

    /// Every question starts here: it flushes, so the answer includes every applied change.
    fn check_retained(&self, at_ms: u64) -> Result<(), HistoryError> {
        self.flush()?;
        let oldest_ms = self.oldest_ms()?;
        if at_ms < oldest_ms {
            return Err(HistoryError::Compacted { asked_ms: at_ms, oldest_ms });
        }
        Ok(())
    }

    /// A user's presence at `at_ms`: `None` if the user did not exist then.
    pub fn presence_at(&self, user_key: &str, at_ms: u64) -> Result<Option<(u64, PresenceVersion)>, HistoryError> {
        self.check_retained(at_ms)?;
        let prefix = user_prefix(user_key);
        let seek = version_key(user_key, at_ms, u64::MAX);
        let mut iter = self.db.iterator_cf(self.cf(), IteratorMode::From(&seek, Direction::Reverse));
        match iter.next() {
            Some(item) => {
                let (key, value) = item.map_err(storage)?;
                if !key.starts_with(&prefix) {
                    return Ok(None);
                }
                let version = decode_version(&value).map_err(storage)?;
                Ok((!version.deleted).then_some((version.since_ms, version)))
            }
            None => Ok(None),
        }
    }

    /// Every user's version at `at_ms`, for which `keep` holds.
    pub fn users_at(
        &self,
        at_ms: u64,
        keep: impl Fn(&PresenceVersion) -> bool,
    ) -> Result<Vec<PresenceVersion>, HistoryError> {
        self.check_retained(at_ms)?;
        let mut found = Vec::new();
        let mut current: Option<(Vec<u8>, Option<PresenceVersion>)> = None;
        let flush = |current: Option<(Vec<u8>, Option<PresenceVersion>)>, found: &mut Vec<PresenceVersion>| {
            if let Some((_, Some(version))) = current {
                if !version.deleted && keep(&version) {
                    found.push(version);
                }
            }
        };
        let iter = self.db.iterator_cf(self.cf(), IteratorMode::From(USER_PREFIX, Direction::Forward));
        for (scanned, item) in iter.enumerate() {
            if scanned >= HISTORY_SCAN_VERSIONS_MAX {
                return Err(HistoryError::Storage(format!("more than {HISTORY_SCAN_VERSIONS_MAX} versions to scan")));
            }
            let (key, value) = item.map_err(storage)?;
            let Some((user, version_at)) = parse_key(&key) else { break };
            if current.as_ref().is_none_or(|(u, _)| u.as_slice() != user) {
                flush(current.take(), &mut found);
                current = Some((user.to_vec(), None));
            }
            if version_at <= at_ms {
                let version = decode_version(&value).map_err(storage)?;
                if let Some((_, slot)) = current.as_mut() {
                    *slot = Some(version);
                }
            }
        }
        flush(current.take(), &mut found);
        Ok(found)
    }

    /// Time a user spent in each status within [`from_ms`, `to_ms`), by status key.
    pub fn durations(&self, user_key: &str, from_ms: u64, to_ms: u64) -> Result<BTreeMap<String, u64>, HistoryError> {
        self.check_retained(from_ms)?;
        let mut spans: Vec<(u64, Option<String>)> = Vec::new();
        if let Some((_, version)) = self.presence_at(user_key, from_ms)? {
            spans.push((from_ms, Some(version.status_key)));
        }
        let prefix = user_prefix(user_key);
        let start = version_key(user_key, from_ms + 1, 0);
        for item in self.db.iterator_cf(self.cf(), IteratorMode::From(&start, Direction::Forward)) {
            let (key, value) = item.map_err(storage)?;
            if !key.starts_with(&prefix) {
                break;
            }
            let Some((_, at_ms)) = parse_key(&key) else { break };
            if at_ms >= to_ms {
                break;
            }
            let version = decode_version(&value).map_err(storage)?;
            spans.push((at_ms, (!version.deleted).then_some(version.status_key)));
        }
        let mut totals = BTreeMap::new();
        for (index, (start, status)) in spans.iter().enumerate() {
            let end = spans.get(index + 1).map(|(at, _)| *at).unwrap_or(to_ms);
            if let Some(status) = status {
                *totals.entry(status.clone()).or_insert(0) += end.saturating_sub(*start);
            }
        }
        totals.retain(|_, ms| *ms > 0);
        Ok(totals)
    }

    /// Forgets what is older than `cutoff_ms`, keeping per user the last version before it (the
    /// baseline later answers need). Returns the number of versions deleted.
    ///
    /// It visits each user once and reads only the versions before the cutoff: within a user,
    /// versions are in time order, so at the first one from the cutoff on it skips to the next
    /// user (`skip_user`); reading every version, as it once did, read a node's whole history
    /// every minute. When no version but the baselines is older than the cutoff (the floor),
    /// nothing can be deleted and it only moves `oldest_ms`.
    pub fn prune(&self, cutoff_ms: u64) -> Result<u64, HistoryError> {
        let mut floor = self.oldest_lock.lock().expect("history lock");
        // Versions gathered from here on count towards the next floor; any flushed below are
        // also seen by this pass, which only makes the floor lower (safe).
        let gathered = self.gathered_since_prune_ms.swap(u64::MAX, Ordering::Relaxed);
        *floor = (*floor).min(gathered);
        self.flush()?;
        if cutoff_ms <= self.oldest_ms()? {
            return Ok(0);
        }
        let mut batch = WriteBatch::default();
        if cutoff_ms <= *floor {
            batch.put_cf(self.cf(), KEY_OLDEST, cutoff_ms.to_be_bytes());
            self.db.write(batch).map_err(storage)?;
            return Ok(0);
        }
        let mut deleted = 0u64;
        // The earliest version kept that is not a baseline: the next floor.
        let mut next_floor = u64::MAX;
        // The last version seen of the current user before the cutoff: superseded by a later
        // one of the same user, or dropped when it is a tombstone (nothing to answer from it).
        let mut previous: Option<(Vec<u8>, Vec<u8>, bool)> = None;
        let mut settle = |previous: Option<(Vec<u8>, Vec<u8>, bool)>, superseded: bool, batch: &mut WriteBatch| {
            if let Some((_, key, tombstone)) = previous {
                if superseded || tombstone {
                    batch.delete_cf(self.cf(), key);
                    deleted += 1;
                }
            }
        };
        let mut versions = self.db.raw_iterator_cf(self.cf());
        versions.seek(USER_PREFIX);
        while let Some(key) = versions.key() {
            let Some((user, at_ms)) = parse_key(key) else { break };
            let same_user = previous.as_ref().is_some_and(|(u, _, _)| u.as_slice() == user);
            if at_ms >= cutoff_ms {
                // This user's versions from here on are all kept; the one before (if any) stays
                // as the baseline.
                next_floor = next_floor.min(at_ms);
                let ended = previous.take();
                if !same_user {
                    settle(ended, false, &mut batch);
                }
                let last_of_user = last_version_key(user);
                skip_user(&mut versions, &last_of_user);
                continue;
            }
            let tombstone = versions.value().and_then(|value| decode_version(value).ok()).is_some_and(|v| v.deleted);
            let current = (user.to_vec(), key.to_vec(), tombstone);
            settle(previous.replace(current), same_user, &mut batch);
            versions.next();
        }
        versions.status().map_err(storage)?;
        settle(previous.take(), false, &mut batch);
        batch.put_cf(self.cf(), KEY_OLDEST, cutoff_ms.to_be_bytes());
        self.db.write(batch).map_err(storage)?;
        *floor = next_floor;
        Ok(deleted)
    }

    /// Forgets the gathered versions without writing them, and says how many: what a crash
    /// does. For tests of the durability argument in the module documentation.
    #[doc(hidden)]
    pub fn discard_gathered(&self) -> usize {
        let mut pending = self.pending();
        let discarded = pending.len();
        *pending = Pending::default();
        discarded
    }

    /// Approximate number of stored versions (written or gathered).
    pub fn approximate_versions(&self) -> u64 {
        let written = self.db.property_int_value_cf(self.cf(), "rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0);
        written + self.pending().len() as u64
    }
}

impl Drop for HistoryStore {
    /// A stopping node writes what it gathered, so a restart has less to re-apply (a crash
    /// loses nothing either: see the module).
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "writing gathered history versions at shutdown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(versions: &[(&str, u64)]) -> Pending {
        let mut pending = Pending::default();
        for (user, revision) in versions {
            pending.push(user, 1_000, *revision, &format!("{user}@{revision}")).unwrap();
        }
        pending
    }

    /// (key, value) pairs in gathering order.
    fn pairs(pending: &Pending) -> Vec<(Vec<u8>, String)> {
        pending
            .spans
            .iter()
            .map(|span| (pending.key(span).to_vec(), codec::decode::<String>(pending.value(span)).unwrap()))
            .collect()
    }

    /// The arena hands back each version's key and value as written, after truncating (an
    /// entry whose encoding failed) and after a failed flush puts its versions back in front
    /// of those gathered meanwhile.
    #[test]
    fn gathered_versions_keep_their_keys_and_values() {
        let mut older = pending(&[("bo", 1), ("al", 2), ("cy", 3)]);
        assert_eq!(
            pairs(&older),
            vec![
                (version_key("bo", 1_000, 1), "bo@1".to_string()),
                (version_key("al", 1_000, 2), "al@2".to_string()),
                (version_key("cy", 1_000, 3), "cy@3".to_string()),
            ]
        );
        older.truncate(2);
        older.truncate(5);
        assert_eq!(older.len(), 2);
        let newer = pending(&[("dee", 4)]);
        older.append(newer);
        let values: Vec<String> = pairs(&older).into_iter().map(|(_, value)| value).collect();
        assert_eq!(values, ["bo@1", "al@2", "dee@4"]);
        assert_eq!(pairs(&older)[2].0, version_key("dee", 1_000, 4));
        let room = older.with_room_of();
        assert_eq!((room.len(), room.bytes.len()), (0, 0));
        assert!(room.spans.capacity() >= older.len());
    }
}
