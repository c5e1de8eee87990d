//! A real cluster of `collective serve` processes on loopback for integration tests: free ports,
//! temp data dirs, SIGKILL and restart, gRPC clients per node. Everything stops on drop.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::presences_client::PresencesClient;
use tempfile::TempDir;
use tonic::transport::Channel;

pub struct Cluster {
    pub dir: TempDir,
    pub grpc: Vec<String>,
    pub http: Vec<String>,
    children: Vec<Option<Child>>,
    extra_args: Vec<String>,
    log_filter: Option<String>,
    /// Members started with their own arguments instead of `extra_args`.
    own_args: std::collections::BTreeMap<usize, Vec<String>>,
    /// The HTTP port serves TLS (`--http-tls`): readiness is asked with curl over https.
    http_tls: bool,
}

/// A plain HTTP/1.0 GET (the probes and metrics endpoint); empty when nothing answers.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(addr) else { return String::new() };
    let mut response = String::new();
    if write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").is_ok() {
        let _ = stream.read_to_string(&mut response);
    }
    response
}

/// A port for a member to listen on, below Linux's ephemeral range (32768–60999). A port the
/// kernel hands out for `:0` is free only until someone else takes it: the tests' own outgoing
/// connections draw from that range, and once one took a member's port before the member bound
/// it, the cluster never formed (bootstrap waits for every initial member). Ports here are taken
/// in turn from a start that differs per test process, and only if nothing listens on them.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    loop {
        let port = (FIRST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Cluster {
    /// Starts `size` members and waits until every one knows the leader. Members serve
    /// plaintext without authentication unless `extra_args` configure TLS or an admin token.
    pub async fn start(size: usize, extra_args: &[&str]) -> Cluster {
        Cluster::start_logged(size, extra_args, None).await
    }

    /// Like `start`, with the members' log filter (`COLLECTIVE_LOG`). In `extra_args`, `{id}`
    /// stands for the member's id (per-member certificate files). A cluster with TLS or
    /// authentication is waited for through `/readyz` (the test's plain channels cannot ask it).
    pub async fn start_logged(size: usize, extra_args: &[&str], log_filter: Option<&str>) -> Cluster {
        Cluster::start_prepared(size, extra_args, log_filter, |_| {}).await
    }

    /// Like `start_logged`; `prepare` gets the cluster's directory before any member starts (to
    /// put a member's data directory, `node{id}`, on a filesystem of its own).
    pub async fn start_prepared(
        size: usize,
        extra_args: &[&str],
        log_filter: Option<&str>,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Cluster {
        let mut extra_args: Vec<&str> = extra_args.to_vec();
        if !extra_args.iter().any(|a| a.starts_with("--tls") || *a == "--plaintext") {
            extra_args.push("--plaintext");
        }
        if !extra_args.iter().any(|a| *a == "--admin-token-file" || *a == "--no-auth") {
            extra_args.push("--no-auth");
        }
        let secure = extra_args.iter().any(|a| a.starts_with("--tls"));
        let wait = !extra_args.contains(&"--admin-token-file") && !secure;
        let grpc: Vec<String> = (0..size).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let http: Vec<String> = (0..size).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut cluster = Cluster {
            dir: TempDir::new().unwrap(),
            grpc,
            http,
            children: (0..size).map(|_| None).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log_filter: log_filter.map(str::to_string),
            own_args: Default::default(),
            http_tls: extra_args.contains(&"--http-tls"),
        };
        prepare(cluster.dir.path());
        for index in 0..size {
            cluster.spawn(index);
        }
        if wait {
            cluster.wait_for_leader(&(0..size).collect::<Vec<_>>()).await;
        } else {
            for index in 0..size {
                cluster.wait_ready(index).await;
            }
        }
        cluster
    }

    /// Waits until member `index` answers `/readyz` with 200 (a leader and a quorum read).
    pub async fn wait_ready(&self, index: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let answer = if self.http_tls {
                // Readiness only: the certificate is checked by the tests that mean to.
                let url = format!("https://{}/readyz", self.http[index]);
                let output = Command::new("curl").args(["-sk", "-i", "--max-time", "3", &url]).output().unwrap();
                String::from_utf8_lossy(&output.stdout).to_string()
            } else {
                http_get(&self.http[index], "/readyz")
            };
            if answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200") {
                return;
            }
            assert!(Instant::now() < deadline, "member {index} never became ready: {answer}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What member `index` has logged so far.
    pub fn log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node{}.log", index + 1))).unwrap_or_default()
    }

    /// Starts one more process that is not in the initial cluster (it waits for `member add`);
    /// returns its index.
    pub fn spawn_joiner(&mut self) -> usize {
        self.grpc.push(format!("127.0.0.1:{}", free_port()));
        self.http.push(format!("127.0.0.1:{}", free_port()));
        self.children.push(None);
        let index = self.grpc.len() - 1;
        self.spawn_with(index, String::new());
        index
    }

    /// Like `spawn_joiner`, with its own arguments instead of the cluster's.
    pub fn spawn_joiner_with(&mut self, args: &[&str]) -> usize {
        self.own_args.insert(self.grpc.len(), args.iter().map(|s| s.to_string()).collect());
        self.spawn_joiner()
    }

    fn spawn(&mut self, index: usize) {
        let initial: Vec<String> = self.grpc.iter().enumerate().map(|(i, addr)| format!("{}={addr}", i + 1)).collect();
        self.spawn_with(index, initial.join(","));
    }

    fn spawn_with(&mut self, index: usize, initial_cluster: String) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{}.log", index + 1)))
            .unwrap();
        let id = (index + 1).to_string();
        let args = self.own_args.get(&index).unwrap_or(&self.extra_args);
        let extra_args: Vec<String> = args.iter().map(|arg| arg.replace("{id}", &id)).collect();
        let mut command = Command::new(env!("CARGO_BIN_EXE_collective"));
        if let Some(filter) = &self.log_filter {
            command.env("COLLECTIVE_LOG", filter);
        }
        let child = command
            .arg("serve")
            .args(["--id", &(index + 1).to_string()])
            .args(["--data-dir", self.dir.path().join(format!("node{}", index + 1)).to_str().unwrap()])
            .args(["--grpc-addr", &self.grpc[index], "--http-addr", &self.http[index]])
            .args(["--initial-cluster", &initial_cluster])
            .args(&extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children[index] = Some(child);
    }

    /// SIGKILLs a member.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.children[index].take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (`STOP`, `CONT`, …) to member `index`'s process.
    pub fn signal(&self, index: usize, signal: &str) {
        let pid = self.children[index].as_ref().expect("member running").id();
        let status = Command::new("kill").args([format!("-{signal}"), pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid}");
    }

    /// Waits up to `timeout` for member `index` to exit by itself; its exit status.
    pub fn wait_exit(&mut self, index: usize, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.children[index].as_mut()?;
            if let Some(status) = child.try_wait().unwrap() {
                self.children[index] = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Member `index`'s data directory.
    pub fn data_dir(&self, index: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("node{}", index + 1))
    }

    /// Starts a stopped member again with no initial cluster, as a new member that waits for
    /// `member add` (on an emptied data directory).
    pub fn restart_as_joiner(&mut self, index: usize) {
        assert!(self.children[index].is_none(), "member {index} is running");
        self.spawn_with(index, String::new());
    }

    /// Restarts a killed member on its data.
    pub fn restart(&mut self, index: usize) {
        assert!(self.children[index].is_none(), "member {index} is running");
        self.spawn(index);
    }

    pub async fn channel(&self, index: usize) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc[index]))
                .unwrap()
                .timeout(Duration::from_secs(10))
                .connect()
                .await
            {
                Ok(channel) => return channel,
                Err(error) if Instant::now() > deadline => panic!("member {index} unreachable: {error}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    pub async fn directory(&self, index: usize) -> DirectoryClient<Channel> {
        DirectoryClient::new(self.channel(index).await)
    }

    pub async fn presence(&self, index: usize) -> PresencesClient<Channel> {
        PresencesClient::new(self.channel(index).await)
    }

    pub async fn status(&self, index: usize) -> pb::ClusterStatus {
        ClusterClient::new(self.channel(index).await).status(pb::ClusterStatusRequest {}).await.unwrap().into_inner()
    }

    /// Waits until the given members agree on a leader among them; returns its index.
    pub async fn wait_for_leader(&self, members: &[usize]) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut leaders = Vec::new();
            for &index in members {
                let status = tokio::time::timeout(Duration::from_secs(2), async {
                    ClusterClient::new(self.channel(index).await).status(pb::ClusterStatusRequest {}).await
                })
                .await;
                if let Ok(Ok(status)) = status {
                    leaders.push(status.into_inner().leader_id);
                }
            }
            if leaders.len() == members.len() && leaders[0] != 0 && leaders.iter().all(|l| *l == leaders[0]) {
                let leader = leaders[0] as usize - 1;
                if members.contains(&leader) {
                    return leader;
                }
            }
            assert!(Instant::now() < deadline, "no common leader among {members:?}: {leaders:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Index of the current leader, asked from member `via`.
    pub async fn leader(&self, via: usize) -> usize {
        self.status(via).await.leader_id as usize - 1
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for index in 0..self.children.len() {
            self.kill(index);
        }
        if std::thread::panicking() {
            // A failing test shows what each member logged last.
            for index in 0..self.grpc.len() {
                let log =
                    std::fs::read_to_string(self.dir.path().join(format!("node{}.log", index + 1))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("--- member {} log (last lines) ---", index + 1);
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

pub fn site(id: u32, name: &str) -> pb::AddSiteRequest {
    pb::AddSiteRequest {
        site: Some(pb::Site {
            id,
            name: name.into(),
            phone: format!("+1 555 01{id:02}"),
            // Omitted: a new site is active (what most callers send).
            active: None,
            servers: vec![format!("cic{id}.example")],
            ..Default::default()
        }),
        password: format!("password-{id}"),
    }
}

pub fn user(username: &str, home_site: u32, extension: &str) -> pb::UserRequest {
    pb::UserRequest {
        user: Some(pb::User {
            username: username.into(),
            display_name: username.to_uppercase(),
            email: format!("{username}@example.com"),
            home_site,
            extension: extension.into(),
            ..Default::default()
        }),
    }
}

/// The `BadRequest` field named by an INVALID_ARGUMENT status.
pub fn bad_field(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
        .unwrap_or_else(|| panic!("no BadRequest in {status:?}"))
}

/// The `ErrorInfo` reason of a status.
pub fn reason(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason).unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"))
}

/// A presence change of a `Submit` stream.
pub fn change(id: u64, change: pb::presence_change::Change) -> pb::PresenceChange {
    pb::PresenceChange { id, change: Some(change) }
}

/// A `SetStatus` change.
pub fn set_status_change(id: u64, username: &str, status_key: &str) -> pb::PresenceChange {
    change(
        id,
        pb::presence_change::Change::SetStatus(pb::SetStatusRequest {
            username: username.into(),
            status_key: status_key.into(),
            until_ms: None,
            detail: String::new(),
        }),
    )
}

/// Reads a `Submit` stream to its end: each change's outcome by id (an id answered twice fails
/// the test), as the unary call's result (a `ChangeError` as the status it describes).
pub async fn outcomes(
    mut stream: tonic::Streaming<pb::PresenceOutcome>,
) -> std::collections::BTreeMap<u64, Result<pb::WriteResponse, tonic::Status>> {
    use pb::presence_outcome::Outcome;
    let mut answered = std::collections::BTreeMap::new();
    while let Some(outcome) = stream.message().await.expect("the stream ends cleanly") {
        let result = match outcome.outcome.expect("every outcome has a result") {
            Outcome::Written(response) => Ok(response),
            Outcome::Error(error) => {
                Err(tonic::Status::with_details(tonic::Code::from_i32(error.code), error.message, error.details.into()))
            }
        };
        assert!(answered.insert(outcome.id, result).is_none(), "change {} answered twice", outcome.id);
    }
    answered
}
