//! Routing rules: route, accept, reject and cancel interactions, routing settings and costs, the
//! routing pass after every command (`State::route_pending`) and the routing index's upkeep.

use super::{
    stage_name, AgentCounts, Flags, Interaction, QueueEntry, RecordedDecision, RouteRequest, RoutingIndex, Settings,
    Stage, Tracked, WorkgroupStats, RELEASE_AGENT_UNAVAILABLE, RELEASE_REJECTED, RELEASE_TIMED_OUT,
};
use crate::catalog::{StatusGroup, STATUS_AGENT_NOT_ANSWERING};
use crate::event::Event;
use crate::limits::*;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::state::State;
use crate::user::{key_of, key_ref};
use collective_routing as director;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Counts (sign 1) or uncounts (-1) an agent in a workgroup's counts; a workgroup nobody is
/// logged on in has none.
fn count(counts: &mut BTreeMap<String, AgentCounts>, workgroup: &str, flags: Flags, sign: i64) {
    match counts.get_mut(workgroup) {
        Some(workgroup_counts) => {
            workgroup_counts.add(flags, sign);
            if workgroup_counts.logged_on == 0 {
                counts.remove(workgroup);
            }
        }
        None => {
            assert_eq!(sign, 1, "tracked agents are counted");
            let mut workgroup_counts = AgentCounts::default();
            workgroup_counts.add(flags, sign);
            counts.insert(workgroup.to_string(), workgroup_counts);
        }
    }
}

/// Adds a user to the users logged on at a site.
fn join_site(at_site: &mut BTreeMap<SiteId, BTreeSet<String>>, site: SiteId, user_key: &str) {
    at_site.entry(site).or_default().insert(user_key.to_string());
}

/// Takes a user out of the users logged on at a site.
fn leave_site(at_site: &mut BTreeMap<SiteId, BTreeSet<String>>, site: SiteId, user_key: &str) {
    if let Some(users) = at_site.get_mut(&site) {
        users.remove(user_key);
        if users.is_empty() {
            at_site.remove(&site);
        }
    }
}

impl State {
    /// Statistics of a workgroup at `now_ms`.
    pub fn workgroup_stats(&self, workgroup: &str, now_ms: u64) -> Result<WorkgroupStats, Rejection> {
        let name = self.workgroup(workgroup)?.name.clone();
        let key = key_of(&name);
        let index = &self.routing.index;
        let oldest = index
            .queue(&key)
            .filter_map(|id| self.routing.interactions.get(id))
            .map(|interaction| interaction.arrived_at_ms)
            .min();
        Ok(WorkgroupStats {
            workgroup: name,
            agents: index.counts(&key),
            queued: index.queues.get(&key).map_or(0, |queue| queue.len() as u64),
            longest_wait_ms: oldest.map_or(0, |arrived| now_ms.saturating_sub(arrived)),
            counters: self.routing.counters.get(&key).copied().unwrap_or_default(),
        })
    }

    /// The skills an interaction needs: the request's and its workgroup's, highest level of each.
    fn required_skills(&self, request: &RouteRequest) -> BTreeMap<String, u32> {
        let mut skills = request.skills.clone();
        if let Some(workgroup) = self.workgroups.get(&key_of(&request.workgroup)) {
            for (skill, level) in &workgroup.required_skills {
                let entry = skills.entry(skill.clone()).or_insert(*level);
                *entry = (*entry).max(*level);
            }
        }
        skills
    }

    /// Picks an agent for an interaction from the current views.
    fn decide_placement(&self, interaction: &Interaction, at_ms: u64) -> RecordedDecision {
        self.rank(interaction, at_ms, None)
    }

    /// Ranks the agents for an interaction at `at_ms`: the whole eligible pool through the
    /// index, or only `among` (ranked one by one the same way).
    fn rank(&self, interaction: &Interaction, at_ms: u64, among: Option<&[&director::Agent]>) -> RecordedDecision {
        let workgroup = key_of(&interaction.request.workgroup);
        let settings = self.routing.settings_of(&workgroup);
        let required_skills = self.required_skills(&interaction.request);
        let cost = |from: SiteId, to: SiteId| self.routing.cost(from, to);
        let site_live = |site: SiteId| self.leases.get(&site).is_some_and(|lease| lease.expires_at_ms > at_ms);
        let request = director::Request {
            workgroup: &workgroup,
            origin: interaction.request.origin_site,
            skills: &required_skills,
            exclude: &interaction.declined_by,
            now_ms: at_ms,
        };
        let context = director::Context {
            settings: &settings,
            cost: &cost,
            site_live: &site_live,
            cursor: self.routing.cursors.get(&workgroup).map(String::as_str),
        };
        let decision = match among {
            None => director::select(&self.routing.index.eligible, &request, &context),
            Some(agents) => {
                let eligible = self.routing.index.eligible.pool(&workgroup).map_or(0, director::Pool::len);
                director::select_among(agents.iter().copied(), eligible, &request, &context)
            }
        };
        RecordedDecision { at_ms, required_skills, decision }
    }

    /// The event that places an interaction: a reservation of the winner, or the queue.
    fn placement_event(&self, interaction: &Interaction, decision: RecordedDecision) -> Event {
        let workgroup = key_of(&interaction.request.workgroup);
        match decision.decision.winner() {
            Some(winner) => Event::AgentReserved {
                interaction_id: interaction.request.interaction_id.clone(),
                workgroup: interaction.request.workgroup.clone(),
                agent: self
                    .users
                    .get(winner.agent.as_str())
                    .map_or_else(|| winner.agent.clone(), |u| u.username.clone()),
                agent_site: winner.site,
                origin_site: interaction.request.origin_site,
                expires_at_ms: decision.at_ms + self.routing.settings_of(&workgroup).reservation_ttl_ms,
                decision,
            },
            None => Event::InteractionQueued {
                interaction_id: interaction.request.interaction_id.clone(),
                workgroup: interaction.request.workgroup.clone(),
                origin_site: interaction.request.origin_site,
                decision,
            },
        }
    }

    pub(crate) fn decide_route(&self, at_ms: u64, request: &RouteRequest) -> Result<Vec<Event>, Rejection> {
        let workgroup = self.workgroup(&request.workgroup)?;
        let request = RouteRequest { workgroup: workgroup.name.clone(), ..request.clone() };
        if let Some(existing) = self.routing.interactions.get(&request.interaction_id) {
            // Idempotent: the same request again changes nothing and is answered from the
            // interaction; a different one under the same id is a caller error.
            if existing.request == request {
                return Ok(vec![]);
            }
            return Err(Rejection::exists("interaction", "interaction_id", &request.interaction_id));
        }
        let origin = self.site(request.origin_site)?;
        if !origin.active {
            return Err(Rejection::precondition("origin_site", format!("site {} is not active", request.origin_site)));
        }
        if self.routing.open_interactions() >= INTERACTIONS_OPEN_MAX {
            return Err(Rejection::LimitReached {
                what: "open interactions".into(),
                limit: INTERACTIONS_OPEN_MAX as u64,
            });
        }
        let interaction = Interaction {
            request,
            arrived_at_ms: at_ms,
            seq: self.routing.next_seq,
            stage: Stage::Routing,
            declined_by: BTreeSet::new(),
            decisions: vec![],
        };
        // Refuse up front what would overflow the queue: the placement right after the
        // arrival sees the same views, so it queues exactly when this finds nobody.
        let key = key_of(&interaction.request.workgroup);
        let queued = self.routing.index.queues.get(&key).map_or(0, BTreeSet::len);
        let queue_max = self.routing.settings_of(&key).queue_max as usize;
        if queued >= queue_max && self.decide_placement(&interaction, at_ms).decision.winner().is_none() {
            return Err(Rejection::LimitReached {
                what: format!("queue of workgroup {} (no agent is available)", interaction.request.workgroup),
                limit: queue_max as u64,
            });
        }
        Ok(vec![Event::InteractionArrived(Box::new(interaction))])
    }

    /// The live reservation of an interaction (held by `by`, when given): its agent, or why
    /// there is none.
    fn reservation(
        &self,
        interaction_id: &str,
        at_ms: u64,
        by: Option<&str>,
    ) -> Result<(&Interaction, &str), Rejection> {
        let interaction = self.routing.interaction(interaction_id)?;
        match &interaction.stage {
            Stage::Reserved { agent, .. } if by.is_some_and(|by| key_of(by) != *agent) => Err(Rejection::precondition(
                "agent",
                format!("interaction {interaction_id} is reserved to {agent}, not {}", by.expect("checked")),
            )),
            Stage::Reserved { agent, expires_at_ms, .. } if *expires_at_ms > at_ms => Ok((interaction, agent)),
            Stage::Reserved { expires_at_ms, .. } => Err(Rejection::precondition(
                "interaction_id",
                format!("the reservation of interaction {interaction_id} expired at {expires_at_ms} ms"),
            )),
            other => Err(Rejection::precondition(
                "interaction_id",
                format!("interaction {interaction_id} is {}, not reserved", stage_name(other)),
            )),
        }
    }

    pub(crate) fn decide_accept(
        &self,
        at_ms: u64,
        interaction_id: &str,
        by: Option<&str>,
    ) -> Result<Vec<Event>, Rejection> {
        let (interaction, agent) = self.reservation(interaction_id, at_ms, by)?;
        let user = self.user(agent)?;
        if self.presence[agent].interactions.len() >= INTERACTIONS_PER_USER_MAX {
            return Err(Rejection::LimitReached {
                what: format!("interactions of user {}", user.username),
                limit: INTERACTIONS_PER_USER_MAX as u64,
            });
        }
        Ok(vec![
            Event::ReservationAccepted {
                interaction_id: interaction_id.to_string(),
                workgroup: interaction.request.workgroup.clone(),
                agent: user.username.clone(),
            },
            Event::InteractionStarted { username: user.username.clone(), interaction_id: interaction_id.to_string() },
        ])
    }

    pub(crate) fn decide_reject(
        &self,
        at_ms: u64,
        interaction_id: &str,
        by: Option<&str>,
        not_answering: bool,
    ) -> Result<Vec<Event>, Rejection> {
        let (interaction, agent) = self.reservation(interaction_id, at_ms, by)?;
        Ok(self.release_events(interaction, agent, RELEASE_REJECTED, not_answering))
    }

    fn release_events(&self, interaction: &Interaction, agent: &str, reason: &str, not_answering: bool) -> Vec<Event> {
        let username = self.users.get(agent).map_or_else(|| agent.to_string(), |user| user.username.clone());
        let mut events = vec![Event::ReservationReleased {
            interaction_id: interaction.request.interaction_id.clone(),
            workgroup: interaction.request.workgroup.clone(),
            agent: username.clone(),
            reason: reason.to_string(),
        }];
        let status = self.presence.get(agent).map(|presence| presence.status_key.as_str());
        if not_answering && status.is_some_and(|status| status != STATUS_AGENT_NOT_ANSWERING) {
            events.push(Event::StatusChanged {
                username,
                status_key: STATUS_AGENT_NOT_ANSWERING.to_string(),
                until_ms: None,
                detail: format!("did not answer interaction {}", interaction.request.interaction_id),
            });
        }
        events
    }

    pub(crate) fn decide_cancel(&self, interaction_id: &str) -> Result<Vec<Event>, Rejection> {
        let interaction = self.routing.interaction(interaction_id)?;
        match &interaction.stage {
            Stage::Queued | Stage::Reserved { .. } | Stage::Routing => Ok(vec![Event::InteractionCancelled {
                interaction_id: interaction_id.to_string(),
                workgroup: interaction.request.workgroup.clone(),
                origin_site: interaction.request.origin_site,
            }]),
            other => Err(Rejection::precondition(
                "interaction_id",
                format!(
                    "interaction {interaction_id} is {}; only queued or reserved ones can be cancelled",
                    stage_name(other)
                ),
            )),
        }
    }

    pub(crate) fn decide_routing_settings(
        &self,
        workgroup: &str,
        settings: &Settings,
    ) -> Result<Vec<Event>, Rejection> {
        let workgroup = self.workgroup(workgroup)?;
        Ok(vec![Event::RoutingSettingsSet { workgroup: workgroup.name.clone(), settings: settings.clone() }])
    }

    pub(crate) fn decide_route_cost(&self, from: SiteId, to: SiteId, cost: u32) -> Result<Vec<Event>, Rejection> {
        self.site(from)?;
        self.site(to)?;
        Ok(vec![Event::RouteCostSet { from, to, cost }])
    }

    /// Reservations past their deadline at `at_ms`: released, the agent possibly marked as not
    /// answering (the workgroup's setting).
    ///
    /// An agent whose site's lease has ended by `at_ms` was unreachable rather than not
    /// answering: the same `Tick` logs it off, so it is released as unavailable and its status
    /// is left to the logoff (a non-persistent status set now would outlive the logoff).
    pub(crate) fn reservation_expiry_events(&self, at_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for (_, id) in self.routing.index.deadlines.iter().take_while(|(deadline, _)| *deadline <= at_ms) {
            let interaction = &self.routing.interactions[id];
            if let Stage::Reserved { agent, .. } = &interaction.stage {
                let reachable = self
                    .presence
                    .get(agent.as_str())
                    .and_then(|presence| presence.logon.as_ref())
                    .and_then(|logon| self.leases.get(&logon.site))
                    .is_some_and(|lease| lease.expires_at_ms > at_ms);
                let settings = self.routing.settings_of(&key_of(&interaction.request.workgroup));
                let (reason, not_answering) = if reachable {
                    (RELEASE_TIMED_OUT, settings.not_answering_on_timeout)
                } else {
                    (RELEASE_AGENT_UNAVAILABLE, false)
                };
                events.extend(self.release_events(interaction, agent, reason, not_answering));
            }
        }
        events
    }

    /// Why a workgroup cannot be deleted yet: interactions still waiting for an agent in it.
    pub(crate) fn check_workgroup_idle(&self, workgroup: &str) -> Result<(), Rejection> {
        let key = key_of(workgroup);
        let index = &self.routing.index;
        let queued = index.queues.get(&key).map_or(0, BTreeSet::len);
        let reserved = index
            .reserved
            .values()
            .filter(|id| key_of(&self.routing.interactions[*id].request.workgroup) == key)
            .count();
        if queued + reserved > 0 {
            return Err(Rejection::precondition(
                "name",
                format!(
                    "workgroup {workgroup} has {queued} queued and {reserved} reserved interactions; cancel them first"
                ),
            ));
        }
        Ok(())
    }

    /// Folds a routing event into the routing state.
    pub(crate) fn fold_routing(&mut self, event: &Event, at_ms: u64) {
        let routing = &mut self.routing;
        match event {
            Event::InteractionArrived(interaction) => {
                routing.next_seq = interaction.seq + 1;
                routing.index.pending.insert((interaction.seq, interaction.request.interaction_id.clone()));
                routing.interactions.insert(interaction.request.interaction_id.clone(), (**interaction).clone());
            }
            Event::AgentReserved {
                interaction_id,
                workgroup,
                agent,
                agent_site,
                origin_site,
                expires_at_ms,
                decision,
            } => {
                let (wg, agent) = (key_of(workgroup), key_of(agent));
                let interaction = routing.interactions.get_mut(interaction_id).expect("reserved interactions exist");
                if interaction.stage == Stage::Queued {
                    let entry = (Reverse(interaction.request.priority), interaction.seq, interaction_id.clone());
                    remove_queued(&mut routing.index.queues, &wg, &entry);
                }
                interaction.stage =
                    Stage::Reserved { agent: agent.clone(), site: *agent_site, expires_at_ms: *expires_at_ms };
                push_decision(interaction, decision.clone());
                routing.index.pending.remove(&(interaction.seq, interaction_id.clone()));
                routing.index.reserved.insert(agent.clone(), interaction_id.clone());
                routing.index.deadlines.insert((*expires_at_ms, interaction_id.clone()));
                routing.counters.entry(wg.clone()).or_default().routed += 1;
                *routing.matrix.entry(*origin_site).or_default().entry(*agent_site).or_default() += 1;
                routing.cursors.insert(wg, agent.clone());
                routing.index.dirty_users.insert(agent);
            }
            Event::InteractionQueued { interaction_id, workgroup, decision, .. } => {
                let interaction = routing.interactions.get_mut(interaction_id).expect("queued interactions exist");
                interaction.stage = Stage::Queued;
                push_decision(interaction, decision.clone());
                routing.index.pending.remove(&(interaction.seq, interaction_id.clone()));
                routing.index.queues.entry(key_of(workgroup)).or_default().insert((
                    Reverse(interaction.request.priority),
                    interaction.seq,
                    interaction_id.clone(),
                ));
            }
            Event::ReservationAccepted { interaction_id, workgroup, agent } => {
                let agent = key_of(agent);
                let interaction = routing.interactions.get_mut(interaction_id).expect("accepted interactions exist");
                if let Stage::Reserved { site, expires_at_ms, .. } = interaction.stage.clone() {
                    routing.index.deadlines.remove(&(expires_at_ms, interaction_id.clone()));
                    interaction.stage = Stage::Active { agent: agent.clone(), site };
                }
                routing.index.reserved.remove(&agent);
                routing.counters.entry(key_of(workgroup)).or_default().accepted += 1;
                routing.index.dirty_users.insert(agent);
            }
            Event::ReservationReleased { interaction_id, workgroup, agent, reason } => {
                let agent = key_of(agent);
                let interaction = routing.interactions.get_mut(interaction_id).expect("released interactions exist");
                if let Stage::Reserved { expires_at_ms, .. } = interaction.stage {
                    routing.index.deadlines.remove(&(expires_at_ms, interaction_id.clone()));
                }
                interaction.stage = Stage::Routing;
                if interaction.declined_by.len() < DECLINED_AGENTS_MAX {
                    interaction.declined_by.insert(agent.clone());
                }
                routing.index.pending.insert((interaction.seq, interaction_id.clone()));
                routing.index.reserved.remove(&agent);
                let counters = routing.counters.entry(key_of(workgroup)).or_default();
                match reason.as_str() {
                    RELEASE_REJECTED => counters.rejected += 1,
                    RELEASE_TIMED_OUT => counters.timed_out += 1,
                    _ => {}
                }
                routing.index.dirty_users.insert(agent);
            }
            Event::InteractionCancelled { interaction_id, workgroup, .. } => {
                let wg = key_of(workgroup);
                let interaction = routing.interactions.get_mut(interaction_id).expect("cancelled interactions exist");
                match interaction.stage.clone() {
                    Stage::Queued => {
                        let entry = (Reverse(interaction.request.priority), interaction.seq, interaction_id.clone());
                        remove_queued(&mut routing.index.queues, &wg, &entry);
                    }
                    Stage::Reserved { agent, expires_at_ms, .. } => {
                        routing.index.deadlines.remove(&(expires_at_ms, interaction_id.clone()));
                        routing.index.reserved.remove(&agent);
                        routing.index.dirty_users.insert(agent);
                    }
                    _ => {}
                }
                routing.index.pending.remove(&(interaction.seq, interaction_id.clone()));
                routing.counters.entry(wg).or_default().cancelled += 1;
                self.finish_interaction(interaction_id, "cancelled", at_ms);
            }
            Event::RoutingSettingsSet { workgroup, settings } => {
                routing.settings.insert(key_of(workgroup), settings.clone());
            }
            Event::RouteCostSet { from, to, cost } => {
                if *cost == 0 {
                    if let Some(costs) = routing.costs.get_mut(from) {
                        costs.remove(to);
                        if costs.is_empty() {
                            routing.costs.remove(from);
                        }
                    }
                } else {
                    routing.costs.entry(*from).or_default().insert(*to, *cost);
                }
            }
            _ => {}
        }
    }

    /// What other events mean for routing: which agents and sites to look at again, which
    /// interactions end.
    pub(crate) fn note_routing_effects(&mut self, event: &Event, at_ms: u64) {
        let index = &mut self.routing.index;
        // The one user a presence change or a membership change touches is refreshed directly,
        // not through `dirty_users`: every applied write passes here on every member.
        let mut only_user = None;
        match event {
            Event::UserLoggedOff { username, .. } | Event::UserDeleted { username } => {
                let user = key_of(username);
                if let Some(id) = index.reserved.get(&user) {
                    index.releases.insert((id.clone(), user.clone()));
                }
                index.dirty_users.insert(user);
            }
            Event::UserUpdated(user) => {
                index.dirty_users.insert(key_of(&user.username));
            }
            Event::UserAddedToWorkgroup { username, .. }
            | Event::UserRemovedFromWorkgroup { username, .. }
            | Event::StatusChanged { username, .. }
            | Event::UserLoggedOn { username, .. }
            | Event::InteractionStarted { username, .. } => only_user = Some(username.as_str()),
            Event::InteractionEnded { username, interaction_id } => {
                let user = key_of(username);
                index.dirty_users.insert(user.clone());
                let ends_routed = self
                    .routing
                    .interactions
                    .get(interaction_id)
                    .is_some_and(|i| matches!(&i.stage, Stage::Active { agent, .. } if *agent == user));
                if ends_routed {
                    // Its workgroup may be gone by now (active calls do not block deletion).
                    let workgroup = key_of(&self.routing.interactions[interaction_id].request.workgroup);
                    if let Some(counters) = self.routing.counters.get_mut(&workgroup) {
                        counters.completed += 1;
                    }
                    self.finish_interaction(interaction_id, "completed", at_ms);
                }
            }
            Event::SiteActiveChanged { site, .. }
            | Event::LeaseGranted { site, .. }
            | Event::LeaseEnded { site, .. } => {
                index.dirty_sites.insert(*site);
            }
            Event::SiteUpdated(site) => {
                index.dirty_sites.insert(site.id);
            }
            Event::StatusDefined(def) => {
                let affected: Vec<String> = index
                    .tracked
                    .keys()
                    .filter(|user| self.presence.get(user.as_str()).is_some_and(|p| p.status_key == def.key))
                    .cloned()
                    .collect();
                self.routing.index.dirty_users.extend(affected);
            }
            Event::WorkgroupDeleted { name } => {
                // Nothing queued or reserved is left in it (`check_workgroup_idle`); a workgroup
                // added later under the name starts afresh.
                let key = key_of(name);
                self.routing.settings.remove(&key);
                self.routing.cursors.remove(&key);
                self.routing.counters.remove(&key);
            }
            _ => {}
        }
        self.refresh_dirty();
        if let Some(username) = only_user {
            self.refresh_agent(&key_ref(username));
        }
    }

    fn finish_interaction(&mut self, interaction_id: &str, outcome: &str, at_ms: u64) {
        let routing = &mut self.routing;
        if let Some(interaction) = routing.interactions.get_mut(interaction_id) {
            interaction.stage = Stage::Finished { outcome: outcome.to_string(), at_ms };
            routing.finished.insert(routing.next_finish, interaction_id.to_string());
            routing.next_finish += 1;
        }
        while routing.finished.len() > INTERACTIONS_FINISHED_RETAINED {
            let (_, oldest) = routing.finished.pop_first().expect("longer than the bound");
            routing.interactions.remove(&oldest);
        }
    }

    /// Brings the index up to date for every dirty agent and site; agents that became eligible
    /// (or changed skills, site or workgroups while eligible) are remembered as fresh.
    fn refresh_dirty(&mut self) {
        let index = &mut self.routing.index;
        let mut users = std::mem::take(&mut index.dirty_users);
        for site in std::mem::take(&mut index.dirty_sites) {
            users.extend(index.at_site.get(&site).into_iter().flatten().cloned());
        }
        for user in users {
            self.refresh_agent(&user);
        }
    }

    /// Brings routing's view of one user up to date: its counts, its site and, when it is
    /// eligible, the eligible index. Runs for every presence change on every member, so the
    /// unchanged view is compared in place (no copies), a changed one is updated in place (no
    /// remove and insert in the tracked map), and an agent is rebuilt only when the eligible
    /// index needs it.
    fn refresh_agent(&mut self, user_key: &str) {
        let State { users, presence, catalog, sites, leases, routing, .. } = self;
        let index = &mut routing.index;
        let now = (|| {
            let user = users.get(user_key)?;
            let presence = presence.get(user_key)?;
            let logon = presence.logon.as_ref()?;
            let ready = catalog
                .get(&presence.status_key)
                .is_some_and(|def| def.group == StatusGroup::Available && def.acd_available);
            let reserved = index.reserved.contains_key(user_key);
            let site_up = sites.get(&logon.site).is_some_and(|site| site.active) && leases.contains_key(&logon.site);
            let on_phone = presence.on_phone();
            let eligible = ready && !on_phone && !reserved && site_up && !user.workgroups.is_empty();
            Some((logon.site, user, presence, Flags { ready, on_phone, reserved, eligible }))
        })();
        let Some((site, user, presence, flags)) = now else {
            // Not logged on (or gone): out of every view.
            if let Some(old) = index.tracked.remove(user_key) {
                for workgroup in &old.workgroups {
                    count(&mut index.counts, workgroup, old.flags, -1);
                }
                leave_site(&mut index.at_site, old.site, user_key);
                if old.flags.eligible {
                    index.eligible.remove(user_key);
                }
            }
            return;
        };
        let workgroups = &user.workgroups;
        let was_eligible = match index.tracked.get_mut(user_key) {
            Some(old) => {
                let same_workgroups = old.workgroups == *workgroups;
                if same_workgroups && old.site == site && old.flags == flags {
                    // Unchanged and not eligible: it was not eligible before either (eligibility
                    // is part of the view), so the eligible index has nothing to update.
                    if !flags.eligible {
                        return;
                    }
                } else {
                    if same_workgroups && old.flags == flags {
                        // Only the site changed: the counts stand.
                    } else if same_workgroups {
                        for workgroup in workgroups.iter() {
                            let counts = index.counts.get_mut(workgroup).expect("tracked agents are counted");
                            counts.add(old.flags, -1);
                            counts.add(flags, 1);
                        }
                    } else {
                        for workgroup in &old.workgroups {
                            count(&mut index.counts, workgroup, old.flags, -1);
                        }
                        for workgroup in workgroups.iter() {
                            count(&mut index.counts, workgroup, flags, 1);
                        }
                        old.workgroups = workgroups.clone();
                    }
                    if old.site != site {
                        leave_site(&mut index.at_site, old.site, user_key);
                        join_site(&mut index.at_site, site, user_key);
                    }
                    old.site = site;
                }
                std::mem::replace(&mut old.flags, flags).eligible
            }
            None => {
                for workgroup in workgroups.iter() {
                    count(&mut index.counts, workgroup, flags, 1);
                }
                join_site(&mut index.at_site, site, user_key);
                index.tracked.insert(user_key.to_string(), Tracked { site, workgroups: workgroups.clone(), flags });
                false
            }
        };
        if !flags.eligible {
            if was_eligible {
                index.eligible.remove(user_key);
            }
            return;
        }
        let before = index.eligible.agent(user_key);
        let same_skills = before.filter(|before| before.site == site && before.skills.iter().eq(user.skills.iter()));
        let fresh = same_skills.is_none()
            || !index.eligible.workgroups_of(user_key).is_some_and(|held| held.iter().eq(workgroups.iter()));
        let idle_changed = before.is_some_and(|before| before.idle_since_ms != presence.since_ms);
        if !fresh && !idle_changed {
            return;
        }
        // An agent whose skills did not change keeps sharing them.
        let (key, skills) = match same_skills {
            Some(before) => (before.key.clone(), before.skills.clone()),
            None => (Arc::from(user_key), Arc::new(BTreeMap::from(&user.skills))),
        };
        if fresh {
            for workgroup in workgroups.iter() {
                index.fresh.entry(workgroup.clone()).or_default().insert(user_key.to_string());
            }
        }
        let agent = director::Agent { key, site, idle_since_ms: presence.since_ms, skills };
        index.eligible.insert(agent, workgroups.iter().cloned().collect());
    }

    /// Places what the last command set in motion; see the module documentation. `record`
    /// numbers and folds each event it produces.
    pub(crate) fn route_pending(&mut self, at_ms: u64, mut record: impl FnMut(&mut State, Event)) {
        loop {
            if let Some((id, left)) = self.routing.index.releases.pop_first() {
                let interaction = &self.routing.interactions[&id];
                // Still held by the agent who left (not released or re-reserved meanwhile).
                if matches!(&interaction.stage, Stage::Reserved { agent, .. } if *agent == left) {
                    for event in self.release_events(interaction, &left, RELEASE_AGENT_UNAVAILABLE, false) {
                        record(self, event);
                    }
                }
                continue;
            }
            if let Some((workgroup, agents)) = self.routing.index.fresh.pop_first() {
                self.serve_queue(&workgroup, agents, at_ms, &mut record);
                continue;
            }
            if let Some((_, id)) = self.routing.index.pending.pop_first() {
                let interaction = &self.routing.interactions[&id];
                let decision = self.decide_placement(interaction, at_ms);
                let event = self.placement_event(interaction, decision);
                record(self, event);
                continue;
            }
            break;
        }
    }

    /// Offers a workgroup's queue, in order, to agents that just became eligible. Agents that
    /// were eligible before match no queued interaction (or it would not be queued), so only
    /// the fresh ones need ranking.
    fn serve_queue(
        &mut self,
        workgroup: &str,
        mut agents: BTreeSet<String>,
        at_ms: u64,
        record: &mut impl FnMut(&mut State, Event),
    ) {
        let queued: Vec<String> = self.routing.index.queue(workgroup).map(str::to_string).collect();
        for id in queued {
            agents.retain(|agent| self.routing.index.eligible.agent(agent).is_some());
            if agents.is_empty() {
                return;
            }
            let interaction = &self.routing.interactions[&id];
            if interaction.stage != Stage::Queued {
                continue;
            }
            let decision = if agents.len() <= FRESH_RANKED_DIRECTLY_MAX {
                let fresh: Vec<&director::Agent> =
                    agents.iter().filter_map(|agent| self.routing.index.eligible.agent(agent)).collect();
                self.rank(interaction, at_ms, Some(&fresh))
            } else {
                self.decide_placement(interaction, at_ms)
            };
            if decision.decision.winner().is_some() {
                let event = self.placement_event(interaction, decision);
                record(self, event);
            }
        }
    }

    /// Rebuilds the derived routing views from the rest of the state (after a snapshot loads
    /// or a site is renumbered).
    pub fn rebuild_routing_index(&mut self) {
        let mut index = RoutingIndex::default();
        for (id, interaction) in &self.routing.interactions {
            match &interaction.stage {
                Stage::Queued => {
                    index.queues.entry(key_of(&interaction.request.workgroup)).or_default().insert((
                        Reverse(interaction.request.priority),
                        interaction.seq,
                        id.clone(),
                    ));
                }
                Stage::Reserved { agent, expires_at_ms, .. } => {
                    index.reserved.insert(agent.clone(), id.clone());
                    index.deadlines.insert((*expires_at_ms, id.clone()));
                }
                _ => {}
            }
        }
        self.routing.index = index;
        let logged_on: Vec<String> = self
            .presence
            .iter()
            .filter(|(_, presence)| presence.logon.is_some())
            .map(|(key, _)| key.to_string())
            .collect();
        for user in logged_on {
            self.refresh_agent(&user);
        }
        self.routing.index.fresh.clear();
    }

    /// Rewrites routing's references to a renumbered site.
    pub(crate) fn routing_site_id_changed(&mut self, old: SiteId, new: SiteId) {
        let rename = |site: &mut SiteId| {
            if *site == old {
                *site = new;
            }
        };
        let routing = &mut self.routing;
        for interaction in routing.interactions.values_mut() {
            rename(&mut interaction.request.origin_site);
            match &mut interaction.stage {
                Stage::Reserved { site, .. } | Stage::Active { site, .. } => rename(site),
                _ => {}
            }
            for recorded in &mut interaction.decisions {
                for candidate in &mut recorded.decision.shortlist {
                    rename(&mut candidate.site);
                }
            }
        }
        rekey_sites(&mut routing.costs, old, new);
        rekey_sites(&mut routing.matrix, old, new);
        self.rebuild_routing_index();
    }

    /// Routing's invariants: the derived views equal a rebuild, every reservation is held by
    /// exactly one interaction, and no queued interaction has an eligible agent that qualifies.
    pub(crate) fn check_routing_invariants(&self) {
        let index = &self.routing.index;
        index.eligible.check();
        let mut rebuilt = self.clone();
        rebuilt.rebuild_routing_index();
        assert!(rebuilt.routing.index == *index, "the routing index differs from one rebuilt from the state");
        for workgroup in
            self.routing.counters.keys().chain(self.routing.settings.keys()).chain(self.routing.cursors.keys())
        {
            assert!(self.workgroups.contains_key(workgroup), "routing keeps data of deleted workgroup {workgroup}");
        }
        let finished = self.routing.interactions.values().filter(|i| matches!(i.stage, Stage::Finished { .. })).count();
        assert_eq!(finished, self.routing.finished.len(), "finished interactions and the retention order disagree");
        assert!(finished <= INTERACTIONS_FINISHED_RETAINED, "{finished} finished interactions retained");
        for (agent, id) in &index.reserved {
            assert!(
                matches!(&self.routing.interactions[id].stage, Stage::Reserved { agent: holder, .. } if holder == agent),
                "agent {agent} is reserved for {id}, which does not hold it"
            );
            assert!(index.eligible.agent(agent).is_none(), "reserved agent {agent} is eligible");
        }
        for agent in index.eligible.agents() {
            let presence = &self.presence[&*agent.key];
            assert!(!presence.on_phone(), "agent {} is eligible while on the phone", agent.key);
            let def = &self.catalog[&presence.status_key];
            assert!(
                def.acd_available && def.group == StatusGroup::Available,
                "agent {} is eligible in {}",
                agent.key,
                def.key
            );
        }
        for (workgroup, queue) in &index.queues {
            for (_, _, id) in queue {
                let interaction = &self.routing.interactions[id];
                let pool: Vec<&director::Agent> = index
                    .eligible
                    .agents()
                    .filter(|agent| index.eligible.workgroups_of(&agent.key).is_some_and(|w| w.contains(workgroup)))
                    .collect();
                let decision = self.rank(interaction, self.last_at_ms, Some(&pool)).decision;
                assert!(
                    decision.winner().is_none(),
                    "interaction {id} is queued while agent {:?} qualifies",
                    decision.winner().map(|w| &w.agent)
                );
            }
        }
    }
}

/// Moves every row and column of a site-by-site table from `old` to `new`.
fn rekey_sites<V>(table: &mut BTreeMap<SiteId, BTreeMap<SiteId, V>>, old: SiteId, new: SiteId) {
    if let Some(row) = table.remove(&old) {
        table.insert(new, row);
    }
    for row in table.values_mut() {
        if let Some(value) = row.remove(&old) {
            row.insert(new, value);
        }
    }
}

fn remove_queued(queues: &mut BTreeMap<String, BTreeSet<QueueEntry>>, workgroup: &str, entry: &QueueEntry) {
    if let Some(queue) = queues.get_mut(workgroup) {
        queue.remove(entry);
        if queue.is_empty() {
            queues.remove(workgroup);
        }
    }
}

fn push_decision(interaction: &mut Interaction, decision: RecordedDecision) {
    if interaction.decisions.len() >= DECISIONS_PER_INTERACTION_MAX {
        interaction.decisions.remove(0);
    }
    interaction.decisions.push(decision);
}
