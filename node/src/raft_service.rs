//! The internal gRPC service peers call: Raft messages, leader forwarding and read index.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use collective_proto::raft::raft_server::Raft as RaftRpc;
use collective_proto::raft::{
    Payload, ReadIndexRequest, ReadIndexResponse, SnapshotChunk, TimeoutNowRequest, TimeoutNowResponse,
};
use collective_statemachine::{Command, Principal};
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status, Streaming};

use crate::codec;
use crate::network::SnapshotHeader;
use crate::node::Node;
use crate::raft_types::{Snapshot, SnapshotMeta, TypeConfig, Vote};
use openraft::error::Fatal;
use openraft::raft::{AppendEntriesRequest, SnapshotResponse, StreamAppendError};

/// The follower's answers on an `AppendStream`, one per request.
type Answers = Pin<Box<dyn Stream<Item = Result<Payload, Status>> + Send>>;

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
    /// The snapshot being received, part by part (`network::SnapshotHeader`).
    receiving: std::sync::Mutex<SnapshotParts>,
}

/// The parts of a snapshot received so far: whose it is and its bytes.
#[derive(Default)]
pub struct SnapshotParts(Option<(Vote, SnapshotMeta, Vec<u8>)>);

impl SnapshotParts {
    /// Adds a part; the whole snapshot once it was the last. A part at offset 0 starts a new
    /// snapshot; any other must continue the one being received (same leader vote and
    /// metadata, right after its bytes), or everything received is dropped and the leader,
    /// told so, starts again.
    pub fn add(&mut self, header: SnapshotHeader, data: &[u8]) -> Result<Option<(Vote, Snapshot)>, Status> {
        let end = header.offset.saturating_add(data.len() as u64);
        if end > SNAPSHOT_BYTES_MAX {
            self.0 = None;
            return Err(Status::invalid_argument(format!(
                "a snapshot of {end} bytes or more is over {SNAPSHOT_BYTES_MAX} bytes"
            )));
        }
        if header.offset == 0 {
            self.0 = Some((header.vote, header.meta.clone(), Vec::new()));
        }
        let follows = |(vote, meta, bytes): &(Vote, SnapshotMeta, Vec<u8>)| {
            *vote == header.vote && *meta == header.meta && bytes.len() as u64 == header.offset
        };
        let Some((_, _, bytes)) = self.0.as_mut().filter(|current| follows(current)) else {
            self.0 = None;
            return Err(Status::failed_precondition(format!(
                "the snapshot part at offset {} does not follow the parts received (the leader starts again)",
                header.offset
            )));
        };
        bytes.extend_from_slice(data);
        if !header.done {
            return Ok(None);
        }
        let (vote, meta, bytes) = self.0.take().expect("a snapshot being received");
        Ok(Some((vote, Snapshot { meta, snapshot: std::io::Cursor::new(bytes) })))
    }
}

impl RaftService {
    /// The service of `node`.
    pub fn new(node: Arc<Node>) -> RaftService {
        RaftService { node, receiving: std::sync::Mutex::new(SnapshotParts::default()) }
    }

    /// After a write handed on by a follower: the commit of every entry in this leader's log
    /// (the write's among them) goes to the followers now, not with the next entries, so the
    /// member that handed it on applies it before long. The log's end, not `last_applied`:
    /// openraft's metrics may not show the apply yet when the write is answered.
    fn send_commits_logged(&self) {
        let logged = self.node.raft.metrics().borrow().last_log_index.unwrap_or(0);
        self.node.peers.send_commits_up_to(logged);
    }
}

fn decode<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    codec::decode(payload).map_err(|e| Status::invalid_argument(format!("undecodable Raft payload: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Response<Payload> {
    Response::new(Payload { body: codec::encode(value).expect("Raft responses encode") })
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    type AppendStreamStream = Answers;

    async fn append_stream(&self, request: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        // openraft pipelines the stream: it hands each request to the core as it arrives and
        // answers them in order, each once its entries are flushed. An undecodable request ends
        // the stream: the answers to those before it, then the error naming it.
        let refused = Arc::new(Mutex::new(None::<Status>));
        let requests = request.into_inner().scan(refused.clone(), |refused, message| {
            let request = message.and_then(|payload| decode::<AppendEntriesRequest<TypeConfig>>(&payload.body));
            futures::future::ready(match request {
                Ok(request) => Some(request),
                Err(status) => {
                    *refused.lock().expect("refusal lock") = Some(status);
                    None
                }
            })
        });
        let node = self.node.clone();
        let answers = self.node.raft.stream_append(requests).map(move |answer| {
            // As for `append_entries`: anything but a refusal for a higher vote comes from the
            // leader of this member's term.
            if matches!(&answer, Ok(Ok(_)) | Ok(Err(StreamAppendError::Conflict(_)))) {
                node.heard_from_leader();
            }
            Ok(Payload { body: codec::encode(&answer).expect("Raft responses encode") })
        });
        let refusal = futures::stream::once(async move { refused.lock().expect("refusal lock").take() })
            .filter_map(|refusal| futures::future::ready(refusal.map(Err)));
        Ok(Response::new(Box::pin(answers.chain(refusal))))
    }

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
        let header: SnapshotHeader = decode(&chunk.header)?;
        let received = self.receiving.lock().expect("snapshot parts lock").add(header, &chunk.data)?;
        let Some((vote, snapshot)) = received else {
            return Ok(encode(&Ok::<Option<SnapshotResponse<TypeConfig>>, Fatal<TypeConfig>>(None)));
        };
        let response = self.node.raft.install_full_snapshot(vote, snapshot).await;
        if response.is_ok() {
            self.node.heard_from_leader();
        }
        Ok(encode(&response.map(Some)))
    }

    async fn forward(&self, request: Request<Payload>) -> Result<Response<Payload>, Status> {
        let forwarded: Forwarded = decode(&request.into_inner().body)?;
        let outcome = self.node.write_as_leader(forwarded.principal, forwarded.command).await;
        self.send_commits_logged();
        Ok(encode(&outcome))
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
        let outcomes = self.node.write_batch_as_leader(batch).await;
        self.send_commits_logged();
        Ok(encode(&outcomes))
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
        // The asking follower waits to apply up to `index`: a commit held for the next entries
        // goes now.
        self.node.peers.send_commits_up_to(index);
        Ok(Response::new(ReadIndexResponse { index }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_types::{CommittedLeaderId, LogId, StoredMembership};

    fn header(term: u64, offset: u64, done: bool) -> SnapshotHeader {
        let last_log_id = Some(LogId::new(CommittedLeaderId::new(term), 40));
        let meta = SnapshotMeta { last_log_id, last_membership: StoredMembership::default() };
        SnapshotHeader { vote: Vote::new_committed(term, 1), meta, offset, done }
    }

    #[test]
    fn snapshot_parts_are_put_together_in_order_and_a_gap_starts_again() {
        let mut parts = SnapshotParts::default();
        assert!(parts.add(header(2, 0, false), b"abc").unwrap().is_none());
        assert!(parts.add(header(2, 3, false), b"de").unwrap().is_none());
        let (vote, snapshot) = parts.add(header(2, 5, true), b"f").unwrap().expect("the whole snapshot");
        assert_eq!((vote, snapshot.snapshot.into_inner()), (Vote::new_committed(2, 1), b"abcdef".to_vec()));

        // A part that does not follow (a gap, another leader's) drops what was received.
        assert!(parts.add(header(2, 0, false), b"abc").unwrap().is_none());
        let gap = parts.add(header(2, 4, false), b"x").unwrap_err();
        assert_eq!(gap.code(), tonic::Code::FailedPrecondition, "{gap:?}");
        assert!(parts.add(header(2, 3, true), b"d").is_err(), "a part after the refused one was taken");
        assert!(parts.add(header(2, 0, false), b"abc").unwrap().is_none());
        assert!(parts.add(header(3, 3, true), b"d").is_err(), "another leader's part was taken");

        // A new snapshot replaces one half received; a whole one in one part.
        assert!(parts.add(header(3, 0, false), b"abc").unwrap().is_none());
        let (_, snapshot) = parts.add(header(4, 0, true), b"z").unwrap().expect("the whole snapshot");
        assert_eq!(snapshot.snapshot.into_inner(), b"z".to_vec());

        let over = parts.add(header(4, SNAPSHOT_BYTES_MAX, false), b"x").unwrap_err();
        assert_eq!(over.code(), tonic::Code::InvalidArgument, "{over:?}");
    }
}
