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
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    /// Starts `size` members and waits until every one knows the leader.
    pub async fn start(size: usize, extra_args: &[&str]) -> Cluster {
        let grpc: Vec<String> = (0..size).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let http: Vec<String> = (0..size).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let mut cluster = Cluster {
            dir: TempDir::new().unwrap(),
            grpc,
            http,
            children: (0..size).map(|_| None).collect(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        for index in 0..size {
            cluster.spawn(index);
        }
        cluster.wait_for_leader(&(0..size).collect::<Vec<_>>()).await;
        cluster
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

    fn spawn(&mut self, index: usize) {
        let initial: Vec<String> = self.grpc.iter().enumerate().map(|(i, addr)| format!("{}={addr}", i + 1)).collect();
        self.spawn_with(index, initial.join(","));
    }

    fn spawn_with(&mut self, index: usize, initial_cluster: String) {
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", index + 1))).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_collective"))
            .arg("serve")
            .args(["--id", &(index + 1).to_string()])
            .args(["--data-dir", self.dir.path().join(format!("node{}", index + 1)).to_str().unwrap()])
            .args(["--grpc-addr", &self.grpc[index], "--http-addr", &self.http[index]])
            .args(["--initial-cluster", &initial_cluster])
            .args(&self.extra_args)
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
            active: true,
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
