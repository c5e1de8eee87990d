//! The directory source against a real OpenLDAP server (Debian's `slapd`, started here from a
//! temporary directory with its own configuration, ldaps:// and StartTLS on loopback ports, a
//! certificate from `collective certs generate`), driven through the CLI as an administrator
//! would: a first poll creates users, a changed attribute updates one, a removed entry
//! deactivates it, a conflicting extension is refused and reported while the rest apply; a wrong
//! bind password, an unreachable server and a malformed mapping each give a clear answer and
//! change nothing; a leader paused in the middle of a poll is replaced by one that redoes it,
//! and the paused one, resumed, changes nothing more.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use common::{free_port, site, user, Cluster};
use tokio_stream::StreamExt;

const BASE: &str = "dc=example,dc=com";
const ADMIN_DN: &str = "cn=admin,dc=example,dc=com";
const ADMIN_PASSWORD: &str = "directory-secret-7";

/// A running slapd; killed on drop.
struct Slapd {
    dir: tempfile::TempDir,
    child: Child,
    ldap: u16,
    ldaps: u16,
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(program: &str, args: &[&str], input: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (deploy/install-deps.sh --test installs slapd and ldap-utils)"));
    if let Some(input) = input {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

impl Slapd {
    /// A server holding the base entries and `extra` (LDIF, loaded offline with slapadd).
    fn start(extra: &str) -> Slapd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        let (ok, out) = run(
            env!("CARGO_BIN_EXE_collective"),
            &["certs", "generate", "--ca", path.join("pki").to_str().unwrap(), "--node", "ldap"],
            None,
        );
        assert!(ok, "certs generate: {out}");
        std::fs::create_dir(path.join("db")).unwrap();
        let pki = path.join("pki");
        let config = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             pidfile {dir}/slapd.pid\n\
             TLSCACertificateFile {pki}/ca.pem\n\
             TLSCertificateFile {pki}/node-ldap.pem\n\
             TLSCertificateKeyFile {pki}/node-ldap.key\n\
             database mdb\n\
             suffix \"{BASE}\"\n\
             rootdn \"{ADMIN_DN}\"\n\
             rootpw {ADMIN_PASSWORD}\n\
             directory {dir}/db\n\
             maxsize 1073741824\n",
            dir = path.display(),
            pki = pki.display(),
        );
        std::fs::write(path.join("slapd.conf"), config).unwrap();
        let base = format!(
            "dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
             dn: ou=Indianapolis,{BASE}\nobjectClass: organizationalUnit\nou: Indianapolis\n\n\
             dn: ou=Paris,{BASE}\nobjectClass: organizationalUnit\nou: Paris\n\n{extra}"
        );
        let conf = path.join("slapd.conf");
        let (ok, out) = run("slapadd", &["-f", conf.to_str().unwrap()], Some(&base));
        assert!(ok, "slapadd: {out}");
        let (ldap, ldaps) = (free_port(), free_port());
        let child = Command::new("slapd")
            .args(["-f", conf.to_str().unwrap(), "-d", "0"])
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{ldap}/ ldaps://127.0.0.1:{ldaps}/"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(path.join("slapd.log")).unwrap())
            .spawn()
            .expect("slapd (deploy/install-deps.sh --test installs it)");
        let slapd = Slapd { dir, child, ldap, ldaps };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !slapd.ldap(&["ldapsearch", "-b", "", "-s", "base"], None).0 {
            assert!(Instant::now() < deadline, "slapd never answered: {}", slapd.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        slapd
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("slapd.log")).unwrap_or_default()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("pki/ca.pem")
    }

    /// Runs an ldap-utils command as the directory's administrator over plain ldap://.
    fn ldap(&self, command: &[&str], ldif: Option<&str>) -> (bool, String) {
        let url = format!("ldap://127.0.0.1:{}", self.ldap);
        let mut args: Vec<&str> = command[1..].to_vec();
        args.extend(["-x", "-H", &url, "-D", ADMIN_DN, "-w", ADMIN_PASSWORD]);
        run(command[0], &args, ldif)
    }

    fn change(&self, ldif: &str) {
        let (ok, out) = self.ldap(&["ldapmodify", "-a"], Some(ldif));
        assert!(ok, "ldapmodify: {out}");
    }
}

/// An inetOrgPerson entry: skills in `description` (name=level), workgroups in `businessCategory`.
fn person(uid: &str, site: &str, cn: &str, mail: &str, phone: &str, extra: &str) -> String {
    format!(
        "dn: uid={uid},ou={site},{BASE}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\n\
         sn: {uid}\nmail: {mail}\ntelephoneNumber: {phone}\n{extra}\n"
    )
}

fn cli(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_collective"))
        .args(["--endpoints", &cluster.grpc.join(",")])
        .args(args)
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

/// `source ldap set` with the test directory's settings and any `extra` flags.
fn set_args(url: &str, ca: &Path, password_file: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "source",
        "ldap",
        "set",
        "--url",
        url,
        "--ca-file",
        ca.to_str().unwrap(),
        "--bind-dn",
        ADMIN_DN,
        "--bind-password-file",
        password_file.to_str().unwrap(),
        "--base-dn",
        BASE,
        "--map",
        "skills=description",
        "--map",
        "workgroups=businessCategory",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Polls now through the CLI and returns the report.
fn sync(cluster: &Cluster) -> serde_json::Value {
    let (_, stdout, stderr) = cli(cluster, &["-w", "json", "source", "ldap", "sync-now"]);
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    status["last_poll"].clone()
}

async fn get_user(cluster: &Cluster, username: &str) -> Option<pb::User> {
    let request = pb::GetUserRequest { username: username.into(), serializable: false };
    cluster.directory(0).await.get_user(request).await.ok().and_then(|entry| entry.into_inner().user)
}

async fn user_count(cluster: &Cluster) -> usize {
    let request = pb::SearchRequest { limit: 1_000, ..Default::default() };
    cluster.directory(1).await.search(request).await.unwrap().into_inner().entries.len()
}

async fn log_on(cluster: &Cluster, username: &str, site: u32) -> Result<(), tonic::Status> {
    let request = pb::LogOnRequest { username: username.into(), site, server: String::new() };
    cluster.presence(0).await.log_on(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_polls_create_update_deactivate_and_report_refusals() {
    let slapd = Slapd::start("");
    let cluster = Cluster::start(3, &[]).await;
    let mut directory = cluster.directory(0).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    directory.add_site(site(2, "Paris")).await.unwrap();
    directory
        .add_workgroup(pb::AddWorkgroupRequest {
            workgroup: Some(pb::Workgroup { name: "Support".into(), ..Default::default() }),
        })
        .await
        .unwrap();
    // bob has extension 2100, which carol's entry asks for; dave exists and will be matched by
    // his email, whatever its case.
    directory.add_user(user("bob", 2, "2100")).await.unwrap();
    directory.add_user(user("dave", 2, "2103")).await.unwrap();

    let people = [
        person(
            "ada",
            "Paris",
            "Ada Lovelace",
            "Ada@Example.com",
            "+33 2101",
            "description: english=70\nbusinessCategory: Support",
        ),
        person("grace", "Indianapolis", "Grace Hopper", "grace@example.com", "1102", ""),
        person("carol", "Paris", "Carol Conflict", "carol@example.com", "2100", ""),
        person("dave", "Paris", "Dave Directory", "DAVE@example.com", "2103", ""),
    ];
    slapd.change(&people.join("\n"));

    let password_file = slapd.dir.path().join("bind-password");
    std::fs::write(&password_file, format!("{ADMIN_PASSWORD}\n")).unwrap();
    let ldaps = format!("ldaps://127.0.0.1:{}", slapd.ldaps);
    let args = set_args(&ldaps, &slapd.ca(), &password_file, &[]);
    ok(&cluster, &args.iter().map(String::as_str).collect::<Vec<_>>());

    // The first poll: ada and grace created, dave updated, carol refused for her extension.
    let report = sync(&cluster);
    assert_eq!(report["error"], "", "{report}");
    assert_eq!((report["seen"].as_u64(), report["created"].as_u64()), (Some(4), Some(2)), "{report}");
    assert_eq!((report["updated"].as_u64(), report["refused"].as_u64()), (Some(1), Some(1)), "{report}");
    let refusals = report["refusals"].to_string();
    assert!(refusals.contains("uid=carol") && refusals.contains("extension 2100"), "{refusals}");
    let ada = get_user(&cluster, "ada").await.expect("ada was created");
    assert_eq!((ada.home_site, ada.extension.as_str(), ada.email.as_str()), (2, "332101", "Ada@Example.com"));
    assert_eq!(ada.skills.get("english"), Some(&70));
    assert_eq!(ada.workgroups, vec!["Support".to_string()]);
    assert_eq!(get_user(&cluster, "grace").await.unwrap().home_site, 1);
    assert_eq!(get_user(&cluster, "dave").await.unwrap().display_name, "Dave Directory");
    assert!(get_user(&cluster, "carol").await.is_none());
    assert_eq!(get_user(&cluster, "bob").await.unwrap().extension, "2100");

    // Every change the poll made is recorded under source:ldap.
    let mut watch = cluster
        .presence(2)
        .await
        .watch(pb::WatchRequest { start_revision: 1, kinds: vec!["UserAdded".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut principals = std::collections::BTreeMap::new();
    while principals.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), watch.next()).await.unwrap().unwrap().unwrap();
        if let Some(pb::event::Body::UserAdded(added)) = event.body {
            principals.insert(added.username, event.principal);
        }
    }
    assert_eq!(principals["ada"], "source:ldap");
    assert_eq!(principals["grace"], "source:ldap");
    assert!(principals["bob"].starts_with("admin:"), "{principals:?}");

    // A poll of an unchanged directory changes nothing: only the poll's own bookkeeping
    // (made due, begun, reported) advances the revision.
    let before = cluster.status(0).await.revision;
    let report = sync(&cluster);
    assert_eq!(
        [&report["created"], &report["updated"], &report["removed"], &report["refused"]].map(|v| v.as_u64()),
        [Some(0), Some(0), Some(0), Some(1)],
        "{report}"
    );
    assert_eq!(cluster.status(0).await.revision - before, 3);

    // A dry run shows a change without making it.
    slapd.change(&format!(
        "dn: uid=grace,ou=Indianapolis,{BASE}\nchangetype: modify\nreplace: cn\ncn: Rear Admiral Hopper\n"
    ));
    let plan = ok(&cluster, &["source", "ldap", "sync-now", "--dry-run"]);
    assert!(plan.contains("1 updates") && plan.contains("update grace"), "{plan}");
    assert_eq!(get_user(&cluster, "grace").await.unwrap().display_name, "Grace Hopper");
    let report = sync(&cluster);
    assert_eq!(report["updated"].as_u64(), Some(1), "{report}");
    assert_eq!(get_user(&cluster, "grace").await.unwrap().display_name, "Rear Admiral Hopper");

    // grace leaves the directory: logged off and refused logon, kept otherwise.
    log_on(&cluster, "grace", 1).await.unwrap();
    let (deleted, out) = slapd.ldap(&["ldapdelete", &format!("uid=grace,ou=Indianapolis,{BASE}")], None);
    assert!(deleted, "{out}");
    let report = sync(&cluster);
    assert_eq!(report["removed"].as_u64(), Some(1), "{report}");
    let refused = log_on(&cluster, "grace", 1).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("deactivated"), "{refused:?}");
    let presence = cluster
        .presence(1)
        .await
        .get_presence(pb::GetPresenceRequest { usernames: vec!["grace".into()], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(presence.presences[0].current_site, 0, "{presence:?}");
    let status = ok(&cluster, &["-w", "json", "source", "ldap", "status"]);
    assert!(status.contains("\"deactivated\": 1"), "{status}");

    // Back in the directory: she may log on again.
    slapd.change(&person("grace", "Indianapolis", "Grace Hopper", "grace@example.com", "1102", ""));
    assert_eq!(sync(&cluster)["updated"].as_u64(), Some(1));
    log_on(&cluster, "grace", 1).await.unwrap();

    // StartTLS over ldap:// works as well as ldaps://.
    let starttls = format!("ldap://127.0.0.1:{}", slapd.ldap);
    let args = set_args(&starttls, &slapd.ca(), &password_file, &["--starttls"]);
    ok(&cluster, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(sync(&cluster)["error"], "");

    // Failures change nothing and say why.
    let users = user_count(&cluster).await;
    let wrong = slapd.dir.path().join("wrong-password");
    std::fs::write(&wrong, "not-the-password").unwrap();
    let args = set_args(&ldaps, &slapd.ca(), &wrong, &[]);
    ok(&cluster, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (success, _, stderr) = cli(&cluster, &["source", "ldap", "sync-now"]);
    assert!(!success && stderr.contains("bind as cn=admin") && stderr.contains("nvalid"), "{stderr}");

    let closed = format!("ldaps://127.0.0.1:{}", free_port());
    let args = set_args(&closed, &slapd.ca(), &password_file, &[]);
    ok(&cluster, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let (success, _, stderr) = cli(&cluster, &["source", "ldap", "sync-now"]);
    assert!(!success && stderr.contains("cannot connect"), "{stderr}");
    assert_eq!(user_count(&cluster).await, users);

    for (extra, field) in [
        (&["--map", "email=dn:ou"][..], "settings.mapping.email"),
        (&["--map", "username=no such"][..], "settings.mapping.username"),
        (&["--filter", "objectClass=person"][..], "settings.filter"),
        (&["--filter", "(&(objectClass=person)"][..], "settings.filter"),
        (&["--interval-s", "5"][..], "settings.interval_s"),
    ] {
        let args = set_args(&ldaps, &slapd.ca(), &password_file, extra);
        let (success, _, stderr) = cli(&cluster, &args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!success && stderr.contains(field), "{extra:?}: {stderr}");
    }
    let (success, _, stderr) =
        cli(&cluster, &["source", "ldap", "set", "--url", "http://x", "--bind-dn", "a", "--base-dn", "b"]);
    assert!(!success && stderr.contains("settings.url"), "{stderr}");
    // The refused settings left the last good ones (the unreachable server) in place.
    let settings = ok(&cluster, &["-w", "json", "source", "ldap", "get"]);
    assert!(settings.contains(&closed), "{settings}");
    assert_eq!(user_count(&cluster).await, users);

    // The bind password is never shown: not by get, not in any member's log.
    assert!(!settings.contains(ADMIN_PASSWORD) && settings.contains("\"has_bind_password\": true"), "{settings}");
    for index in 0..3 {
        assert!(!cluster.log(index).contains(ADMIN_PASSWORD), "member {index} logged the bind password");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_mid_poll_is_fenced_off_and_its_successor_finishes() {
    const ENTRIES: usize = 20_000;
    let entries: String = (0..ENTRIES)
        .map(|i| {
            let site = if i % 2 == 0 { "Paris" } else { "Indianapolis" };
            format!(
                "dn: uid=u{i},ou={site},{BASE}\nobjectClass: inetOrgPerson\nuid: u{i}\ncn: User {i}\nsn: {i}\n\
                 mail: u{i}@example.com\ntelephoneNumber: {}\n\n",
                3_000_000 + i
            )
        })
        .collect();
    let slapd = Slapd::start(&entries);
    let mut cluster = Cluster::start(3, &[]).await;
    let mut directory = cluster.directory(0).await;
    directory.add_site(site(1, "Indianapolis")).await.unwrap();
    directory.add_site(site(2, "Paris")).await.unwrap();
    let password_file = slapd.dir.path().join("bind-password");
    std::fs::write(&password_file, ADMIN_PASSWORD).unwrap();
    let url = format!("ldap://127.0.0.1:{}", slapd.ldap);
    let leader = cluster.leader(0).await;
    let args = ["source", "ldap", "set", "--url", &url, "--bind-dn", ADMIN_DN, "--base-dn", BASE];
    let mut args: Vec<&str> = args.to_vec();
    let password = password_file.to_str().unwrap();
    args.extend(["--bind-password-file", password]);
    ok(&cluster, &args);

    // Pause the leader once it has begun creating users: its poll is half done.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = cluster.status(leader).await;
        if status.revision > 2 + 100 {
            break;
        }
        assert!(Instant::now() < deadline, "the poll never began writing");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cluster.signal(leader, "STOP");
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let successor = cluster.wait_for_leader(&others).await;
    // The successor sees a poll of an older term unfinished and redoes it at once.
    let mut sources = collective_proto::v1::sources_client::SourcesClient::new(cluster.channel(successor).await);
    let report = loop {
        let request = pb::SourceStatusRequest { serializable: false };
        if let Ok(status) = sources.status(request).await {
            let status = status.into_inner();
            if let (Some(report), false) = (status.last_poll, status.polling) {
                break report;
            }
        }
        assert!(Instant::now() < deadline, "the successor never finished a poll");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((report.error.as_str(), report.seen, report.refused), ("", ENTRIES as u64, 0), "{report:?}");
    assert!(report.created < ENTRIES as u64, "the paused leader created nobody before it stopped: {report:?}");

    // The paused leader resumes: whatever it still tries is fenced off.
    cluster.signal(leader, "CONT");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for index in 0..3 {
        let request = pb::SourceStatusRequest { serializable: false };
        let mut sources = collective_proto::v1::sources_client::SourcesClient::new(cluster.channel(index).await);
        let status = sources.status(request).await.unwrap().into_inner();
        assert_eq!((status.owned, status.polling), (ENTRIES as u64, false), "member {index}: {status:?}");
    }
    assert_eq!(cluster.status(0).await.revision, cluster.status(leader).await.revision);
    let users = pb::SearchRequest { limit: 10, name: "u19999".into(), ..Default::default() };
    assert_eq!(cluster.directory(leader).await.search(users).await.unwrap().into_inner().entries.len(), 1);
    cluster.kill(leader);
}
