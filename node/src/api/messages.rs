//! `collective.v1.Messages`: inter-site events, requests and responses, the per-site delivery
//! stream with acknowledgements, and the backlog.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use collective_proto::v1 as pb;
use collective_proto::v1::messages_server::Messages;
use collective_statemachine::messaging::{Delivery, Destination, MessageKind, QueueLimits};
use collective_statemachine::validate::site_id;
use collective_statemachine::{Command, Event, EventRecord, Principal, Rejection};
use collective_sync::hub::{Compacted, Hub, SubscribeError, Subscription};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;
use crate::raft_types::Applied;

/// Deliveries buffered per subscription before the sender waits for the client.
pub const SUBSCRIPTION_BUFFER_DELIVERIES: usize = 1_024;
/// Most handler filters per subscription.
pub const SUBSCRIPTION_FILTERS_MAX: usize = 256;
/// Events a subscription or a waiting request reads from the hub at once.
const HUB_READ_BATCH: usize = 512;

/// Serves inter-site messages.
pub struct MessagesService {
    /// The node.
    pub node: Arc<Node>,
}

type Reply<T> = Result<Response<T>, Status>;
type DeliveryStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Delivery, Status>> + Send>>;

fn subscribe_error(error: SubscribeError) -> ApiError {
    match error {
        SubscribeError::Compacted(Compacted { oldest }) => ApiError::Compacted { requested: 0, oldest },
        SubscribeError::TooManySubscribers { limit } => {
            ApiError::Rejected(Rejection::LimitReached { what: "subscribers on this node".into(), limit: limit as u64 })
        }
    }
}

/// The ids of the messages an applied send queued (or the response it delivered).
fn message_ids(applied: &Applied) -> Vec<u64> {
    applied
        .events
        .iter()
        .filter_map(|record| match &record.event {
            Event::MessageQueued(d) | Event::ResponseArrived(d) => Some(d.id),
            _ => None,
        })
        .collect()
}

/// Which deliveries a subscriber wants.
#[derive(Debug, Clone)]
struct Filters(Vec<(String, String)>);

impl Filters {
    fn matches(&self, delivery: &Delivery) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|(object, event)| {
                (object.is_empty() || *object == delivery.object_id)
                    && (event.is_empty() || *event == delivery.event_id)
            })
    }
}

/// Closes an open request when its waiter goes away without closing it (the client cancelled):
/// the state stays bounded without waiting for the request's expiry.
struct CloseOnDrop {
    node: Arc<Node>,
    /// The requester, who closes its own request.
    principal: Principal,
    correlation_id: u64,
    armed: bool,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        // Outside a runtime (the process is shutting down) the request just expires.
        if let (true, Ok(runtime)) = (self.armed, tokio::runtime::Handle::try_current()) {
            let (node, correlation_id, principal) = (self.node.clone(), self.correlation_id, self.principal.clone());
            runtime.spawn(async move {
                let command = Command::CloseRequest { correlation_id, reason: "abandoned".into() };
                let _ = node.write(principal, command).await;
            });
        }
    }
}

impl MessagesService {
    async fn send(&self, principal: Principal, command: Command) -> Reply<pb::SendResult> {
        let applied = self.node.write(principal, command).await?;
        Ok(Response::new(pb::SendResult { revision: applied.revision, message_ids: message_ids(&applied) }))
    }

    /// Waits for the response to `correlation_id` on `subscription` (opened before the request
    /// was sent, so nothing is missed); after a compaction, looks in the state.
    async fn wait_for_response(
        &self,
        subscription: &mut Subscription<Arc<EventRecord>>,
        correlation_id: u64,
    ) -> Result<Delivery, ApiError> {
        loop {
            match subscription.next_batch(HUB_READ_BATCH).await {
                Ok(batch) => {
                    for record in batch {
                        if let Event::ResponseArrived(delivery) = &record.event {
                            if delivery.correlation_id == correlation_id {
                                return Ok(delivery.clone());
                            }
                        }
                    }
                }
                Err(_) => {
                    // Fell behind the event ring: subscribe again first, then look in the state,
                    // so a response applied in between is in one or the other.
                    *subscription = Hub::subscribe(&self.node.shared.events, None).map_err(subscribe_error)?;
                    let response = {
                        let state = self.node.shared.state.read().expect("state lock");
                        state.messaging.requests.get(&correlation_id).map(|request| request.response.clone())
                    };
                    match response {
                        Some(Some(delivery)) => return Ok(delivery),
                        Some(None) => {}
                        None => {
                            return Err(ApiError::Unavailable(format!(
                                "request {correlation_id} was closed while waiting for its response"
                            )))
                        }
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl Messages for MessagesService {
    async fn send_event(&self, request: Request<pb::SendEventRequest>) -> Reply<pb::SendResult> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let to = if request.to_site == 0 { Destination::AllOthers } else { Destination::Site(request.to_site) };
        self.send(
            principal,
            Command::SendMessage {
                from_site: request.from_site,
                to,
                object_id: request.object_id,
                event_id: request.event_id,
                kind: MessageKind::Event,
                elements: convert::elements_in(request.elements, "elements")?,
            },
        )
        .await
    }

    async fn send_request(&self, request: Request<pb::SendRequestRequest>) -> Reply<pb::SendRequestResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        if request.to_site == 0 {
            return Err(ApiError::invalid("to_site", "a request goes to one site (not 0, which means *)").into());
        }
        let command = Command::SendMessage {
            from_site: request.from_site,
            to: Destination::Site(request.to_site),
            object_id: request.object_id,
            event_id: request.event_id,
            kind: MessageKind::Request { timeout_ms: request.timeout_ms },
            elements: convert::elements_in(request.elements, "elements")?,
        };
        // Subscribed before sending: the response cannot slip past unseen.
        let mut subscription = Hub::subscribe(&self.node.shared.events, None).map_err(subscribe_error)?;
        let applied = self.node.write(principal.clone(), command).await?;
        let correlation_id = message_ids(&applied)
            .first()
            .copied()
            .ok_or_else(|| ApiError::Internal("a request was applied without queueing its message".into()))?;
        let mut guard =
            CloseOnDrop { node: self.node.clone(), principal: principal.clone(), correlation_id, armed: true };
        let waited = if request.timeout_ms == 0 {
            Some(self.wait_for_response(&mut subscription, correlation_id).await)
        } else {
            tokio::time::timeout(
                Duration::from_millis(request.timeout_ms),
                self.wait_for_response(&mut subscription, correlation_id),
            )
            .await
            .ok()
        };
        let (reason, response) = match waited {
            Some(Ok(delivery)) => ("answered", Some(convert::delivery(&delivery))),
            Some(Err(error)) => return Err(error.into()),
            None => ("timed-out", None),
        };
        guard.armed = false;
        // Best effort: an unclosed request still expires after its timeout and grace.
        let close = Command::CloseRequest { correlation_id, reason: reason.into() };
        if let Err(error) = self.node.write(principal, close).await {
            tracing::debug!(%error, correlation_id, "closing a request");
        }
        Ok(Response::new(pb::SendRequestResponse { correlation_id, timed_out: response.is_none(), response }))
    }

    async fn send_response(&self, request: Request<pb::SendResponseRequest>) -> Reply<pb::SendResult> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.send(
            principal,
            Command::SendMessage {
                from_site: request.from_site,
                to: Destination::Site(request.response_destination),
                object_id: "response".into(),
                event_id: "response".into(),
                kind: MessageKind::Response { correlation_id: request.correlation_id },
                elements: convert::elements_in(request.elements, "elements")?,
            },
        )
        .await
    }

    type SubscribeStream = DeliveryStream;

    async fn subscribe(&self, request: Request<pb::SubscribeRequest>) -> Reply<Self::SubscribeStream> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let site = request.site;
        site_id("site", site).map_err(ApiError::from)?;
        read(&self.node, true, |state| Ok(state.authorize_site_read(&principal, site)?)).await?;
        if request.filters.len() > SUBSCRIPTION_FILTERS_MAX {
            return Err(ApiError::invalid("filters", format!("at most {SUBSCRIPTION_FILTERS_MAX}")).into());
        }
        let filters = Filters(request.filters.into_iter().map(|f| (f.object_id, f.event_id)).collect());
        let shared = self.node.shared.clone();
        // Subscribed first, then the queue read after a read barrier: every delivery is either
        // in the queue read or arrives on the subscription (ids decide which were sent).
        let mut subscription = Hub::subscribe(&shared.events, None).map_err(subscribe_error)?;
        let queued = read(&self.node, false, |state| {
            state.site(site)?;
            Ok(queued_after(state, site, 0, &filters))
        })
        .await?;
        let (tx, rx) = mpsc::channel(SUBSCRIPTION_BUFFER_DELIVERIES);
        tokio::spawn(async move {
            let mut last = 0;
            let mut pending = queued;
            loop {
                for delivery in pending.drain(..) {
                    if delivery.id <= last {
                        continue;
                    }
                    last = delivery.id;
                    if tx.send(Ok(convert::delivery(&delivery))).await.is_err() {
                        return;
                    }
                }
                let batch = tokio::select! {
                    batch = subscription.next_batch(HUB_READ_BATCH) => batch,
                    _ = tx.closed() => return,
                };
                match batch {
                    Ok(batch) => {
                        pending.extend(batch.iter().filter_map(|record| match &record.event {
                            Event::MessageQueued(d) if d.to_site == site && filters.matches(d) => Some(d.clone()),
                            _ => None,
                        }));
                        // Only what is still queued: one acknowledged meanwhile is not sent again.
                        let state = shared.state.read().expect("state lock");
                        let queue = state.messaging.queues.get(&site);
                        pending.retain(|d| {
                            queue.is_some_and(|q| q.deliveries.binary_search_by_key(&d.id, |queued| queued.id).is_ok())
                        });
                    }
                    Err(_) => {
                        // Fell behind the event ring: start over from the queue itself.
                        subscription = match Hub::subscribe(&shared.events, None) {
                            Ok(subscription) => subscription,
                            Err(error) => {
                                let _ = tx.send(Err(subscribe_error(error).into())).await;
                                return;
                            }
                        };
                        let state = shared.state.read().expect("state lock");
                        pending = queued_after(&state, site, last, &filters);
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn ack(&self, request: Request<pb::AckRequest>) -> Reply<pb::AckResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let applied = self.node.write(principal, Command::AckMessages { site: request.site, ids: request.ids }).await?;
        let removed = applied
            .events
            .iter()
            .map(|record| match &record.event {
                Event::MessagesAcked { ids, .. } => ids.len() as u32,
                _ => 0,
            })
            .sum();
        Ok(Response::new(pb::AckResponse { revision: applied.revision, removed }))
    }

    async fn backlog(&self, request: Request<pb::BacklogRequest>) -> Reply<pb::BacklogResponse> {
        let request = request.into_inner();
        let response = read(&self.node, request.serializable, |state| {
            if request.site != 0 {
                state.site(request.site)?;
            }
            let sites = state
                .sites
                .keys()
                .filter(|site| request.site == 0 || **site == request.site)
                .map(|site| {
                    let queue = state.messaging.queues.get(site);
                    pb::SiteBacklog {
                        site: *site,
                        messages: queue.map(|q| q.deliveries.len() as u64).unwrap_or(0),
                        bytes: queue.map(|q| q.bytes).unwrap_or(0),
                        oldest_sent_at_ms: queue.and_then(|q| q.deliveries.front()).map(|d| d.sent_at_ms).unwrap_or(0),
                    }
                })
                .collect();
            Ok(pb::BacklogResponse {
                sites,
                limits: Some(convert::queue_limits(&state.messaging.limits)),
                open_requests: state.messaging.requests.len() as u64,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn set_queue_limits(&self, request: Request<pb::QueueLimits>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let limits = request.into_inner();
        let command = Command::SetQueueLimits(QueueLimits { messages: limits.messages, bytes: limits.bytes });
        let applied = self.node.write(principal, command).await?;
        Ok(Response::new(convert::write_response(applied)))
    }
}

/// The site's queued deliveries with id > `after` that match, in id order.
fn queued_after(state: &collective_statemachine::State, site: u32, after: u64, filters: &Filters) -> Vec<Delivery> {
    state
        .messaging
        .queues
        .get(&site)
        .map(|queue| queue.deliveries.iter().filter(|d| d.id > after && filters.matches(d)).cloned().collect())
        .unwrap_or_default()
}
