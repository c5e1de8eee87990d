//! `collective route …`: routing requests, reservations, queues, statistics and settings from
//! the shell.

use std::time::Duration;

use clap::Subcommand;
use collective_proto::v1 as pb;
use collective_proto::v1::routing_client::RoutingClient;
use tokio_stream::StreamExt;

use super::client::Client;
use super::output::{print, Format};

/// Routing (the Interaction Director).
#[derive(Subcommand, Debug)]
pub enum RouteCommand {
    /// Route an interaction: reserve the best eligible agent of the workgroup, or queue it.
    Call {
        /// Interaction id (idempotency key: the same call again answers with the same decision).
        #[arg(long = "id")]
        interaction_id: String,
        /// The site the interaction came in at.
        #[arg(long)]
        origin: u32,
        /// The workgroup to route to.
        #[arg(long)]
        workgroup: String,
        /// A required skill as NAME=LEVEL (1..=100); repeatable.
        #[arg(long = "skill")]
        skills: Vec<String>,
        /// 0..=100; higher is served first from the queue.
        #[arg(long, default_value_t = 0)]
        priority: u32,
        /// call, chat, email, callback or generic.
        #[arg(long, default_value = "call")]
        media: String,
    },
    /// The reserved agent takes the interaction (it goes on the phone).
    Accept {
        /// Interaction id.
        interaction_id: String,
        /// The accepting agent; refused unless it holds the reservation.
        #[arg(long)]
        agent: Option<String>,
    },
    /// The reserved agent declines; the interaction is routed again without it.
    Reject {
        /// Interaction id.
        interaction_id: String,
        /// The declining agent; refused unless it holds the reservation.
        #[arg(long)]
        agent: Option<String>,
        /// Also set the agent to AcdAgentNotAnswering.
        #[arg(long)]
        not_answering: bool,
    },
    /// A queued or reserved interaction ends (the caller hung up).
    Cancel {
        /// Interaction id.
        interaction_id: String,
    },
    /// The interaction, its stage and why each decision went the way it did.
    Explain {
        /// Interaction id.
        interaction_id: String,
    },
    /// A workgroup's queue in the order it will be served.
    Queue {
        /// The workgroup.
        workgroup: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Live statistics per workgroup (every workgroup when none is named).
    Stats {
        /// Workgroups.
        workgroups: Vec<String>,
        /// Keep printing as they change.
        #[arg(long)]
        watch: bool,
        /// With --watch: look for changes this often.
        #[arg(long, default_value_t = 500)]
        interval_ms: u32,
    },
    /// Reservations per origin site and agent site, and the route costs.
    Matrix,
    /// Show a workgroup's routing settings, or change the ones given.
    Settings {
        /// The workgroup.
        workgroup: String,
        /// longest-idle, most-skilled or round-robin.
        #[arg(long)]
        strategy: Option<String>,
        /// The origin site keeps an interaction unless a remote agent is idle longer by more
        /// than this.
        #[arg(long)]
        local_margin_ms: Option<u64>,
        /// How long a reservation waits for accept or reject.
        #[arg(long)]
        reservation_ttl_ms: Option<u64>,
        /// Whether a reservation that times out sets the agent to AcdAgentNotAnswering.
        #[arg(long)]
        not_answering_on_timeout: Option<bool>,
        /// Most interactions waiting in the queue.
        #[arg(long)]
        queue_max: Option<u32>,
    },
    /// Set the route cost from one site to another, in ms of idle time (0 removes it).
    Cost {
        /// Origin site.
        #[arg(long)]
        from: u32,
        /// Agent site.
        #[arg(long)]
        to: u32,
        /// The cost.
        cost: u32,
    },
}

fn skills(specs: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
    specs
        .iter()
        .map(|spec| {
            let (name, level) =
                spec.split_once('=').ok_or_else(|| anyhow::anyhow!("--skill {spec:?}: expected NAME=LEVEL"))?;
            let level =
                level.parse().map_err(|_| anyhow::anyhow!("--skill {spec:?}: level {level:?} is not a number"))?;
            Ok((name.to_string(), level))
        })
        .collect()
}

fn print_interaction(format: Format, interaction: &pb::Interaction) {
    if format == Format::Json {
        print(format, interaction, None);
        return;
    }
    let i = interaction;
    let state = match i.stage.as_str() {
        "reserved" => format!("reserved to {} at site {} until {} ms", i.agent, i.agent_site, i.expires_at_ms),
        "active" => format!("active with {} at site {}", i.agent, i.agent_site),
        "queued" => format!("queued (position {})", i.queue_position),
        "finished" => format!("finished: {} at {} ms", i.outcome, i.finished_at_ms),
        other => other.to_string(),
    };
    crate::outln!(
        "interaction {} ({}) from site {} for workgroup {}, priority {}, arrived {} ms: {state}",
        i.interaction_id,
        i.media,
        i.origin_site,
        i.workgroup,
        i.priority,
        i.arrived_at_ms
    );
    if !i.declined_by.is_empty() {
        crate::outln!("declined by: {}", i.declined_by.join(", "));
    }
    for decision in &i.decisions {
        let mut required: Vec<String> = decision.required_skills.iter().map(|(s, l)| format!("{s}>={l}")).collect();
        required.sort();
        crate::outln!(
            "decision at {} ms ({}; skills: {}): {} eligible, {} examined, {} qualified; {}",
            decision.at_ms,
            decision.strategy,
            if required.is_empty() { "none".to_string() } else { required.join(" ") },
            decision.eligible,
            decision.examined,
            decision.matched,
            match decision.shortlist.first() {
                Some(winner) => format!("winner {}", winner.agent),
                None => "nobody qualified: queued".to_string(),
            }
        );
        if !decision.shortlist.is_empty() {
            crate::outln!(
                "  {:<4} {:<20} {:>5} {:>5} {:>10} {:>10} {:>5} {:>12}",
                "rank",
                "agent",
                "site",
                "local",
                "idle_ms",
                "cost",
                "skill",
                "score"
            );
            for (rank, c) in decision.shortlist.iter().enumerate() {
                crate::outln!(
                    "  {:<4} {:<20} {:>5} {:>5} {:>10} {:>10} {:>5} {:>12}",
                    rank + 1,
                    c.agent,
                    c.site,
                    if c.local { "yes" } else { "no" },
                    c.idle_ms,
                    c.route_cost,
                    c.skill_score,
                    c.score
                );
            }
        }
    }
}

/// Runs a `route` command.
pub async fn route(client: &Client, command: RouteCommand, format: Format, serializable: bool) -> anyhow::Result<()> {
    let rc = |c| RoutingClient::new(c);
    match command {
        RouteCommand::Call { interaction_id, origin, workgroup, skills: specs, priority, media } => {
            let request = pb::RouteRequest {
                interaction_id,
                media,
                origin_site: origin,
                workgroup,
                skills: skills(&specs)?,
                priority,
            };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).route(r).await }
                })
                .await?
                .into_inner();
            match (format, &response.interaction) {
                (Format::Table, Some(interaction)) => {
                    if response.repeated {
                        crate::outln!("(already routed; nothing changed)");
                    }
                    print_interaction(format, interaction);
                }
                _ => print(format, &response, None),
            }
        }
        RouteCommand::Accept { interaction_id, agent } => {
            let request = pb::AcceptRequest { interaction_id, agent: agent.unwrap_or_default() };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).accept(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        RouteCommand::Reject { interaction_id, agent, not_answering } => {
            let request = pb::RejectRequest { interaction_id, not_answering, agent: agent.unwrap_or_default() };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).reject(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        RouteCommand::Cancel { interaction_id } => {
            let request = pb::InteractionIdRequest { interaction_id };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).cancel(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        RouteCommand::Explain { interaction_id } => {
            let request = pb::ExplainRequest { interaction_id, serializable };
            let interaction = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).explain(r).await }
                })
                .await?
                .into_inner();
            print_interaction(format, &interaction);
        }
        RouteCommand::Queue { workgroup, limit } => {
            let request = pb::ListQueueRequest { workgroup, limit, serializable };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).list_queue(r).await }
                })
                .await?
                .into_inner();
            if format == Format::Table {
                crate::outln!("{} queued", response.total);
                crate::outln!(
                    "{:<8} {:<24} {:>8} {:>6} {:>14}",
                    "position",
                    "interaction",
                    "priority",
                    "origin",
                    "arrived_at_ms"
                );
                for i in &response.interactions {
                    crate::outln!(
                        "{:<8} {:<24} {:>8} {:>6} {:>14}",
                        i.queue_position,
                        i.interaction_id,
                        i.priority,
                        i.origin_site,
                        i.arrived_at_ms
                    );
                }
            } else {
                print(format, &response, None);
            }
        }
        RouteCommand::Stats { workgroups, watch: false, .. } => {
            let request = pb::StatsRequest { workgroups, serializable };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).stats(r).await }
                })
                .await?;
            print(format, &response.into_inner(), Some("workgroups"));
        }
        RouteCommand::Stats { workgroups, watch: true, interval_ms } => {
            let request = pb::WatchStatsRequest { workgroups, min_interval_ms: interval_ms };
            let streaming = client.with_timeout(Duration::from_secs(365 * 24 * 3_600));
            let mut stream = streaming
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).watch_stats(r).await }
                })
                .await?
                .into_inner();
            while let Some(stats) = stream.next().await {
                print(format, &stats?, Some("workgroups"));
            }
        }
        RouteCommand::Matrix => {
            let request = pb::RouteMatrixRequest { serializable };
            let response = client.call(|c| async move { rc(c).route_matrix(request).await }).await?.into_inner();
            if format == Format::Table {
                crate::outln!("{:<12} {:<12} {:>10}", "origin_site", "agent_site", "routed");
                for route in &response.routes {
                    crate::outln!("{:<12} {:<12} {:>10}", route.origin_site, route.agent_site, route.count);
                }
                if !response.costs.is_empty() {
                    crate::outln!("{:<12} {:<12} {:>10}", "from", "to", "cost_ms");
                    for cost in &response.costs {
                        crate::outln!("{:<12} {:<12} {:>10}", cost.from, cost.to, cost.cost);
                    }
                }
            } else {
                print(format, &response, None);
            }
        }
        RouteCommand::Settings {
            workgroup,
            strategy,
            local_margin_ms,
            reservation_ttl_ms,
            not_answering_on_timeout,
            queue_max,
        } => {
            let request = pb::GetRoutingSettingsRequest { workgroup, serializable };
            let current = client
                .call(|c| {
                    let r = request.clone();
                    async move { rc(c).get_settings(r).await }
                })
                .await?
                .into_inner();
            let changes = strategy.is_some()
                || local_margin_ms.is_some()
                || reservation_ttl_ms.is_some()
                || not_answering_on_timeout.is_some()
                || queue_max.is_some();
            if !changes {
                print(format, &current, None);
                return Ok(());
            }
            let settings = pb::RoutingSettings {
                workgroup: current.workgroup.clone(),
                strategy: strategy.unwrap_or(current.strategy),
                local_margin_ms: local_margin_ms.unwrap_or(current.local_margin_ms),
                reservation_ttl_ms: reservation_ttl_ms.unwrap_or(current.reservation_ttl_ms),
                not_answering_on_timeout: not_answering_on_timeout.unwrap_or(current.not_answering_on_timeout),
                queue_max: queue_max.unwrap_or(current.queue_max),
            };
            let response = client
                .call(|c| {
                    let r = settings.clone();
                    async move { rc(c).set_settings(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        RouteCommand::Cost { from, to, cost } => {
            let request = pb::RouteCost { from, to, cost };
            let response = client.call(|c| async move { rc(c).set_route_cost(request).await }).await?;
            print(format, &response.into_inner(), None);
        }
    }
    Ok(())
}
