//! The CLI as an operator uses it: the real binary against a real 3-node cluster, table and JSON
//! output, failover across --endpoints, and clear errors with a non-zero exit.

mod common;

use std::process::Command;
use std::time::Duration;

use common::Cluster;

fn cli(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    // The first endpoint is dead: the CLI must fail over to the others.
    let endpoints = format!("127.0.0.1:1,{}", cluster.grpc.join(","));
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &endpoints])
        .args(args)
        .env("COLLECTIVE_SITE_PASSWORD", "site-secret")
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
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_workflow_through_the_cli() {
    let cluster = Cluster::start(3, &[]).await;
    ok(
        &cluster,
        &["site", "add", "--id", "1", "--name", "Indianapolis", "--phone", "+1 317 555 0100", "--server", "indy1"],
    );
    ok(
        &cluster,
        &["site", "add", "--id", "2", "--name", "Paris", "--phone", "+33 1 55 55 01 00", "--server", "paris1"],
    );
    ok(&cluster, &["workgroup", "add", "Support", "--spans-sites"]);
    let add = ["user", "add", "--username", "jo", "--display-name", "Jo", "--email", "jo@example.com"];
    ok(&cluster, &[&add[..], &["--home-site", "1", "--extension", "1100", "--skill", "english=80"]].concat());
    ok(&cluster, &["workgroup", "add-member", "Support", "jo"]);
    ok(&cluster, &["user", "logon", "jo", "--site", "2"]);
    ok(&cluster, &["status", "set", "jo", "At Lunch", "--until-minutes", "30", "--detail", "back at 1"]);

    let json: serde_json::Value = serde_json::from_str(&ok(&cluster, &["-w", "json", "user", "get", "jo"])).unwrap();
    assert_eq!(json["presence"]["status_key"], "At Lunch");
    assert_eq!(json["presence"]["current_site"], 2);
    assert_eq!(json["user"]["spanning"], true);

    let table = ok(&cluster, &["directory", "search", "--site", "2"]);
    assert!(table.lines().next().unwrap().contains("USERNAME") && table.contains("jo"), "{table}");
    let resolved = ok(&cluster, &["extension", "resolve", "1100", "--from-site", "1"]);
    assert!(resolved.contains("dial_string: 1100@paris1"), "{resolved}");
    let check = ok(&cluster, &["site", "check", "1"]);
    assert!(check.contains("password_ok: true"), "{check}");
    let status = ok(&cluster, &["cluster", "status"]);
    assert!(status.contains("leader_id") && status.contains("voter"), "{status}");
    let watched = ok(&cluster, &["-w", "json", "status", "watch", "--from-revision", "1", "--count", "3"]);
    assert_eq!(watched.lines().count(), 3, "{watched}");

    let past = ok(&cluster, &["history", "presence", "jo"]);
    assert!(past.contains("status_key: At Lunch") && past.contains("found: true"), "{past}");
    let durations = ok(&cluster, &["-w", "json", "history", "durations", "jo", "--seconds", "600"]);
    let durations: serde_json::Value = serde_json::from_str(&durations).unwrap();
    assert!(durations["ms_by_status"]["Available"].as_u64().is_some(), "{durations}");
    // Further back than the retention (7 days by default) is a clear error naming the oldest time.
    let (success, _, stderr) = cli(&cluster, &["history", "presence", "jo", "--at-ms", "1"]);
    assert!(!success && stderr.contains("OutOfRange") && stderr.contains("HISTORY_COMPACTED"), "{stderr}");

    // Many changes over one stream, one JSON line each: every line's outcome, the bad ones
    // named by line, and a failure at the end.
    let changes = tempfile::NamedTempFile::new().unwrap();
    let lines = [
        r#"{"change":"set_status","username":"jo","status_key":"Available"}"#,
        "",
        r#"{"change":"start_interaction","username":"jo","interaction_id":"c1"}"#,
        r#"{"change":"set_status","username":"nobody","status_key":"Available"}"#,
        "not json",
        r#"{"change":"set_status","username":"jo","status_key":"Available","colour":"red"}"#,
    ];
    let mut input = lines.join("\n").into_bytes();
    // Line 7 is too long to be a change, line 8 is not text.
    input.extend_from_slice(format!("\n{}\n", "x".repeat(70_000)).as_bytes());
    input.extend_from_slice(b"\xff\xfe\n");
    std::fs::write(changes.path(), input).unwrap();
    let (success, stdout, stderr) =
        cli(&cluster, &["-w", "json", "status", "submit", "--file", changes.path().to_str().unwrap()]);
    assert!(!success && stderr.contains("5 of 7 changes failed"), "{stderr}");
    let outcomes: std::collections::BTreeMap<u64, serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .map(|outcome| (outcome["line"].as_u64().unwrap(), outcome))
        .collect();
    assert_eq!(outcomes.keys().copied().collect::<Vec<_>>(), vec![1, 3, 4, 5, 6, 7, 8], "{stdout}");
    assert!(outcomes[&7]["error"].as_str().unwrap().contains("longer than 65536 bytes"), "{stdout}");
    assert!(outcomes[&8]["error"].as_str().unwrap().contains("not UTF-8"), "{stdout}");
    assert!(outcomes[&1]["revision"].as_u64().unwrap() > 0 && outcomes[&3]["revision"].as_u64().is_some(), "{stdout}");
    assert_eq!(outcomes[&4]["code"], "NotFound", "{stdout}");
    assert!(outcomes[&5]["error"].as_str().unwrap().contains("not a presence change"), "{stdout}");
    assert!(outcomes[&6]["error"].as_str().unwrap().contains("unknown field `colour`"), "{stdout}");
    let json: serde_json::Value = serde_json::from_str(&ok(&cluster, &["-w", "json", "user", "get", "jo"])).unwrap();
    assert_eq!((&json["presence"]["status_key"], &json["presence"]["on_phone"]), (&"Available".into(), &true.into()));
    // From standard input, as a gateway pipes them.
    let mut submit = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(","), "status", "submit"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let line = r#"{"change":"end_interaction","username":"jo","interaction_id":"c1"}"#;
    writeln!(submit.stdin.take().unwrap(), "{line}").unwrap();
    let output = submit.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.starts_with("line 1: written at revision "), "{stdout}");

    // Updates, deletions and lease revocation through the CLI.
    let update = ["user", "update", "--username", "jo", "--display-name", "Jo Roamer", "--email", "jo@example.com"];
    ok(&cluster, &[&update[..], &["--home-site", "2", "--extension", "2100"]].concat());
    let json: serde_json::Value = serde_json::from_str(&ok(&cluster, &["-w", "json", "user", "get", "jo"])).unwrap();
    assert_eq!(
        (json["user"]["display_name"].as_str(), json["user"]["home_site"].as_u64()),
        (Some("Jo Roamer"), Some(2))
    );
    ok(&cluster, &["site", "lease", "2", "--once", "--ttl-ms", "60000"]);
    let revoked = ok(&cluster, &["site", "revoke", "2"]);
    assert!(revoked.contains("site-unreachable"), "jo, logged on at site 2, is logged off: {revoked}");
    ok(&cluster, &["site", "set-active", "2", "false"]);
    let (success, _, stderr) = cli(&cluster, &["user", "logon", "jo", "--site", "2"]);
    assert!(!success && stderr.contains("FailedPrecondition") && stderr.contains("not active"), "{stderr}");
    ok(&cluster, &["workgroup", "delete", "Support"]);
    assert!(!ok(&cluster, &["workgroup", "list"]).contains("Support"));
    ok(&cluster, &["user", "delete", "jo"]);
    let (success, _, stderr) = cli(&cluster, &["user", "get", "jo"]);
    assert!(!success && stderr.contains("NotFound"), "{stderr}");

    let (success, _, stderr) = cli(&cluster, &["site", "add", "--id", "1000", "--name", "X", "--phone", "1"]);
    assert!(!success);
    assert!(stderr.contains("InvalidArgument") && stderr.contains("site.id"), "{stderr}");
    let (success, _, stderr) = cli(&cluster, &["status", "set", "nobody", "Available"]);
    assert!(!success);
    assert!(stderr.contains("NotFound") && stderr.contains("nobody"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_like_grpcurl_expects() {
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;

    let cluster = Cluster::start(3, &[]).await;
    let mut health = HealthClient::new(cluster.channel(0).await);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner().status;
        if status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never SERVING");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Each client service has its own name, serving with the quorum; unknown names are NOT_FOUND.
    for service in ["collective.v1.Routing", "collective.v1.Messages", "collective.v1.Config"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner().status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service}");
    }
    let unknown = health.check(HealthCheckRequest { service: "collective.v1.Nothing".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut reflection = ServerReflectionClient::new(cluster.channel(1).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = responses.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in
        ["collective.v1.Directory", "collective.v1.Presences", "collective.v1.Cluster", "grpc.health.v1.Health"]
    {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    // The members' own Raft service is not advertised to clients.
    assert!(!names.iter().any(|n| n.contains("raft")), "{names:?}");
    // The error details our errors carry can be decoded (grpcurl, buf curl).
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("google.rpc.ErrorInfo".into())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let answer = responses.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(&answer, Some(MessageResponse::FileDescriptorResponse(files)) if !files.file_descriptor_proto.is_empty()),
        "{answer:?}"
    );

    // The older reflection version is served too (grpcurl falls back to it).
    {
        use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse;
        use tonic_reflection::pb::v1alpha::ServerReflectionRequest;
        let mut reflection = ServerReflectionClient::new(cluster.channel(2).await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses =
            reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
        let message = responses.next().await.unwrap().unwrap().message_response;
        assert!(matches!(message, Some(MessageResponse::ListServicesResponse(_))), "{message:?}");
    }

    // A service nobody serves, a method a service lacks and a path that is no gRPC method:
    // UNIMPLEMENTED, as tonic's own router answers.
    for path in ["/collective.v1.Nowhere/Anything", "/collective.v1.Presences/Nothing", "/collective.v1.Presences"] {
        let mut grpc = tonic::client::Grpc::new(cluster.channel(0).await);
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::<(), ()>::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unimplemented, "{path}: {status:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_and_notes_through_the_cli() {
    let cluster = Cluster::start(3, &[]).await;
    for (id, name) in [("1", "Indianapolis"), ("2", "Paris")] {
        ok(&cluster, &["site", "add", "--id", id, "--name", name, "--phone", "+1 317 555 0100", "--server", "cic"]);
    }
    ok(&cluster, &["note", "create", "--site", "1", "Order", "--ttl-minutes", "60"]);
    ok(
        &cluster,
        &[
            "note",
            "update",
            "--site",
            "1",
            "Order",
            "--attribute",
            "qty",
            "--op",
            "replace",
            "--type",
            "Integer",
            "3",
            "4",
        ],
    );
    let attribute =
        ok(&cluster, &["-w", "json", "note", "get", "--site", "1", "Order", "--attribute", "qty", "--type", "Integer"]);
    assert!(attribute.contains('3') && attribute.contains('4'), "{attribute}");
    let (success, _, stderr) =
        cli(&cluster, &["note", "get", "--site", "1", "Order", "--attribute", "qty", "--type", "String"]);
    assert!(!success && stderr.contains("Integer"), "wrong type names the stored type: {stderr}");

    let sent = ok(
        &cluster,
        &[
            "message",
            "send",
            "--from",
            "1",
            "--to",
            "2",
            "--object",
            "Orders",
            "--event",
            "New",
            "-e",
            "str:hello",
            "-e",
            "int:42",
            "-e",
            "note:Order",
        ],
    );
    assert!(sent.contains("message_ids"), "{sent}");
    let backlog = ok(&cluster, &["message", "backlog", "--site", "2"]);
    assert!(backlog.contains("messages") || backlog.contains("MESSAGES"), "{backlog}");
    let delivered = ok(&cluster, &["-w", "json", "message", "subscribe", "--site", "2", "--count", "1", "--ack"]);
    let delivery: serde_json::Value = serde_json::from_str(delivered.trim()).unwrap();
    assert_eq!(delivery["from_site"], 1);
    assert_eq!(delivery["elements"].as_array().unwrap().len(), 3);
    let backlog: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["-w", "json", "message", "backlog", "--site", "2"])).unwrap();
    assert_eq!(backlog["sites"][0]["messages"], 0, "acknowledged by the subscriber");

    let (success, stdout, _) = cli(
        &cluster,
        &[
            "message",
            "request",
            "--from",
            "1",
            "--to",
            "2",
            "--object",
            "Orders",
            "--event",
            "Price",
            "--timeout-ms",
            "300",
            "-e",
            "int:1",
        ],
    );
    assert!(!success && stdout.contains("timed out"), "a timeout is reported as such: {stdout}");
    let (success, _, stderr) =
        cli(&cluster, &["message", "send", "--from", "1", "--to", "9", "--object", "O", "--event", "E"]);
    assert!(!success && stderr.contains("site") && stderr.contains('9'), "{stderr}");
    let (success, _, stderr) = cli(
        &cluster,
        &["message", "send", "--from", "1", "--to", "2", "--object", "O", "--event", "E", "-e", "float:1.5"],
    );
    assert!(!success && stderr.contains("float"), "{stderr}");

    // Handler2/Handler3 from two shells: a request waits while the other site answers it.
    let endpoints = cluster.grpc.join(",");
    let requester = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &endpoints, "-w", "json", "message", "request", "--from", "1", "--to", "2"])
        .args(["--object", "Orders", "--event", "Price", "--timeout-ms", "20000", "-e", "int:21"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The request that timed out above is still queued (delivered, unanswerable): it comes first.
    let requests =
        ok(&cluster, &["-w", "json", "message", "subscribe", "--site", "2", "--filter", ":Price", "--count", "2"]);
    let requests: Vec<serde_json::Value> = requests.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(requests[0]["elements"][0]["value"]["Integer"], 1);
    let request = &requests[1];
    assert_eq!(request["elements"][0]["value"]["Integer"], 21);
    let correlation_id = request["correlation_id"].to_string();
    ok(
        &cluster,
        &["message", "respond", "--from", "2", "--correlation-id", &correlation_id, "--to", "1", "-e", "int:42"],
    );
    let answered = requester.wait_with_output().unwrap();
    assert!(answered.status.success());
    let response: serde_json::Value = serde_json::from_slice(&answered.stdout).unwrap();
    assert_eq!(response["correlation_id"].to_string(), correlation_id);
    assert_eq!(response["elements"][0]["value"]["Integer"], 42);
    ok(&cluster, &["message", "ack", "--site", "2", &requests[0]["id"].to_string(), &request["id"].to_string()]);
    // A queue bound of one message: the second send is refused, nothing is dropped.
    ok(&cluster, &["message", "limits", "--messages", "1", "--bytes", "1048576"]);
    ok(&cluster, &["message", "send", "--from", "1", "--to", "2", "--object", "O", "--event", "E"]);
    let (success, _, stderr) =
        cli(&cluster, &["message", "send", "--from", "1", "--to", "2", "--object", "O", "--event", "E"]);
    assert!(!success && stderr.contains("limit"), "a full queue is refused: {stderr}");
    let listed = ok(&cluster, &["note", "list", "--site", "1"]);
    assert!(listed.contains("Order"), "{listed}");
    ok(&cluster, &["note", "remove", "--site", "1", "Order"]);
    let (success, _, stderr) = cli(&cluster, &["note", "remove", "--site", "1", "Order"]);
    assert!(!success && stderr.contains("not found"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_through_the_cli() {
    let cluster = Cluster::start(3, &[]).await;
    for (id, name) in [("1", "Indianapolis"), ("2", "Paris")] {
        ok(&cluster, &["site", "add", "--id", id, "--name", name, "--phone", "+1 317 555 0100", "--server", "cic"]);
        ok(&cluster, &["site", "lease", id, "--ttl-ms", "300000", "--once"]);
    }
    ok(&cluster, &["workgroup", "add", "Support", "--spans-sites"]);
    for (name, site, extension, skill) in [("ann", "1", "1100", "french=80"), ("bob", "2", "1200", "french=40")] {
        let email = format!("{name}@example.com");
        ok(
            &cluster,
            &[
                "user",
                "add",
                "--username",
                name,
                "--display-name",
                name,
                "--email",
                &email,
                "--home-site",
                site,
                "--extension",
                extension,
                "--skill",
                skill,
            ],
        );
        ok(&cluster, &["workgroup", "add-member", "Support", name]);
        ok(&cluster, &["user", "logon", name, "--site", site]);
    }
    ok(&cluster, &["route", "settings", "Support", "--strategy", "most-skilled", "--reservation-ttl-ms", "60000"]);
    let settings = ok(&cluster, &["-w", "json", "route", "settings", "support"]);
    assert!(settings.contains("most-skilled") && settings.contains("60000"), "{settings}");

    // Bob's site calls for French: ann is more skilled, so she wins over the origin site.
    let routed = ok(
        &cluster,
        &["route", "call", "--id", "c1", "--origin", "2", "--workgroup", "Support", "--skill", "french=30"],
    );
    assert!(routed.contains("reserved to ann at site 1"), "{routed}");
    let explained = ok(&cluster, &["route", "explain", "c1"]);
    assert!(explained.contains("most-skilled") && explained.contains("winner ann"), "{explained}");
    // Levels are indexed highest first: bob (40) cannot beat ann (80), so he is not examined.
    assert!(explained.contains("2 eligible, 1 examined, 1 qualified"), "{explained}");
    let again = ok(
        &cluster,
        &["route", "call", "--id", "c1", "--origin", "2", "--workgroup", "Support", "--skill", "french=30"],
    );
    assert!(again.contains("already routed") && again.contains("reserved to ann"), "{again}");

    // Bob rejects his call and is marked not answering; it queues (ann is busy).
    let (success, _, stderr) = cli(&cluster, &["route", "accept", "c1", "--agent", "bob"]);
    assert!(!success && stderr.contains("reserved to ann, not bob"), "{stderr}");
    ok(&cluster, &["route", "accept", "c1", "--agent", "ann"]);
    ok(&cluster, &["route", "call", "--id", "c2", "--origin", "2", "--workgroup", "Support", "--priority", "7"]);
    ok(&cluster, &["route", "reject", "c2", "--not-answering"]);
    let queue = ok(&cluster, &["route", "queue", "Support"]);
    assert!(queue.starts_with("1 queued") && queue.contains("c2"), "{queue}");
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&cluster, &["-w", "json", "route", "stats", "Support"])).unwrap();
    let support = &stats["workgroups"][0];
    assert_eq!((support["on_phone"].as_u64(), support["queued"].as_u64()), (Some(1), Some(1)), "{stats}");
    assert_eq!((support["routed"].as_u64(), support["rejected"].as_u64()), (Some(2), Some(1)), "{stats}");
    let bob = ok(&cluster, &["-w", "json", "user", "get", "bob"]);
    assert!(bob.contains("AcdAgentNotAnswering"), "{bob}");

    // Ann finishes c1: the queued c2 is hers at once.
    ok(&cluster, &["interaction", "end", "ann", "c1"]);
    let explained = ok(&cluster, &["route", "explain", "c2"]);
    assert!(explained.contains("reserved to ann") && explained.contains("declined by: bob"), "{explained}");
    ok(&cluster, &["route", "cancel", "c2"]);
    let matrix = ok(&cluster, &["route", "cost", "--from", "2", "--to", "1", "5000"]);
    assert!(matrix.contains("revision"), "{matrix}");
    let matrix = ok(&cluster, &["route", "matrix"]);
    assert!(matrix.contains("5000"), "{matrix}");

    let (success, _, stderr) = cli(&cluster, &["route", "call", "--id", "c3", "--origin", "1", "--workgroup", "Sales"]);
    assert!(!success && stderr.contains("Sales"), "an unknown workgroup is named: {stderr}");
    let (success, _, stderr) = cli(
        &cluster,
        &["route", "call", "--id", "c3", "--origin", "1", "--workgroup", "Support", "--skill", "french=0"],
    );
    assert!(!success && stderr.contains("skills"), "a bad level names the field: {stderr}");
}

/// `status submit` piped from a gateway keeps going when the member its stream goes to stops:
/// the lines after go on a new stream to the next member that answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_submit_goes_on_after_its_member_stops() {
    use std::io::{BufRead, Write};
    let mut cluster = Cluster::start(3, &[]).await;
    ok(
        &cluster,
        &["site", "add", "--id", "1", "--name", "Indianapolis", "--phone", "+1 317 555 0100", "--server", "i1"],
    );
    let add = ["user", "add", "--username", "jo", "--display-name", "Jo", "--email", "jo@example.com"];
    ok(&cluster, &[&add[..], &["--home-site", "1", "--extension", "1100"]].concat());
    let leader = cluster.leader(0).await;
    let follower = (leader + 1) % 3;
    // The stream opens on the follower, the first endpoint.
    let endpoints = [follower, leader, (leader + 2) % 3].map(|i| cluster.grpc[i].clone()).join(",");
    let mut submit = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &endpoints, "status", "submit"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = submit.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(submit.stdout.take().unwrap()).lines();
    writeln!(stdin, r#"{{"change":"set_status","username":"jo","status_key":"Available"}}"#).unwrap();
    let first = stdout.next().unwrap().unwrap();
    assert!(first.starts_with("line 1: written at revision "), "{first}");
    cluster.kill(follower);
    tokio::time::sleep(Duration::from_secs(1)).await;
    writeln!(stdin, r#"{{"change":"set_status","username":"jo","status_key":"Away from desk"}}"#).unwrap();
    drop(stdin);
    let rest: Vec<String> = stdout.map(Result::unwrap).collect();
    let output = submit.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(rest.len() == 1 && rest[0].starts_with("line 2: written at revision "), "{rest:?}");
    assert!(stderr.contains("sending the changes after it on a new stream"), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(&ok(&cluster, &["-w", "json", "user", "get", "jo"])).unwrap();
    assert_eq!(json["presence"]["status_key"], "Away from desk");
}

/// The benchmark tools as an operator runs them: `bench load` fills the cluster and reports every
/// member; `bench presence --count` measures exactly that many requests (or a few more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_load_and_a_counted_presence_run() {
    let cluster = Cluster::start(3, &[]).await;
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_collective"))
            .args(["--endpoints", &cluster.grpc.join(","), "-w", "json", "bench"])
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "bench {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).unwrap()
    };
    let loaded = run(&["load", "--sites", "3", "--users", "60", "--workgroups-per-site", "2", "--concurrency", "16"]);
    assert_eq!(loaded["users"], 60, "{loaded}");
    let members = loaded["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{loaded}");
    for member in members {
        assert_eq!(member["sites"], 3, "{loaded}");
        assert!(member["resident_memory_bytes"].as_u64().unwrap() > 0, "{loaded}");
    }
    // The leader applied everything; the members that reported fewer users were still catching up.
    assert!(members.iter().any(|m| m["users"] == 60), "{loaded}");

    // The CPU of another process (here the test's own) and of the bench, per measured request.
    let test_pid = std::process::id().to_string();
    let presence =
        run(&["presence", "--clients", "4", "--users", "20", "--count", "300", "--warmup", "0", "--cpu-of", &test_pid]);
    let measured = presence["ok"].as_u64().unwrap()
        + presence["errors"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>();
    // The window closes once 300 are measured; requests still in flight may land in it too.
    assert!((300..360).contains(&measured), "{presence}");
    assert_eq!(presence["errors"], serde_json::json!({}), "{presence}");
    let cpu = presence["cpu_us_per_request"].as_object().unwrap();
    assert!(cpu.len() == 2 && cpu.contains_key("self") && cpu.contains_key(&test_pid), "{presence}");
    assert!(cpu.values().all(|us| us.as_f64().unwrap() >= 0.0), "{presence}");
    let (success, _, error) = cli(&cluster, &["bench", "presence", "--cpu-of", "4294967295"]);
    assert!(!success && error.contains("--cpu-of: no process 4294967295"), "{error}");

    // Over Submit streams: the same count, no errors; etcd has no streamed put.
    let streamed =
        run(&["presence", "--clients", "8", "--users", "20", "--count", "300", "--warmup", "0", "--api", "stream"]);
    assert_eq!(streamed["workload"], "presence-stream", "{streamed}");
    assert!(streamed["ok"].as_u64().unwrap() >= 300, "{streamed}");
    assert_eq!(streamed["errors"], serde_json::json!({}), "{streamed}");
    let (success, _, error) = cli(&cluster, &["bench", "presence", "--target", "etcd", "--api", "stream"]);
    assert!(!success && error.contains("etcd has no streamed put"), "{error}");

    // Straight over HTTP/2 instead of tonic's channel: the same count, no errors. It carries
    // unary calls only.
    let direct =
        run(&["presence", "--clients", "8", "--users", "20", "--count", "300", "--warmup", "0", "--transport", "h2"]);
    assert_eq!(direct["workload"], "presence", "{direct}");
    assert!(direct["ok"].as_u64().unwrap() >= 300, "{direct}");
    assert_eq!(direct["errors"], serde_json::json!({}), "{direct}");
    let (success, _, error) = cli(&cluster, &["bench", "presence", "--transport", "h2", "--api", "stream"]);
    assert!(!success && error.contains("--transport h2 carries unary calls"), "{error}");
    // Reads of the bench users, through tonic's channel and straight over HTTP/2.
    for transport in ["tonic", "h2"] {
        let read = run(&[
            "read",
            "--clients",
            "4",
            "--users",
            "20",
            "--count",
            "100",
            "--warmup",
            "0",
            "--transport",
            transport,
        ]);
        assert_eq!(read["workload"], "read", "{read}");
        assert!(read["ok"].as_u64().unwrap() >= 100, "{read}");
        assert_eq!(read["errors"], serde_json::json!({}), "{read}");
    }

    // Spread over the members, followers hand the writes on; they all succeed.
    let spread =
        run(&["presence", "--clients", "4", "--users", "20", "--count", "100", "--warmup", "0", "--send-to", "all"]);
    assert!(spread["ok"].as_u64().unwrap() >= 100, "{spread}");
    assert_eq!(spread["errors"], serde_json::json!({}), "{spread}");

    // Sent to the leader, but only a follower is named: the error names the leader instead of
    // quietly loading the follower.
    let mut refusals = Vec::new();
    for endpoint in &cluster.grpc {
        let output = Command::new(env!("CARGO_BIN_EXE_collective"))
            .args(["--endpoints", endpoint, "bench", "presence", "--clients", "2", "--users", "20", "--count", "10"])
            .args(["--warmup", "0"])
            .output()
            .unwrap();
        if !output.status.success() {
            refusals.push(String::from_utf8_lossy(&output.stderr).to_string());
        }
    }
    assert_eq!(refusals.len(), 2, "only the leader's endpoint may run: {refusals:?}");
    for refusal in refusals {
        assert!(refusal.contains("which is not among --endpoints") && refusal.contains("name it there"), "{refusal}");
    }
}

/// `bench failover` refuses what it cannot kill and restart before it touches any cluster: a
/// process that is not `collective serve` (no `--id`), or one that does not exist.
/// The binary runs with the jemalloc options `.cargo/config.toml` builds into it, and an
/// operator's `_RJEM_MALLOC_CONF` still overrides them (jemalloc prints its options at exit
/// with `stats_print`).
#[test]
fn the_binary_runs_with_its_built_in_allocator_options() {
    let options = |environment: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_collective"))
            .arg("--version")
            .env("_RJEM_MALLOC_CONF", environment)
            .output()
            .unwrap();
        assert!(output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let built_in = env!("JEMALLOC_SYS_WITH_MALLOC_CONF");
    let printed = options("stats_print:true");
    for option in built_in.split(',') {
        let (name, value) = option.split_once(':').unwrap();
        assert!(printed.contains(&format!("opt.{name}: {value}\n")), "{option} not in effect:\n{printed}");
    }
    let printed = options("stats_print:true,tcache_nslots_small_max:512");
    assert!(printed.contains("opt.tcache_nslots_small_max: 512\n"), "{printed}");
}

#[test]
fn bench_failover_names_a_pid_it_cannot_use() {
    let run = |pid: String| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_collective"))
            .args(["--endpoints", "127.0.0.1:1", "bench", "failover", "--pids", &pid])
            .output()
            .unwrap();
        assert!(!output.status.success());
        String::from_utf8_lossy(&output.stderr).to_string()
    };
    let own = std::process::id().to_string();
    let stderr = run(own.clone());
    assert!(stderr.contains(&format!("process {own} has no --id")), "{stderr}");
    let stderr = run("4294967295".into());
    assert!(stderr.contains("--pids: process 4294967295"), "{stderr}");
}

/// `bench disk` needs no cluster: it times appends with fdatasync in the given directory, into a
/// growing file and into one written beforehand, leaves nothing behind, and names bad input.
#[test]
fn bench_disk_times_synced_appends_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_collective"))
            .args(["--endpoints", "127.0.0.1:1", "-w", "json", "bench", "disk"])
            .args(args)
            .output()
            .unwrap()
    };
    let output = run(&["--dir", dir.path().to_str().unwrap(), "--count", "20", "--size", "64"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let modes: Vec<&str> = report["modes"].as_array().unwrap().iter().map(|m| m["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["append", "written-before"]);
    for mode in report["modes"].as_array().unwrap() {
        assert_eq!(mode["writes"], 20, "{mode}");
        assert_eq!(mode["bytes_per_write"], 64, "{mode}");
        assert!(mode["p50_ms"].as_f64().unwrap() > 0.0, "{mode}");
        assert!(mode["max_ms"].as_f64().unwrap() >= mode["p99_ms"].as_f64().unwrap(), "{mode}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "the measured file is removed");
    let table = std::process::Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["bench", "disk", "--dir", dir.path().to_str().unwrap(), "--count", "5"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    let rows: Vec<&str> = table.lines().map(|line| line.split_whitespace().next().unwrap_or("")).collect();
    assert_eq!(rows, ["mode", "append", "written-before"], "{table}");

    let missing = dir.path().join("missing");
    let output = run(&["--dir", missing.to_str().unwrap()]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--dir") && stderr.contains("not a directory"), "{stderr}");
    let output = run(&["--dir", dir.path().to_str().unwrap(), "--count", "1000000", "--size", "4096"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at most 1073741824 bytes"), "{stderr}");
}

/// `endpoint health|status` asks each endpoint on its own: a dead one is named and makes the
/// command fail; the live ones agree on one leader and report their database size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_health_and_status_per_member() {
    let cluster = Cluster::start(3, &[]).await;
    // `cli` puts a dead endpoint first.
    let (success, stdout, _) = cli(&cluster, &["-w", "json", "endpoint", "health"]);
    assert!(!success, "a dead endpoint must fail the health check: {stdout}");
    let health: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let rows = health["endpoints"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert_eq!(rows[0]["health"], false, "{stdout}");
    assert!(rows[0]["error"].as_str().unwrap().contains("Unavailable"), "{stdout}");
    assert!(rows[1..].iter().all(|row| row["health"] == true), "{stdout}");

    let (success, stdout, _) = cli(&cluster, &["-w", "json", "endpoint", "status"]);
    assert!(!success, "{stdout}");
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let live = &status["endpoints"].as_array().unwrap()[1..];
    assert_eq!(live.iter().filter(|row| row["is_leader"] == true).count(), 1, "{stdout}");
    assert!(live.iter().all(|row| row["leader"] == live[0]["leader"] && row["term"] == live[0]["term"]), "{stdout}");
    assert!(live.iter().all(|row| row["db_size_bytes"].as_u64().unwrap() > 0), "{stdout}");

    let live_endpoints = cluster.grpc.join(",");
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &live_endpoints, "endpoint", "status"])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{table}");
    // Sizes are human-readable (the log's first segment alone is 16 MiB, preallocated).
    assert!(table.starts_with("APPLIED_INDEX") && table.contains("DB_SIZE") && table.contains(" MiB"), "{table}");
    assert_eq!(table.lines().count(), 4, "{table}");

    // `probe` is a container's health check: 200 succeeds, anything else fails and says why.
    let probe =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_collective")).arg("probe").args(args).output().unwrap();
    let ready = probe(&["--http-addr", &cluster.http[0]]);
    assert!(ready.status.success(), "{}", String::from_utf8_lossy(&ready.stderr));
    let missing = probe(&["/nowhere", "--http-addr", &cluster.http[0]]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("404"));
    let dead = probe(&["--http-addr", "127.0.0.1:1"]);
    assert!(!dead.status.success() && String::from_utf8_lossy(&dead.stderr).contains("refused"));
}

/// `collective … | head`: a reader that goes away ends the command quietly with status 0, not a
/// panic (Rust ignores SIGPIPE, so `println!` would panic with status 101).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_ends_the_command_quietly() {
    let cluster = Cluster::start(3, &[]).await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(","), "status", "catalog"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command writes its 36 rows.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `collective completion SHELL` prints a completion script that knows the subcommands.
#[test]
fn completion_scripts_know_the_subcommands() {
    for (shell, marker) in
        [("bash", "complete -F _collective"), ("zsh", "#compdef collective"), ("fish", "complete -c collective")]
    {
        let output = Command::new(env!("CARGO_BIN_EXE_collective")).args(["completion", shell]).output().unwrap();
        let script = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{shell}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(script.contains(marker), "{shell} script lacks {marker:?}");
        assert!(script.contains("endpoint") && script.contains("recover"), "{shell} script lacks subcommands");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_collective")).args(["completion", "tcsh"]).output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("tcsh"));
}
