//! The acknowledged marker: the last log index this member reported flushed and the last vote it
//! saved, kept in a small file beside RocksDB and the log files (`raft-acknowledged`), so a start
//! can check that they still hold what the member acknowledged.
//!
//! Why a file of its own: a damaged or cut log loses its newest records (in RocksDB's WAL, with
//! them the vote, the last purged id, the snapshot metadata). A record whose checksum fails
//! shows, but a log cut at a record boundary reads cleanly, and a torn tail is tolerated: only a
//! record of what was acknowledged, kept elsewhere, tells.
//!
//! The file is written (in place, one sector, not fsynced) only *after* the write it describes
//! was synced, so it never claims more than the log durably holds: a crash or a power loss can
//! only leave it behind the log, never ahead. Writing it costs a `pwrite` of 512 bytes into the
//! page cache per append, no fsync; a truncation, which moves it back, syncs it before the log
//! is truncated.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::raft_types::Vote;

/// Name of the marker file inside the data directory.
pub const MARKER_FILE: &str = "raft-acknowledged";
/// Size of the marker record: one sector, written in place with one `pwrite`.
const MARKER_BYTES: usize = 512;

/// What the member has acknowledged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledged {
    /// The last log index reported flushed to openraft (and not truncated since).
    pub last_index: Option<u64>,
    /// The last vote saved.
    pub vote: Option<Vote>,
}

/// The marker file and what it holds now.
pub struct Marker {
    path: PathBuf,
    file: std::fs::File,
    current: Mutex<Acknowledged>,
}

/// Encodes `acknowledged` as the marker record: a JSON line, the line's SHA-256 in hex, then
/// spaces up to `MARKER_BYTES`.
fn encode(acknowledged: &Acknowledged) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_string(acknowledged).map_err(std::io::Error::other)?;
    let digest = sha2::Sha256::digest(json.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let mut record = format!("{json}\n{hex}\n").into_bytes();
    if record.len() > MARKER_BYTES {
        return Err(std::io::Error::other(format!("marker record of {} bytes exceeds {MARKER_BYTES}", record.len())));
    }
    record.resize(MARKER_BYTES, b' ');
    Ok(record)
}

/// Decodes a marker record; `None` for an empty file (a new directory, or one from a build
/// before the marker).
fn decode(bytes: &[u8]) -> Result<Option<Acknowledged>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let mut lines = text.trim_end().lines();
    let (Some(json), Some(hex), None) = (lines.next(), lines.next(), lines.next()) else {
        return Err("not two lines (a JSON record and its SHA-256)".into());
    };
    let digest: String = sha2::Sha256::digest(json.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    if digest != hex {
        return Err("its SHA-256 does not match".into());
    }
    serde_json::from_str(json).map(Some).map_err(|e| e.to_string())
}

/// The last index the member in data directory `dir` acknowledged, as its marker records it
/// (none: no marker, or it cannot be read). For tests and simulations that damage a log.
pub fn acknowledged_index(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join(MARKER_FILE)).ok()?;
    decode(&bytes).ok().flatten()?.last_index
}

impl Marker {
    /// Opens (or creates) the marker of the data directory `dir` and reads what it holds.
    pub fn open(dir: &Path) -> Result<(Marker, Option<Acknowledged>), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join(MARKER_FILE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut (&file), &mut bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        let found = decode(&bytes).map_err(|reason| format!("{} is damaged: {reason}", path.display()))?;
        let current = Mutex::new(found.clone().unwrap_or_default());
        Ok((Marker { path, file, current }, found))
    }

    /// The marker's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces what the marker holds (at open, once RocksDB's content was checked against it).
    pub fn reset(&self, acknowledged: Acknowledged) -> std::io::Result<()> {
        let mut current = self.current.lock().expect("marker lock");
        *current = acknowledged;
        self.write(&current)?;
        // Once per start: the record the checks of the next start rely on reaches the disk.
        self.file.sync_data()
    }

    /// Records that entries up to `index` were synced and reported flushed.
    pub fn flushed(&self, index: u64) -> std::io::Result<()> {
        let mut current = self.current.lock().expect("marker lock");
        if current.last_index.is_some_and(|last| last >= index) {
            return Ok(());
        }
        current.last_index = Some(index);
        self.write(&current)
    }

    /// Records that entries at and after `index` are being removed, synced before the log
    /// removes them, so a crash or a power loss in between leaves the marker behind the log,
    /// never ahead (truncations are rare: one `fdatasync` each).
    pub fn truncating(&self, index: u64) -> std::io::Result<()> {
        let mut current = self.current.lock().expect("marker lock");
        if current.last_index.is_none_or(|last| last < index) {
            return Ok(());
        }
        current.last_index = index.checked_sub(1);
        self.write(&current)?;
        self.file.sync_data()
    }

    /// Records a vote that was saved with `sync`.
    pub fn voted(&self, vote: &Vote) -> std::io::Result<()> {
        let mut current = self.current.lock().expect("marker lock");
        current.vote = Some(*vote);
        self.write(&current)
    }

    fn write(&self, acknowledged: &Acknowledged) -> std::io::Result<()> {
        self.file.write_all_at(&encode(acknowledged)?, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_changed_byte_is_refused() {
        let acknowledged = Acknowledged { last_index: Some(2_044), vote: Some(Vote::new_committed(3, 2)) };
        let record = encode(&acknowledged).unwrap();
        assert_eq!(record.len(), MARKER_BYTES);
        assert_eq!(decode(&record), Ok(Some(acknowledged)));
        assert_eq!(decode(&[b' '; MARKER_BYTES]), Ok(None));
        let mut changed = record.clone();
        let at = changed.iter().position(|b| *b == b'4').unwrap();
        changed[at] = b'5';
        assert_eq!(decode(&changed), Err("its SHA-256 does not match".to_string()));
    }

    #[test]
    fn the_marker_moves_forward_on_flush_and_back_only_on_truncate() {
        let dir = tempfile::TempDir::new().unwrap();
        let (marker, found) = Marker::open(dir.path()).unwrap();
        assert_eq!(found, None);
        marker.flushed(10).unwrap();
        marker.flushed(7).unwrap();
        marker.truncating(12).unwrap();
        marker.voted(&Vote::new(2, 1)).unwrap();
        drop(marker);
        let (marker, found) = Marker::open(dir.path()).unwrap();
        assert_eq!(found, Some(Acknowledged { last_index: Some(10), vote: Some(Vote::new(2, 1)) }));
        marker.truncating(6).unwrap();
        drop(marker);
        assert_eq!(Marker::open(dir.path()).unwrap().1.unwrap().last_index, Some(5));
    }
}
