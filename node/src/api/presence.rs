//! `collective.v1.Presences`: status, logon, interactions, reads and the watch stream.

use std::collections::BTreeSet;
use std::future::Future;
use std::future::Ready;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use collective_proto::v1 as pb;
use collective_proto::v1::presence_change::Change;
use collective_proto::v1::presence_outcome::Outcome;
use collective_proto::v1::presences_server::Presences;
use collective_statemachine::validate::validate;
use collective_statemachine::{user::key_of, Command, EventRecord, Principal, SearchQuery, State};
use collective_sync::hub::{Hub, SubscribeError};
use futures::future::Either;
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::auth::gate::{self, Presented};
use crate::node::Node;

/// Events buffered per watch stream before the sender waits for the client.
pub const WATCH_BUFFER_EVENTS: usize = 1_024;
/// Events a watcher copies out of the history per lock.
const WATCH_READ_BATCH_EVENTS: usize = 512;
/// Most usernames in one `GetPresence`.
pub const GET_PRESENCE_USERS_MAX: usize = 10_000;
/// Most changes of one `Submit` stream awaiting their outcome: the server reads no further
/// until one is answered, and HTTP/2 flow control then holds the client.
pub const SUBMIT_IN_FLIGHT_MAX: usize = 4_096;

/// Serves presence.
pub struct PresenceService {
    /// The node.
    pub node: Arc<Node>,
}

impl PresenceService {
    /// A presence service.
    pub fn new(node: Arc<Node>) -> PresenceService {
        PresenceService { node }
    }

    async fn write(&self, principal: Principal, command: Command) -> Result<Response<pb::WriteResponse>, Status> {
        let applied = self.node.write(principal, command).await?;
        Ok(Response::new(convert::write_response(applied)))
    }
}

/// What a watcher wants to see; empty sets match everything.
struct WatchFilter {
    usernames: BTreeSet<String>,
    workgroups: BTreeSet<String>,
    sites: BTreeSet<u32>,
    kinds: BTreeSet<String>,
}

impl WatchFilter {
    fn matches(&self, state: &State, record: &EventRecord) -> bool {
        let event = &record.event;
        (self.kinds.is_empty() || self.kinds.contains(event.kind()))
            && (self.usernames.is_empty() || event.username().is_some_and(|u| self.usernames.contains(&key_of(u))))
            && (self.sites.is_empty() || event.site().is_some_and(|s| self.sites.contains(&s)))
            && (self.workgroups.is_empty() || self.matches_workgroup(state, event))
    }
}

impl WatchFilter {
    /// An event naming a workgroup matches on that name. Other user events match on the user's
    /// memberships in the current state (events carry no membership snapshot), so an event a
    /// watcher reads after the user left the workgroup is not shown to it.
    fn matches_workgroup(&self, state: &State, event: &collective_statemachine::Event) -> bool {
        if let Some(workgroup) = event.workgroup() {
            return self.workgroups.contains(&key_of(workgroup));
        }
        event.username().is_some_and(|username| {
            state
                .users
                .get(key_of(username).as_str())
                .is_some_and(|user| user.workgroups.iter().any(|wg| self.workgroups.contains(wg)))
        })
    }
}

type EventStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::Event, Status>> + Send>>;
type OutcomeStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::PresenceOutcome, Status>> + Send>>;

/// The command a presence change asks for: the same for the unary calls and `Submit`.
fn command(change: Change) -> Command {
    match change {
        Change::SetStatus(r) => Command::SetStatus {
            username: r.username,
            status_key: r.status_key,
            until_ms: r.until_ms,
            detail: r.detail,
        },
        Change::LogOn(r) => Command::LogOn { username: r.username, site: r.site, server: r.server },
        Change::LogOff(r) => Command::LogOff {
            username: r.username,
            reason: if r.reason.is_empty() {
                collective_statemachine::presence::LOGOFF_REASON_USER.to_string()
            } else {
                r.reason
            },
        },
        Change::StartInteraction(r) => {
            Command::StartInteraction { username: r.username, interaction_id: r.interaction_id }
        }
        Change::EndInteraction(r) => Command::EndInteraction { username: r.username, interaction_id: r.interaction_id },
    }
}

/// How often a `Submit` stream's caller is authenticated again, at most: a session that
/// expired or a site deactivated since the stream opened is refused within this long.
pub const SUBMIT_REAUTHENTICATE_MS: u64 = 1_000;

/// The principal of one `Submit` stream, as the gate authenticated it when the stream opened,
/// and what its caller presented, to authenticate it again (`check`). Once that fails, every
/// later change of the stream is refused the same way without asking again.
struct StreamCaller {
    principal: Principal,
    presented: Presented,
    checked_at_ms: AtomicU64,
    refused: OnceLock<Status>,
}

impl StreamCaller {
    fn check(&self, node: &Node) -> Result<(), Status> {
        if let Some(status) = self.refused.get() {
            return Err(status.clone());
        }
        // Either way from the last check: a wall clock stepped back must not hold off the next.
        let now_ms = node.now_ms();
        if now_ms.abs_diff(self.checked_at_ms.load(Ordering::Relaxed)) < SUBMIT_REAUTHENTICATE_MS {
            return Ok(());
        }
        let again = gate::reauthenticate(node, &self.presented).map(|again| again.caller.principal());
        match again {
            Ok(Some(principal)) if principal == self.principal => {
                self.checked_at_ms.store(now_ms, Ordering::Relaxed);
                Ok(())
            }
            Ok(other) => {
                let named = other.map_or_else(|| "a cluster member".to_string(), |p| p.to_string());
                let status = Status::unauthenticated(format!(
                    "this stream's credentials now name {named}, not {} as when it opened; open a new stream",
                    self.principal
                ));
                Err(self.refused.get_or_init(|| status).clone())
            }
            Err(status) => Err(self.refused.get_or_init(|| status).clone()),
        }
    }
}

/// A change's outcome: the unary call's response, or the status it would have failed with.
fn outcome(id: u64, written: Result<pb::WriteResponse, Status>) -> pb::PresenceOutcome {
    let outcome = match written {
        Ok(response) => Outcome::Written(response),
        Err(status) => Outcome::Error(pb::ChangeError {
            code: status.code() as i32,
            message: status.message().to_string(),
            details: status.details().to_vec(),
        }),
    };
    pb::PresenceOutcome { id, outcome: Some(outcome) }
}

/// Starts one change of a `Submit` stream as its unary call would be written. What can be
/// refused at once (the caller's credentials, a missing or invalid change) is answered at once,
/// so a change held while it waits for its commit is a valid, and so bounded, one.
fn start_change(
    node: &Arc<Node>,
    caller: &Arc<StreamCaller>,
    change: pb::PresenceChange,
) -> Either<Ready<pb::PresenceOutcome>, impl Future<Output = pb::PresenceOutcome>> {
    let id = change.id;
    let refused = |status: Status| Either::Left(std::future::ready(outcome(id, Err(status))));
    if let Err(status) = caller.check(node) {
        return refused(status);
    }
    let Some(change) = change.change else {
        return refused(
            ApiError::invalid(
                "change",
                "one of set_status, log_on, log_off, start_interaction or end_interaction is required",
            )
            .into(),
        );
    };
    let command = command(change);
    if let Err(rejection) = validate(&command) {
        return refused(ApiError::from(rejection).into());
    }
    let (node, principal) = (node.clone(), caller.principal.clone());
    Either::Right(async move {
        let written = node.write_valid(principal, command).await;
        outcome(id, written.map(convert::write_response).map_err(Status::from))
    })
}

/// The outcomes of one `Submit` stream, which is also what drives it: it reads changes while
/// fewer than `SUBMIT_IN_FLIGHT_MAX` await their outcome (or wait to be sent), starts each, and
/// yields the outcomes as they come. It runs in the response body's task, not one of its own
/// (nor one per change, as unary calls have), and is polled only as the connection can take
/// outcomes: a client that does not read them stops this reading its changes.
struct Outcomes<F, S> {
    changes: Streaming<pb::PresenceChange>,
    /// Whether the client may still send changes.
    reading: bool,
    /// Why the request stream broke, told once the changes in flight are answered.
    broken: Option<Status>,
    writing: FuturesUnordered<F>,
    start: S,
}

impl<F, S> Stream for Outcomes<F, S>
where
    F: Future<Output = pb::PresenceOutcome>,
    S: FnMut(pb::PresenceChange) -> F + Unpin,
{
    type Item = Result<pb::PresenceOutcome, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        while this.reading && this.writing.len() < SUBMIT_IN_FLIGHT_MAX {
            match Pin::new(&mut this.changes).poll_next(cx) {
                Poll::Ready(Some(Ok(change))) => this.writing.push((this.start)(change)),
                // The request stream broke (reset, undecodable): nothing more can be read, but
                // the changes in flight may commit, so their outcomes go out first.
                Poll::Ready(Some(Err(status))) => {
                    this.reading = false;
                    this.broken = Some(super::error::conventional(status));
                }
                Poll::Ready(None) => this.reading = false,
                Poll::Pending => break,
            }
        }
        match this.writing.poll_next_unpin(cx) {
            Poll::Ready(Some(outcome)) => Poll::Ready(Some(Ok(outcome))),
            // The client closed its side (or it broke) and every change is answered.
            Poll::Ready(None) if !this.reading => Poll::Ready(this.broken.take().map(Err)),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

#[tonic::async_trait]
impl Presences for PresenceService {
    async fn set_status(&self, request: Request<pb::SetStatusRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        self.write(principal, command(Change::SetStatus(request.into_inner()))).await
    }

    async fn get_presence(
        &self,
        request: Request<pb::GetPresenceRequest>,
    ) -> Result<Response<pb::PresenceList>, Status> {
        let request = request.into_inner();
        if request.usernames.len() > GET_PRESENCE_USERS_MAX {
            return Err(ApiError::invalid("usernames", format!("at most {GET_PRESENCE_USERS_MAX} per request")).into());
        }
        let list = read(&self.node, request.serializable, |state| {
            let mut presences = Vec::with_capacity(request.usernames.len());
            for username in &request.usernames {
                let user = state.user(username)?;
                presences.push(convert::presence(
                    state,
                    &user.username,
                    &state.presence[key_of(&user.username).as_str()],
                ));
            }
            Ok(pb::PresenceList { presences, revision: state.revision })
        })
        .await?;
        Ok(Response::new(list))
    }

    async fn list_presence(
        &self,
        request: Request<pb::ListPresenceRequest>,
    ) -> Result<Response<pb::PresenceList>, Status> {
        let request = request.into_inner();
        let query = SearchQuery {
            workgroup: (!request.workgroup.is_empty()).then(|| request.workgroup.clone()),
            visible_at_site: (request.site != 0).then_some(request.site),
            status_group: convert::status_group_filter(&request.status_group)?,
            limit: request.limit,
            ..SearchQuery::default()
        };
        let list = read(&self.node, request.serializable, |state| {
            if let Some(workgroup) = &query.workgroup {
                state.workgroup(workgroup)?;
            }
            let presences = state
                .search(&query)
                .into_iter()
                .map(|entry| convert::presence(state, &entry.user.username, entry.presence))
                .collect();
            Ok(pb::PresenceList { presences, revision: state.revision })
        })
        .await?;
        Ok(Response::new(list))
    }

    async fn log_on(&self, request: Request<pb::LogOnRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        self.write(principal, command(Change::LogOn(request.into_inner()))).await
    }

    async fn log_off(&self, request: Request<pb::LogOffRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        self.write(principal, command(Change::LogOff(request.into_inner()))).await
    }

    async fn start_interaction(
        &self,
        request: Request<pb::InteractionRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        self.write(principal, command(Change::StartInteraction(request.into_inner()))).await
    }

    async fn end_interaction(
        &self,
        request: Request<pb::InteractionRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        self.write(principal, command(Change::EndInteraction(request.into_inner()))).await
    }

    type SubmitStream = OutcomeStream;

    async fn submit(
        &self,
        request: Request<Streaming<pb::PresenceChange>>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let caller = Arc::new(StreamCaller {
            principal: principal(&request)?,
            presented: Presented::of_request(&request)?,
            checked_at_ms: AtomicU64::new(self.node.now_ms()),
            refused: OnceLock::new(),
        });
        let node = self.node.clone();
        let outcomes = Outcomes {
            changes: request.into_inner(),
            reading: true,
            broken: None,
            writing: FuturesUnordered::new(),
            start: move |change| start_change(&node, &caller, change),
        };
        Ok(Response::new(Box::pin(outcomes)))
    }

    type WatchStream = EventStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let reader = principal(&request)?;
        let request = request.into_inner();
        let filter = WatchFilter {
            usernames: request.usernames.iter().map(|u| key_of(u)).collect(),
            workgroups: request.workgroups.iter().map(|w| key_of(w)).collect(),
            sites: request.sites.iter().copied().collect(),
            kinds: request.kinds.iter().cloned().collect(),
        };
        let shared = self.node.shared.clone();
        let start = (request.start_revision != 0).then_some(request.start_revision);
        // Subscribing fails fast, before the stream starts, when the start is already compacted.
        let mut subscription = Hub::subscribe(&shared.events, start).map_err(|error| match error {
            SubscribeError::Compacted(compacted) => {
                ApiError::Compacted { requested: request.start_revision, oldest: compacted.oldest }
            }
            SubscribeError::TooManySubscribers { limit } => {
                ApiError::Rejected(collective_statemachine::Rejection::LimitReached {
                    what: "watchers on this node".into(),
                    limit: limit as u64,
                })
            }
        })?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER_EVENTS);
        tokio::spawn(async move {
            loop {
                let requested = subscription.cursor();
                let batch = tokio::select! {
                    batch = subscription.next_batch(WATCH_READ_BATCH_EVENTS) => batch,
                    _ = tx.closed() => return,
                };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(compacted) => {
                        // The watcher fell behind the retained history (or a snapshot replaced it).
                        let error = ApiError::Compacted { requested, oldest: compacted.oldest };
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                let events: Vec<pb::Event> = {
                    let state = shared.state.read().expect("state lock");
                    batch
                        .iter()
                        .filter(|record| {
                            filter.matches(&state, record) && state.event_visible_to(&reader, &record.event)
                        })
                        .map(|record| convert::event(record))
                        .collect()
                };
                for event in events {
                    if tx.send(Ok(event)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
