//! Ranking candidates, the indexed search, and the explanation every decision carries.
//!
//! The rank of a candidate depends on the strategy:
//! - **longest idle**: `score` = idle time − route cost (+ the workgroup's margin at the origin
//!   site), then raw idle time, then username (ascending). So an agent at the origin site wins
//!   unless a remote agent has been idle longer by more than the margin plus its route cost.
//! - **most skilled**: the sum of the agent's levels in the required skills, then as longest idle.
//! - **round robin**: agents at the origin site first, then username order starting after the
//!   workgroup's cursor (the last agent routed to), wrapping around.
//!
//! [`select`] walks the pool's orderings and stops as soon as no later entry can outrank the best
//! so far; [`select_among`] ranks every given agent. Both produce the same winner (tested).

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::index::{Agent, Index, Pool};
use crate::settings::{Settings, Strategy, SKILL_LEVEL_MAX};
use crate::SiteId;

/// How many of the best candidates a decision keeps for its explanation (the winner first).
pub const SHORTLIST_LEN: usize = 5;

/// One interaction to place.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The workgroup (lowercase name).
    pub workgroup: &'a str,
    /// The site the interaction came in at.
    pub origin: SiteId,
    /// Required skills (the request's and the workgroup's, highest level of each).
    pub skills: &'a BTreeMap<String, u32>,
    /// Agents (lowercase usernames) that already declined this interaction.
    pub exclude: &'a BTreeSet<String>,
    /// Entry time of the decision.
    pub now_ms: u64,
}

/// What the selection reads besides the agents.
pub struct Context<'a> {
    /// The workgroup's settings.
    pub settings: &'a Settings,
    /// Route cost from the origin site to an agent's site (ms of idle time).
    pub cost: &'a dyn Fn(SiteId, SiteId) -> u32,
    /// Whether a site's lease is alive at the decision time.
    pub site_live: &'a dyn Fn(SiteId) -> bool,
    /// Round robin: the last agent the workgroup routed to.
    pub cursor: Option<&'a str>,
}

/// One ranked candidate, with every sort key, as decisions record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Lowercase username.
    pub agent: String,
    /// The agent's site.
    pub site: SiteId,
    /// Whether the agent is at the origin site.
    pub local: bool,
    /// How long the agent has been idle (ms).
    pub idle_ms: u64,
    /// Route cost from the origin site (0 at the origin).
    pub route_cost: u32,
    /// Sum of the agent's levels in the required skills.
    pub skill_score: u32,
    /// Idle time − route cost, + the margin at the origin site.
    pub score: i64,
}

/// The outcome of one selection and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The strategy used.
    pub strategy: Strategy,
    /// Eligible agents in the workgroup at the time.
    pub eligible: u64,
    /// Agents the search looked at.
    pub examined: u64,
    /// Of those, the ones that qualified (skills, live site, had not declined).
    pub matched: u64,
    /// The best qualified candidates seen, best first: the winner, then the runners-up.
    pub shortlist: Vec<Candidate>,
}

impl Decision {
    /// The chosen agent, if any qualified.
    pub fn winner(&self) -> Option<&Candidate> {
        self.shortlist.first()
    }
}

/// Orders two candidates: `Greater` means `a` outranks `b`.
pub fn compare(a: &Candidate, b: &Candidate, strategy: Strategy, cursor: Option<&str>) -> Ordering {
    // On equal score the origin site keeps the interaction: a remote agent must be idle longer
    // by *more* than the margin.
    let longest_idle = || {
        a.score
            .cmp(&b.score)
            .then(a.local.cmp(&b.local))
            .then(a.idle_ms.cmp(&b.idle_ms))
            .then_with(|| b.agent.cmp(&a.agent))
    };
    match strategy {
        Strategy::LongestIdle => longest_idle(),
        Strategy::MostSkilled => a.skill_score.cmp(&b.skill_score).then_with(longest_idle),
        Strategy::RoundRobin => {
            let after = |c: &Candidate| cursor.is_none_or(|cursor| c.agent.as_str() > cursor);
            a.local.cmp(&b.local).then(after(a).cmp(&after(b))).then_with(|| b.agent.cmp(&a.agent))
        }
    }
}

struct Search<'r, 'a> {
    request: &'r Request<'a>,
    context: &'r Context<'a>,
    examined: u64,
    matched: u64,
    shortlist: Vec<Candidate>,
}

impl<'r, 'a> Search<'r, 'a> {
    fn new(request: &'r Request<'a>, context: &'r Context<'a>) -> Self {
        Search { request, context, examined: 0, matched: 0, shortlist: Vec::with_capacity(SHORTLIST_LEN + 1) }
    }

    /// Looks at one agent; returns whether it qualified.
    fn offer(&mut self, agent: &Agent) -> bool {
        self.examined += 1;
        if !agent.has_skills(self.request.skills)
            || self.request.exclude.contains(&*agent.key)
            || !(self.context.site_live)(agent.site)
        {
            return false;
        }
        self.matched += 1;
        let candidate = self.candidate(agent);
        let (strategy, cursor) = (self.context.settings.strategy, self.context.cursor);
        let position = self
            .shortlist
            .iter()
            .position(|other| compare(&candidate, other, strategy, cursor) == Ordering::Greater)
            .unwrap_or(self.shortlist.len());
        if position < SHORTLIST_LEN {
            self.shortlist.insert(position, candidate);
            self.shortlist.truncate(SHORTLIST_LEN);
        }
        true
    }

    fn candidate(&self, agent: &Agent) -> Candidate {
        let local = agent.site == self.request.origin;
        let route_cost = if local { 0 } else { (self.context.cost)(self.request.origin, agent.site) };
        let idle_ms = self.request.now_ms.saturating_sub(agent.idle_since_ms);
        let margin = if local { self.context.settings.local_margin_ms as i64 } else { 0 };
        Candidate {
            agent: agent.key.to_string(),
            site: agent.site,
            local,
            idle_ms,
            route_cost,
            skill_score: agent.skill_score(self.request.skills),
            score: idle_ms as i64 - route_cost as i64 + margin,
        }
    }

    /// Whether an agent idle `idle_ms` whose score is at most `bound` (and which is at the origin
    /// site only if `may_be_local`) could still outrank the best so far under longest idle.
    /// Entries come longest idle first, so once this is false it stays false.
    fn idle_may_win(&self, bound: i64, may_be_local: bool, idle_ms: u64, key: &str) -> bool {
        let Some(best) = self.shortlist.first() else { return true };
        if bound != best.score {
            return bound > best.score;
        }
        match (may_be_local, best.local) {
            (true, false) => true,
            (false, true) => false,
            _ => idle_ms > best.idle_ms || (idle_ms == best.idle_ms && key < best.agent.as_str()),
        }
    }

    fn finish(self, eligible: usize) -> Decision {
        Decision {
            strategy: self.context.settings.strategy,
            eligible: eligible as u64,
            examined: self.examined,
            matched: self.matched,
            shortlist: self.shortlist,
        }
    }
}

/// Picks the best eligible agent of the request's workgroup, reading only as much of the
/// index as the strategy needs.
pub fn select(index: &Index, request: &Request<'_>, context: &Context<'_>) -> Decision {
    let mut search = Search::new(request, context);
    let Some(pool) = index.pool(request.workgroup) else { return search.finish(0) };
    let agent = |key: &str| index.agent(key).expect("pool entries are indexed agents");
    // The rarest required skill narrows every walk; a skill nobody eligible has means no match.
    let mut rarest: Option<(&String, usize)> = None;
    for skill in request.skills.keys() {
        let Some(set) = pool.by_skill.get(skill) else { return search.finish(pool.len()) };
        if rarest.is_none_or(|(_, len)| set.len() < len) {
            rarest = Some((skill, set.len()));
        }
    }
    let rarest = rarest.map(|(skill, _)| skill);
    match context.settings.strategy {
        Strategy::MostSkilled if rarest.is_some() => {
            most_skilled(&mut search, pool, rarest.expect("checked"), &agent);
        }
        Strategy::LongestIdle | Strategy::MostSkilled => longest_idle(&mut search, pool, rarest, &agent),
        Strategy::RoundRobin => round_robin(&mut search, pool, &agent),
    }
    search.finish(pool.len())
}

fn longest_idle<'i>(
    search: &mut Search<'_, '_>,
    pool: &'i Pool,
    rarest: Option<&String>,
    agent: &impl Fn(&str) -> &'i Agent,
) {
    let origin = search.request.origin;
    // At the origin every agent has the same cost and margin: the first that qualifies is the
    // best local one.
    if let Some(local) = pool.by_site.get(&origin) {
        for (_, key) in local {
            if search.offer(agent(key)) {
                break;
            }
        }
    }
    let source = match rarest {
        Some(skill) => &pool.by_skill[skill],
        None => &pool.by_idle,
    };
    for (idle_since, key) in source {
        let idle_ms = search.request.now_ms.saturating_sub(*idle_since);
        // A remote agent's score is at most its idle time (costs are never negative).
        if !search.idle_may_win(idle_ms as i64, false, idle_ms, key) {
            break;
        }
        let candidate = agent(key);
        if candidate.site != origin {
            search.offer(candidate);
        }
    }
}

fn most_skilled<'i>(search: &mut Search<'_, '_>, pool: &'i Pool, skill: &String, agent: &impl Fn(&str) -> &'i Agent) {
    let required = search.request.skills[skill];
    let others = (search.request.skills.len() as u32 - 1) * SKILL_LEVEL_MAX;
    let margin = search.context.settings.local_margin_ms as i64;
    for (level, idle_since, key) in &pool.by_level[skill] {
        let level = level.0;
        if level < required {
            break;
        }
        if let Some(best) = search.shortlist.first() {
            let bound = level + others;
            if bound < best.skill_score {
                break;
            }
            // With one required skill the level is the whole skill score, so within a level
            // the longest-idle bound applies too.
            let idle_ms = search.request.now_ms.saturating_sub(*idle_since);
            if others == 0
                && bound == best.skill_score
                && !search.idle_may_win(idle_ms as i64 + margin, true, idle_ms, key)
            {
                break;
            }
        }
        search.offer(agent(key));
    }
}

fn round_robin<'i>(search: &mut Search<'_, '_>, pool: &'i Pool, agent: &impl Fn(&str) -> &'i Agent) {
    if let Some(local) = pool.by_site.get(&search.request.origin) {
        for (_, key) in local {
            search.offer(agent(key));
        }
        if !search.shortlist.is_empty() {
            return;
        }
    }
    // Username order after the cursor, then from the start up to and including the cursor.
    let (after, before) = match search.context.cursor {
        Some(cursor) => (
            pool.by_key.range::<str, _>((Bound::Excluded(cursor), Bound::Unbounded)),
            Some(pool.by_key.range::<str, _>((Bound::Unbounded, Bound::Included(cursor)))),
        ),
        None => (pool.by_key.range::<str, _>(..), None),
    };
    // Agents at the origin were all looked at above, and none qualified.
    for key in after.chain(before.into_iter().flatten()) {
        let candidate = agent(key);
        if candidate.site != search.request.origin && search.offer(candidate) {
            break;
        }
    }
}

/// Ranks every given agent (no index): the reference [`select`] is tested against, and how a
/// queue is served when a few agents become eligible at once.
pub fn select_among<'a>(
    agents: impl IntoIterator<Item = &'a Agent>,
    eligible: usize,
    request: &Request<'_>,
    context: &Context<'_>,
) -> Decision {
    let mut search = Search::new(request, context);
    for agent in agents {
        search.offer(agent);
    }
    search.finish(eligible)
}
