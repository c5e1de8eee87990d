//! `collective.v1.Cluster`: status and membership changes (etcd's `member` commands).

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::cluster_server::Cluster;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::node::Node;
use crate::raft_types::TypeConfig;

/// How long `MemberAdd` waits for the new learner to receive the entry that added it (longer,
/// `SNAPSHOT_INSTALL_TIMEOUT_MS`, when the learner answers: it may be installing a snapshot).
pub const LEARNER_CATCH_UP_MS: u64 = 8_000;

/// How long `TakeSnapshot` waits for the snapshot to be stored.
pub const SNAPSHOT_WAIT_MS: u64 = 120_000;
/// How often `TakeSnapshot` pulls the trigger again while no snapshot covers the applied index.
const SNAPSHOT_RETRIGGER_MS: u64 = 5_000;

/// Serves cluster administration.
pub struct ClusterService {
    /// The node.
    pub node: Arc<Node>,
}

impl ClusterService {
    fn members(&self) -> pb::MemberListResponse {
        let (voters, nodes) = self.node.members();
        let members = nodes
            .into_iter()
            .map(|(id, node)| pb::Member {
                id,
                addr: node.addr,
                role: if voters.contains(&id) { "voter" } else { "learner" }.to_string(),
            })
            .collect();
        pb::MemberListResponse { members }
    }

    /// Checks that this node leads and `id` is a member; returns the voters.
    fn existing_member(&self, id: u64) -> Result<BTreeSet<u64>, ApiError> {
        self.require_leader()?;
        let (voters, nodes) = self.node.members();
        if !nodes.contains_key(&id) {
            return Err(ApiError::Rejected(collective_statemachine::Rejection::not_found("member", id)));
        }
        Ok(voters)
    }

    fn require_leader(&self) -> Result<(), ApiError> {
        match self.node.leader() {
            Some((leader, _)) if leader == self.node.id => Ok(()),
            leader => {
                Err(ApiError::NotLeader { leader_id: leader.as_ref().map(|l| l.0), leader_addr: leader.map(|l| l.1) })
            }
        }
    }
}

fn membership_error(error: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ApiError {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            ApiError::NotLeader { leader_id: f.leader_id, leader_addr: f.leader_node.map(|n| n.addr) }
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            ApiError::Rejected(collective_statemachine::Rejection::precondition("member", e.to_string()))
        }
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(e)) => {
            ApiError::Unavailable(format!("the leader changed before the membership change committed: {e}"))
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(e)) => ApiError::Internal(e.to_string()),
        RaftError::Fatal(fatal) => ApiError::Unavailable(fatal.to_string()),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _request: Request<pb::ClusterStatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        let metrics = self.node.raft.metrics().borrow().clone();
        let leader = self.node.leader();
        let (users, sites) = {
            let state = self.node.shared.state.read().expect("state lock");
            (state.users.len() as u64, state.sites.len() as u64)
        };
        let snapshots = &self.node.shared.snapshots;
        Ok(Response::new(pb::ClusterStatus {
            id: self.node.id,
            leader_id: leader.as_ref().map(|l| l.0).unwrap_or(0),
            leader_addr: leader.map(|l| l.1).unwrap_or_default(),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            applied_index: metrics.last_applied.map(|l| l.index).unwrap_or(0),
            revision: self.node.shared.revision(),
            state: format!("{:?}", metrics.state),
            members: self.members().members,
            snapshot_index: metrics.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: metrics.purged.map(|l| l.index).unwrap_or(0),
            resident_memory_bytes: crate::server::resident_memory_bytes().unwrap_or(0),
            snapshot_bytes: snapshots.bytes.load(Ordering::Relaxed),
            snapshot_build_ms: snapshots.build_ms.load(Ordering::Relaxed),
            snapshot_install_ms: snapshots.install_ms.load(Ordering::Relaxed),
            users,
            sites,
            heap_allocated_bytes: crate::memory::heap_allocated_bytes().unwrap_or(0),
            db_size_bytes: crate::store::data_size_bytes(&self.node.config.data_dir),
        }))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MemberIdRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        let id = request.into_inner().id;
        let (leader_id, took) = self.node.move_leader((id != 0).then_some(id)).await?;
        Ok(Response::new(pb::MoveLeaderResponse { leader_id, took_ms: took.as_millis() as u64 }))
    }

    async fn take_snapshot(
        &self,
        _request: Request<pb::TakeSnapshotRequest>,
    ) -> Result<Response<pb::TakeSnapshotResponse>, Status> {
        let started = std::time::Instant::now();
        let mut metrics = self.node.raft.metrics();
        let applied = metrics.borrow().last_applied.map(|l| l.index).unwrap_or(0);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(SNAPSHOT_WAIT_MS);
        let mut triggered_at = None;
        loop {
            let snapshot_index = metrics.borrow().snapshot.map(|l| l.index).unwrap_or(0);
            if snapshot_index < applied && triggered_at != Some(snapshot_index) {
                // openraft ignores the trigger while a build runs, and that build may predate
                // `applied`: so it is pulled again each time a snapshot lands short of it (and
                // only then: a trigger after every change would queue needless builds, each a
                // copy of the whole state).
                self.node.raft.trigger().snapshot().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
                triggered_at = Some(snapshot_index);
            }
            if snapshot_index >= applied {
                return Ok(Response::new(pb::TakeSnapshotResponse {
                    id: self.node.id,
                    snapshot_index,
                    snapshot_bytes: self.node.shared.snapshots.bytes.load(Ordering::Relaxed),
                    build_ms: started.elapsed().as_millis() as u64,
                }));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "no snapshot covering index {applied} within {SNAPSHOT_WAIT_MS} ms (one may still be building)"
                )));
            }
            // Woken by a change, or every few seconds to pull again (a build that ended at the
            // index already current changes nothing a watcher sees).
            let wake =
                deadline.min(tokio::time::Instant::now() + std::time::Duration::from_millis(SNAPSHOT_RETRIGGER_MS));
            match tokio::time::timeout_at(wake, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ApiError::Unavailable("the node is shutting down".into()).into()),
                Err(_) => triggered_at = None,
            }
        }
    }

    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        Ok(Response::new(self.members()))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let request = request.into_inner();
        if request.id == 0 {
            return Err(ApiError::invalid("id", "member ids start at 1").into());
        }
        crate::config::check_peer_addr(&request.addr).map_err(|e| ApiError::invalid("addr", e.to_string()))?;
        self.require_leader()?;
        if self.node.members().1.contains_key(&request.id) {
            return Err(
                ApiError::Rejected(collective_statemachine::Rejection::exists("member", "id", request.id)).into()
            );
        }
        let id = request.id;
        let added = self
            .node
            .raft
            .add_learner(id, BasicNode { addr: request.addr.clone() }, false)
            .await
            .map_err(membership_error)?;
        // Returns once the learner has the membership entry that added it. openraft's own
        // "blocking" add gives up after 500 ms and reports success anyway, so the wait is here.
        // A learner that answers (over the members' channel, so with a certificate of this CA)
        // but is still receiving a large snapshot gets up to SNAPSHOT_INSTALL_TIMEOUT_MS more.
        let added_index = added.log_id.index;
        let caught_up = |wait_ms: u64| async move {
            self.node
                .raft
                .wait(Some(std::time::Duration::from_millis(wait_ms)))
                .metrics(
                    move |metrics| {
                        let matched = metrics.replication.as_ref().and_then(|r| r.get(&id).copied().flatten());
                        matched.is_some_and(|log_id| log_id.index >= added_index)
                    },
                    "the new learner has the entry that added it",
                )
                .await
                .is_ok()
        };
        let mut done = caught_up(LEARNER_CATCH_UP_MS).await;
        if !done && self.node.answers(&request.addr).await {
            done = caught_up(crate::node::SNAPSHOT_INSTALL_TIMEOUT_MS).await;
        }
        if !done {
            return Err(ApiError::Rejected(collective_statemachine::Rejection::precondition(
                "addr",
                format!(
                    "member {id} was added as a learner at {} but has not caught up (waited {LEARNER_CATCH_UP_MS} ms, or {} ms while it answered): \
                 is it running and reachable there (with a certificate of this cluster's CA, when TLS is on)? \
                 Remove it with `member remove {id}` or wait for it",
                    request.addr,
                    LEARNER_CATCH_UP_MS + crate::node::SNAPSHOT_INSTALL_TIMEOUT_MS
                ),
            ))
            .into());
        }
        Ok(Response::new(self.members()))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberIdRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let id = request.into_inner().id;
        let voters = self.existing_member(id)?;
        if voters.contains(&id) {
            return Err(ApiError::Rejected(collective_statemachine::Rejection::precondition(
                "id",
                format!("member {id} is already a voter"),
            ))
            .into());
        }
        self.node
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(Response::new(self.members()))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberIdRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let id = request.into_inner().id;
        let voters = self.existing_member(id)?;
        if voters.contains(&id) {
            if voters.len() == 1 {
                return Err(ApiError::Rejected(collective_statemachine::Rejection::precondition(
                    "id",
                    "cannot remove the last voter",
                ))
                .into());
            }
            self.node
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(membership_error)?;
        }
        self.node
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
        Ok(Response::new(self.members()))
    }
}
