//! Storage tests: openraft's conformance suite on the RocksDB stores, and a write → drop →
//! reopen test the suite does not do.

use std::sync::Arc;

use collective::environment::Environment;
use collective::history::HistoryStore;
use collective::raft_types::TypeConfig;
use collective::shared::Shared;
use collective::store::{self, LogStore, StateMachineStore};
use collective_statemachine::user::UserSpec;
use collective_statemachine::{Batch, Command, Principal, Proposal, SiteSpec};
use std::collections::BTreeMap;
use std::time::Duration;

use collective::network::{Network, Peers};
use collective::raft_types::Raft;
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{BasicNode, StorageError};
use std::os::unix::fs::FileExt;
use tempfile::TempDir;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<TypeConfig>> {
        let dir = TempDir::new().expect("temp dir");
        let (log_store, state_machine, _history) =
            store::open(dir.path(), Arc::new(Shared::new(1_000)), &Environment::system()).await.expect("open store");
        Ok((dir, log_store, state_machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes() {
    Suite::test_all(Builder).await.expect("openraft storage suite");
}

fn add_workgroup(name: &str) -> Command {
    Command::AddWorkgroup { name: name.into(), spans_sites: true, required_skills: Default::default() }
}

async fn single_node(dir: &std::path::Path, shared: Arc<Shared>) -> Raft {
    single_node_with_history(dir, shared).await.0
}

async fn single_node_with_history(dir: &std::path::Path, shared: Arc<Shared>) -> (Raft, Arc<HistoryStore>) {
    let (log, sm, history) = store::open(dir, shared, &Environment::system()).await.unwrap();
    let config = Arc::new(
        openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 200,
            election_timeout_max: 400,
            ..Default::default()
        }
        .validate()
        .unwrap(),
    );
    let raft = Raft::new(
        1,
        config,
        Network {
            peers: Arc::new(Peers::new(collective::environment::Environment::system().connect, None, None).unwrap()),
        },
        log,
        sm,
    )
    .await
    .unwrap();
    (raft, history)
}

#[tokio::test]
async fn acknowledged_writes_survive_drop_and_reopen() {
    let dir = TempDir::new().unwrap();
    let written = 25u64;
    {
        let raft = single_node(dir.path(), Arc::new(Shared::new(100))).await;
        initialize(&raft).await;
        for i in 0..written {
            let proposal = Proposal { principal: Principal::System, command: add_workgroup(&format!("wg{i}")) };
            let batch = Batch { at_ms: 1_000 + i, proposals: vec![proposal].into() };
            raft.client_write(batch).await.unwrap().data.outcomes[0].clone().unwrap();
        }
        raft.shutdown().await.unwrap();
    }
    let shared = Arc::new(Shared::new(100));
    let raft = single_node(dir.path(), shared.clone()).await;
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "re-elected after reopen").await.unwrap();
    // Every acknowledged write is applied again from the durable log.
    raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.unwrap();
    let state = shared.state.read().unwrap().clone();
    assert_eq!(state.workgroups.len() as u64, written);
    assert_eq!(state.revision, written);
    state.check_invariants();
    drop(state);
    raft.shutdown().await.unwrap();
}

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

/// Adds users `from..to` (site 1 must exist), one entry each; returns the last entry's index.
async fn add_users(raft: &Raft, from: u64, to: u64) -> u64 {
    let mut last = 0;
    for i in from..to {
        let command = Command::AddUser(UserSpec {
            username: format!("user{i}"),
            display_name: format!("User {i}"),
            email: format!("user{i}@example.com"),
            home_site: 1,
            extension: format!("{}", 8000 + i),
            skills: Default::default(),
            licences: Default::default(),
        });
        let batch =
            Batch { at_ms: 1_000 + i, proposals: vec![Proposal { principal: Principal::System, command }].into() };
        let response = raft.client_write(batch).await.unwrap();
        response.data.outcomes[0].clone().unwrap();
        last = response.log_id.index;
    }
    last
}

/// Writes users, optionally taking a snapshot and purging the log half-way, then drops the
/// history versions still gathered (what a crash does) and reopens: every user's history must be
/// there, from RocksDB or from re-applying the log.
async fn history_survives_a_crash(snapshot_half_way: bool) {
    let dir = TempDir::new().unwrap();
    let users = 10u64;
    {
        let (raft, history) = single_node_with_history(dir.path(), Arc::new(Shared::new(100))).await;
        initialize(&raft).await;
        add_site_one(&raft).await;
        let half = add_users(&raft, 0, users / 2).await;
        if snapshot_half_way {
            // The first half's versions are only gathered: the snapshot's commit must write
            // them, since the log that could re-apply them is purged.
            raft.trigger().snapshot().await.unwrap();
            let wait = raft.wait(Some(Duration::from_secs(10)));
            wait.metrics(|m| m.snapshot.is_some_and(|s| s.index >= half), "snapshot taken").await.unwrap();
            raft.trigger().purge_log(half).await.unwrap();
            wait.metrics(|m| m.purged.is_some_and(|p| p.index >= half), "log purged").await.unwrap();
        }
        add_users(&raft, users / 2, users).await;
        // Only gathered, not written: the versions since the snapshot, or all of them.
        let unwritten = if snapshot_half_way { users / 2 } else { users };
        assert!(history.discard_gathered() as u64 >= unwritten, "the crash dropped the gathered versions");
        raft.shutdown().await.unwrap();
    }
    let shared = Arc::new(Shared::new(100));
    let (raft, history) = single_node_with_history(dir.path(), shared.clone()).await;
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "re-elected after reopen").await.unwrap();
    raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.unwrap();
    for i in 0..users {
        let found = history.presence_at(&format!("user{i}"), 10_000).unwrap();
        assert!(found.is_some(), "user{i}'s history came back (snapshot half-way: {snapshot_half_way})");
    }
    raft.shutdown().await.unwrap();
}

/// History versions are gathered in memory before they are written; a crash loses the gathered
/// ones, and re-applying the log after the restart must bring them back.
#[tokio::test]
async fn history_gathered_but_unwritten_at_a_crash_comes_back_from_the_log() {
    history_survives_a_crash(false).await;
}

/// A snapshot lets the log before it be purged, so versions gathered before it cannot come back
/// from the log: the snapshot's commit writes them first.
#[tokio::test]
async fn history_gathered_before_a_snapshot_and_a_purge_survives_a_crash() {
    history_survives_a_crash(true).await;
}

/// Initializes a one-member cluster and waits until the member leads (its first vote is saved
/// with an fsync before it does).
async fn initialize(raft: &Raft) {
    raft.initialize(BTreeMap::from([(1, BasicNode { addr: "127.0.0.1:1".into() })])).await.unwrap();
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leading after initialize").await.unwrap();
}

/// Adds site 1, which `add_users` needs.
async fn add_site_one(raft: &Raft) {
    let site = Command::AddSite(SiteSpec {
        id: 1,
        name: "Indy".into(),
        phone: "+1 317-555 0100".into(),
        password_hash: HASH.into(),
        note_id_dial_string: String::new(),
        active: true,
        servers: vec!["cic1".into()],
        trusted_access: Default::default(),
    });
    let batch = Batch { at_ms: 999, proposals: vec![Proposal { principal: Principal::System, command: site }].into() };
    raft.client_write(batch).await.unwrap().data.outcomes[0].clone().unwrap();
}

/// A single member with site 1 and `users` users, shut down as a kill would leave it: the
/// entries in the log files, RocksDB's writes in its write-ahead log only (it flushes no
/// memtable at close).
async fn written_member(dir: &std::path::Path, users: u64) {
    let raft = single_node(dir, Arc::new(Shared::new(100))).await;
    initialize(&raft).await;
    add_site_one(&raft).await;
    add_users(&raft, 0, users).await;
    raft.shutdown().await.unwrap();
}

/// The newest write-ahead log file of a data directory.
fn newest_wal(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "log") && std::fs::metadata(path).unwrap().len() > 0)
        .max()
        .expect("a write-ahead log")
}

async fn open_error(dir: &std::path::Path) -> String {
    match store::open(dir, Arc::new(Shared::new(100)), &Environment::system()).await {
        Ok(_) => panic!("the damaged data directory {} was opened", dir.display()),
        Err(error) => format!("{error:#}"),
    }
}

/// Bytes flipped inside a record of the write-ahead log: RocksDB's default recovery would drop
/// that record and every one after it and open; the start is refused, naming the directory and
/// the way out.
#[tokio::test]
async fn a_damaged_write_ahead_log_refuses_the_start() {
    let dir = TempDir::new().unwrap();
    written_member(dir.path(), 200).await;
    let wal = newest_wal(dir.path());
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = bytes.len() / 2;
    for byte in &mut bytes[at..at + 32] {
        *byte ^= 0x5a;
    }
    std::fs::write(&wal, &bytes).unwrap();
    let error = open_error(dir.path()).await;
    assert!(error.contains("is damaged") && error.contains(&dir.path().display().to_string()), "{error}");
    assert!(error.contains("checksum mismatch") && error.contains(".log"), "{error}");
    assert!(error.contains("collective member remove"), "{error}");
}

/// The newest segment of a data directory's log files, and how many bytes of it were written
/// (the rest is preallocated zeros).
fn newest_segment(dir: &std::path::Path) -> (std::path::PathBuf, usize) {
    let segment = std::fs::read_dir(dir.join(store::LOG_DIR))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "seg"))
        .max()
        .expect("a log segment");
    let bytes = std::fs::read(&segment).unwrap();
    let written = bytes.iter().rposition(|byte| *byte != 0).map_or(0, |last| last + 1);
    (segment, written)
}

/// The log files cut short (what a lost tail looks like: a torn last record, which a start
/// opens without): the acknowledged marker shows the entries are gone, and the start is
/// refused, naming the newest segment.
#[tokio::test]
async fn a_log_cut_short_refuses_the_start() {
    let dir = TempDir::new().unwrap();
    written_member(dir.path(), 200).await;
    let (segment, written) = newest_segment(dir.path());
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(written as u64 * 2 / 3).unwrap();
    let error = open_error(dir.path()).await;
    assert!(error.contains("lost records") && error.contains(store::MARKER_FILE), "{error}");
    assert!(error.contains("acknowledged entries up to") && error.contains(&segment.display().to_string()), "{error}");
}

/// A file in the log's directory that is not a segment: the start stops and names it, but
/// does not call the data damaged (nothing says an entry was lost; moving the file away is the
/// fix, not rebuilding the member).
#[tokio::test]
async fn a_foreign_file_among_the_log_files_is_named_not_taken_for_damage() {
    let dir = TempDir::new().unwrap();
    written_member(dir.path(), 5).await;
    let foreign = dir.path().join(store::LOG_DIR).join("notes.txt");
    std::fs::write(&foreign, "kept here by mistake").unwrap();
    let error = open_error(dir.path()).await;
    assert!(error.contains(&foreign.display().to_string()) && error.contains("is not a log segment"), "{error}");
    assert!(!error.contains(store::REFUSED), "{error}");
    std::fs::remove_file(&foreign).unwrap();
    let shared = Arc::new(Shared::new(100));
    let raft = single_node(dir.path(), shared.clone()).await;
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "leading once the file is gone").await.unwrap();
    raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.unwrap();
    assert_eq!(shared.state.read().unwrap().users.len(), 5);
    raft.shutdown().await.unwrap();
}

/// Bytes flipped inside an acknowledged record of the log files: its checksum fails, the log
/// ends before it, and the marker shows that entries it acknowledged are gone: refused.
#[tokio::test]
async fn a_damaged_log_record_refuses_the_start() {
    let dir = TempDir::new().unwrap();
    written_member(dir.path(), 200).await;
    let (segment, written) = newest_segment(dir.path());
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&segment).unwrap();
    let at = written as u64 / 2;
    let mut bytes = [0u8; 32];
    file.read_exact_at(&mut bytes, at).unwrap();
    bytes.iter_mut().for_each(|byte| *byte ^= 0x5a);
    file.write_all_at(&bytes, at).unwrap();
    let error = open_error(dir.path()).await;
    assert!(error.contains("lost records") && error.contains("collective member remove"), "{error}");
    let kept = std::fs::read(&segment).unwrap();
    assert_eq!(&kept[at as usize..at as usize + 32], &bytes, "a refused start leaves the damaged file as it was");
}

/// A power loss tears the last record, whose fsync never returned (so it was never
/// acknowledged, and the marker, written after each fsync, does not claim it): the member
/// starts with everything before it.
#[tokio::test]
async fn a_torn_unacknowledged_last_record_still_opens() {
    let dir = TempDir::new().unwrap();
    written_member(dir.path(), 20).await;
    let marker = std::fs::read(dir.path().join(store::MARKER_FILE)).unwrap();
    // One more write, then the power fails half-way through its record: the marker is as it
    // was before it.
    {
        let raft = single_node(dir.path(), Arc::new(Shared::new(100))).await;
        raft.wait(Some(Duration::from_secs(10))).current_leader(1, "re-elected").await.unwrap();
        add_users(&raft, 20, 21).await;
        raft.shutdown().await.unwrap();
    }
    let (segment, written) = newest_segment(dir.path());
    assert!(written > 64, "the last write went to {}", segment.display());
    let file = std::fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0u8; 16], written as u64 - 16).unwrap();
    std::fs::write(dir.path().join(store::MARKER_FILE), marker).unwrap();
    let shared = Arc::new(Shared::new(100));
    let raft = single_node(dir.path(), shared.clone()).await;
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "re-elected after the power loss").await.unwrap();
    raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.unwrap();
    assert!(shared.state.read().unwrap().users.len() >= 20, "the acknowledged users survived");
    raft.shutdown().await.unwrap();
}

/// A data directory of a build that kept the log in RocksDB (`CF_LOGS`): the start moves the
/// entries into the log files and the member serves them; RocksDB keeps none. The log files
/// found beside such a log (a move a crash interrupted, here cut short) are written again from
/// RocksDB's entries, which are the log until they are moved.
#[tokio::test]
async fn a_log_kept_in_rocksdb_moves_into_the_log_files() {
    use openraft::storage::RaftLogReader;
    let dir = TempDir::new().unwrap();
    written_member(dir.path(), 20).await;
    let entries = {
        let (mut log, _sm, _history) =
            store::open(dir.path(), Arc::new(Shared::new(100)), &Environment::system()).await.unwrap();
        log.try_get_log_entries(0..u64::MAX).await.unwrap()
    };
    assert!(entries.len() > 20, "{} entries", entries.len());
    {
        let families = [store::CF_LOGS, store::CF_META, store::CF_SNAPSHOT, collective::history::CF_HISTORY];
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), families).unwrap();
        let logs = db.cf_handle(store::CF_LOGS).unwrap();
        for entry in &entries {
            db.put_cf(logs, entry.log_id.index.to_be_bytes(), collective::codec::encode(entry).unwrap()).unwrap();
        }
        db.flush_wal(true).unwrap();
    }
    let (segment, written) = newest_segment(dir.path());
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(written as u64 / 3).unwrap();

    let shared = Arc::new(Shared::new(100));
    let raft = single_node(dir.path(), shared.clone()).await;
    raft.wait(Some(Duration::from_secs(10))).current_leader(1, "re-elected on the moved log").await.unwrap();
    raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex).await.unwrap();
    assert_eq!(shared.state.read().unwrap().users.len(), 20, "every user written before the move");
    add_users(&raft, 20, 25).await;
    raft.shutdown().await.unwrap();
    drop(raft);
    let families = [store::CF_LOGS, store::CF_META, store::CF_SNAPSHOT, collective::history::CF_HISTORY];
    let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), dir.path(), families).unwrap();
    let left = db.iterator_cf(db.cf_handle(store::CF_LOGS).unwrap(), rocksdb::IteratorMode::Start).count();
    assert_eq!(left, 0, "RocksDB keeps no log entry once they are moved");
}

/// A snapshot file edited so it is still valid JSON (an email changed): its SHA-256 no longer
/// matches, and the start is refused naming the file, rather than serving the edited state.
#[tokio::test]
async fn an_edited_snapshot_refuses_the_start() {
    let dir = TempDir::new().unwrap();
    {
        let raft = single_node(dir.path(), Arc::new(Shared::new(100))).await;
        initialize(&raft).await;
        add_site_one(&raft).await;
        add_users(&raft, 0, 5).await;
        raft.trigger().snapshot().await.unwrap();
        raft.wait(Some(Duration::from_secs(10))).metrics(|m| m.snapshot.is_some(), "snapshot taken").await.unwrap();
        raft.shutdown().await.unwrap();
    }
    let snapshots = dir.path().join("snapshots");
    let file = std::fs::read_dir(&snapshots).unwrap().map(|e| e.unwrap().path()).next().expect("a snapshot file");
    let mut bytes = std::fs::read(&file).unwrap();
    let email = b"user3@example.com";
    let at = bytes.windows(email.len()).position(|w| w == email).expect("the snapshot holds the users");
    bytes[at..at + 4].copy_from_slice(b"mole");
    std::fs::write(&file, bytes).unwrap();
    let error = open_error(dir.path()).await;
    assert!(error.contains(&file.display().to_string()) && error.contains("SHA-256"), "{error}");
}

/// The committed id is saved at most once per interval of the environment's clock (openraft
/// reports every commit): a save within it keeps the earlier id, which only means applying less at
/// the next start, and the next save after it writes the newest.
#[tokio::test]
async fn the_committed_id_is_saved_at_most_once_per_interval() {
    use collective::raft_types::{CommittedLeaderId, Entry, LogId};
    use openraft::storage::{IOFlushed, RaftLogStorage};
    use std::sync::atomic::{AtomicU64, Ordering};

    let dir = TempDir::new().unwrap();
    let now_ms = Arc::new(AtomicU64::new(1_000_000));
    let mut environment = Environment::system();
    let clock = now_ms.clone();
    environment.clock = Arc::new(move || clock.load(Ordering::Relaxed));
    let (mut log, _state_machine, _history) =
        store::open(dir.path(), Arc::new(Shared::new(100)), &environment).await.unwrap();
    let id = |index| LogId::new(CommittedLeaderId::new(1), index);
    let entries = (1..=3).map(|index| Entry { log_id: id(index), payload: openraft::EntryPayload::Blank });
    log.append(entries, IOFlushed::noop()).await.unwrap();

    log.save_committed(Some(id(1))).await.unwrap();
    now_ms.fetch_add(99, Ordering::Relaxed);
    log.save_committed(Some(id(2))).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(id(1)), "a save within the interval keeps the earlier id");
    now_ms.fetch_add(1, Ordering::Relaxed);
    log.save_committed(Some(id(3))).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(id(3)), "the first save after the interval writes");
    now_ms.fetch_sub(50_000, Ordering::Relaxed);
    log.save_committed(Some(id(2))).await.unwrap();
    assert_eq!(log.read_committed().await.unwrap(), Some(id(2)), "a clock set back saves at once");
}
