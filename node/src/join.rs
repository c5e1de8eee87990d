//! A member the cluster's leader does not list joins by itself (`join`): scaling a Kubernetes
//! StatefulSet up adds the new pod as a learner and promotes it once it has caught up, as
//! `member add` and `member promote` would; so are initial members that come back empty after a
//! lost quorum was recovered from one survivor (`collective recover`).
//!
//! Only the leader's view of the membership is trusted (a follower's may lag): a member the
//! leader does not list was removed (the StatefulSet was scaled down) or never added. A removed
//! member's old data is set aside, never deleted, before it joins again as a new member: its
//! log and vote belong to a membership it is no longer part of.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::NodeConfig;
use crate::environment::Environment;
use collective_client::Bearer;

use crate::error::invalid;
use crate::network::Peers;
use crate::node::Node;
use crate::raft_types::NodeId;

/// How long a joining member waits between attempts.
const JOIN_RETRY_MS: u64 = 2_000;
/// Deadline of a status question to one member.
const ASK_TIMEOUT_MS: u64 = 2_000;

/// Whether `config` makes this member join (rather than start or wait for `member add`): with
/// `join` and a cluster to join. Initial members join too; the leader lists them in the usual
/// case, so they only ask for anything after a recovery left them out.
fn joins(config: &NodeConfig) -> bool {
    config.join && config.initial_members().is_ok_and(|members| !members.is_empty())
}

/// The client-API credentials a joining member uses: the administrator token, when there is one.
fn bearer(config: &NodeConfig) -> crate::error::Result<Bearer> {
    let token = match &config.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| invalid("admin_token_file", format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    Bearer::new(token.as_deref()).map_err(|e| invalid("admin_token_file", format!("{e}")))
}

type Admin = ClusterClient<InterceptedService<Channel, Bearer>>;

fn admin(peers: &Peers, token: &Bearer, addr: &str) -> Option<Admin> {
    peers.channel(addr).ok().map(|channel| ClusterClient::with_interceptor(channel, token.clone()))
}

/// The leader's status (its address and membership), asked of the members `initial` names and
/// of the leader they point to; `None` when no leader answers.
async fn leader_status(
    peers: &Peers,
    token: &Bearer,
    initial: &BTreeMap<NodeId, String>,
) -> Option<(String, pb::ClusterStatus)> {
    let ask = |addr: String| async move {
        let mut client = admin(peers, token, &addr)?;
        let mut request = tonic::Request::new(pb::ClusterStatusRequest {});
        request.set_timeout(Duration::from_millis(ASK_TIMEOUT_MS));
        match client.status(request).await {
            Ok(status) => Some(status.into_inner()),
            Err(status) => {
                tracing::debug!(%addr, %status, "member did not answer the join's status question");
                None
            }
        }
    };
    for addr in initial.values() {
        let Some(status) = ask(addr.clone()).await else { continue };
        if status.state == "Leader" {
            return Some((addr.clone(), status));
        }
        if !status.leader_addr.is_empty() {
            if let Some(leader) = ask(status.leader_addr.clone()).await.filter(|s| s.state == "Leader") {
                return Some((status.leader_addr, leader));
            }
        }
    }
    None
}

/// Before the store opens: a joining member whose data the cluster's leader no longer lists
/// moves that data to `DATA_DIR.removed-MS` and starts empty. With no leader reachable nothing
/// moves (the member may be one the leader cannot list yet, or the whole cluster restarts).
pub async fn set_aside_if_removed(config: &NodeConfig, environment: &Environment) -> crate::error::Result<()> {
    if !joins(config) || !config.data_dir.join("CURRENT").exists() {
        return Ok(());
    }
    let security = crate::auth::Security::load(config)?;
    let peers = Peers::new(environment.connect.clone(), security.tls.as_ref().map(|tls| tls.client()), None)?;
    let token = bearer(config)?;
    let Some((leader, status)) = leader_status(&peers, &token, &config.initial_members()?).await else {
        return Ok(());
    };
    if status.members.iter().any(|member| member.id == config.id) {
        return Ok(());
    }
    let aside = PathBuf::from(format!("{}.removed-{}", config.data_dir.display(), environment.now_ms()));
    std::fs::rename(&config.data_dir, &aside).map_err(|e| {
        invalid("data_dir", format!("{}: cannot set the removed member's data aside: {e}", aside.display()))
    })?;
    tracing::warn!(
        id = config.id,
        %leader,
        aside = %aside.display(),
        "the cluster's leader does not list this member (it was removed): its old data is set aside and it joins as new"
    );
    Ok(())
}

/// Once serving: until the leader lists this member as a voter, asks it to add this member as a
/// learner (which returns once it has caught up) and to promote it.
pub async fn join(node: Arc<Node>) {
    if !joins(&node.config) {
        return;
    }
    let (token, initial) = match (bearer(&node.config), node.config.initial_members()) {
        (Ok(token), Ok(initial)) => (token, initial),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "cannot join the cluster");
            return;
        }
    };
    let id = node.id;
    let addr = node.config.advertise_addr();
    let catch_up = Duration::from_millis(
        crate::node::SNAPSHOT_INSTALL_TIMEOUT_MS + crate::api::cluster::LEARNER_CATCH_UP_MS + 5_000,
    );
    loop {
        match leader_status(&node.peers, &token, &initial).await {
            None => tracing::info!(?initial, "joining: no leader among the initial members answers yet"),
            Some((leader, status)) => {
                let role = status.members.iter().find(|member| member.id == id).map(|member| member.role.clone());
                let Some(mut client) = admin(&node.peers, &token, &leader) else {
                    tracing::warn!(%leader, "joining: the leader's address is not host:port");
                    tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
                    continue;
                };
                let result = match role.as_deref() {
                    Some("voter") => {
                        tracing::info!(id, %leader, "this member is a voter of the cluster");
                        return;
                    }
                    Some(_) => {
                        let mut request = tonic::Request::new(pb::MemberIdRequest { id });
                        request.set_timeout(catch_up);
                        client.member_promote(request).await.map(|_| "promoted")
                    }
                    None => {
                        let mut request = tonic::Request::new(pb::MemberAddRequest { id, addr: addr.clone() });
                        request.set_timeout(catch_up);
                        client.member_add(request).await.map(|_| "added as a learner")
                    }
                };
                match result {
                    Ok(done) => {
                        tracing::info!(id, %leader, "joining: {done}");
                        continue;
                    }
                    Err(status) => tracing::warn!(id, %leader, %status, "joining: the leader refused"),
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(JOIN_RETRY_MS)).await;
    }
}
