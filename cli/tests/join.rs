//! Scaling a StatefulSet: a member `--initial-cluster` does not name joins by itself (`--join`),
//! taking its id from the pod's hostname; removed and started again on its old volume, it sets
//! the old data aside and joins as a new member.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use common::{free_port, site, user, Cluster};

/// Starts `collective serve` as pod `hostname` joining `cluster`.
fn spawn_pod(cluster: &Cluster, hostname: &str, grpc: &str, http: &str, log: &std::path::Path) -> Child {
    let initial: Vec<String> = cluster.grpc.iter().enumerate().map(|(i, addr)| format!("{}={addr}", i + 1)).collect();
    let log = std::fs::File::options().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_collective"))
        .env("HOSTNAME", hostname)
        .env("COLLECTIVE_JOIN", "true")
        .env("COLLECTIVE_ID_FROM_HOSTNAME", "true")
        .env("COLLECTIVE_ADVERTISE_ADDR", grpc)
        .args(["serve", "--plaintext", "--no-auth", "--initial-cluster", &initial.join(",")])
        .args(["--data-dir", cluster.dir.path().join(hostname).to_str().unwrap()])
        .args(["--grpc-addr", grpc, "--http-addr", http])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn role_of(cluster: &Cluster, id: u64) -> Option<String> {
    let status = cluster.status(0).await;
    status.members.iter().find(|m| m.id == id).map(|m| m.role.clone())
}

async fn wait_role(cluster: &Cluster, id: u64, role: Option<&str>, log: &std::path::Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while role_of(cluster, id).await.as_deref() != role {
        let logged = std::fs::read_to_string(log).unwrap_or_default();
        assert!(Instant::now() < deadline, "member {id} never became {role:?}; its log:\n{logged}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_joins_by_itself_and_rejoins_after_removal() {
    let cluster = Cluster::start(3, &[]).await;
    let leader = cluster.leader(0).await;
    cluster.directory(leader).await.add_site(site(1, "Indianapolis")).await.unwrap();
    cluster.directory(leader).await.add_user(user("agent1", 1, "1001")).await.unwrap();
    let grpc = format!("127.0.0.1:{}", free_port());
    let http = format!("127.0.0.1:{}", free_port());
    let log = cluster.dir.path().join("collective-3.log");

    // A hostname without an ordinal is refused by name.
    let bad = Command::new(env!("CARGO_BIN_EXE_collective"))
        .env("HOSTNAME", "collective")
        .args(["serve", "--plaintext", "--no-auth", "--id-from-hostname", "--data-dir", "/tmp/unused"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success() && stderr.contains("does not end in -ORDINAL"), "{stderr}");

    // Pod collective-3 is member 4: added as a learner, then promoted, with the data.
    let mut pod = spawn_pod(&cluster, "collective-3", &grpc, &http, &log);
    wait_role(&cluster, 4, Some("voter"), &log).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).unwrap().connect().await.unwrap();
    let request = pb::SearchRequest { limit: 0, serializable: true, ..Default::default() };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut directory = collective_proto::v1::directory_client::DirectoryClient::new(channel);
    while directory.search(request.clone()).await.unwrap().into_inner().entries.is_empty() {
        assert!(Instant::now() < deadline, "the joined member never received the data");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Scaled down: removed, its pod stopped; its volume stays.
    let remove = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(","), "member", "remove", "4"])
        .output()
        .unwrap();
    assert!(remove.status.success(), "{}", String::from_utf8_lossy(&remove.stderr));
    pod.kill().unwrap();
    pod.wait().unwrap();
    wait_role(&cluster, 4, None, &log).await;

    // Scaled up again on the old volume: the old data is set aside and the pod joins as new.
    let mut pod = spawn_pod(&cluster, "collective-3", &grpc, &http, &log);
    wait_role(&cluster, 4, Some("voter"), &log).await;
    let set_aside = std::fs::read_dir(cluster.dir.path())
        .unwrap()
        .flatten()
        .any(|entry| entry.file_name().to_string_lossy().starts_with("collective-3.removed-"));
    assert!(set_aside, "the removed member's old data was not set aside");
    assert!(std::fs::read_to_string(&log).unwrap().contains("it was removed"));
    // Four voters commit a write.
    cluster.directory(leader).await.add_user(user("agent2", 1, "1002")).await.unwrap();
    pod.kill().unwrap();
    pod.wait().unwrap();
}

/// After `recover`, initial members that come back empty do not initialise a second cluster
/// beside the survivor's: with `--join` they are added back by themselves, data and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_initial_members_rejoin_a_recovered_survivor() {
    let mut cluster = Cluster::start(3, &["--join"]).await;
    let leader = cluster.leader(0).await;
    cluster.directory(leader).await.add_site(site(1, "Indianapolis")).await.unwrap();
    cluster.directory(leader).await.add_user(user("agent1", 1, "1001")).await.unwrap();
    // Member 3 survives; member 1, the one that initialises clusters, is among the lost.
    for index in 0..3 {
        cluster.kill(index);
    }
    for index in 0..2 {
        std::fs::remove_dir_all(cluster.data_dir(index)).unwrap();
    }
    let recover = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["recover", "--data-dir", cluster.data_dir(2).to_str().unwrap(), "--id", "3"])
        .output()
        .unwrap();
    assert!(recover.status.success(), "{}", String::from_utf8_lossy(&recover.stderr));
    cluster.restart(2);
    cluster.wait_for_leader(&[2]).await;
    cluster.restart(0);
    cluster.restart(1);
    let log = cluster.dir.path().join("node1.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let members = cluster.status(2).await.members;
        if members.iter().filter(|m| m.role == "voter").count() == 3 {
            break;
        }
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(Instant::now() < deadline, "the empty members never rejoined: {members:?}\n{logged}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(cluster.log(0).contains("already serves a cluster"), "{}", cluster.log(0));
    // One cluster, with the survivor's data everywhere.
    let leader = cluster.wait_for_leader(&[0, 1, 2]).await;
    cluster.directory(leader).await.add_user(user("agent2", 1, "1002")).await.unwrap();
    for index in 0..3 {
        let request = pb::SearchRequest { limit: 0, ..Default::default() };
        let entries = cluster.directory(index).await.search(request).await.unwrap().into_inner().entries;
        assert_eq!(entries.len(), 2, "member {index}");
    }
}
