//! Security over real `collective serve` processes: credentials at the gate (UNAUTHENTICATED
//! without them, session tokens from a site's password, rate-limited failures), authorization
//! of what a site may change (PERMISSION_DENIED, nothing changed; a master-administrator site
//! allowed), principals recorded on events, mutual TLS between members (a member of another CA
//! cannot join or call the Raft service), a plaintext client against TLS failing clearly, and
//! no password or token in any log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use collective_proto::raft::raft_client::RaftClient;
use collective_proto::v1 as pb;
use collective_proto::v1::auth_client::AuthClient;
use collective_proto::v1::config_client::ConfigClient;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::messages_client::MessagesClient;
use collective_proto::v1::presences_client::PresencesClient;
use common::{http_get, reason, site, user, Cluster};
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

const ADMIN_TOKEN: &str = "test-administrator-token-0123456789abcdef";

type Authed = InterceptedService<Channel, Bearer>;

/// Sends `authorization: Bearer <token>` on every call.
#[derive(Clone)]
struct Bearer(String);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let value: MetadataValue<_> = format!("Bearer {}", self.0).parse().unwrap();
        request.metadata_mut().insert("authorization", value);
        Ok(request)
    }
}

async fn with_token(cluster: &Cluster, index: usize, token: &str) -> Authed {
    InterceptedService::new(cluster.channel(index).await, Bearer(token.to_string()))
}

fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

async fn login(cluster: &Cluster, index: usize, site: u32, password: &str) -> Result<String, tonic::Status> {
    let mut auth = AuthClient::new(cluster.channel(index).await);
    auth.login(pb::LoginRequest { site, password: password.into() }).await.map(|r| r.into_inner().token)
}

fn set_status(username: &str, key: &str) -> pb::SetStatusRequest {
    pb::SetStatusRequest { username: username.into(), status_key: key.into(), until_ms: None, detail: String::new() }
}

async fn status_of(cluster: &Cluster, username: &str) -> String {
    let mut presence = PresencesClient::new(with_token(cluster, 0, ADMIN_TOKEN).await);
    let list = presence
        .get_presence(pb::GetPresenceRequest { usernames: vec![username.into()], serializable: false })
        .await
        .unwrap()
        .into_inner();
    list.presences[0].status_key.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sites_authenticate_and_change_only_what_is_theirs() {
    let secrets = tempfile::TempDir::new().unwrap();
    let token_file = write_file(secrets.path(), "admin.token", &format!("{ADMIN_TOKEN}\n"));
    let args = ["--admin-token-file", token_file.to_str().unwrap()];
    let cluster = Cluster::start_logged(3, &args, Some("debug")).await;

    // No credentials: UNAUTHENTICATED, saying what would do.
    let error = DirectoryClient::new(cluster.channel(0).await)
        .list_sites(pb::ListSitesRequest { serializable: false })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    assert!(error.message().contains("credentials"), "{error:?}");

    // The administrator sets up three sites (site 3 a master administrator) and Bob, homed at
    // and logged on at site 2.
    let mut admin = DirectoryClient::new(with_token(&cluster, 0, ADMIN_TOKEN).await);
    for id in 1..=3 {
        let mut request = site(id, &format!("Site {id}"));
        if id == 3 {
            request.site.as_mut().unwrap().trusted_access =
                Some(pb::TrustedAccess { publish_handlers: true, manage_handlers: false, master_administrator: true });
        }
        admin.add_site(request).await.unwrap();
    }
    admin.add_user(user("bob", 2, "2001")).await.unwrap();
    let mut admin_presence = PresencesClient::new(with_token(&cluster, 0, ADMIN_TOKEN).await);
    admin_presence.log_on(pb::LogOnRequest { username: "bob".into(), site: 2, server: String::new() }).await.unwrap();
    // The bench's direct HTTP/2 transport carries the administrator's token as tonic's channel
    // does: every write is accepted.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(","), "-w", "json", "bench", "presence", "--transport", "h2"])
        .args(["--clients", "4", "--users", "10", "--count", "50", "--warmup", "0"])
        .env("COLLECTIVE_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
    assert!(report["ok"].as_u64().unwrap() >= 50, "{report}");

    // A forged session for an existing site fails its MAC.
    let forged = format!("cst1.1.99999999999999.0000000000000000.{}", "00".repeat(32));
    let error = DirectoryClient::new(with_token(&cluster, 0, &forged).await)
        .list_sites(pb::ListSitesRequest { serializable: false })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "{error:?}");
    assert!(error.message().contains("not valid"), "{error:?}");

    // Sites log in with their passwords; the sessions work on every member.
    let site1 = login(&cluster, 0, 1, "password-1").await.unwrap();
    let site2 = login(&cluster, 0, 2, "password-2").await.unwrap();
    let site3 = login(&cluster, 0, 3, "password-3").await.unwrap();
    let me = AuthClient::new(with_token(&cluster, 2, &site1).await)
        .who_am_i(pb::WhoAmIRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((me.principal.as_str(), me.credential.as_str()), ("site:1", "session"));
    assert!(me.expires_at_ms > 0);

    // Site 1 may not change Bob (homed at and logged on at site 2): PERMISSION_DENIED, unchanged.
    let error = PresencesClient::new(with_token(&cluster, 1, &site1).await)
        .set_status(set_status("bob", "Away from desk"))
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    assert!(error.message().contains("bob"), "{error:?}");
    assert_eq!(status_of(&cluster, "bob").await, "Available");
    // Over a Submit stream each change is authorised as its unary call is: site 1's change of
    // Bob is refused on its own, site 2's is written; without credentials the stream is refused.
    let changes = vec![common::set_status_change(7, "bob", "On Break")];
    let stream = PresencesClient::new(with_token(&cluster, 1, &site1).await)
        .submit(tokio_stream::iter(changes.clone()))
        .await
        .unwrap()
        .into_inner();
    let refused = common::outcomes(stream).await.remove(&7).unwrap().unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(status_of(&cluster, "bob").await, "Available");
    let error = PresencesClient::new(cluster.channel(1).await).submit(tokio_stream::iter(changes.clone())).await;
    assert_eq!(error.unwrap_err().code(), Code::Unauthenticated);
    let stream = PresencesClient::new(with_token(&cluster, 1, &site2).await)
        .submit(tokio_stream::iter(changes))
        .await
        .unwrap()
        .into_inner();
    let written = common::outcomes(stream).await.remove(&7).unwrap().unwrap();
    assert!(!written.events.is_empty() && written.events.iter().all(|e| e.principal == "site:2"), "{written:?}");
    assert_eq!(status_of(&cluster, "bob").await, "On Break");
    // Nor his directory entry, nor collective-wide configuration.
    let mut moved = user("bob", 2, "2001");
    moved.user.as_mut().unwrap().display_name = "Robert".into();
    let error =
        DirectoryClient::new(with_token(&cluster, 1, &site1).await).update_user(moved.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    let workgroup = pb::AddWorkgroupRequest {
        workgroup: Some(pb::Workgroup { name: "Sales".into(), spans_sites: true, ..Default::default() }),
    };
    let error =
        DirectoryClient::new(with_token(&cluster, 1, &site1).await).add_workgroup(workgroup.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    // An export is for administrators: refused at the gate.
    let export = pb::ExportRequest { categories: vec![], passphrase: "export-passphrase".into() };
    let error = ConfigClient::new(with_token(&cluster, 1, &site1).await).export(export.clone()).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    // So is taking a snapshot.
    let error = collective_proto::v1::cluster_client::ClusterClient::new(with_token(&cluster, 1, &site1).await)
        .take_snapshot(pb::TakeSnapshotRequest {})
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");

    // Site 2 may; the event records it as the principal.
    let response = PresencesClient::new(with_token(&cluster, 1, &site2).await)
        .set_status(set_status("bob", "Away from desk"))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.events.is_empty() && response.events.iter().all(|e| e.principal == "site:2"), "{response:?}");
    DirectoryClient::new(with_token(&cluster, 1, &site2).await).update_user(moved).await.unwrap();
    // A master-administrator site may change anyone, and configuration.
    PresencesClient::new(with_token(&cluster, 2, &site3).await)
        .set_status(set_status("bob", "Available"))
        .await
        .unwrap();
    DirectoryClient::new(with_token(&cluster, 2, &site3).await).add_workgroup(workgroup).await.unwrap();
    ConfigClient::new(with_token(&cluster, 2, &site3).await).export(export).await.unwrap();
    let response = PresencesClient::new(with_token(&cluster, 0, ADMIN_TOKEN).await)
        .set_status(set_status("bob", "Away from desk"))
        .await
        .unwrap()
        .into_inner();
    assert!(response.events.iter().all(|e| e.principal == "admin:admin"), "{response:?}");

    // What Bob may do at site 3 (trusted access) and at home.
    let mut directory = DirectoryClient::new(with_token(&cluster, 0, &site1).await);
    let at3 = directory
        .check_trusted_access(pb::CheckTrustedAccessRequest { username: "bob".into(), site: 3, serializable: false })
        .await
        .unwrap()
        .into_inner();
    assert!(!at3.home && !at3.logged_on && at3.publish_handlers && !at3.manage_handlers && at3.master_administrator);
    assert_eq!(at3.home_site, 2);

    // The same through the CLI: a site logs in, and its session token file is its credential.
    let password_file = write_file(secrets.path(), "site2.password", "password-2\n");
    let endpoint = cluster.grpc[0].clone();
    let logged_in =
        cli(&["--endpoints", &endpoint, "login", "--site", "2", "--password-file", password_file.to_str().unwrap()]);
    assert!(logged_in.status.success(), "{}", String::from_utf8_lossy(&logged_in.stderr));
    let cli_token = String::from_utf8(logged_in.stdout).unwrap().trim().to_string();
    let session_file = write_file(secrets.path(), "site2.token", &cli_token);
    let as_site2 = |args: &[&str]| {
        let mut all = vec!["--endpoints", &endpoint, "--token-file", session_file.to_str().unwrap()];
        all.extend_from_slice(args);
        cli(&all)
    };
    let set = as_site2(&["status", "set", "bob", "Available"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let access = as_site2(&["-w", "json", "user", "access", "bob", "--site", "3"]);
    let access_json = String::from_utf8_lossy(&access.stdout);
    assert!(access.status.success() && access_json.contains("\"publish_handlers\": true"), "{access_json}");
    let other = as_site2(&["site", "set-active", "1", "false"]);
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success() && stderr.contains("PermissionDenied"), "{stderr}");
    let anonymous = cli(&["--endpoints", &endpoint, "site", "list"]);
    let stderr = String::from_utf8_lossy(&anonymous.stderr);
    assert!(!anonymous.status.success() && stderr.contains("collective login"), "{stderr}");

    // Messages between sites 2 and 3 are theirs: site 1's watch skips them and sees its own.
    let mut messages = MessagesClient::new(with_token(&cluster, 0, &site2).await);
    let send = |to_site: u32| pb::SendEventRequest {
        from_site: 2,
        to_site,
        object_id: "Orders".into(),
        event_id: format!("to-{to_site}"),
        elements: vec![],
    };
    let first = messages.send_event(send(3)).await.unwrap().into_inner().revision;
    messages.send_event(send(1)).await.unwrap();
    let watch = |token: String| {
        let cluster = &cluster;
        async move {
            let mut presence = PresencesClient::new(with_token(cluster, 0, &token).await);
            let request =
                pb::WatchRequest { start_revision: first, kinds: vec!["MessageQueued".into()], ..Default::default() };
            let mut stream = presence.watch(request).await.unwrap().into_inner();
            match stream.message().await.unwrap().unwrap().body {
                Some(pb::event::Body::MessageQueued(delivery)) => delivery.event_id,
                other => panic!("{other:?}"),
            }
        }
    };
    assert_eq!(watch(site1.clone()).await, "to-1");
    assert_eq!(watch(ADMIN_TOKEN.to_string()).await, "to-3");
    let error = MessagesClient::new(with_token(&cluster, 0, &site1).await)
        .subscribe(pb::SubscribeRequest { site: 3, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");

    // Wrong passwords: UNAUTHENTICATED, then rate-limited, and then even the right one waits.
    for attempt in 0..5 {
        let error = login(&cluster, 1, 1, &format!("wrong-guess-{attempt}")).await.unwrap_err();
        assert_eq!(error.code(), Code::Unauthenticated, "attempt {attempt}: {error:?}");
        assert!(!error.message().contains("wrong-guess"), "{error:?}");
    }
    let error = login(&cluster, 1, 1, "wrong-guess-5").await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    assert_eq!(reason(&error), "AUTH_RATE_LIMITED");
    let error = login(&cluster, 1, 1, "password-1").await.unwrap_err();
    assert_eq!(error.code(), Code::ResourceExhausted, "{error:?}");
    // The limit holds across the cluster: the other members counted the failures member 1
    // recorded in the log (each member used to give an address its own allowance), and the
    // log shows them to watchers.
    for member in [0, 2] {
        let error = login(&cluster, member, 1, "password-1").await.unwrap_err();
        assert_eq!(error.code(), Code::ResourceExhausted, "member {member}: {error:?}");
    }
    let mut events = PresencesClient::new(with_token(&cluster, 2, ADMIN_TOKEN).await)
        .watch(pb::WatchRequest { start_revision: 1, kinds: vec!["AuthenticationFailed".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    for attempt in 0..5 {
        let event = events.message().await.unwrap().unwrap();
        let Some(pb::event::Body::AuthenticationFailed(failed)) = event.body else { panic!("{event:?}") };
        assert_eq!((failed.member, failed.site, failed.source.as_str()), (2, 1, "127.0.0.1"), "attempt {attempt}");
        assert_eq!(event.principal, "system");
    }
    // A session already issued keeps working, until its site is deactivated.
    PresencesClient::new(with_token(&cluster, 1, &site2).await)
        .set_status(set_status("bob", "Available"))
        .await
        .unwrap();
    // So does a Submit stream opened before, until it authenticates again (on member 1, whose
    // failure limiter the wrong passwords above filled: a re-check is not counted as a guess).
    let (changes, queued) = tokio::sync::mpsc::channel(8);
    let mut outcomes = PresencesClient::new(with_token(&cluster, 1, &site2).await)
        .submit(tokio_stream::wrappers::ReceiverStream::new(queued))
        .await
        .unwrap()
        .into_inner();
    changes.send(common::set_status_change(1, "bob", "Away from desk")).await.unwrap();
    let first = outcomes.message().await.unwrap().unwrap();
    assert!(matches!(first.outcome, Some(pb::presence_outcome::Outcome::Written(_))), "{first:?}");
    admin.set_site_active(pb::SetSiteActiveRequest { id: 2, active: false }).await.unwrap();
    // A new request with that session is refused; from this address, which used up its
    // attempts on every member above, as rate-limited before the reason is even given.
    let error = PresencesClient::new(with_token(&cluster, 0, &site2).await)
        .set_status(set_status("bob", "Available"))
        .await
        .unwrap_err();
    assert_eq!((error.code(), reason(&error)), (Code::ResourceExhausted, "AUTH_RATE_LIMITED".into()), "{error:?}");
    let reauthenticated = Duration::from_millis(collective::api::presence::SUBMIT_REAUTHENTICATE_MS + 200);
    tokio::time::sleep(reauthenticated).await;
    for id in [2, 3] {
        changes.send(common::set_status_change(id, "bob", "Available")).await.unwrap();
        let refused = outcomes.message().await.unwrap().unwrap();
        let Some(pb::presence_outcome::Outcome::Error(error)) = &refused.outcome else { panic!("{refused:?}") };
        assert_eq!((refused.id, Code::from_i32(error.code)), (id, Code::Unauthenticated), "{refused:?}");
        assert!(error.message.contains("inactive"), "{refused:?}");
    }
    assert_eq!(status_of(&cluster, "bob").await, "Away from desk");

    // No log line of any member carries a password, passphrase or token.
    let logs: String = (0..3).map(|i| cluster.log(i)).collect();
    assert!(logs.contains("site authentication failed"), "failures are logged");
    let secrets = [
        ADMIN_TOKEN,
        cli_token.as_str(),
        site1.as_str(),
        site2.as_str(),
        site3.as_str(),
        "password-1",
        "password-2",
        "password-3",
        "wrong-guess",
        "export-passphrase",
    ];
    for secret in secrets {
        assert!(!logs.contains(secret), "a log carries the secret {secret:?}");
    }
    // Nor does any token appear after its MAC is cut off (a prefix could leak it too).
    for token in [&site1, &site2, &site3] {
        let mac = token.rsplit('.').next().unwrap();
        assert!(!logs.contains(mac));
    }
}

/// Runs the CLI with `args`.
fn cli(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_collective")).args(args).output().unwrap()
}

fn generate(ca: &Path, extra: &[&str]) {
    let mut args = vec!["certs", "generate", "--ca", ca.to_str().unwrap()];
    args.extend_from_slice(extra);
    let output = cli(&args);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

async fn tls_channel(
    addr: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(std::fs::read(cert).unwrap(), std::fs::read(key).unwrap()));
    }
    Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls)?.timeout(Duration::from_secs(5)).connect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_use_mutual_tls_and_strangers_are_kept_out() {
    collective::auth::tls::install_crypto_provider();
    let certs = tempfile::TempDir::new().unwrap();
    let (ca, other_ca) = (certs.path().join("ca"), certs.path().join("other"));
    generate(&ca, &["--node", "n1", "--node", "n2", "--node", "n3", "--admin", "ops", "--site", "7"]);
    generate(&other_ca, &["--node", "n4"]);
    // The CA is reused, a certificate is never overwritten.
    let again = cli(&["certs", "generate", "--ca", ca.to_str().unwrap(), "--node", "n1"]);
    assert!(!again.status.success() && String::from_utf8_lossy(&again.stderr).contains("exists"));
    let key_mode = std::fs::metadata(ca.join("node-n1.key")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777, 0o600);

    let token_file = write_file(certs.path(), "admin.token", ADMIN_TOKEN);
    let cert = format!("{}/node-n{{id}}.pem", ca.display());
    let key = format!("{}/node-n{{id}}.key", ca.display());
    let ca_pem = ca.join("ca.pem");
    let args = [
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-file",
        ca_pem.to_str().unwrap(),
        "--admin-token-file",
        token_file.to_str().unwrap(),
        "--http-tls",
    ];
    // The members elect a leader and serve quorum reads over mutual TLS.
    let mut cluster = Cluster::start(3, &args).await;
    let endpoints = cluster.grpc.join(",");

    // The HTTP port (board, probes, metrics) serves TLS with the member's certificate, which
    // the cluster CA verifies; plain HTTP gets nothing, and the board's cookie is Secure.
    let curl = |extra: &[&str], path: &str| {
        let url = format!("https://{}{path}", cluster.http[0]);
        let output = std::process::Command::new("curl")
            .args(["-s", "-i", "--max-time", "5", "--cacert", ca_pem.to_str().unwrap()])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).to_string()
    };
    let ready = curl(&[], "/readyz");
    assert!(ready.starts_with("HTTP/1.1 200") && ready.ends_with("ok\n"), "{ready}");
    assert!(curl(&[], "/metrics").contains("# HELP collective_"), "metrics over https");
    let sign_in = format!(r#"{{"token":"{ADMIN_TOKEN}"}}"#);
    let session = curl(&["-H", "content-type: application/json", "--data", &sign_in], "/board/session");
    assert!(session.contains("HttpOnly; SameSite=Strict; Secure"), "{session}");
    assert!(!http_get(&cluster.http[0], "/readyz").contains("200"), "plain HTTP answered on a TLS port");

    // A plaintext client against the TLS members fails, and says what to do.
    let plain = cli(&["--endpoints", &endpoints, "--token-file", token_file.to_str().unwrap(), "cluster", "status"]);
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(!plain.status.success(), "plaintext succeeded against TLS");
    assert!(stderr.contains("if the cluster serves TLS, pass --cacert"), "{stderr}");

    // The administrator's certificate authenticates over TLS.
    let admin_cert = ca.join("admin-ops.pem");
    let admin_key = ca.join("admin-ops.key");
    let tls_args = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--endpoints",
            &endpoints,
            "--cacert",
            ca_pem.to_str().unwrap(),
            "--cert",
            admin_cert.to_str().unwrap(),
            "--key",
            admin_key.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let whoami = cli(&tls_args(&["-w", "json", "whoami"]).iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&whoami.stdout);
    assert!(whoami.status.success(), "{}", String::from_utf8_lossy(&whoami.stderr));
    assert!(stdout.contains("admin:ops") && stdout.contains("certificate"), "{stdout}");
    // The bench's direct HTTP/2 transport is plaintext: refused with TLS, saying what to use.
    let bench = cli(&tls_args(&["bench", "presence", "--transport", "h2", "--count", "10"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&bench.stderr);
    assert!(!bench.status.success() && stderr.contains("with --cacert use --transport tonic"), "{stderr}");

    // A site's certificate is a principal for the client API, never for the Raft service.
    let site_cert = (ca.join("site-7.pem"), ca.join("site-7.key"));
    let channel = tls_channel(&cluster.grpc[0], &ca_pem, Some((&site_cert.0, &site_cert.1))).await.unwrap();
    let mut raft = RaftClient::new(channel.clone());
    let channel_of_site = channel.clone();
    let error = AuthClient::new(channel.clone()).who_am_i(pb::WhoAmIRequest {}).await.unwrap_err();
    assert_eq!(error.code(), Code::Unauthenticated, "site 7 does not exist yet: {error:?}");
    let password = write_file(certs.path(), "site7.password", "password-7");
    let add = ["site", "add", "--id", "7", "--name", "Seven", "--phone", "+1 555 0107"];
    let mut add: Vec<&str> = add.to_vec();
    add.extend(["--password-file", password.to_str().unwrap()]);
    let added = cli(&tls_args(&add).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(added.status.success(), "{}", String::from_utf8_lossy(&added.stderr));
    let error = raft.vote(collective_proto::raft::Payload { body: b"{}".to_vec() }).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    let me = AuthClient::new(channel).who_am_i(pb::WhoAmIRequest {}).await.unwrap().into_inner();
    assert_eq!((me.principal.as_str(), me.credential.as_str()), ("site:7", "certificate"));

    // A member's certificate reaches the Raft service (the undecodable vote is refused there);
    // a client holding a certificate of another CA never gets that far; nor does a caller with
    // the peer token but no member certificate.
    let garbage = || collective_proto::raft::Payload { body: b"not json".to_vec() };
    let (member_cert, member_key) = (ca.join("node-n1.pem"), ca.join("node-n1.key"));
    let member = tls_channel(&cluster.grpc[0], &ca_pem, Some((&member_cert, &member_key))).await.unwrap();
    let error = RaftClient::new(member.clone()).vote(garbage()).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    // The replication stream likewise: an undecodable request ends it with the error naming it;
    // a site never opens one.
    let append_stream = |channel| async move {
        let answers = RaftClient::new(channel).append_stream(tokio_stream::iter([garbage()])).await?;
        answers.into_inner().message().await
    };
    let error = append_stream(member).await.unwrap_err();
    assert_eq!(error.code(), Code::InvalidArgument, "{error:?}");
    assert!(error.message().contains("undecodable Raft payload"), "{error:?}");
    let error = append_stream(channel_of_site).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");
    let (stranger_cert, stranger_key) = (other_ca.join("node-n4.pem"), other_ca.join("node-n4.key"));
    match tls_channel(&cluster.grpc[0], &ca_pem, Some((&stranger_cert, &stranger_key))).await {
        Err(_) => {}
        Ok(channel) => {
            let error = RaftClient::new(channel).vote(garbage()).await.unwrap_err();
            assert!(
                !matches!(error.code(), Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated),
                "a certificate of another CA got past the handshake: {error:?}"
            );
        }
    }
    let peer_token = collective::auth::Authenticator::new(ADMIN_TOKEN, 60_000).unwrap().peer_token().to_string();
    let anonymous = tls_channel(&cluster.grpc[0], &ca_pem, None).await.unwrap();
    let error =
        RaftClient::new(InterceptedService::new(anonymous, Bearer(peer_token))).vote(garbage()).await.unwrap_err();
    assert_eq!(error.code(), Code::PermissionDenied, "{error:?}");

    // A member with a certificate of another CA cannot join: adding it never completes, and it
    // never learns of a leader.
    let joiner = cluster.spawn_joiner_with(&[
        "--tls-cert-file",
        stranger_cert.to_str().unwrap(),
        "--tls-key-file",
        stranger_key.to_str().unwrap(),
        "--tls-ca-file",
        other_ca.join("ca.pem").to_str().unwrap(),
        "--admin-token-file",
        token_file.to_str().unwrap(),
    ]);
    let addr = cluster.grpc[joiner].clone();
    let add = cli(&tls_args(&["--timeout-ms", "4000", "member", "add", "4", &addr])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    assert!(!add.status.success(), "a member of another CA joined: {}", String::from_utf8_lossy(&add.stdout));
    let ready = http_get(&cluster.http[joiner], "/readyz");
    assert!(ready.contains("503"), "the stranger became ready: {ready}");
}

/// One HTTP/1.0 request: the status code, the headers and the body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Opens a board feed (`/board/events`) with `cookie`, resuming after `last_event_id`, and reads
/// it until `until` arrives (at most 10 s); returns the head and what the feed sent.
fn board_feed(addr: &str, cookie: &str, last_event_id: u64, until: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "GET /board/events HTTP/1.0\r\nHost: {addr}\r\ncookie: {cookie}\r\nLast-Event-ID: {last_event_id}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_millis(200))).unwrap();
    let (mut received, mut buffer) = (Vec::new(), [0u8; 16 * 1024]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !String::from_utf8_lossy(&received).contains(until) && std::time::Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => received.extend_from_slice(&buffer[..read]),
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(error) => panic!("reading the feed: {error}"),
        }
    }
    let response = String::from_utf8_lossy(&received).to_string();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head.to_string(), body.to_string())
}

/// The `collective_board` cookie a sign-in answer sets.
fn board_cookie(head: &str) -> String {
    head.lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap_or_else(|| panic!("no cookie in {head}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_board_needs_a_sign_in_and_shows_a_site_its_own_view() {
    let secrets = tempfile::TempDir::new().unwrap();
    let token_file = write_file(secrets.path(), "admin.token", &format!("{ADMIN_TOKEN}\n"));
    let cluster = Cluster::start(3, &["--admin-token-file", token_file.to_str().unwrap()]).await;
    let mut admin = DirectoryClient::new(with_token(&cluster, 0, ADMIN_TOKEN).await);
    admin.add_site(site(1, "Indianapolis")).await.unwrap();
    admin.add_site(site(2, "Paris")).await.unwrap();
    admin.add_user(user("ada", 1, "1100")).await.unwrap();
    admin.add_user(user("bob", 2, "2100")).await.unwrap();
    let http_addr = &cluster.http[1];

    // The page itself is public; its data and feed are not.
    assert_eq!(http(http_addr, "GET", "/board", &[], "").0, 200);
    for path in ["/board/api/overview", "/board/api/presence", "/board/events"] {
        assert_eq!(http(http_addr, "GET", path, &[], "").0, 401, "{path}");
    }
    let json = [("content-type", "application/json")];
    let (status, _, body) = http(http_addr, "POST", "/board/session", &json, r#"{"token":"wrong"}"#);
    assert_eq!(status, 401, "{body}");
    let (status, _, body) = http(http_addr, "POST", "/board/session", &json, r#"{"site":2,"password":"wrong"}"#);
    assert_eq!(status, 401, "{body}");

    // The administrator sees everyone; the cookie carries the credential, HttpOnly.
    let (status, head, _) =
        http(http_addr, "POST", "/board/session", &json, &format!(r#"{{"token":"{ADMIN_TOKEN}"}}"#));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("HttpOnly") && head.contains("SameSite=Strict"), "{head}");
    let admin_cookie = board_cookie(&head);
    let cookie = [("cookie", admin_cookie.as_str())];
    let (status, _, page) = http(http_addr, "GET", "/board/api/presence", &cookie, "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("\"ada\"") && page.contains("\"bob\""), "{page}");
    let (status, _, overview) = http(http_addr, "GET", "/board/api/overview", &cookie, "");
    assert_eq!(status, 200, "{overview}");
    assert!(overview.contains("\"viewer\":\"admin:admin\"") && overview.contains("Indianapolis"), "{overview}");
    let (status, _, body) = http(http_addr, "GET", "/board/api/presence?group=Sleeping", &cookie, "");
    assert!(status == 400 && body.contains("group"), "{status} {body}");

    // Site 2 signs in with its password and sees its own directory view: bob, not ada.
    let (status, head, _) = http(http_addr, "POST", "/board/session", &json, r#"{"site":2,"password":"password-2"}"#);
    assert_eq!(status, 200, "{head}");
    let site_cookie = board_cookie(&head);
    let (_, _, page) = http(http_addr, "GET", "/board/api/presence", &[("cookie", site_cookie.as_str())], "");
    assert!(page.contains("\"bob\"") && !page.contains("\"ada\""), "{page}");

    // The live feed: a message between sites 1 and 3 is not site 2's to see; one from site 2 is.
    // Both feeds resume after `Last-Event-ID`, in revision order, one frame per event.
    admin.add_site(site(3, "Tokyo")).await.unwrap();
    let mut messages = MessagesClient::new(with_token(&cluster, 0, ADMIN_TOKEN).await);
    let send = |from_site: u32, to_site: u32| pb::SendEventRequest {
        from_site,
        to_site,
        object_id: "Orders".into(),
        event_id: format!("{from_site}-to-{to_site}"),
        elements: vec![],
    };
    let hidden = messages.send_event(send(1, 3)).await.unwrap().into_inner().revision;
    let shown = messages.send_event(send(2, 1)).await.unwrap().into_inner().revision;
    let (head, feed) = board_feed(http_addr, &admin_cookie, hidden - 1, &format!("id: {shown}\n"));
    assert!(head.contains("text/event-stream"), "{head}");
    let frames: Vec<&str> = feed.split("\n\n").filter(|frame| !frame.is_empty()).collect();
    assert!(frames[0].starts_with(&format!("id: {hidden}\ndata: {{")) && frames[0].contains("1-to-3"), "{feed}");
    assert!(frames[1].starts_with(&format!("id: {shown}\ndata: {{")) && frames[1].contains("2-to-1"), "{feed}");
    let (_, feed) = board_feed(http_addr, &site_cookie, hidden - 1, &format!("id: {shown}\n"));
    assert!(feed.starts_with(&format!("id: {shown}\ndata: ")) && feed.contains("2-to-1"), "{feed}");
    assert!(!feed.contains("1-to-3"), "site 2 saw a message between sites 1 and 3: {feed}");

    // Signing out clears the cookie.
    let (status, head, _) = http(http_addr, "DELETE", "/board/session", &[], "");
    assert!(status == 204 && head.contains("Max-Age=0"), "{head}");
    // No member logged a credential.
    for index in 0..3 {
        assert!(!cluster.log(index).contains(ADMIN_TOKEN), "member {index} logged the token");
    }
}
