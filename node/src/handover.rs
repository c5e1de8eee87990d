//! Handing leadership over without an outage: `member move-leader` and a leader's graceful
//! stop (SIGTERM, SIGINT).
//!
//! openraft 0.9 has no leadership transfer, and a follower refuses to vote while the leader's
//! lease runs (`election_timeout_max_ms` since it last heard the leader). So the leader holds
//! new writes, waits until the chosen voter holds its whole log, stops its heartbeats and sends
//! that voter `TimeoutNow`; the voter campaigns the moment its lease, and so every follower's,
//! has run out (`Node::run_elections`), wins at once with the longest log, and the old leader
//! steps down when it sees the new term. Writes pause for about one lease (0.44 s by default)
//! instead of a lease, a random delay and the clients' failover after a crash.

use std::time::{Duration, Instant};

use collective_proto::raft::TimeoutNowRequest;
use collective_statemachine::Rejection;

use crate::api::error::ApiError;
use crate::node::Node;
use crate::raft_types::NodeId;

/// How long the chosen voter has to catch up with the leader's log.
pub const HANDOVER_CATCH_UP_MS: u64 = 2_000;
/// How long, after `TimeoutNow`, a new leader has to emerge before the old one takes over again.
pub const HANDOVER_ELECTION_MS: u64 = 3_000;
/// How long after its lease ran out the chosen voter campaigns: the other followers heard the
/// leader's last heartbeat a little later than it may have.
pub const HANDOVER_MARGIN_MS: u64 = 30;
/// After a lease runs out, no other voter campaigns for this long (`Node::run_elections`), so the
/// voter handed leadership, which campaigns `HANDOVER_MARGIN_MS` after it (checked every
/// `ELECTION_CHECK_MS`), is first. Without it another follower's random delay fell below the
/// margin about one time in eight and that follower won (`move-leader` named the wrong member).
pub const HANDOVER_RESERVED_MS: u64 = 2 * HANDOVER_MARGIN_MS;

impl Node {
    /// Hands leadership to the voter `to` (`None`: the most up-to-date one); the new leader and
    /// how long writes were held. Refused when this member does not lead, `to` is not another
    /// voter, or there is none.
    pub async fn move_leader(&self, to: Option<NodeId>) -> Result<(NodeId, Duration), ApiError> {
        let started = Instant::now();
        let (term, target, addr) = self.handover_target(to)?;
        tracing::info!(target, term, "handing leadership over");
        self.holding_writes.send_replace(true);
        let result = self.hand_over(term, target, &addr).await;
        // Deposed, heartbeats no longer matter here; if the hand-over failed, this member leads on.
        self.raft.runtime_config().heartbeat(true);
        self.holding_writes.send_replace(false);
        let leader = result?;
        tracing::info!(leader, took_ms = started.elapsed().as_millis() as u64, "leadership handed over");
        Ok((leader, started.elapsed()))
    }

    /// This member's term and the voter to hand over to, with its address.
    fn handover_target(&self, to: Option<NodeId>) -> Result<(u64, NodeId, String), ApiError> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            let leader = self.leader();
            return Err(ApiError::NotLeader {
                leader_id: leader.as_ref().map(|l| l.0),
                leader_addr: leader.map(|l| l.1),
            });
        }
        let membership = metrics.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().filter(|id| *id != self.id).collect();
        let matched = |id: &NodeId| {
            metrics.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |log_id| log_id.index)
        };
        let target = match to {
            Some(id) if voters.contains(&id) => id,
            Some(id) if id == self.id => {
                return Err(ApiError::Rejected(Rejection::precondition("id", format!("member {id} already leads"))))
            }
            Some(id) => {
                return Err(ApiError::Rejected(Rejection::precondition(
                    "id",
                    format!("member {id} is not a voter (voters: {voters:?})"),
                )))
            }
            None => *voters
                .iter()
                .max_by_key(|id| (matched(id), std::cmp::Reverse(**id)))
                .ok_or_else(|| ApiError::Rejected(Rejection::precondition("id", "no other voter to lead")))?,
        };
        let addr = membership.get_node(&target).map(|node| node.addr.clone()).unwrap_or_default();
        Ok((metrics.current_term, target, addr))
    }

    async fn hand_over(&self, term: u64, target: NodeId, addr: &str) -> Result<NodeId, ApiError> {
        let mut metrics = self.raft.metrics();
        let caught_up = metrics.wait_for(|m| {
            let matched = m.replication.as_ref().and_then(|r| r.get(&target).cloned().flatten());
            m.current_term != term || matched.map(|log_id| log_id.index) >= m.last_log_index
        });
        match tokio::time::timeout(Duration::from_millis(HANDOVER_CATCH_UP_MS), caught_up).await {
            Ok(Ok(m)) if m.current_term == term => {}
            Ok(_) => return Err(ApiError::Unavailable("this member stopped leading during the hand-over".into())),
            Err(_) => {
                return Err(ApiError::Unavailable(format!(
                    "member {target} did not catch up within {HANDOVER_CATCH_UP_MS} ms; nothing changed"
                )))
            }
        }
        self.raft.runtime_config().heartbeat(false);
        let mut client = self.peers.client(addr).map_err(|e| ApiError::Unavailable(format!("member {target}: {e}")))?;
        let mut request = tonic::Request::new(TimeoutNowRequest { term });
        request.set_timeout(Duration::from_millis(HANDOVER_CATCH_UP_MS));
        client.timeout_now(request).await.map_err(|status| {
            ApiError::Unavailable(format!("member {target} did not take the hand-over: {}", status.message()))
        })?;
        let elected = metrics.wait_for(|m| m.current_term > term && m.current_leader.is_some_and(|l| l != self.id));
        let leader = match tokio::time::timeout(Duration::from_millis(HANDOVER_ELECTION_MS), elected).await {
            Ok(Ok(m)) => m.current_leader.unwrap_or(target),
            _ => {
                return Err(ApiError::Unavailable(format!(
                    "no new leader within {HANDOVER_ELECTION_MS} ms of handing over to member {target}"
                )))
            }
        };
        Ok(leader)
    }

    /// `TimeoutNow` from the leader of `term`: campaign as soon as the lease allows.
    pub fn take_over(&self, term: u64) -> bool {
        let current = self.raft.metrics().borrow().current_term;
        if current != term {
            return false;
        }
        self.campaign_at_lease.store(true, std::sync::atomic::Ordering::Relaxed);
        true
    }

    /// Stops this member gracefully: it refuses new client requests (UNAVAILABLE, so clients try
    /// another member) and, if it leads, hands leadership over first. Then `serve` returns.
    pub async fn stop(&self) {
        self.stopping.send_replace(true);
        if self.leads() {
            match self.move_leader(None).await {
                Ok((leader, took)) => {
                    tracing::info!(leader, took_ms = took.as_millis() as u64, "stopping: leadership handed over")
                }
                Err(error) => tracing::warn!(%error, "stopping: could not hand leadership over"),
            }
        }
        // In-flight requests finish against the new leader (forwarded) or fail retryably.
        tokio::time::sleep(Duration::from_millis(STOP_DRAIN_MS)).await;
    }

    /// Whether this member is stopping (`stop`).
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }
}

/// How long a stopping member lets in-flight requests finish.
pub const STOP_DRAIN_MS: u64 = 200;
