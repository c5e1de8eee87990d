//! Routing (the vendor's Interaction Director): interactions, reservations, workgroup queues,
//! routing settings, route costs and statistics, decided inside `apply`.
//!
//! Every decision is made while a log entry applies, from the replicated views, so every node
//! makes the same one and two requests can never reserve the same agent. The agent choice itself
//! is `collective-routing`'s ([`director`]); this module keeps what is replicated:
//! - [`Routing`]: settings, costs, interactions with their stage and decisions, counters and the
//!   route matrix (serialised in snapshots);
//! - [`RoutingIndex`]: the eligible agents, per-workgroup counts, queues, reservations and
//!   deadlines, all derived from the views and rebuilt after a snapshot loads.
//!
//! After the events of a command fold, [`State::route_pending`] runs: reservations whose agent
//! left are released, workgroups whose agents became eligible serve their queues (priority, then
//! arrival), and interactions that arrived or came back are placed. Its events follow the
//! command's in the same entry.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use collective_routing as director;
use serde::{Deserialize, Serialize};

pub use director::{Candidate, Decision, Settings, Strategy};

use crate::rejection::Rejection;
use crate::site::SiteId;

mod rules;

/// Why a reservation ended without an accept: the agent declined.
pub const RELEASE_REJECTED: &str = "rejected";
/// Why a reservation ended without an accept: nobody answered within its TTL.
pub const RELEASE_TIMED_OUT: &str = "timed-out";
/// Why a reservation ended without an accept: the agent logged off or was deleted.
pub const RELEASE_AGENT_UNAVAILABLE: &str = "agent-unavailable";

/// The kind of media an interaction is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaType {
    /// A telephone call.
    Call,
    /// A chat.
    Chat,
    /// An email.
    Email,
    /// A callback request.
    Callback,
    /// Anything else (work items).
    Generic,
}

impl MediaType {
    /// Every media type.
    pub const ALL: [MediaType; 5] =
        [MediaType::Call, MediaType::Chat, MediaType::Email, MediaType::Callback, MediaType::Generic];

    /// The name the API and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Call => "call",
            MediaType::Chat => "chat",
            MediaType::Email => "email",
            MediaType::Callback => "callback",
            MediaType::Generic => "generic",
        }
    }

    /// Parses a media type name, case-insensitively.
    pub fn parse(text: &str) -> Option<MediaType> {
        MediaType::ALL.into_iter().find(|media| media.as_str().eq_ignore_ascii_case(text))
    }
}

/// What a caller asks to route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRequest {
    /// Idempotency key: routing the same id again answers with the first decision.
    pub interaction_id: String,
    /// Media type.
    pub media: MediaType,
    /// The site the interaction came in at.
    pub origin_site: SiteId,
    /// The workgroup (enterprise group) to route to.
    pub workgroup: String,
    /// Required skills (name → minimum level), on top of the workgroup's.
    pub skills: BTreeMap<String, u32>,
    /// 0..=100; higher is served first from the queue.
    pub priority: u32,
}

/// Where an interaction is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Arrived or released; placed before the entry finishes applying.
    Routing,
    /// Waiting in its workgroup's queue.
    Queued,
    /// Offered to an agent, who must accept before the deadline.
    Reserved {
        /// Lowercase username.
        agent: String,
        /// The agent's site.
        site: SiteId,
        /// Entry time after which the reservation times out.
        expires_at_ms: u64,
    },
    /// Accepted: the agent is on it (on the phone).
    Active {
        /// Lowercase username.
        agent: String,
        /// The agent's site.
        site: SiteId,
    },
    /// Over: `completed`, `cancelled`.
    Finished {
        /// How it ended.
        outcome: String,
        /// When.
        at_ms: u64,
    },
}

/// A decision as an interaction keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedDecision {
    /// Entry time of the decision.
    pub at_ms: u64,
    /// The required skills it was made for (the request's and the workgroup's).
    pub required_skills: BTreeMap<String, u32>,
    /// Who won and why, or that nobody qualified.
    pub decision: Decision,
}

/// One interaction the collective routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interaction {
    /// The request as routed (workgroup spelled as the workgroup is).
    pub request: RouteRequest,
    /// Entry time of arrival.
    pub arrived_at_ms: u64,
    /// Arrival order, collective-wide.
    pub seq: u64,
    /// Where it is.
    pub stage: Stage,
    /// Agents that let a reservation of it go (rejected, timed out); not offered it again.
    pub declined_by: BTreeSet<String>,
    /// Its decisions, oldest first (the last [`DECISIONS_PER_INTERACTION_MAX`] are kept).
    pub decisions: Vec<RecordedDecision>,
}

/// Per-workgroup counters since the collective began.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Reservations made.
    pub routed: u64,
    /// Reservations accepted.
    pub accepted: u64,
    /// Reservations rejected by the agent.
    pub rejected: u64,
    /// Reservations that timed out.
    pub timed_out: u64,
    /// Interactions cancelled before an agent took them.
    pub cancelled: u64,
    /// Interactions that ended after an agent took them.
    pub completed: u64,
}

/// The replicated routing state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routing {
    /// Settings by lowercase workgroup name (absent: the defaults).
    pub settings: BTreeMap<String, Settings>,
    /// Route cost from origin site to agent site (absent: 0).
    pub costs: BTreeMap<SiteId, BTreeMap<SiteId, u32>>,
    /// Open interactions and the most recent finished ones, by id.
    pub interactions: BTreeMap<String, Interaction>,
    /// Next arrival number.
    pub next_seq: u64,
    /// Finished interactions in the order they finished (finish number → id), for retention.
    pub finished: BTreeMap<u64, String>,
    /// Next finish number.
    pub next_finish: u64,
    /// Counters by lowercase workgroup name.
    pub counters: BTreeMap<String, Counters>,
    /// Reservations made, origin site → agent site → count.
    pub matrix: BTreeMap<SiteId, BTreeMap<SiteId, u64>>,
    /// Round robin: the last agent each workgroup routed to.
    pub cursors: BTreeMap<String, String>,
    /// Derived views; rebuilt from the rest of the state after a snapshot loads.
    #[serde(skip)]
    pub index: RoutingIndex,
}

/// One logged-on agent as routing sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Tracked {
    site: SiteId,
    workgroups: crate::small::VecSet<String>,
    flags: Flags,
}

/// What an agent's workgroup counts are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    ready: bool,
    on_phone: bool,
    reserved: bool,
    eligible: bool,
}

/// Live per-workgroup agent counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentCounts {
    /// Members logged on.
    pub logged_on: u64,
    /// Logged-on members in an ACD-available status (idle or not).
    pub ready: u64,
    /// Members who can take an interaction now (eligible).
    pub available: u64,
    /// Logged-on members with an active interaction.
    pub on_phone: u64,
    /// Members holding a reservation.
    pub reserved: u64,
}

impl AgentCounts {
    fn add(&mut self, flags: Flags, sign: i64) {
        let apply = |count: &mut u64, flag: bool| {
            if flag {
                *count = count.checked_add_signed(sign).expect("agent counts never go negative");
            }
        };
        apply(&mut self.logged_on, true);
        apply(&mut self.ready, flags.ready);
        apply(&mut self.available, flags.eligible);
        apply(&mut self.on_phone, flags.on_phone);
        apply(&mut self.reserved, flags.reserved);
    }
}

/// A queued interaction: highest priority first, then arrival order, then id.
type QueueEntry = (Reverse<u32>, u64, String);

/// Routing's derived views. Equal states have equal indexes (everything is ordered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingIndex {
    /// The eligible agents, per workgroup, in the orders the strategies read.
    pub eligible: director::Index,
    tracked: crate::sorted_map::SortedMap<String, Tracked>,
    at_site: BTreeMap<SiteId, BTreeSet<String>>,
    counts: BTreeMap<String, AgentCounts>,
    /// Queued interactions per workgroup: highest priority first, then arrival.
    queues: BTreeMap<String, BTreeSet<QueueEntry>>,
    /// Reserved agent → interaction id.
    reserved: BTreeMap<String, String>,
    /// (deadline, interaction id) of every reservation.
    deadlines: BTreeSet<(u64, String)>,
    // Work for `route_pending`, empty between commands.
    dirty_users: BTreeSet<String>,
    dirty_sites: BTreeSet<SiteId>,
    fresh: BTreeMap<String, BTreeSet<String>>,
    pending: BTreeSet<(u64, String)>,
    /// (interaction, agent) reservations whose agent left.
    releases: BTreeSet<(String, String)>,
}

impl RoutingIndex {
    /// Agent counts of a workgroup (lowercase name).
    pub fn counts(&self, workgroup: &str) -> AgentCounts {
        self.counts.get(workgroup).copied().unwrap_or_default()
    }

    /// Ids of a workgroup's queued interactions, in the order they will be served.
    pub fn queue(&self, workgroup: &str) -> impl Iterator<Item = &str> {
        self.queues.get(workgroup).into_iter().flatten().map(|(_, _, id)| id.as_str())
    }

    /// The earliest reservation deadline.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|(at, _)| *at)
    }
}

/// Statistics of one workgroup, as `RoutingStats` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkgroupStats {
    /// The workgroup's name.
    pub workgroup: String,
    /// Live agent counts.
    pub agents: AgentCounts,
    /// Interactions waiting in the queue.
    pub queued: u64,
    /// How long the oldest queued interaction has waited (ms).
    pub longest_wait_ms: u64,
    /// Counters since the collective began.
    pub counters: Counters,
}

impl Routing {
    /// The settings of a workgroup (lowercase name).
    pub fn settings_of(&self, workgroup: &str) -> Settings {
        self.settings.get(workgroup).cloned().unwrap_or_default()
    }

    /// The route cost from one site to another.
    pub fn cost(&self, from: SiteId, to: SiteId) -> u32 {
        self.costs.get(&from).and_then(|to_costs| to_costs.get(&to)).copied().unwrap_or(0)
    }

    /// The interaction with this id.
    pub fn interaction(&self, id: &str) -> Result<&Interaction, Rejection> {
        self.interactions.get(id).ok_or_else(|| Rejection::not_found("interaction", id))
    }

    fn open_interactions(&self) -> usize {
        self.interactions.len() - self.finished.len()
    }
}

/// A stage's name for messages and the API.
pub fn stage_name(stage: &Stage) -> &'static str {
    match stage {
        Stage::Routing => "routing",
        Stage::Queued => "queued",
        Stage::Reserved { .. } => "reserved",
        Stage::Active { .. } => "active",
        Stage::Finished { .. } => "finished",
    }
}
