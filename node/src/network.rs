//! The Raft transport over tonic: pooled lazy channels per peer address, a deadline on every RPC,
//! and `Unreachable` on connection failures so openraft backs off before retrying. Replication
//! to a follower runs on one long-lived `AppendStream` per session (a message each way per
//! request, pipelined); heartbeats and votes are calls; a snapshot travels in parts.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use collective_client::Bearer;
use collective_proto::raft::raft_client::RaftClient;
use collective_proto::raft::{Payload, SnapshotChunk};
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use openraft::error::{Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, StreamAppendResult, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, OptionalSend, RaftNetworkV2};
use serde::de::DeserializeOwned;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::codec;
use crate::environment::Connect;
use crate::error::invalid;
use crate::raft_types::{NodeId, Snapshot, SnapshotData, TypeConfig, Vote};

/// Largest gRPC message between nodes (a batch of entries or a snapshot chunk).
pub const PEER_MESSAGE_BYTES_MAX: usize = 64 << 20;
/// Largest AppendEntries request we send; a bigger one is cut to a prefix that fits, reported to
/// openraft as a partial success so it sends the rest next. Entries are batches of up to 1,024
/// commands, so a fixed entry count cannot bound the size.
pub const APPEND_ENTRIES_BYTES_MAX: usize = 4 << 20;
/// Snapshot bytes per `InstallSnapshot` call: a large state (~500 MB encoded at 1,000,000 users)
/// travels in parts, each well under `PEER_MESSAGE_BYTES_MAX`; the follower puts them together
/// (`raft_service.rs`) and installs on the last.
pub const SNAPSHOT_CHUNK_BYTES: usize = 8 << 20;

/// What travels beside each part of a snapshot: the leader's vote, the snapshot's metadata, where
/// the part starts and whether it is the last.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotHeader {
    /// The sending leader's vote.
    pub vote: Vote,
    /// The snapshot's metadata.
    pub meta: crate::raft_types::SnapshotMeta,
    /// Where this part's bytes start in the snapshot.
    pub offset: u64,
    /// Whether this is the last part (the follower installs the snapshot then).
    pub done: bool,
}

/// How long establishing a connection to a peer may take.
pub const PEER_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// Most cached peer channels (peers come and go with membership changes).
pub const PEER_CHANNELS_MAX: usize = 64;

/// A Raft RPC client to one peer.
pub type PeerClient = RaftClient<InterceptedService<Channel, Bearer>>;

/// One lazily connected channel per peer address, shared by the Raft transport and forwarding.
/// A lazy tonic channel reconnects by itself on its next use after a failure.
pub struct Peers {
    channels: Mutex<BTreeMap<String, Channel>>,
    connect: Connect,
    /// TLS towards peers (the cluster CA, this node's certificate), when the cluster uses TLS.
    tls: Option<ClientTlsConfig>,
    token: Bearer,
    /// When a peer last refused this member's vote request holding a newer log than it: this
    /// member cannot win an election now and stands back (`Node::run_elections`).
    outdated_at: Mutex<Option<tokio::time::Instant>>,
    /// The log index up to which a commit held on an append stream (`DeferCommits`) goes at once:
    /// raised when a follower needs to apply what the leader committed (its read-index round, a
    /// write it handed on).
    commits_wanted: tokio::sync::watch::Sender<u64>,
}

impl Peers {
    /// No channels yet; `connect` opens them (TCP, or the simulated network), over TLS when
    /// `tls` is given, sending `peer_token` on Raft RPCs when given.
    pub fn new(
        connect: Connect,
        tls: Option<ClientTlsConfig>,
        peer_token: Option<&str>,
    ) -> crate::error::Result<Peers> {
        Ok(Peers {
            channels: Mutex::new(BTreeMap::new()),
            connect,
            tls,
            token: Bearer::new(peer_token).map_err(|e| invalid("peer token", e.to_string()))?,
            outdated_at: Mutex::new(None),
            commits_wanted: tokio::sync::watch::channel(0).0,
        })
    }

    /// Sends at once every held commit index up to `index` (`DeferCommits`): a follower that
    /// waits to apply it (a linearizable read there, a write it handed on) does not wait out
    /// `COMMIT_ONLY_DELAY_MS`.
    pub fn send_commits_up_to(&self, index: u64) {
        self.commits_wanted.send_if_modified(|wanted| {
            let raised = index > *wanted;
            *wanted = (*wanted).max(index);
            raised
        });
    }

    /// When a peer last showed this member that its log is behind (a refused vote request).
    pub fn outdated_at(&self) -> Option<tokio::time::Instant> {
        *self.outdated_at.lock().expect("outdated lock")
    }

    /// The channel to `addr` (host:port), created on first use.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut channels = self.channels.lock().expect("peers lock");
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone())?;
        }
        let endpoint = endpoint
            .connect_timeout(Duration::from_millis(PEER_CONNECT_TIMEOUT_MS))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = (self.connect)(endpoint);
        if channels.len() >= PEER_CHANNELS_MAX {
            channels.clear();
        }
        channels.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    /// A Raft RPC client to `addr`.
    pub fn client(&self, addr: &str) -> Result<PeerClient, tonic::transport::Error> {
        Ok(RaftClient::with_interceptor(self.channel(addr)?, self.token.clone())
            .max_decoding_message_size(PEER_MESSAGE_BYTES_MAX)
            .max_encoding_message_size(PEER_MESSAGE_BYTES_MAX))
    }
}

/// Builds a connection per target for openraft.
#[derive(Clone)]
pub struct Network {
    /// Shared channel pool.
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection { target, addr: node.addr.clone(), peers: self.peers.clone() }
    }
}

/// The connection to one peer.
pub struct Connection {
    target: NodeId,
    addr: String,
    peers: Arc<Peers>,
}

fn transport_error(status: tonic::Status) -> RPCError<TypeConfig> {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl Connection {
    fn client(&self) -> Result<PeerClient, RPCError<TypeConfig>> {
        self.peers.client(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))
    }
}

/// `target`'s answer: what its Raft returned, or (its core stopped) unreachable, so that the
/// leader backs off.
fn decode_answer<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
    target: NodeId,
    payload: &Payload,
) -> Result<T, RPCError<TypeConfig>> {
    let result: Result<T, E> = codec::decode(&payload.body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::Unreachable(Unreachable::from_string(format!("member {target} cannot serve: {e}"))))
}

/// How long an AppendEntries that carries only the leader's commit index waits on an append
/// stream for the next request with entries, which carries the commit too and makes it
/// redundant. A lone write's commit then reaches the followers with the next write instead of in
/// messages of its own (a request and its answer per follower, a quarter of a lone write's peer
/// messages). A follower that needs the commit sooner asks for it (`Peers::send_commits_up_to`);
/// otherwise an idle follower applies a write this much later.
pub const COMMIT_ONLY_DELAY_MS: u64 = 2;

/// The leader's requests on an append stream, where a request without entries (the commit
/// index alone) is held up to `COMMIT_ONLY_DELAY_MS` and dropped if another request comes first:
/// that request carries a commit index at least as new and starts where the held one ends, and
/// openraft counts acknowledgements by log id, so its answer acknowledges the held one too. A
/// commit up to the index in `wanted` is never held.
struct DeferCommits<S> {
    input: S,
    held: Option<AppendEntriesRequest<TypeConfig>>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    delay: Duration,
    ended: bool,
    /// `Peers::commits_wanted`, while its sender lives.
    wanted: Option<tokio_stream::wrappers::WatchStream<u64>>,
    wanted_index: u64,
}

impl<S> DeferCommits<S> {
    fn new(input: S, delay: Duration, wanted: tokio::sync::watch::Receiver<u64>) -> Self {
        DeferCommits {
            input,
            held: None,
            deadline: Box::pin(tokio::time::sleep(delay)),
            delay,
            ended: false,
            wanted: Some(tokio_stream::wrappers::WatchStream::new(wanted)),
            wanted_index: 0,
        }
    }

    /// Takes in the newest wanted index, registering for the next.
    fn poll_wanted(&mut self, cx: &mut Context<'_>) {
        while let Some(wanted) = self.wanted.as_mut() {
            match wanted.poll_next_unpin(cx) {
                Poll::Ready(Some(index)) => self.wanted_index = self.wanted_index.max(index),
                Poll::Ready(None) => self.wanted = None,
                Poll::Pending => return,
            }
        }
    }

    fn wanted_now(&self, request: &AppendEntriesRequest<TypeConfig>) -> bool {
        request.leader_commit.is_some_and(|commit| commit.index <= self.wanted_index)
    }
}

impl<S: Stream<Item = AppendEntriesRequest<TypeConfig>> + Unpin> Stream for DeferCommits<S> {
    type Item = AppendEntriesRequest<TypeConfig>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        this.poll_wanted(cx);
        loop {
            if this.ended {
                return Poll::Ready(this.held.take());
            }
            if this.held.as_ref().is_some_and(|held| this.wanted_now(held)) {
                return Poll::Ready(this.held.take());
            }
            match this.input.poll_next_unpin(cx) {
                Poll::Ready(Some(request)) if request.entries.is_empty() => {
                    // A later commit replaces a held one; the first one's deadline stands.
                    if this.held.is_none() {
                        this.deadline.as_mut().reset(tokio::time::Instant::now() + this.delay);
                    }
                    this.held = Some(request);
                }
                Poll::Ready(Some(request)) => {
                    this.held = None;
                    return Poll::Ready(Some(request));
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => {
                    if this.held.is_some() && this.deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(this.held.take());
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// Requests sent on an append stream and not yet answered. `sent` wakes the reader waiting
/// while none were outstanding, so that it starts the deadline of the answer.
#[derive(Default)]
struct Unanswered {
    count: AtomicUsize,
    sent: tokio::sync::Notify,
}

/// The encoded request for the longest prefix of `rpc`'s entries (halving) under
/// `APPEND_ENTRIES_BYTES_MAX`, at least one entry, and how many entries it holds.
fn fitting_prefix(rpc: &AppendEntriesRequest<TypeConfig>) -> (Payload, usize) {
    let mut payload = encode(rpc);
    let mut count = rpc.entries.len();
    while payload.body.len() > APPEND_ENTRIES_BYTES_MAX && count > 1 {
        count /= 2;
        payload = encode(&AppendEntriesRequest::<TypeConfig> {
            vote: rpc.vote,
            prev_log_id: rpc.prev_log_id,
            leader_commit: rpc.leader_commit,
            entries: rpc.entries[..count].to_vec(),
        });
    }
    (payload, count)
}

/// `rpc` as consecutive requests, each under `APPEND_ENTRIES_BYTES_MAX` (or of one entry), each
/// starting where the one before ends, all with its vote and commit (a follower commits no
/// further than what it holds).
fn split(mut rpc: AppendEntriesRequest<TypeConfig>) -> Vec<Payload> {
    let mut parts = Vec::new();
    loop {
        let (payload, count) = fitting_prefix(&rpc);
        parts.push(payload);
        if count == rpc.entries.len() {
            return parts;
        }
        rpc.prev_log_id = Some(rpc.entries[count - 1].log_id);
        rpc.entries.drain(..count);
    }
}

fn request<T>(message: T, option: &RPCOption) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(option.hard_ttl());
    request
}

fn encode<T: serde::Serialize>(value: &T) -> Payload {
    Payload { body: codec::encode(value).expect("openraft messages encode") }
}

/// How often a leader retries a member it cannot reach (openraft's default is 500 ms): a
/// restarted member hears from its leader within this long, well before its election timeout,
/// rather than campaigning and deposing a healthy leader.
pub const UNREACHABLE_RETRY_MS: u64 = 100;

impl RaftNetworkV2<TypeConfig> for Connection {
    type SnapshotData = SnapshotData;

    fn backoff(&self) -> Option<openraft::network::Backoff> {
        let retry = std::iter::repeat(Duration::from_millis(UNREACHABLE_RETRY_MS));
        Some(openraft::network::Backoff::new(retry))
    }

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let (payload, count) = fitting_prefix(&rpc);
        let mut client = self.client()?;
        let response = client.append_entries(request(payload, &option)).await.map_err(transport_error)?;
        let response = decode_answer::<_, RaftError<TypeConfig>>(self.target, &response.into_inner())?;
        Ok(match response {
            // Only a prefix was sent: openraft sends the rest from there.
            AppendEntriesResponse::Success if count < rpc.entries.len() => {
                AppendEntriesResponse::PartialSuccess(Some(rpc.entries[count - 1].log_id))
            }
            response => response,
        })
    }

    /// One `AppendStream` for the session: requests go out as openraft makes them (a large one
    /// in consecutive parts, each answered), answers come back in order. An answer that takes
    /// longer than the RPC deadline, counted from when the reader starts waiting for it, ends
    /// the session with an error, as an overdue call would.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        Box::pin(async move {
            // The stream opens with its first request. openraft makes each request after its
            // backoff, so a member that cannot be reached is retried at that pace, not in a loop
            // of failed connections.
            let wanted = self.peers.commits_wanted.subscribe();
            let mut input = DeferCommits::new(input, Duration::from_millis(COMMIT_ONLY_DELAY_MS), wanted);
            let Some(first) = input.next().await else { return Ok(futures::stream::empty().boxed()) };
            let input = futures::stream::once(futures::future::ready(first)).chain(input);
            let mut client = self.client()?;
            let target = self.target;
            let deadline = option.hard_ttl();
            let overdue = move || {
                RPCError::Network(NetworkError::from_string(format!(
                    "member {target} did not answer on its append stream within {} ms",
                    deadline.as_millis()
                )))
            };
            let unanswered = Arc::new(Unanswered::default());
            let requests = {
                let unanswered = unanswered.clone();
                input.flat_map(move |rpc| {
                    let parts = split(rpc);
                    unanswered.count.fetch_add(parts.len(), Ordering::SeqCst);
                    unanswered.sent.notify_one();
                    futures::stream::iter(parts)
                })
            };
            let answers = match tokio::time::timeout(deadline, client.append_stream(requests)).await {
                Ok(opened) => opened.map_err(transport_error)?.into_inner(),
                Err(_) => return Err(overdue()),
            };
            let answers = futures::stream::unfold(Some((answers, unanswered)), move |state| async move {
                let (mut answers, unanswered) = state?;
                let answer = loop {
                    if unanswered.count.load(Ordering::SeqCst) == 0 {
                        tokio::select! {
                            answer = answers.message() => break answer,
                            _ = unanswered.sent.notified() => continue,
                        }
                    }
                    match tokio::time::timeout(deadline, answers.message()).await {
                        Ok(answer) => break answer,
                        Err(_) => return Some((Err(overdue()), None)),
                    }
                };
                let answer = match answer {
                    Ok(Some(payload)) => {
                        unanswered.count.fetch_sub(1, Ordering::SeqCst);
                        decode_answer::<_, Fatal<TypeConfig>>(target, &payload)
                    }
                    Ok(None) => match unanswered.count.load(Ordering::SeqCst) {
                        0 => return None,
                        left => Err(RPCError::Network(NetworkError::from_string(format!(
                            "member {target} ended its append stream with {left} requests unanswered"
                        )))),
                    },
                    Err(status) => Err(transport_error(status)),
                };
                // openraft ends a session at its first error or refusal.
                let go_on = matches!(answer, Ok(Ok(_)));
                Some((answer, go_on.then_some((answers, unanswered))))
            });
            Ok(answers.boxed())
        })
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl std::future::Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let mut client = self.client()?;
        let data = snapshot.snapshot.into_inner();
        let mut cancel = std::pin::pin!(cancel);
        let mut offset = 0;
        loop {
            let end = (offset + SNAPSHOT_CHUNK_BYTES).min(data.len());
            let done = end == data.len();
            let header = SnapshotHeader { vote, meta: snapshot.meta.clone(), offset: offset as u64, done };
            // Snapshot bytes travel raw; only the small header is encoded.
            let header = codec::encode(&header).expect("openraft messages encode");
            let chunk = SnapshotChunk { header, data: data[offset..end].to_vec() };
            let response = tokio::select! {
                closed = &mut cancel => return Err(StreamingError::Closed(closed)),
                response = client.install_snapshot(request(chunk, &option)) => response.map_err(transport_error)?,
            };
            let answer: Option<SnapshotResponse<TypeConfig>> =
                decode_answer::<_, openraft::error::Fatal<TypeConfig>>(self.target, &response.into_inner())?;
            match answer {
                // The follower's answer to the last part (earlier parts are answered with none).
                Some(answer) => return Ok(answer),
                None if done => {
                    return Err(StreamingError::Network(NetworkError::from_string(format!(
                        "member {} did not answer the last part of the snapshot",
                        self.target
                    ))))
                }
                None => offset = end,
            }
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        let mut client = self.client()?;
        let response = client.vote(request(encode(&rpc), &option)).await.map_err(transport_error)?;
        let response: VoteResponse<TypeConfig> =
            decode_answer::<_, RaftError<TypeConfig>>(self.target, &response.into_inner())?;
        if !response.vote_granted && response.last_log_id > rpc.last_log_id {
            *self.peers.outdated_at.lock().expect("outdated lock") = Some(tokio::time::Instant::now());
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft_types::{CommittedLeaderId, Entry, LogId};
    use collective_statemachine::{Batch, Command, Principal, Proposal};

    fn entry(index: u64, detail_bytes: usize) -> Entry {
        let command = Command::SetStatus {
            username: "alice".into(),
            status_key: "Available".into(),
            until_ms: None,
            detail: "x".repeat(detail_bytes),
        };
        let proposal = Proposal { principal: Principal::Admin("root".into()), command };
        let batch = Batch { at_ms: 1, proposals: vec![proposal].into() };
        Entry { log_id: LogId::new(CommittedLeaderId::new(2), index), payload: openraft::EntryPayload::Normal(batch) }
    }

    #[test]
    fn a_large_append_is_split_into_consecutive_requests_that_fit() {
        let prev = Some(LogId::new(CommittedLeaderId::new(2), 9));
        let commit = Some(LogId::new(CommittedLeaderId::new(2), 15));
        let rpc = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(2, 1),
            prev_log_id: prev,
            leader_commit: commit,
            entries: (10..20).map(|index| entry(index, 1 << 20)).collect(),
        };
        let parts: Vec<AppendEntriesRequest<TypeConfig>> =
            split(rpc).iter().map(|payload| codec::decode(&payload.body).expect("a request")).collect();
        assert!(parts.len() > 2, "ten 1 MiB entries in {} requests", parts.len());
        let mut expected_prev = prev;
        for part in &parts {
            assert!(!part.entries.is_empty());
            assert!(encode(part).body.len() <= APPEND_ENTRIES_BYTES_MAX, "a request over the limit");
            assert_eq!(
                (part.prev_log_id, part.leader_commit, part.vote),
                (expected_prev, commit, Vote::new_committed(2, 1))
            );
            expected_prev = part.entries.last().map(|entry| entry.log_id);
        }
        let indexes: Vec<u64> =
            parts.iter().flat_map(|part| part.entries.iter().map(|entry| entry.log_id.index)).collect();
        assert_eq!(indexes, (10..20).collect::<Vec<_>>());

        // One entry over the limit still travels, alone; a small request is not touched.
        let one = AppendEntriesRequest::<TypeConfig> { entries: vec![entry(10, 5 << 20)], ..parts[0].clone() };
        assert_eq!(split(one).len(), 1);
        let small =
            AppendEntriesRequest::<TypeConfig> { entries: vec![entry(10, 10), entry(11, 10)], ..parts[0].clone() };
        assert_eq!(split(small.clone()), vec![encode(&small)]);
    }

    fn commit_only(prev: u64, commit: u64) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(2), prev)),
            leader_commit: Some(LogId::new(CommittedLeaderId::new(2), commit)),
            entries: Vec::new(),
        }
    }

    /// What a request is made of: prev index, commit index, the entries' indexes.
    fn shape(request: Option<AppendEntriesRequest<TypeConfig>>) -> Option<(u64, u64, Vec<u64>)> {
        request.map(|r| {
            let index = |id: Option<LogId>| id.map_or(0, |id| id.index);
            (index(r.prev_log_id), index(r.leader_commit), r.entries.iter().map(|e| e.log_id.index).collect())
        })
    }

    type Requests = tokio::sync::mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>;

    fn deferred(
        wanted: tokio::sync::watch::Receiver<u64>,
    ) -> (Requests, DeferCommits<tokio_stream::wrappers::UnboundedReceiverStream<AppendEntriesRequest<TypeConfig>>>)
    {
        let (requests, input) = tokio::sync::mpsc::unbounded_channel();
        let input = tokio_stream::wrappers::UnboundedReceiverStream::new(input);
        (requests, DeferCommits::new(input, Duration::from_millis(COMMIT_ONLY_DELAY_MS), wanted))
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_alone_waits_for_the_next_entries_and_goes_by_itself_when_none_come() {
        let (_wanted, nothing_wanted) = tokio::sync::watch::channel(0);
        let (requests, mut deferred) = deferred(nothing_wanted);
        let delay = Duration::from_millis(COMMIT_ONLY_DELAY_MS);

        // Entries go at once; a commit alone is replaced by the next entries (or a newer commit).
        let with_entries = AppendEntriesRequest { entries: vec![entry(11, 10)], ..commit_only(10, 10) };
        requests.send(with_entries.clone()).unwrap();
        assert_eq!(shape(deferred.next().await), shape(Some(with_entries)));
        requests.send(commit_only(11, 10)).unwrap();
        requests.send(commit_only(11, 11)).unwrap();
        let next = AppendEntriesRequest { entries: vec![entry(12, 10)], ..commit_only(11, 11) };
        requests.send(next.clone()).unwrap();
        assert_eq!(shape(deferred.next().await), shape(Some(next)));

        // With nothing after it, a commit goes once the delay is over, not before.
        requests.send(commit_only(12, 12)).unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(shape(deferred.next().await), shape(Some(commit_only(12, 12))));
        assert_eq!(started.elapsed(), delay);

        // The end of the session sends a held commit at once, then ends.
        requests.send(commit_only(12, 13)).unwrap();
        drop(requests);
        assert_eq!(shape(deferred.next().await), shape(Some(commit_only(12, 13))));
        assert_eq!(shape(deferred.next().await), shape(None));
        assert_eq!(started.elapsed(), delay);
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_a_follower_waits_for_goes_at_once() {
        let peers = Peers::new(Arc::new(|endpoint: Endpoint| endpoint.connect_lazy()), None, None).unwrap();
        let (requests, mut deferred) = deferred(peers.commits_wanted.subscribe());
        let started = tokio::time::Instant::now();

        // Wanted before it is made: the commit is not held.
        peers.send_commits_up_to(12);
        requests.send(commit_only(11, 12)).unwrap();
        assert_eq!(shape(deferred.next().await), shape(Some(commit_only(11, 12))));
        assert_eq!(started.elapsed(), Duration::ZERO);

        // Wanted while held: it goes then, not at the end of the delay. A commit past the wanted
        // index is held.
        requests.send(commit_only(12, 13)).unwrap();
        let mut next = std::pin::pin!(deferred.next());
        assert!(futures::poll!(next.as_mut()).is_pending());
        tokio::time::advance(Duration::from_micros(500)).await;
        assert!(futures::poll!(next.as_mut()).is_pending());
        peers.send_commits_up_to(13);
        assert_eq!(shape(next.await), shape(Some(commit_only(12, 13))));
        assert_eq!(started.elapsed(), Duration::from_micros(500));

        // A lower wanted index than the one before changes nothing.
        peers.send_commits_up_to(5);
        requests.send(commit_only(13, 14)).unwrap();
        assert_eq!(shape(deferred.next().await), shape(Some(commit_only(13, 14))));
        // tokio's timer fires on whole milliseconds: the held commit goes within one of its delay.
        let held = started.elapsed() - Duration::from_micros(500);
        let delay = Duration::from_millis(COMMIT_ONLY_DELAY_MS);
        assert!(held >= delay && held <= delay + Duration::from_millis(1), "held {held:?}");
    }
}
