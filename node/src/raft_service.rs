//! The internal gRPC service peers call: Raft messages, leader forwarding and read index.

use std::sync::Arc;

use collective_proto::raft::raft_server::Raft as RaftRpc;
use collective_proto::raft::{
    Payload, ReadIndexRequest, ReadIndexResponse, SnapshotChunk, TimeoutNowRequest, TimeoutNowResponse,
};
use collective_statemachine::{Command, Principal};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

use crate::codec;
use crate::node::Node;
use crate::raft_types::{Snapshot, SnapshotMeta, Vote};

/// Largest snapshot a node accepts from a peer.
pub const SNAPSHOT_BYTES_MAX: u64 = 8 << 30;

/// A client write forwarded by a follower: the leader stamps it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// Who asked.
    pub principal: Principal,
    /// What was asked.
    pub command: Command,
}

/// Serves `collective.raft.v1.Raft` for one node.
pub struct RaftService {
    /// The node.
    pub node: Arc<Node>,
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    codec::decode(payload).map_err(|e| Status::invalid_argument(format!("undecodable Raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Response<Payload> {
    Response::new(Payload { body: codec::encode(value).expect("Raft responses encode") })
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc = decode(&request.into_inner().body)?;
        let response = self.node.raft.append_entries(rpc).await;
        // Anything but a refusal for a higher vote comes from the leader of this member's term.
        if matches!(&response, Ok(r) if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_))) {
            self.node.heard_from_leader();
        }
        Ok(encode(&response))
    }

    async fn vote(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let rpc: openraft::raft::VoteRequest<crate::raft_types::TypeConfig> = decode(&request.into_inner().body)?;
        let candidate_log = rpc.last_log_id;
        let response = self.node.raft.vote(rpc).await;
        match &response {
            // Granting a vote restarts the election timer, as Raft prescribes.
            Ok(r) if r.vote_granted => self.node.heard_from_leader(),
            // A candidate whose log is behind this member's cannot win, and openraft does not
            // raise this member's term for it: campaign soon, or the two can trade elections for
            // seconds (seen: 19 terms in 9 s after a leader kill).
            Ok(r) if r.last_log_id > candidate_log => self.node.campaign_soon(),
            _ => {}
        }
        Ok(encode(&response))
    }

    async fn install_snapshot(&self, request: Request<SnapshotChunk>) -> Result<Response<Payload>, Status> {
        let chunk = request.into_inner();
        let (vote, meta): (Vote, SnapshotMeta) = decode(&chunk.header)?;
        if chunk.data.len() as u64 > SNAPSHOT_BYTES_MAX {
            return Err(Status::invalid_argument(format!(
                "a snapshot of {} bytes is over {SNAPSHOT_BYTES_MAX} bytes",
                chunk.data.len()
            )));
        }
        let snapshot = Snapshot { meta, snapshot: std::io::Cursor::new(chunk.data) };
        let response = self.node.raft.install_full_snapshot(vote, snapshot).await;
        if response.is_ok() {
            self.node.heard_from_leader();
        }
        Ok(encode(&response))
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let forwarded: Forwarded = decode(&request.into_inner().body)?;
        Ok(encode(&self.node.write_as_leader(forwarded.principal, forwarded.command).await))
    }

    async fn forward_batch(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let batch: Vec<Forwarded> = decode(&request.into_inner().body)?;
        if batch.len() > crate::node::FORWARD_BATCH_MAX {
            return Err(Status::invalid_argument(format!(
                "a forwarded batch holds at most {} writes, not {}",
                crate::node::FORWARD_BATCH_MAX,
                batch.len()
            )));
        }
        // Queued together, so they share the leader's next log entry.
        Ok(encode(&self.node.write_batch_as_leader(batch).await))
    }

    async fn timeout_now(&self, request: Request<TimeoutNowRequest>) -> Result<Response<TimeoutNowResponse>, Status> {
        let term = request.into_inner().term;
        if !self.node.take_over(term) {
            return Err(Status::failed_precondition(format!("this member is not in term {term}")));
        }
        Ok(Response::new(TimeoutNowResponse {}))
    }

    async fn read_index(&self, _request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        // Only the leader answers (a stale follower would otherwise pass the request on); reads
        // from every follower share the leader's rounds.
        if !self.node.leads() {
            return Err(Status::from(self.node.not_leader()));
        }
        let index = self.node.read_index().await.map_err(Status::from)?;
        Ok(Response::new(ReadIndexResponse { index }))
    }
}
