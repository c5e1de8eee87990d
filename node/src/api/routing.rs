//! `collective.v1.Routing`: routing requests, reservations, queues, statistics and settings
//! (the vendor's Interaction Director). Every decision is made in `apply`; this service turns
//! requests into commands and reads the routing views.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use collective_proto::v1 as pb;
use collective_proto::v1::routing_server::Routing;
use collective_statemachine::routing::{Interaction, MediaType, RouteRequest, Stage};
use collective_statemachine::user::key_of;
use collective_statemachine::{Command, Event, Principal, State};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;

/// Default and largest page of `ListQueue`.
const QUEUE_PAGE_DEFAULT: usize = 1_000;
const QUEUE_PAGE_MAX: usize = 10_000;
/// Most workgroups one `Stats` answer covers.
const STATS_WORKGROUPS_MAX: usize = 10_000;
/// `WatchStats` looks for changes this often unless asked otherwise, and never more often than
/// the minimum.
const WATCH_STATS_INTERVAL_MS_DEFAULT: u64 = 500;
const WATCH_STATS_INTERVAL_MS_MIN: u64 = 50;

/// Serves routing.
pub struct RoutingService {
    /// The node.
    pub node: Arc<Node>,
}

type Reply<T> = Result<Response<T>, Status>;
type StatsStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::StatsResponse, Status>> + Send>>;

impl RoutingService {
    async fn write(&self, principal: Principal, command: Command) -> Reply<pb::WriteResponse> {
        let applied = self.node.write(principal, command).await?;
        Ok(Response::new(convert::write_response(applied)))
    }
}

/// The interaction as the entry that routed it left it: arrival, then its reservation or queue.
fn routed_by(id: &str, events: &[collective_statemachine::EventRecord]) -> Option<Interaction> {
    let mut routed: Option<Interaction> = None;
    for record in events {
        match &record.event {
            Event::InteractionArrived(arrived) if arrived.request.interaction_id == id => {
                routed = Some((**arrived).clone());
            }
            Event::AgentReserved { interaction_id, agent, agent_site, expires_at_ms, decision, .. }
                if interaction_id == id =>
            {
                let interaction = routed.as_mut()?;
                interaction.stage =
                    Stage::Reserved { agent: key_of(agent), site: *agent_site, expires_at_ms: *expires_at_ms };
                interaction.decisions.push(decision.clone());
            }
            Event::InteractionQueued { interaction_id, decision, .. } if interaction_id == id => {
                let interaction = routed.as_mut()?;
                interaction.stage = Stage::Queued;
                interaction.decisions.push(decision.clone());
            }
            _ => {}
        }
    }
    routed
}

/// An interaction with its place in the queue.
fn interaction_out(state: &State, interaction: &Interaction) -> pb::Interaction {
    let position = (interaction.stage == Stage::Queued).then(|| {
        let workgroup = key_of(&interaction.request.workgroup);
        let id = interaction.request.interaction_id.as_str();
        state.routing.index.queue(&workgroup).position(|queued| queued == id).map_or(0, |p| p as u64 + 1)
    });
    convert::interaction(interaction, position)
}

fn stats(state: &State, workgroups: &[String], now_ms: u64) -> Result<pb::StatsResponse, ApiError> {
    let now_ms = now_ms.max(state.last_at_ms);
    let names: Vec<String> = if workgroups.is_empty() {
        state.workgroups.values().take(STATS_WORKGROUPS_MAX).map(|w| w.name.clone()).collect()
    } else if workgroups.len() > STATS_WORKGROUPS_MAX {
        return Err(ApiError::invalid("workgroups", format!("at most {STATS_WORKGROUPS_MAX} per request")));
    } else {
        workgroups.to_vec()
    };
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        out.push(convert::workgroup_stats(&state.workgroup_stats(&name, now_ms)?));
    }
    Ok(pb::StatsResponse { revision: state.revision, at_ms: now_ms, workgroups: out })
}

#[tonic::async_trait]
impl Routing for RoutingService {
    async fn route(&self, request: Request<pb::RouteRequest>) -> Reply<pb::RouteResponse> {
        let principal = principal(&request)?;
        let r = request.into_inner();
        let media = match r.media.as_str() {
            "" => MediaType::Call,
            name => MediaType::parse(name).ok_or_else(|| {
                ApiError::invalid("media", format!("{name:?} is not call, chat, email, callback or generic"))
            })?,
        };
        let id = r.interaction_id.clone();
        let command = Command::RouteInteraction(RouteRequest {
            interaction_id: r.interaction_id,
            media,
            origin_site: r.origin_site,
            workgroup: r.workgroup,
            skills: r.skills.into_iter().collect(),
            priority: r.priority,
        });
        let applied = self.node.write(principal, command).await?;
        if let Some(interaction) = routed_by(&id, &applied.events) {
            return Ok(Response::new(pb::RouteResponse {
                revision: applied.revision,
                interaction: Some(convert::interaction(&interaction, None)),
                repeated: false,
            }));
        }
        // A repeat: nothing was written; answer with the interaction as it is now.
        let response = read(&self.node, false, |state| {
            let interaction = state.routing.interaction(&id)?;
            Ok(pb::RouteResponse {
                revision: state.revision,
                interaction: Some(interaction_out(state, interaction)),
                repeated: true,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn accept(&self, request: Request<pb::AcceptRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let agent = (!request.agent.is_empty()).then_some(request.agent);
        self.write(principal, Command::AcceptInteraction { interaction_id: request.interaction_id, agent }).await
    }

    async fn reject(&self, request: Request<pb::RejectRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let agent = (!request.agent.is_empty()).then_some(request.agent);
        self.write(
            principal,
            Command::RejectInteraction {
                interaction_id: request.interaction_id,
                agent,
                not_answering: request.not_answering,
            },
        )
        .await
    }

    async fn cancel(&self, request: Request<pb::InteractionIdRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::CancelInteraction { interaction_id: request.into_inner().interaction_id }).await
    }

    async fn explain(&self, request: Request<pb::ExplainRequest>) -> Reply<pb::Interaction> {
        let request = request.into_inner();
        let interaction = read(&self.node, request.serializable, |state| {
            Ok(interaction_out(state, state.routing.interaction(&request.interaction_id)?))
        })
        .await?;
        Ok(Response::new(interaction))
    }

    async fn list_queue(&self, request: Request<pb::ListQueueRequest>) -> Reply<pb::ListQueueResponse> {
        let request = request.into_inner();
        let limit = match request.limit as usize {
            0 => QUEUE_PAGE_DEFAULT,
            n if n > QUEUE_PAGE_MAX => {
                return Err(ApiError::invalid("limit", format!("{n} is over {QUEUE_PAGE_MAX}")).into());
            }
            n => n,
        };
        let response = read(&self.node, request.serializable, |state| {
            let key = key_of(&state.workgroup(&request.workgroup)?.name);
            let queue = &state.routing.index;
            let interactions = queue
                .queue(&key)
                .take(limit)
                .enumerate()
                .map(|(position, id)| convert::interaction(&state.routing.interactions[id], Some(position as u64 + 1)))
                .collect();
            Ok(pb::ListQueueResponse {
                revision: state.revision,
                total: queue.queue(&key).count() as u64,
                interactions,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn stats(&self, request: Request<pb::StatsRequest>) -> Reply<pb::StatsResponse> {
        let request = request.into_inner();
        let now = self.node.now_ms();
        let response = read(&self.node, request.serializable, |state| stats(state, &request.workgroups, now)).await?;
        Ok(Response::new(response))
    }

    type WatchStatsStream = StatsStream;

    async fn watch_stats(&self, request: Request<pb::WatchStatsRequest>) -> Reply<Self::WatchStatsStream> {
        let request = request.into_inner();
        let interval = match u64::from(request.min_interval_ms) {
            0 => WATCH_STATS_INTERVAL_MS_DEFAULT,
            ms => ms.max(WATCH_STATS_INTERVAL_MS_MIN),
        };
        // Unknown workgroups fail now, before the stream starts.
        {
            let state = self.node.shared.state.read().expect("state lock");
            stats(&state, &request.workgroups, self.node.now_ms())?;
        }
        let node = self.node.clone();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(interval));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last: Option<Vec<pb::WorkgroupStats>> = None;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = tx.closed() => return,
                }
                let current = {
                    let state = node.shared.state.read().expect("state lock");
                    stats(&state, &request.workgroups, node.now_ms())
                };
                let current = match current {
                    Ok(current) => current,
                    // A watched workgroup was deleted: say so and end.
                    Err(error) => {
                        let _ = tx.send(Err(error.into())).await;
                        return;
                    }
                };
                // Waits grow with time alone; only a change in whole seconds is news.
                let key = |stats: &[pb::WorkgroupStats]| -> Vec<pb::WorkgroupStats> {
                    stats
                        .iter()
                        .map(|s| pb::WorkgroupStats { longest_wait_ms: s.longest_wait_ms / 1_000, ..s.clone() })
                        .collect()
                };
                let changed = last.as_deref().map(key) != Some(key(&current.workgroups));
                if changed {
                    last = Some(current.workgroups.clone());
                    if tx.send(Ok(current)).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn route_matrix(&self, request: Request<pb::RouteMatrixRequest>) -> Reply<pb::RouteMatrixResponse> {
        let request = request.into_inner();
        let response = read(&self.node, request.serializable, |state| {
            let routing = &state.routing;
            Ok(pb::RouteMatrixResponse {
                revision: state.revision,
                routes: routing
                    .matrix
                    .iter()
                    .flat_map(|(origin, row)| {
                        row.iter().map(|(agent, count)| pb::RouteCount {
                            origin_site: *origin,
                            agent_site: *agent,
                            count: *count,
                        })
                    })
                    .collect(),
                costs: routing
                    .costs
                    .iter()
                    .flat_map(|(from, row)| {
                        row.iter().map(|(to, cost)| pb::RouteCost { from: *from, to: *to, cost: *cost })
                    })
                    .collect(),
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn set_settings(&self, request: Request<pb::RoutingSettings>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let settings = convert::routing_settings_in(&request)?;
        self.write(principal, Command::SetRoutingSettings { workgroup: request.workgroup, settings }).await
    }

    async fn get_settings(&self, request: Request<pb::GetRoutingSettingsRequest>) -> Reply<pb::RoutingSettings> {
        let request = request.into_inner();
        let settings = read(&self.node, request.serializable, |state| {
            let workgroup = state.workgroup(&request.workgroup)?;
            let settings = state.routing.settings_of(&key_of(&workgroup.name));
            Ok(convert::routing_settings(&workgroup.name, &settings))
        })
        .await?;
        Ok(Response::new(settings))
    }

    async fn set_route_cost(&self, request: Request<pb::RouteCost>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(principal, Command::SetRouteCost { from: request.from, to: request.to, cost: request.cost }).await
    }
}
