//! `collective.v1.Presences`: status, logon, interactions, reads and the watch stream.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::presences_server::Presences;
use collective_statemachine::{user::key_of, Command, EventRecord, Principal, SearchQuery, State};
use collective_sync::hub::{Hub, SubscribeError};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;

/// Events buffered per watch stream before the sender waits for the client.
pub const WATCH_BUFFER_EVENTS: usize = 1_024;
/// Events a watcher copies out of the history per lock.
const WATCH_READ_BATCH_EVENTS: usize = 512;
/// Most usernames in one `GetPresence`.
pub const GET_PRESENCE_USERS_MAX: usize = 10_000;

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

#[tonic::async_trait]
impl Presences for PresenceService {
    async fn set_status(&self, request: Request<pb::SetStatusRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(
            principal,
            Command::SetStatus {
                username: request.username,
                status_key: request.status_key,
                until_ms: request.until_ms,
                detail: request.detail,
            },
        )
        .await
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
        let request = request.into_inner();
        self.write(principal, Command::LogOn { username: request.username, site: request.site, server: request.server })
            .await
    }

    async fn log_off(&self, request: Request<pb::LogOffRequest>) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let reason = if request.reason.is_empty() {
            collective_statemachine::state::LOGOFF_REASON_USER.to_string()
        } else {
            request.reason
        };
        self.write(principal, Command::LogOff { username: request.username, reason }).await
    }

    async fn start_interaction(
        &self,
        request: Request<pb::InteractionRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(
            principal,
            Command::StartInteraction { username: request.username, interaction_id: request.interaction_id },
        )
        .await
    }

    async fn end_interaction(
        &self,
        request: Request<pb::InteractionRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(
            principal,
            Command::EndInteraction { username: request.username, interaction_id: request.interaction_id },
        )
        .await
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
                        .map(convert::event)
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
