//! Site leases over three real nodes: a site client (the CLI's `site lease`) that dies lets its
//! lease expire and its users are logged off everywhere as unreachable; killing the Raft leader
//! while leases are healthy expires nothing. Check Site and ChangeSiteId through gRPC.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use common::{site, user, Cluster};
use tokio_stream::StreamExt;

/// The site client process, killed even when the test fails (it would keep its lease alive).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn logged_on(cluster: &Cluster, node: usize, username: &str) -> bool {
    let request = pb::GetPresenceRequest { usernames: vec![username.into()], serializable: true };
    let list = cluster.presence(node).await.get_presence(request).await.unwrap().into_inner();
    list.presences[0].current_site != 0
}

async fn check(cluster: &Cluster, node: usize, id: u32, password: &str) -> pb::CheckSiteResponse {
    let request = pb::CheckSiteRequest { id, password: password.into() };
    cluster.directory(node).await.check_site(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_site_logs_its_users_off_everywhere_but_a_leader_kill_expires_nothing() {
    let mut cluster = Cluster::start(3, &[]).await;
    let mut directory = cluster.directory(0).await;
    let mut presence = cluster.presence(0).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    directory.add_site(site(2, "Paris")).await.unwrap();
    for (name, home, extension) in [("ann", 1, "1001"), ("ben", 1, "1002"), ("cat", 2, "2001")] {
        directory.add_user(user(name, home, extension)).await.unwrap();
        let logon = pb::LogOnRequest { username: name.into(), site: home, server: String::new() };
        presence.log_on(logon).await.unwrap();
    }
    let start = cluster.status(0).await.revision + 1;

    // The site client: grants a 2 s lease and keeps it alive, failing over between members.
    let mut site_client = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_collective"))
            .args(["--endpoints", &cluster.grpc.join(","), "site", "lease", "1", "--ttl-ms", "2000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check(&cluster, 0, 1, "password-1").await.lease_alive {
        assert!(Instant::now() < deadline, "the site client never got a lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Kill the Raft leader while the lease is healthy: after twice the TTL nothing expired.
    let leader = cluster.leader(0).await;
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.wait_for_leader(&survivors).await;
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    for &node in &survivors {
        assert!(logged_on(&cluster, node, "ann").await, "a leader change expired a healthy lease");
        assert!(check(&cluster, node, 1, "password-1").await.lease_alive);
    }

    // The site dies: within the TTL (plus a tick) its users are logged off on every member.
    site_client.0.kill().unwrap();
    site_client.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for &node in &survivors {
        while logged_on(&cluster, node, "ann").await || logged_on(&cluster, node, "ben").await {
            assert!(Instant::now() < deadline, "users of the dead site still logged on at member {node}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(logged_on(&cluster, node, "cat").await, "a user of another site was logged off");
    }
    let report = check(&cluster, survivors[0], 1, "password-1").await;
    assert!(!report.lease_alive && report.message.contains("lease"), "{report:?}");

    // Every watcher sees why: the lease ended, then each user logged off as unreachable.
    let watch = pb::WatchRequest {
        start_revision: start,
        kinds: vec!["LeaseEnded".into(), "UserLoggedOff".into()],
        ..Default::default()
    };
    let mut stream = cluster.presence(survivors[1]).await.watch(watch).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        seen.push(event.body.unwrap());
    }
    use pb::event::Body;
    assert!(matches!(&seen[0], Body::LeaseEnded(ended) if ended.site == 1 && ended.reason == "expired"), "{seen:?}");
    for body in &seen[1..] {
        assert!(
            matches!(body, Body::UserLoggedOff(off) if off.site == 1 && off.reason == "site-unreachable"),
            "{seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_site_names_the_failing_part_and_change_site_id_rewrites_references() {
    let cluster = Cluster::start(3, &[]).await;
    let mut directory = cluster.directory(1).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    directory.add_site(site(2, "Paris")).await.unwrap();
    directory.add_user(user("cat", 2, "2001")).await.unwrap();
    let logon = pb::LogOnRequest { username: "cat".into(), site: 2, server: String::new() };
    cluster.presence(2).await.log_on(logon).await.unwrap();

    let unknown = check(&cluster, 0, 7, "x").await;
    assert!(!unknown.exists && unknown.message.contains("does not exist"), "{unknown:?}");
    let wrong = check(&cluster, 0, 1, "wrong").await;
    assert!(wrong.exists && !wrong.password_ok && wrong.message.contains("password is wrong"), "{wrong:?}");
    let no_lease = check(&cluster, 0, 1, "password-1").await;
    assert!(no_lease.password_ok && !no_lease.lease_alive && no_lease.message.contains("no lease"), "{no_lease:?}");
    directory.grant_lease(pb::GrantLeaseRequest { site: 1, ttl_ms: 60_000 }).await.unwrap();
    let healthy = check(&cluster, 2, 1, "password-1").await;
    assert!(healthy.lease_alive && healthy.lease_ttl_ms == 60_000 && healthy.lease_granted_at_ms > 0, "{healthy:?}");

    let taken = directory.change_site_id(pb::ChangeSiteIdRequest { old: 2, new: 1 }).await.unwrap_err();
    assert_eq!(taken.code(), tonic::Code::AlreadyExists);
    directory.change_site_id(pb::ChangeSiteIdRequest { old: 2, new: 20 }).await.unwrap();
    for node in 0..3 {
        let entry = cluster
            .directory(node)
            .await
            .get_user(pb::GetUserRequest { username: "cat".into(), serializable: false })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(entry.user.unwrap().home_site, 20);
        assert_eq!(entry.presence.unwrap().current_site, 20);
        let gone = cluster.directory(node).await.get_site(pb::GetSiteRequest { id: 2, serializable: false }).await;
        assert_eq!(gone.unwrap_err().code(), tonic::Code::NotFound);
    }
}
