//! Configuration export and import, and snapshots, over real 3-node clusters and the CLI: a
//! round trip between two clusters, every kind of damaged file refused distinctly with the state
//! unchanged, an import that readers see whole or not at all while presence writes continue, and
//! snapshot save → wipe every data dir → restore → the same revision served.

mod common;

use std::process::Command;
use std::time::Duration;

use collective::bundle;
use collective_proto::v1 as pb;
use common::{site, user, Cluster};
use prost::Message;

const PASSPHRASE: &str = "a long enough passphrase";

fn cli(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(",")])
        .args(args)
        .env("COLLECTIVE_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

fn ok(cluster: &Cluster, args: &[&str]) -> String {
    let (success, stdout, stderr) = cli(cluster, args);
    assert!(success, "collective {args:?} failed: {stderr}");
    stdout + &stderr
}

async fn revision(cluster: &Cluster) -> u64 {
    cluster.status(0).await.revision
}

/// Sites 1–2, users, a spanning workgroup with routing settings and a route cost.
async fn populate(cluster: &Cluster, users: usize) {
    let mut directory = cluster.directory(0).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    directory.add_site(site(2, "Paris")).await.unwrap();
    let workgroup = pb::Workgroup { name: "Support".into(), spans_sites: true, ..Default::default() };
    directory.add_workgroup(pb::AddWorkgroupRequest { workgroup: Some(workgroup) }).await.unwrap();
    for i in 0..users {
        let name = format!("user{i:03}");
        directory.add_user(user(&name, 1 + (i % 2) as u32, &format!("{}", 3000 + i))).await.unwrap();
        if i % 3 == 0 {
            let member = pb::WorkgroupMemberRequest { workgroup: "Support".into(), username: name };
            directory.add_workgroup_member(member).await.unwrap();
        }
    }
    ok(cluster, &["route", "settings", "Support", "--strategy", "round-robin"]);
    ok(cluster, &["route", "cost", "--from", "1", "--to", "2", "7000"]);
    ok(cluster, &["note", "create", "--site", "2", "Order", "--ttl-minutes", "600"]);
    ok(
        cluster,
        &["note", "update", "--site", "2", "Order", "--attribute", "qty", "--op", "replace", "--type", "Integer", "3"],
    );
}

/// The decrypted body of a file, without the fields that differ between exports.
fn content(path: &std::path::Path) -> pb::ConfigBundle {
    let body = bundle::open(&std::fs::read(path).unwrap(), PASSPHRASE).unwrap();
    let mut decoded = pb::ConfigBundle::decode(body.as_slice()).unwrap();
    (decoded.exported_at_ms, decoded.revision) = (0, 0);
    decoded
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_trip_between_two_clusters_and_every_damaged_file_refused() {
    let source = Cluster::start(3, &[]).await;
    let target = Cluster::start(3, &[]).await;
    populate(&source, 30).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.ccfg");
    let out = file.to_str().unwrap();
    let report = ok(&source, &["export", "--categories", "workgroups,routing,notes", "--out", out]);
    assert!(report.contains("closure: users: 10 members") && report.contains("closure: sites: 2"), "{report}");

    // Dry run first: every create listed, nothing applied.
    let before = revision(&target).await;
    let plan = ok(&target, &["import", "--mode", "migration", "--dry-run", out]);
    assert!(plan.contains("plan (dry run") && plan.contains("create user user000"), "{plan}");
    assert_eq!(revision(&target).await, before);
    ok(&target, &["import", "--mode", "migration", out]);
    let again = dir.path().join("again.ccfg");
    ok(&target, &["export", "--categories", "workgroups,routing,notes", "--out", again.to_str().unwrap()]);
    let (copied, original) = (content(&again), content(&file));
    assert_eq!(original.notes.len(), 1);
    // A note's time to live is carried in whole minutes: compare it apart.
    let expiry = |bundle: &pb::ConfigBundle| bundle.notes[0].note.as_ref().unwrap().expires_at_ms.unwrap();
    assert!(expiry(&copied).abs_diff(expiry(&original)) <= 60_000);
    let without_expiry = |mut bundle: pb::ConfigBundle| {
        bundle.notes[0].note.as_mut().unwrap().expires_at_ms = None;
        bundle
    };
    assert_eq!(without_expiry(copied), without_expiry(original), "the target holds the same configuration");

    // Damaged files: each refused with its own error, nothing changes.
    let bytes = std::fs::read(&file).unwrap();
    let revision_before = revision(&target).await;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "header",
            {
                let mut b = bytes.clone();
                b[30] ^= 1;
                b
            },
            "header is damaged",
        ),
        (
            "body",
            {
                let mut b = bytes.clone();
                b[bundle::HEADER_BYTES + 50] ^= 1;
                b
            },
            "contents were altered",
        ),
        ("truncated", bytes[..bytes.len() - 100].to_vec(), "truncated"),
        (
            "future",
            {
                let mut b = bytes.clone();
                b[9] = 7;
                b
            },
            "format version 7",
        ),
    ];
    for (name, damaged, expected) in cases {
        let path = dir.path().join(format!("{name}.ccfg"));
        std::fs::write(&path, damaged).unwrap();
        let (success, _, stderr) = cli(&target, &["import", "--mode", "recovery", path.to_str().unwrap()]);
        assert!(!success && stderr.contains(expected), "{name}: {stderr}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &target.grpc.join(","), "import", "--mode", "migration", out])
        .env("COLLECTIVE_PASSPHRASE", "not the passphrase")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("wrong passphrase"), "{stderr}");
    assert!(!stderr.contains("not the passphrase"), "the passphrase is never echoed: {stderr}");
    assert_eq!(revision(&target).await, revision_before, "a refused import changes nothing");

    // Recovery makes users exactly the file: a user added at the target goes.
    let mut directory = target.directory(0).await;
    directory.add_user(user("extra", 1, "9999")).await.unwrap();
    let users_file = dir.path().join("users.ccfg");
    ok(&source, &["export", "--categories", "users", "--out", users_file.to_str().unwrap()]);
    let migrated = ok(&target, &["import", "--mode", "migration", users_file.to_str().unwrap()]);
    assert!(migrated.contains("0 deletes"), "migration never deletes: {migrated}");
    let recovered = ok(&target, &["import", "--mode", "recovery", users_file.to_str().unwrap()]);
    assert!(recovered.contains("delete user extra"), "{recovered}");
    let (found, _, _) = cli(&target, &["user", "get", "extra"]);
    assert!(!found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_is_seen_whole_or_not_at_all_while_presence_writes_go_on() {
    let source = Cluster::start(3, &[]).await;
    populate(&source, 300).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.ccfg");
    ok(&source, &["export", "--categories", "users", "--out", file.to_str().unwrap()]);
    drop(source);

    let target = Cluster::start(3, &[]).await;
    let mut directory = target.directory(0).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    directory.add_user(user("busy", 1, "100")).await.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A writer changes busy's presence while a reader counts users, linearizably.
    let mut presence = target.presence(1).await;
    let writer_stop = stop.clone();
    let writer = tokio::spawn(async move {
        let mut writes = 0;
        while !writer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let detail = format!("write {writes}");
            let request = pb::SetStatusRequest {
                username: "busy".into(),
                status_key: "Available".into(),
                until_ms: None,
                detail,
            };
            presence.set_status(request).await.unwrap();
            writes += 1;
        }
        writes
    });
    let mut reader = target.directory(2).await;
    let reader_stop = stop.clone();
    let reads = tokio::spawn(async move {
        let mut seen = std::collections::BTreeSet::new();
        while !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let request = pb::SearchRequest { limit: 10_000, ..Default::default() };
            let found = reader.search(request).await.unwrap().into_inner();
            seen.insert(found.entries.len());
        }
        seen
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    ok(&target, &["import", "--mode", "migration", file.to_str().unwrap()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let writes = writer.await.unwrap();
    let seen = reads.await.unwrap();
    assert!(writes > 0);
    assert_eq!(seen, [1, 301].into_iter().collect(), "readers saw only before and after the import");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_wipe_restore_serves_the_same_revision() {
    let mut cluster = Cluster::start(3, &[]).await;
    populate(&cluster, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup.snap");
    let saved = ok(&cluster, &["snapshot", "save", file.to_str().unwrap()]);
    let revision_saved = revision(&cluster).await;
    assert!(saved.contains(&format!("saved revision {revision_saved}")), "{saved}");
    let status = ok(&cluster, &["-w", "json", "snapshot", "status", file.to_str().unwrap()]);
    assert!(status.contains("\"users\": 20"), "{status}");
    // Disaster: every member and its data are gone.
    for index in 0..3 {
        cluster.kill(index);
        std::fs::remove_dir_all(cluster.dir.path().join(format!("node{}", index + 1))).unwrap();
    }
    let initial: Vec<String> = cluster.grpc.iter().enumerate().map(|(i, addr)| format!("{}={addr}", i + 1)).collect();
    for index in 0..3 {
        let data_dir = cluster.dir.path().join(format!("node{}", index + 1));
        ok(
            &cluster,
            &[
                "snapshot",
                "restore",
                file.to_str().unwrap(),
                "--data-dir",
                data_dir.to_str().unwrap(),
                "--initial-cluster",
                &initial.join(","),
            ],
        );
    }
    // Restoring over data is refused.
    let data_dir = cluster.dir.path().join("node1");
    let (success, _, stderr) = cli(
        &cluster,
        &[
            "snapshot",
            "restore",
            file.to_str().unwrap(),
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--initial-cluster",
            &initial.join(","),
        ],
    );
    assert!(!success && stderr.contains("not empty"), "{stderr}");
    for index in 0..3 {
        cluster.restart(index);
    }
    cluster.wait_for_leader(&[0, 1, 2]).await;
    assert_eq!(revision(&cluster).await, revision_saved);
    let user = ok(&cluster, &["-w", "json", "user", "get", "user019"]);
    assert!(user.contains("user019@example.com"), "{user}");
    // And it takes writes again.
    let mut directory = cluster.directory(1).await;
    directory.add_user(common::user("after", 1, "8888")).await.unwrap();
    // Member 0 shows it once it has applied it, which may be a moment after member 1 answered.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while revision(&cluster).await <= revision_saved {
        assert!(std::time::Instant::now() < deadline, "member 0 never applied the write after the restore");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `collective cluster snapshot` on one member: the snapshot covers what it applied, is one file
/// in its data directory, shows in `cluster status` with the member's memory, and a member
/// killed and started again comes back from it with everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_snapshot_is_a_file_that_a_restarted_member_starts_from() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(0).await;
    let mut directory = cluster.directory(leader).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    for i in 0..40 {
        directory.add_user(user(&format!("agent{i}"), 1, &format!("{}", 10_000 + i))).await.unwrap();
    }
    let member = (leader + 1) % 3;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while cluster.status(member).await.users < 40 {
        assert!(std::time::Instant::now() < deadline, "member {member} never applied the 40 users");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc[member], "-w", "json", "cluster", "snapshot"])
        .output()
        .unwrap();
    assert!(output.status.success(), "cluster snapshot failed: {}", String::from_utf8_lossy(&output.stderr));
    let taken: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let status = cluster.status(member).await;
    assert_eq!(taken["id"].as_u64(), Some(member as u64 + 1), "{taken}");
    assert_eq!(taken["snapshot_index"].as_u64(), Some(status.snapshot_index), "{taken} vs {status:?}");
    assert!(status.snapshot_index > 0 && status.snapshot_index <= status.applied_index, "{status:?}");
    assert_eq!((status.users, status.sites), (40, 1), "{status:?}");
    assert!(status.resident_memory_bytes > 0, "{status:?}");

    let snapshots = cluster.dir.path().join(format!("node{}", member + 1)).join("snapshots");
    let files: Vec<_> = std::fs::read_dir(&snapshots).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "one snapshot file, no temporaries: {files:?}");
    assert_eq!(std::fs::metadata(&files[0]).unwrap().len(), status.snapshot_bytes, "{files:?} vs {status:?}");
    // Its body is the state as JSON, users included, between its header and its SHA-256.
    let bytes = std::fs::read(&files[0]).unwrap();
    let header = b"collective-raft-snapshot-v2\n";
    assert!(bytes.starts_with(header), "{files:?} starts with the snapshot header");
    let body: serde_json::Value = serde_json::from_slice(&bytes[header.len()..bytes.len() - 32]).unwrap();
    assert!(body["state"]["users"]["agent39"].is_object(), "the snapshot file lacks agent39");

    let revision = cluster.status(leader).await.revision;
    cluster.kill(member);
    cluster.restart(member);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let restarted = cluster.status(member).await;
        if restarted.revision == revision && restarted.users == 40 {
            assert_eq!(restarted.snapshot_bytes, status.snapshot_bytes, "{restarted:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "restarted member at {restarted:?}, leader at {revision}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
