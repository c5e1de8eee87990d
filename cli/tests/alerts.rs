//! Alerts as a supervisor uses them: rules added with the CLI, raised and cleared inside the log,
//! delivered to a webhook receiver at least once (across a receiver outage and a leader kill,
//! none invented), and bad rules refused naming the field with nothing changed.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use collective_proto::v1::alerts_client::AlertsClient;
use common::Cluster;

fn cli(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(",")])
        .args(args)
        .env("COLLECTIVE_SITE_PASSWORD", "site-secret")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    (output.status.success(), stderr)
}

fn ok(cluster: &Cluster, args: &[&str]) {
    let (success, stderr) = cli(cluster, args);
    assert!(success, "collective {args:?} failed: {stderr}");
}

fn setup(cluster: &Cluster) {
    ok(cluster, &["site", "add", "--id", "1", "--name", "Indianapolis", "--phone", "+1 317 555 0100"]);
    ok(cluster, &["workgroup", "add", "Sales"]);
    let add = ["user", "add", "--username", "ada", "--display-name", "Ada", "--email", "ada@example.com"];
    ok(cluster, &[&add[..], &["--home-site", "1", "--extension", "1100"]].concat());
    ok(cluster, &["workgroup", "add-member", "Sales", "ada"]);
}

/// What the receiver was sent: each event id with its JSON bodies, and how many it refused.
#[derive(Default)]
struct Received {
    bodies: Mutex<BTreeMap<String, Vec<serde_json::Value>>>,
    refused: AtomicU64,
    down: AtomicBool,
}

/// A webhook receiver on loopback: 503 while `down`, else records the delivery and answers 204.
async fn receiver(received: Arc<Received>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hook = move |headers: HeaderMap, body: String| {
        let received = received.clone();
        async move {
            if received.down.load(Ordering::SeqCst) {
                received.refused.fetch_add(1, Ordering::SeqCst);
                return StatusCode::SERVICE_UNAVAILABLE;
            }
            let json: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default();
            assert_eq!(json["event_id"], key, "the Idempotency-Key header is the event id");
            received.bodies.lock().unwrap().entry(key.to_string()).or_default().push(json);
            StatusCode::NO_CONTENT
        }
    };
    let app = axum::Router::new().route("/hooks/sales-team", axum::routing::post(hook));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hooks/sales-team")
}

async fn history(cluster: &Cluster, via: usize) -> pb::AlertHistoryResponse {
    let mut client = AlertsClient::new(cluster.channel(via).await);
    client.history(pb::AlertHistoryRequest { serializable: false, limit: 0 }).await.unwrap().into_inner()
}

/// Waits until `via`'s history holds `count` records; returns them.
async fn wait_records(cluster: &Cluster, via: usize, count: usize) -> Vec<pb::AlertRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let records = history(cluster, via).await.records;
        if records.len() >= count {
            return records;
        }
        assert!(Instant::now() < deadline, "history never reached {count} records: {records:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_raised_and_cleared_alert_reaches_the_webhook_at_least_once_and_none_is_invented() {
    let mut cluster = Cluster::start(3, &[]).await;
    setup(&cluster);
    let received = Arc::new(Received::default());
    let url = receiver(received.clone()).await;
    received.down.store(true, Ordering::SeqCst);
    let rule = ["alert", "add", "sales-on", "--statistic", "workgroup.logged_on", "--workgroup", "Sales"];
    ok(&cluster, &[&rule[..], &["--above", "0", "--webhook", &url]].concat());

    // While the receiver is down, an alert is raised and cleared: the leader keeps retrying.
    ok(&cluster, &["user", "logon", "ada", "--site", "1"]);
    wait_records(&cluster, 0, 1).await;
    ok(&cluster, &["user", "logoff", "ada"]);
    wait_records(&cluster, 0, 2).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.refused.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the leader never tried the webhook");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The leader falls before any delivery; its successor delivers from the log's mark.
    let leader = cluster.leader(0).await;
    cluster.kill(leader);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    cluster.wait_for_leader(&survivors).await;
    received.down.store(false, Ordering::SeqCst);
    let via = survivors[0];
    ok(&cluster, &["user", "logon", "ada", "--site", "1"]);
    wait_records(&cluster, via, 3).await;
    ok(&cluster, &["user", "logoff", "ada"]);
    wait_records(&cluster, via, 4).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let records = loop {
        let response = history(&cluster, via).await;
        if response.records.iter().all(|record| record.delivered) {
            assert_eq!(response.undelivered_dropped, 0);
            break response.records;
        }
        assert!(Instant::now() < deadline, "not every alert was delivered: {response:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 4, "{records:?}");
    let bodies = received.bodies.lock().unwrap();
    let expected: BTreeMap<String, &pb::AlertRecord> =
        records.iter().map(|record| (format!("alert-{}", record.revision), record)).collect();
    assert_eq!(
        bodies.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "every alert delivered, none invented"
    );
    for (event_id, deliveries) in bodies.iter() {
        let record = expected[event_id];
        for body in deliveries {
            assert_eq!(body["rule"], "sales-on");
            assert_eq!(body["state"], if record.raised { "raised" } else { "cleared" });
            assert_eq!(body["value"], record.value);
            assert_eq!(body["revision"], record.revision);
        }
    }
    let raised: Vec<bool> = records.iter().map(|record| record.raised).collect();
    assert_eq!(raised, [true, false, true, false]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rule_is_refused_naming_its_field_and_changes_nothing() {
    let cluster = Cluster::start(3, &[]).await;
    setup(&cluster);
    let base = ["alert", "add", "queue", "--workgroup", "Sales"];
    let cases: [(&[&str], &str); 6] = [
        (&["--statistic", "workgroup.mood", "--above", "5"], "rule.statistic"),
        (&["--statistic", "workgroup.queued", "--above", "5000000000"], "rule.threshold"),
        (&["--statistic", "workgroup.queued", "--above", "5", "--for-s", "90000"], "rule.for_ms"),
        (&["--statistic", "workgroup.queued", "--above", "5", "--webhook", "ftp://example.com/hook"], "rule.webhook"),
        (
            &["--statistic", "workgroup.queued", "--above", "5", "--webhook", "https://user:pw@example.com/"],
            "rule.webhook",
        ),
        (&["--statistic", "workgroup.queued", "--above", "5", "--webhook", "not a url"], "rule.webhook"),
    ];
    for (args, field) in cases {
        let (success, stderr) = cli(&cluster, &[&base[..], args].concat());
        assert!(!success && stderr.contains(field), "{args:?}: expected an error naming {field}: {stderr}");
    }
    let (success, stderr) =
        cli(&cluster, &["alert", "add", "q", "--statistic", "site.lease", "--site", "9", "--below", "1"]);
    assert!(!success && stderr.contains("site \"9\" not found"), "an unknown site is named: {stderr}");
    let mut client = AlertsClient::new(cluster.channel(0).await);
    let rules = client.list_rules(pb::ListAlertRulesRequest { serializable: false }).await.unwrap().into_inner();
    assert!(rules.rules.is_empty(), "a refused rule changed the state: {rules:?}");
    ok(
        &cluster,
        &[&base[..], &["--statistic", "workgroup.queued", "--above", "5", "--webhook", "https://hooks.example.com/a"]]
            .concat(),
    );
    let rules = client.list_rules(pb::ListAlertRulesRequest { serializable: false }).await.unwrap().into_inner();
    assert_eq!(rules.rules.len(), 1);
    assert_eq!(rules.rules[0].rule.as_ref().unwrap().webhook, "https://hooks.example.com/a");
    // Removed through the CLI; a second removal names what is missing.
    ok(&cluster, &["alert", "remove", "QUEUE"]);
    let (success, stderr) = cli(&cluster, &["alert", "remove", "queue"]);
    assert!(!success && stderr.contains("alert rule") && stderr.contains("NOT_FOUND"), "{stderr}");
    let rules = client.list_rules(pb::ListAlertRulesRequest { serializable: false }).await.unwrap().into_inner();
    assert!(rules.rules.is_empty());
}

/// The value of `collective_alert_raised{rule}` in a member's `/metrics`, if the series is there.
fn raised_gauge(cluster: &Cluster, member: usize, rule: &str) -> Option<f64> {
    let metrics = common::http_get(&cluster.http[member], "/metrics");
    let prefix = format!("collective_alert_raised{{rule=\"{rule}\"}} ");
    metrics.lines().find_map(|line| line.strip_prefix(&prefix)).and_then(|value| value.trim().parse().ok())
}

/// Waits until every member's gauge for `rule` reads `value` (`None`: no series).
async fn wait_gauge(cluster: &Cluster, rule: &str, value: Option<f64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    for member in 0..3 {
        while raised_gauge(cluster, member, rule) != value {
            let now = raised_gauge(cluster, member, rule);
            assert!(Instant::now() < deadline, "member {member}: {rule} reads {now:?}, not {value:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A raised alert shows as 1 in every member's `/metrics`, 0 once cleared, and its series ends
/// once its rule is removed while raised (it must not read raised, or 0, forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_removed_while_raised_leaves_the_metrics() {
    let cluster = Cluster::start(3, &[]).await;
    setup(&cluster);
    let rule = ["alert", "add", "sales-on", "--statistic", "workgroup.logged_on", "--workgroup", "Sales"];
    ok(&cluster, &[&rule[..], &["--above", "0"]].concat());
    ok(&cluster, &["user", "logon", "ada", "--site", "1"]);
    wait_gauge(&cluster, "sales-on", Some(1.0)).await;
    ok(&cluster, &["user", "logoff", "ada"]);
    wait_gauge(&cluster, "sales-on", Some(0.0)).await;
    ok(&cluster, &["user", "logon", "ada", "--site", "1"]);
    wait_gauge(&cluster, "sales-on", Some(1.0)).await;
    ok(&cluster, &["alert", "remove", "sales-on"]);
    wait_gauge(&cluster, "sales-on", None).await;
}
