//! Per-workgroup routing settings: the strategy and its knobs.

use serde::{Deserialize, Serialize};

/// Highest skill level an agent can have (levels are 1..=100).
pub const SKILL_LEVEL_MAX: u32 = 100;
/// Default reservation time-to-live: how long an offered interaction waits for accept or reject.
pub const RESERVATION_TTL_MS_DEFAULT: u64 = 15_000;
/// Shortest reservation time-to-live.
pub const RESERVATION_TTL_MS_MIN: u64 = 1_000;
/// Longest reservation time-to-live.
pub const RESERVATION_TTL_MS_MAX: u64 = 600_000;
/// Default bound of one workgroup's queue, in interactions.
pub const QUEUE_MAX_DEFAULT: u32 = 10_000;
/// Highest configurable bound of one workgroup's queue.
pub const QUEUE_MAX_LIMIT: u32 = 100_000;
/// Largest origin-site margin, in ms (one day).
pub const LOCAL_MARGIN_MS_MAX: u64 = 86_400_000;
/// Largest route cost between two sites (in ms of idle time, one day).
pub const ROUTE_COST_MAX: u32 = 86_400_000;

/// How a workgroup picks among eligible agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// The agent idle the longest (adjusted by site preference and route cost) wins.
    #[default]
    LongestIdle,
    /// The agent with the highest sum of levels in the required skills wins; ties go to
    /// longest idle.
    MostSkilled,
    /// Agents take turns in username order, starting after the last one routed to; agents at
    /// the origin site go first. Route costs and the margin do not apply.
    RoundRobin,
}

impl Strategy {
    /// Every strategy, in display order.
    pub const ALL: [Strategy; 3] = [Strategy::LongestIdle, Strategy::MostSkilled, Strategy::RoundRobin];

    /// The name the API and CLI use.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::LongestIdle => "longest-idle",
            Strategy::MostSkilled => "most-skilled",
            Strategy::RoundRobin => "round-robin",
        }
    }

    /// Parses a strategy name (`longest-idle`, `most-skilled`, `round-robin`).
    pub fn parse(text: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|strategy| strategy.as_str().eq_ignore_ascii_case(text))
    }
}

/// The routing settings of one workgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// How the winner is picked.
    pub strategy: Strategy,
    /// An agent at the origin site wins unless a remote agent has been idle longer by more than
    /// this (ms).
    pub local_margin_ms: u64,
    /// How long a reservation waits for accept or reject (ms).
    pub reservation_ttl_ms: u64,
    /// An agent whose reservation times out is set to `AcdAgentNotAnswering`.
    pub not_answering_on_timeout: bool,
    /// Most interactions waiting in the workgroup's queue.
    pub queue_max: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            strategy: Strategy::LongestIdle,
            local_margin_ms: 0,
            reservation_ttl_ms: RESERVATION_TTL_MS_DEFAULT,
            not_answering_on_timeout: true,
            queue_max: QUEUE_MAX_DEFAULT,
        }
    }
}

impl Settings {
    /// Checks every field against its range; the error names the field.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if !(RESERVATION_TTL_MS_MIN..=RESERVATION_TTL_MS_MAX).contains(&self.reservation_ttl_ms) {
            return Err((
                "reservation_ttl_ms",
                format!("{} is outside {RESERVATION_TTL_MS_MIN}..={RESERVATION_TTL_MS_MAX}", self.reservation_ttl_ms),
            ));
        }
        if self.local_margin_ms > LOCAL_MARGIN_MS_MAX {
            return Err(("local_margin_ms", format!("{} exceeds {LOCAL_MARGIN_MS_MAX}", self.local_margin_ms)));
        }
        if !(1..=QUEUE_MAX_LIMIT).contains(&self.queue_max) {
            return Err(("queue_max", format!("{} is outside 1..={QUEUE_MAX_LIMIT}", self.queue_max)));
        }
        Ok(())
    }
}
