//! Lost quorum: two of three members destroyed, `collective recover` on the third restarts the
//! cluster from its data with every acknowledged write, and two new members join it again.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use common::{site, user, Cluster};

/// Runs the real binary; (success, stdout, stderr).
fn collective(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_collective")).args(args).output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into(),
        String::from_utf8_lossy(&output.stderr).into(),
    )
}

async fn usernames(cluster: &Cluster, index: usize) -> Vec<String> {
    let request = pb::SearchRequest { limit: 0, serializable: true, ..Default::default() };
    let entries = cluster.directory(index).await.search(request).await.unwrap().into_inner().entries;
    let mut names: Vec<String> = entries.into_iter().filter_map(|e| e.user.map(|u| u.username)).collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_restarts_a_cluster_from_one_survivor() {
    let mut cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(0).await;
    cluster.directory(leader).await.add_site(site(1, "Indianapolis")).await.unwrap();
    let mut acknowledged = Vec::new();
    for i in 0..40 {
        let name = format!("agent{i:02}");
        cluster.directory(leader).await.add_user(user(&name, 1, &format!("{}", 1000 + i))).await.unwrap();
        acknowledged.push(name);
    }
    // The survivor is a follower: acknowledged writes reach it only through a majority.
    let survivor = (leader + 1) % 3;
    let survivor_dir = cluster.data_dir(survivor);
    let survivor_dir = survivor_dir.to_str().unwrap().to_string();
    let survivor_id = (survivor + 1).to_string();

    // A running member's data is refused.
    let (ok, _, stderr) = collective(&["recover", "--data-dir", &survivor_dir, "--id", &survivor_id]);
    assert!(!ok && stderr.contains("in use by a running member"), "{stderr}");

    for index in 0..3 {
        cluster.kill(index);
    }
    for index in (0..3).filter(|i| *i != survivor) {
        std::fs::remove_dir_all(cluster.data_dir(index)).unwrap();
        std::fs::create_dir_all(cluster.data_dir(index)).unwrap();
    }
    // An empty data directory, a missing one, and an id the data does not know are refused.
    let empty = cluster.data_dir((survivor + 1) % 3);
    let (ok, _, stderr) = collective(&["recover", "--data-dir", empty.to_str().unwrap(), "--id", "1"]);
    assert!(!ok && stderr.contains("holds no collective database"), "{stderr}");
    let (ok, _, stderr) = collective(&["recover", "--data-dir", "/nonexistent/collective", "--id", "1"]);
    assert!(!ok && stderr.contains("no such directory"), "{stderr}");
    let (ok, _, stderr) = collective(&["recover", "--data-dir", &survivor_dir, "--id", "9"]);
    assert!(!ok && stderr.contains("--id: 9 is not a member"), "{stderr}");

    let (ok, stdout, stderr) =
        collective(&["-w", "json", "recover", "--data-dir", &survivor_dir, "--id", &survivor_id]);
    assert!(ok, "recover failed: {stderr}");
    let recovered: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(recovered["previous_members"], serde_json::json!([1, 2, 3]), "{stdout}");
    assert_eq!(recovered["addr"], cluster.grpc[survivor].as_str(), "{stdout}");

    // Alone, it elects itself and serves every acknowledged write.
    cluster.restart(survivor);
    cluster.wait_for_leader(&[survivor]).await;
    assert_eq!(usernames(&cluster, survivor).await, acknowledged);
    cluster.directory(survivor).await.add_user(user("after", 1, "2000")).await.unwrap();
    acknowledged.push("after".into());
    acknowledged.sort();

    // The two lost members come back empty, as new members, through the CLI.
    let endpoints = cluster.grpc[survivor].clone();
    for index in (0..3).filter(|i| *i != survivor) {
        cluster.restart_as_joiner(index);
        let _ = cluster.channel(index).await;
        let id = (index + 1).to_string();
        let (ok, _, stderr) =
            collective(&["--endpoints", &endpoints, "member", "add", &id, cluster.grpc[index].as_str()]);
        assert!(ok, "member add {id}: {stderr}");
        let (ok, _, stderr) = collective(&["--endpoints", &endpoints, "member", "promote", &id]);
        assert!(ok, "member promote {id}: {stderr}");
    }
    let (ok, stdout, stderr) = collective(&["--endpoints", &endpoints, "-w", "json", "member", "list"]);
    assert!(ok, "{stderr}");
    let members: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let voters = members["members"].as_array().unwrap().iter().filter(|m| m["role"] == "voter").count();
    assert_eq!(voters, 3, "{stdout}");
    cluster.wait_for_leader(&[0, 1, 2]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    for index in 0..3 {
        while usernames(&cluster, index).await != acknowledged {
            assert!(Instant::now() < deadline, "member {index} never caught up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And the three of them commit again: a write needs two of them now.
    cluster.kill(survivor);
    let rest: Vec<usize> = (0..3).filter(|i| *i != survivor).collect();
    let leader = cluster.wait_for_leader(&rest).await;
    cluster.directory(leader).await.add_user(user("without-survivor", 1, "2001")).await.unwrap();
}
