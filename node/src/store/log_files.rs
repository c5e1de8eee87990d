//! The Raft log's entries in files of their own: `raft-log/<first index>.seg` beside RocksDB,
//! each preallocated (16 MiB), records appended in place.
//!
//! Why not RocksDB: an `fdatasync` after an append to a growing file (RocksDB's WAL grows; it
//! preallocates with `FALLOC_FL_KEEP_SIZE`, which its C API cannot turn off) also writes the
//! inode, whose size changed. Into a file whose size is already set only the data is written:
//! ~0.11 ms against ~0.16 here (`collective bench disk`), and a lone write waits for one such
//! sync on the leader and one on a follower. etcd's WAL does the same (64 MiB segments).
//!
//! A record: payload length (u32 LE, never 0), CRC-32 of the index and payload (u32 LE), the
//! index (u64 LE), the payload (an entry in `crate::codec`). A length of 0 is the end: the rest
//! of a segment is zeros, preallocated and never written.
//!
//! Recovery reads each segment up to its first record that is cut short, fails its CRC or does
//! not carry the next index: a torn tail (a write whose sync never returned). Whether anything
//! acknowledged was lost there is for the marker to tell (`marker.rs`, `integrity.rs`). Segments
//! must follow one another without a gap. No stale record can be read back as the log's: a
//! truncation zeroes the tail it removes, and a start zeroes whatever follows the last good
//! record (a record written again with the same length could otherwise be followed by an old
//! one that still passes its CRC and carries the next index).
//!
//! Durability: `append` writes into the page cache; `sync` makes every earlier append durable
//! (`fdatasync` of the newest segment: an older segment was synced when the next began). A new
//! segment and a removed one are made durable with a sync of the directory.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Name of the directory of log files inside the data directory.
pub const LOG_DIR: &str = "raft-log";
/// Size of a segment: an entry larger than this gets a segment of its own size.
pub const SEGMENT_BYTES: u64 = 16 << 20;
/// Bytes before each record's payload.
const HEADER_BYTES: usize = 16;
/// Largest first index a segment's name may carry (far beyond any log; keeps index arithmetic
/// on a damaged or foreign name from overflowing).
const FIRST_INDEX_MAX: u64 = 1 << 62;
/// Zeros written at a time when a tail is cleared.
const ZEROS_BYTES: usize = 1 << 20;
const EXTENSION: &str = "seg";

/// One segment: entries `first..first + offsets.len()`, written up to `end`.
struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Where each entry's record starts.
    offsets: Vec<u64>,
    /// Where the next record goes.
    end: u64,
    /// The file's (preallocated) size.
    capacity: u64,
    /// What follows the last good record and is not zeros, found at open in the newest segment.
    torn: Option<std::ops::Range<u64>>,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.offsets.is_empty()).then(|| self.first + self.offsets.len() as u64 - 1)
    }
}

/// The log files of one member. All access goes through one lock; a sync holds it only to take
/// the newest file.
pub(crate) struct LogFiles {
    dir: PathBuf,
    segment_bytes: u64,
    segments: Mutex<Vec<Segment>>,
    /// Segments found wholly purged at open, removed by `finish_open`.
    stale: Mutex<Vec<PathBuf>>,
    /// The first index not purged: entries before it may stay in a segment that holds later
    /// ones, but are not read.
    readable_from: AtomicU64,
}

fn context(what: impl std::fmt::Display, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{what}: {error}"))
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends the record of entry `index` to `buffer`.
fn encode_record(buffer: &mut Vec<u8>, index: u64, payload: &[u8]) -> io::Result<()> {
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|length| *length > 0)
        .ok_or_else(|| io::Error::other(format!("log entry {index} encodes to {} bytes", payload.len())))?;
    buffer.extend_from_slice(&length.to_le_bytes());
    buffer.extend_from_slice(&checksum(index, payload).to_le_bytes());
    buffer.extend_from_slice(&index.to_le_bytes());
    buffer.extend_from_slice(payload);
    Ok(())
}

/// The record at `offset` of `bytes` if it is whole, passes its CRC and carries `index`: its
/// payload's range.
fn decode_record(bytes: &[u8], offset: usize, index: u64) -> Option<std::ops::Range<usize>> {
    let header = bytes.get(offset..offset.checked_add(HEADER_BYTES)?)?;
    let length = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let found = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let start = offset + HEADER_BYTES;
    let payload = bytes.get(start..start.checked_add(length)?)?;
    (length > 0 && found == index && checksum(index, payload) == crc).then_some(start..start + length)
}

/// `super::sync_dir`, naming the directory in its error.
fn sync_dir(dir: &Path) -> io::Result<()> {
    super::sync_dir(dir).map_err(|e| context(format!("syncing directory {}", dir.display()), e))
}

/// Writes zeros over `from..to` of `file`.
fn zero(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; ZEROS_BYTES.min((to - from) as usize)];
    let mut at = from;
    while at < to {
        let length = zeros.len().min((to - at) as usize);
        file.write_all_at(&zeros[..length], at)?;
        at += length as u64;
    }
    Ok(())
}

/// Sets `file`'s size to `bytes` with its blocks allocated (`fallocate`), so that a sync after a
/// write into it need not write the inode; writes zeros where the filesystem cannot.
fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::OPNOTSUPP) => zero(file, 0, bytes),
        Err(error) => Err(error.into()),
    }
}

/// Why the log files could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// A segment ends before the next one begins: entries are missing, the log is damaged.
    Hole(String),
    /// The files cannot be used as they are (read, written, listed; a file that is not a
    /// segment): nothing says the log is damaged.
    Unusable(String),
}

impl LogFiles {
    /// Opens the log files under `dir` (created if missing) with segments of `segment_bytes`:
    /// sets aside segments wholly at or below `purged` (a purge a crash interrupted), checks
    /// that the others follow one another, and syncs them. Nothing is removed or zeroed until
    /// [`LogFiles::finish_open`] (after the marker's check: a refused directory keeps its
    /// evidence).
    pub(crate) fn open(dir: &Path, segment_bytes: u64, purged: Option<u64>) -> Result<LogFiles, OpenError> {
        let io = |what: &str, error: io::Error| OpenError::Unusable(format!("{what} {}: {error}", dir.display()));
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io("creating", e))?;
            // The directory's own entry, so a segment synced into it is not lost with it.
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(|e| io("syncing the directory above", e))?;
            }
        }
        let mut found = Vec::new();
        for item in std::fs::read_dir(dir).map_err(|e| io("listing", e))? {
            let path = item.map_err(|e| io("listing", e))?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                // A segment being created when the member stopped: it never held an entry.
                std::fs::remove_file(&path).map_err(|e| io("removing a partial segment in", e))?;
                continue;
            }
            let first = path
                .file_stem()
                .and_then(|stem| stem.to_str())
                .filter(|_| path.extension().is_some_and(|e| e == EXTENSION))
                .and_then(|stem| stem.parse::<u64>().ok())
                .filter(|first| *first <= FIRST_INDEX_MAX)
                .ok_or_else(|| {
                    OpenError::Unusable(format!("{} is not a log segment (<first index>.{EXTENSION})", path.display()))
                })?;
            found.push((first, path));
        }
        found.sort();
        let mut segments: Vec<Segment> = Vec::new();
        let mut stale = Vec::new();
        let count = found.len();
        for (position, (first, path)) in found.into_iter().enumerate() {
            let bytes =
                std::fs::read(&path).map_err(|e| OpenError::Unusable(format!("reading {}: {e}", path.display())))?;
            let mut offsets = Vec::new();
            let mut end = 0usize;
            while let Some(payload) = decode_record(&bytes, end, first + offsets.len() as u64) {
                offsets.push(end as u64);
                end = payload.end;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| OpenError::Unusable(format!("opening {}: {e}", path.display())))?;
            let newest = position + 1 == count;
            let torn = bytes[end..].iter().rposition(|byte| *byte != 0).filter(|_| newest);
            let segment = Segment {
                first,
                path,
                file: Arc::new(file),
                offsets,
                end: end as u64,
                capacity: bytes.len() as u64,
                torn: torn.map(|dirty| end as u64..(end + dirty + 1) as u64),
            };
            if purged.is_some_and(|purged| segment.last().is_none_or(|last| last <= purged) && first <= purged) {
                // Removed once the start's checks pass (a damaged segment can look purged).
                stale.push(segment.path);
                continue;
            }
            if let Some(previous) = segments.last() {
                let expected = previous.last().map_or(previous.first, |last| last + 1);
                if first != expected {
                    return Err(OpenError::Hole(format!(
                        "{} ends before entry {expected} (damaged or cut short), but {} starts at {first}",
                        previous.path.display(),
                        segment.path.display()
                    )));
                }
            }
            segments.push(segment);
        }
        // What was read is what the start will acknowledge (the marker, openraft's flushed
        // index): make it durable, as it may be only in the page cache after a process crash.
        for segment in &segments {
            segment
                .file
                .sync_data()
                .map_err(|e| OpenError::Unusable(format!("syncing {}: {e}", segment.path.display())))?;
        }
        let readable_from = AtomicU64::new(purged.map_or(0, |purged| purged + 1));
        Ok(LogFiles {
            dir: dir.to_path_buf(),
            segment_bytes,
            segments: Mutex::new(segments),
            stale: Mutex::new(stale),
            readable_from,
        })
    }

    /// Once the start's checks passed, and before anything is appended: removes the segments
    /// found wholly purged, and zeroes (and syncs) what followed the newest segment's last good
    /// record. `store::open` calls it; nothing else opens the log files.
    pub(crate) fn finish_open(&self) -> io::Result<()> {
        for path in self.stale.lock().expect("stale segments lock").drain(..) {
            std::fs::remove_file(&path).map_err(|e| context(format!("removing {}", path.display()), e))?;
        }
        for segment in self.segments().iter_mut() {
            if let Some(range) = segment.torn.take() {
                zero(&segment.file, range.start, range.end)
                    .and_then(|()| segment.file.sync_data())
                    .map_err(|e| context(format!("clearing the torn tail of {}", segment.path.display()), e))?;
            }
        }
        Ok(())
    }

    fn segments(&self) -> MutexGuard<'_, Vec<Segment>> {
        self.segments.lock().expect("log files lock")
    }

    /// The first and last index held (and not purged), if any.
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        let segments = self.segments();
        let first = segments.iter().find(|s| !s.offsets.is_empty())?.first;
        let first = first.max(self.readable_from.load(Ordering::Relaxed));
        let last = segments.iter().rev().find_map(Segment::last)?;
        (first <= last).then_some((first, last))
    }

    /// The newest segment's path, for error messages.
    pub(crate) fn newest(&self) -> String {
        let segments = self.segments();
        segments
            .last()
            .map(|s| s.path.display().to_string())
            .unwrap_or_else(|| format!("none in {}", self.dir.display()))
    }

    /// Starts a segment for entry `first` holding at least `bytes`: created under a temporary
    /// name, preallocated and synced, renamed, then the directory synced. The newest segment is
    /// synced first, so every segment but the newest is durable whole.
    fn start_segment(&self, segments: &mut Vec<Segment>, first: u64, bytes: u64) -> io::Result<()> {
        if let Some(newest) = segments.last() {
            newest.file.sync_data().map_err(|e| context(format!("syncing {}", newest.path.display()), e))?;
        }
        // An empty newest segment (started just before a crash) too small for this entry: the
        // new one takes its name.
        if segments.last().is_some_and(|newest| newest.offsets.is_empty() && newest.first == first) {
            segments.pop();
        }
        let capacity = bytes.max(self.segment_bytes);
        let path = self.dir.join(format!("{first:020}.{EXTENSION}"));
        let temporary = path.with_extension("tmp");
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&temporary)?;
        preallocate(&file, capacity)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&temporary, &path))
            .and_then(|()| sync_dir(&self.dir))
            .map_err(|e| context(format!("creating log segment {}", path.display()), e))?;
        segments.push(Segment { first, path, file: Arc::new(file), offsets: Vec::new(), end: 0, capacity, torn: None });
        Ok(())
    }

    /// Writes `entries` (index, encoded entry; consecutive) after the last entry, without a
    /// sync. The first must follow the last entry held, or the log must hold none (after a
    /// purge past its end, it may start anywhere).
    pub(crate) fn append(&self, entries: &[(u64, Vec<u8>)]) -> io::Result<()> {
        let mut segments = self.segments();
        let mut buffer = Vec::new();
        let mut pending: Vec<u64> = Vec::new();
        let last = segments.iter().rev().find_map(Segment::last);
        let mut expected = last.map(|last| last + 1).or_else(|| segments.last().map(|s| s.first));
        for (index, payload) in entries {
            if let Some(expected) = expected.filter(|expected| expected != index) {
                let message = format!("log entry {index} does not follow the last one written ({})", expected - 1);
                return Err(io::Error::other(message));
            }
            expected = Some(index + 1);
            let record_bytes = (HEADER_BYTES + payload.len()) as u64;
            let fits = segments.last().is_some_and(|s| s.end + buffer.len() as u64 + record_bytes <= s.capacity);
            if !fits {
                self.write_pending(&mut segments, &mut buffer, &mut pending)?;
                self.start_segment(&mut segments, *index, record_bytes)?;
            }
            let newest = segments.last().expect("a segment was started");
            pending.push(newest.end + buffer.len() as u64);
            encode_record(&mut buffer, *index, payload)?;
        }
        self.write_pending(&mut segments, &mut buffer, &mut pending)
    }

    /// Writes the records gathered for the newest segment.
    fn write_pending(&self, segments: &mut [Segment], buffer: &mut Vec<u8>, pending: &mut Vec<u64>) -> io::Result<()> {
        let Some(newest) = segments.last_mut().filter(|_| !buffer.is_empty()) else { return Ok(()) };
        newest
            .file
            .write_all_at(buffer, newest.end)
            .map_err(|e| context(format!("writing log segment {}", newest.path.display()), e))?;
        newest.end += buffer.len() as u64;
        newest.offsets.append(pending);
        buffer.clear();
        Ok(())
    }

    /// Makes every append before the call durable.
    pub(crate) fn sync(&self) -> io::Result<()> {
        let newest = self.segments().last().map(|s| (s.file.clone(), s.path.clone()));
        match newest {
            Some((file, path)) => file.sync_data().map_err(|e| context(format!("syncing {}", path.display()), e)),
            None => Ok(()),
        }
    }

    /// The encoded entries of `from..=to` that are held, in order (those before the first held
    /// are not there to read).
    pub(crate) fn read(&self, from: u64, to: u64) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let segments = self.segments();
        let mut entries = Vec::new();
        let mut index = segments.first().map_or(from, |first| from.max(first.first));
        index = index.max(self.readable_from.load(Ordering::Relaxed));
        for segment in segments.iter() {
            while index <= to && index >= segment.first && index < segment.first + segment.offsets.len() as u64 {
                let position = (index - segment.first) as usize;
                let offset = segment.offsets[position];
                let end = segment.offsets.get(position + 1).copied().unwrap_or(segment.end);
                let mut bytes = vec![0u8; (end - offset) as usize];
                segment
                    .file
                    .read_exact_at(&mut bytes, offset)
                    .map_err(|e| context(format!("reading log segment {}", segment.path.display()), e))?;
                let payload = decode_record(&bytes, 0, index).ok_or_else(|| {
                    io::Error::other(format!(
                        "log entry {index} in {} fails its checksum (damaged since written)",
                        segment.path.display()
                    ))
                })?;
                bytes.truncate(payload.end);
                bytes.drain(..payload.start);
                entries.push((index, bytes));
                index += 1;
            }
        }
        Ok(entries)
    }

    /// Removes entries `index..`, durably, before it returns: later segments are removed (the
    /// directory synced), then the tail of the one holding `index` is zeroed and synced.
    pub(crate) fn truncate_from(&self, index: u64) -> io::Result<()> {
        let mut segments = self.segments();
        let mut removed = false;
        while let Some(newest) = segments.last().filter(|s| s.first >= index) {
            std::fs::remove_file(&newest.path)
                .map_err(|e| context(format!("removing {}", newest.path.display()), e))?;
            segments.pop();
            removed = true;
        }
        if removed {
            sync_dir(&self.dir)?;
        }
        if let Some(newest) = segments.last_mut() {
            let keep = (index - newest.first).min(newest.offsets.len() as u64) as usize;
            if keep < newest.offsets.len() {
                let from = newest.offsets[keep];
                zero(&newest.file, from, newest.end)
                    .and_then(|()| newest.file.sync_data())
                    .map_err(|e| context(format!("truncating log segment {}", newest.path.display()), e))?;
                newest.offsets.truncate(keep);
                newest.end = from;
            }
        }
        Ok(())
    }

    /// Forgets entries up to and including `index`: removes the segments that hold nothing
    /// after it (a later start removes any whose removal a crash undid).
    pub(crate) fn purge_through(&self, index: u64) -> io::Result<()> {
        let mut segments = self.segments();
        self.readable_from.fetch_max(index + 1, Ordering::Relaxed);
        let whole =
            segments.iter().take_while(|s| s.last().is_none_or(|last| last <= index) && s.first <= index).count();
        for segment in segments.drain(..whole) {
            std::fs::remove_file(&segment.path)
                .map_err(|e| context(format!("removing {}", segment.path.display()), e))?;
        }
        Ok(())
    }

    /// Removes every segment, those set aside as purged too (before a migration rewrites them:
    /// a rewritten segment may take a set-aside one's name).
    pub(crate) fn clear(&self) -> io::Result<()> {
        let mut segments = self.segments();
        let stale = self.stale.lock().expect("stale segments lock").split_off(0);
        for path in segments.drain(..).map(|segment| segment.path).chain(stale) {
            std::fs::remove_file(&path).map_err(|e| context(format!("removing {}", path.display()), e))?;
        }
        sync_dir(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: u64 = 4_096;

    fn payload(index: u64, length: usize) -> Vec<u8> {
        (0..length).map(|i| (index as usize * 31 + i) as u8 | 1).collect()
    }

    fn append(files: &LogFiles, indexes: std::ops::RangeInclusive<u64>, length: usize) {
        let entries: Vec<_> = indexes.map(|i| (i, payload(i, length))).collect();
        files.append(&entries).unwrap();
    }

    fn indexes(files: &LogFiles, from: u64, to: u64) -> Vec<u64> {
        files.read(from, to).unwrap().into_iter().map(|(index, _)| index).collect()
    }

    #[test]
    fn entries_span_segments_and_read_back_after_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        append(&files, 1..=50, 300);
        append(&files, 51..=51, 10_000);
        files.sync().unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().count() > 3, "the entries rolled over several segments");
        drop(files);
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        assert_eq!(files.bounds(), Some((1, 51)));
        let read = files.read(1, 51).unwrap();
        assert_eq!(read.len(), 51);
        for (index, bytes) in read {
            assert_eq!(bytes, payload(index, if index == 51 { 10_000 } else { 300 }), "entry {index}");
        }
        append(&files, 52..=52, 5);
        assert!(files.append(&[(54, vec![1])]).unwrap_err().to_string().contains("does not follow"));
    }

    #[test]
    fn a_torn_tail_is_dropped_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), 1 << 20, None).unwrap();
        append(&files, 1..=10, 100);
        let path = files.segments()[0].path.clone();
        drop(files);
        // The last record half written, and a stray page further on.
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let tenth = 9 * (HEADER_BYTES as u64 + 100);
        file.write_all_at(&[0u8; 60], tenth + 40).unwrap();
        file.write_all_at(&[7u8; 100], 100_000).unwrap();
        let files = LogFiles::open(dir.path(), 1 << 20, None).unwrap();
        assert_eq!(files.bounds(), Some((1, 9)));
        files.finish_open().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes[tenth as usize..].iter().all(|b| *b == 0), "the tail was zeroed");
        append(&files, 10..=11, 100);
        assert_eq!(indexes(&files, 1, 20), (1..=11).collect::<Vec<_>>());
    }

    #[test]
    fn a_truncated_tail_cannot_come_back_behind_a_rewritten_record() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), 1 << 20, None).unwrap();
        append(&files, 1..=10, 100);
        files.truncate_from(5).unwrap();
        assert_eq!(files.bounds(), Some((1, 4)));
        // Entry 5 again, the same length: the old 6..=10 must not reappear after it.
        files.append(&[(5, vec![9u8; 100])]).unwrap();
        files.sync().unwrap();
        drop(files);
        let files = LogFiles::open(dir.path(), 1 << 20, None).unwrap();
        assert_eq!(files.bounds(), Some((1, 5)));
        assert_eq!(files.read(5, 5).unwrap()[0].1, vec![9u8; 100]);
    }

    #[test]
    fn truncation_and_purge_remove_whole_segments() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        append(&files, 1..=100, 200);
        files.truncate_from(60).unwrap();
        assert_eq!(files.bounds(), Some((1, 59)));
        files.purge_through(30).unwrap();
        assert_eq!(files.bounds(), Some((31, 59)));
        assert!(std::fs::read_dir(dir.path()).unwrap().count() < 4, "the segments before 30 were removed");
        assert_eq!(indexes(&files, 0, 59), (31..=59).collect::<Vec<_>>());
        // A purge past the end (a snapshot installed): the log starts again further on.
        files.purge_through(500).unwrap();
        assert_eq!(files.bounds(), None);
        append(&files, 501..=502, 10);
        drop(files);
        let files = LogFiles::open(dir.path(), SMALL, Some(500)).unwrap();
        assert_eq!(files.bounds(), Some((501, 502)));
        files.truncate_from(502).unwrap();
        assert_eq!(files.bounds(), Some((501, 501)));
        files.truncate_from(501).unwrap();
        assert_eq!(files.bounds(), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no segment is left");
        append(&files, 501..=501, 10);
        assert_eq!(files.bounds(), Some((501, 501)));
    }

    #[test]
    fn a_segment_damaged_before_the_next_one_is_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        append(&files, 1..=100, 200);
        let path = files.segments()[0].path.clone();
        drop(files);
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0x5a; 8], 2 * (HEADER_BYTES as u64 + 200) + 20).unwrap();
        let Some(OpenError::Hole(error)) = LogFiles::open(dir.path(), SMALL, None).err() else { panic!("not a hole") };
        assert!(error.contains("ends before entry 3") && error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn an_empty_segment_left_by_a_crash_gives_way_to_a_larger_one() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), 1 << 20, None).unwrap();
        append(&files, 1..=10, 100);
        drop(files);
        // The next segment was created (synced, renamed) and the member stopped before writing.
        std::fs::write(dir.path().join(format!("{:020}.{EXTENSION}", 11)), vec![0u8; SMALL as usize]).unwrap();
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        assert_eq!(files.bounds(), Some((1, 10)));
        append(&files, 11..=11, 10_000);
        drop(files);
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        assert_eq!(files.bounds(), Some((1, 11)));
        assert_eq!(files.read(11, 11).unwrap()[0].1, payload(11, 10_000));
    }

    #[test]
    fn a_segment_removal_interrupted_by_a_crash_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::open(dir.path(), SMALL, None).unwrap();
        append(&files, 1..=100, 200);
        drop(files);
        // The purge point was recorded (up to 95), the crash came before any file was removed.
        let files = LogFiles::open(dir.path(), SMALL, Some(95)).unwrap();
        assert_eq!(files.bounds(), Some((96, 100)));
        assert!(std::fs::read_dir(dir.path()).unwrap().count() > 1, "nothing is removed before the checks");
        files.finish_open().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the segment holding 96..=100 is left");
    }
}
