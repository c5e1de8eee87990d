//! Routing in the state machine: reservations through `apply`, idempotent requests, accept,
//! reject and timeout, queues served in priority then arrival order as agents free up, bad
//! input, statistics, snapshots, and a randomized run checking that no agent is ever reserved
//! twice or while ineligible and that queues are served in order.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::routing::{MediaType, RouteRequest, Settings, Stage, Strategy};
use collective_statemachine::{Command, Event, Rejection, SiteSpec, State, StatusGroup, TrustedAccess, UserSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod common;
use common::{apply, HASH};

/// An agent of a test world: username, site, skills (name, level).
type AgentSpec<'a> = (&'a str, u32, &'a [(&'a str, u32)]);
/// An owned [`AgentSpec`].
type OwnedAgentSpec = (String, u32, Vec<(&'static str, u32)>);

const LEASE_TTL_MS: u64 = 300_000;

fn ok(state: &mut State, at_ms: u64, command: Command) -> Vec<Event> {
    let kind = command.kind();
    apply(state, at_ms, command).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

/// Sites 1..=`sites` with live leases; workgroup `support` (spanning) with the agents, each
/// `(name, site, skills)`, logged on at its site in `Available` in the order given (so the first
/// has been idle longest).
fn world(sites: u32, agents: &[AgentSpec]) -> State {
    let mut state = State::new();
    for id in 1..=sites {
        let spec = SiteSpec {
            id,
            name: format!("Site {id}"),
            phone: "+1 555 0100".into(),
            password_hash: HASH.into(),
            note_id_dial_string: String::new(),
            active: true,
            servers: vec![format!("cic{id}")],
            trusted_access: TrustedAccess::default(),
        };
        ok(&mut state, 1_000, Command::AddSite(spec));
        ok(&mut state, 1_000, Command::GrantLease { site: id, ttl_ms: LEASE_TTL_MS });
    }
    let workgroup =
        Command::AddWorkgroup { name: "Support".into(), spans_sites: true, required_skills: BTreeMap::new() };
    ok(&mut state, 1_000, workgroup);
    for (i, (name, site, skills)) in agents.iter().enumerate() {
        let spec = UserSpec {
            username: name.to_string(),
            display_name: name.to_string(),
            email: format!("{name}@example.com"),
            home_site: *site,
            extension: format!("{}", 1000 + i),
            skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
            licences: BTreeSet::new(),
        };
        ok(&mut state, 1_000, Command::AddUser(spec));
        ok(&mut state, 1_000, Command::AddWorkgroupMember { workgroup: "support".into(), username: name.to_string() });
        let at = 2_000 + i as u64;
        ok(&mut state, at, Command::LogOn { username: name.to_string(), site: *site, server: String::new() });
    }
    state
}

fn route(id: &str, origin: u32, skills: &[(&str, u32)], priority: u32) -> Command {
    Command::RouteInteraction(RouteRequest {
        interaction_id: id.into(),
        media: MediaType::Call,
        origin_site: origin,
        workgroup: "support".into(),
        skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
        priority,
    })
}

fn status(username: &str, key: &str) -> Command {
    Command::SetStatus { username: username.into(), status_key: key.into(), until_ms: None, detail: String::new() }
}

fn accept(id: &str) -> Command {
    Command::AcceptInteraction { interaction_id: id.into(), agent: None }
}

fn reject(id: &str, not_answering: bool) -> Command {
    Command::RejectInteraction { interaction_id: id.into(), agent: None, not_answering }
}

fn stage(state: &State, id: &str) -> Stage {
    state.routing.interactions[id].stage.clone()
}

fn reserved_to(state: &State, id: &str) -> Option<String> {
    match stage(state, id) {
        Stage::Reserved { agent, .. } => Some(agent),
        _ => None,
    }
}

#[test]
fn the_longest_idle_agent_is_reserved_and_a_repeat_changes_nothing() {
    let mut state = world(2, &[("ann", 1, &[]), ("bob", 2, &[]), ("cy", 1, &[])]);
    let events = ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    assert!(
        matches!(&events[..], [Event::InteractionArrived(_), Event::AgentReserved { agent, .. }] if agent == "ann")
    );
    assert_eq!(reserved_to(&state, "call-1").as_deref(), Some("ann"));
    let recorded = &state.routing.interactions["call-1"].decisions[0];
    let winner = recorded.decision.winner().unwrap();
    assert_eq!((winner.agent.as_str(), winner.idle_ms, winner.local), ("ann", 8_000, true));
    assert_eq!(recorded.decision.eligible, 3);
    // The same request again: nothing happens and the interaction keeps its decision.
    assert_eq!(ok(&mut state, 11_000, route("call-1", 1, &[], 0)), vec![]);
    assert_eq!(state.routing.interactions["call-1"].decisions.len(), 1);
    // The same id with another request is refused.
    let refused = apply(&mut state, 11_000, route("call-1", 2, &[], 0)).unwrap_err();
    assert!(matches!(refused, Rejection::AlreadyExists { .. }), "{refused}");
    // The next call cannot get ann: she is reserved.
    ok(&mut state, 12_000, route("call-2", 1, &[], 0));
    assert_eq!(reserved_to(&state, "call-2").as_deref(), Some("bob"));
    let stats = state.workgroup_stats("support", 12_000).unwrap();
    assert_eq!((stats.agents.logged_on, stats.agents.available, stats.agents.reserved), (3, 1, 2));
    assert_eq!(state.routing.matrix[&1][&1] + state.routing.matrix[&1][&2], 2);
}

#[test]
fn accept_puts_the_agent_on_the_phone_and_ending_it_frees_the_agent() {
    let mut state = world(1, &[("ann", 1, &[])]);
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    let events = ok(&mut state, 11_000, accept("call-1"));
    assert!(matches!(&events[..], [Event::ReservationAccepted { .. }, Event::InteractionStarted { .. }]));
    assert!(state.presence["ann"].on_phone());
    assert!(matches!(stage(&state, "call-1"), Stage::Active { .. }));
    // A second interaction queues while she is on it, and is hers as soon as she is done.
    ok(&mut state, 12_000, route("call-2", 1, &[], 0));
    assert_eq!(stage(&state, "call-2"), Stage::Queued);
    let events =
        ok(&mut state, 13_000, Command::EndInteraction { username: "ann".into(), interaction_id: "call-1".into() });
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AgentReserved { interaction_id, .. } if interaction_id == "call-2")));
    assert!(matches!(stage(&state, "call-1"), Stage::Finished { outcome, .. } if outcome == "completed"));
    let counters = state.workgroup_stats("support", 13_000).unwrap().counters;
    assert_eq!((counters.routed, counters.accepted, counters.completed), (2, 1, 1));
    // Accepting twice, or an unknown interaction, is refused.
    let again = apply(&mut state, 14_000, accept("call-1")).unwrap_err();
    assert!(again.to_string().contains("finished, not reserved"), "{again}");
    let unknown = apply(&mut state, 14_000, accept("nope")).unwrap_err();
    assert!(matches!(unknown, Rejection::NotFound { .. }));
}

#[test]
fn the_queue_is_served_by_priority_then_arrival() {
    let mut state = world(1, &[("ann", 1, &[])]);
    ok(&mut state, 3_000, status("ann", "At Play"));
    ok(&mut state, 10_000, route("low-1", 1, &[], 1));
    ok(&mut state, 11_000, route("high", 1, &[], 5));
    ok(&mut state, 12_000, route("low-2", 1, &[], 1));
    let queue: Vec<&str> = state.routing.index.queue("support").collect();
    assert_eq!(queue, ["high", "low-1", "low-2"]);
    let stats = state.workgroup_stats("support", 20_000).unwrap();
    assert_eq!((stats.queued, stats.longest_wait_ms), (3, 10_000));
    // She becomes available: the highest priority is hers in the same entry.
    let events = ok(&mut state, 20_000, status("ann", "Available"));
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::AgentReserved { interaction_id, .. } if interaction_id == "high")));
    ok(&mut state, 21_000, accept("high"));
    ok(&mut state, 22_000, Command::EndInteraction { username: "ann".into(), interaction_id: "high".into() });
    assert_eq!(reserved_to(&state, "low-1").as_deref(), Some("ann"));
    assert_eq!(stage(&state, "low-2"), Stage::Queued);
}

#[test]
fn a_queued_interaction_waits_for_an_agent_with_the_skills() {
    let mut state = world(2, &[("ann", 1, &[("french", 30)])]);
    ok(&mut state, 10_000, route("fr", 1, &[("french", 50)], 0));
    assert_eq!(stage(&state, "fr"), Stage::Queued);
    // An agent without the level joins: the interaction stays queued.
    let spec = |level| UserSpec {
        username: "ann".into(),
        display_name: "ann".into(),
        email: "ann@example.com".into(),
        home_site: 1,
        extension: "1000".into(),
        skills: [("french".to_string(), level)].into(),
        licences: BTreeSet::new(),
    };
    ok(&mut state, 11_000, Command::UpdateUser(spec(40)));
    assert_eq!(stage(&state, "fr"), Stage::Queued);
    // Raising her level makes her qualify: reserved in the same entry.
    ok(&mut state, 12_000, Command::UpdateUser(spec(60)));
    assert_eq!(reserved_to(&state, "fr").as_deref(), Some("ann"));
}

#[test]
fn reject_and_timeout_route_again_without_the_agent() {
    let mut state = world(1, &[("ann", 1, &[]), ("bob", 1, &[])]);
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    assert_eq!(reserved_to(&state, "call-1").as_deref(), Some("ann"));
    let events = ok(&mut state, 11_000, reject("call-1", false));
    assert!(matches!(&events[0], Event::ReservationReleased { reason, .. } if reason == "rejected"));
    assert_eq!(reserved_to(&state, "call-1").as_deref(), Some("bob"));
    assert_eq!(state.presence["ann"].status_key, "Available");
    // Bob lets it time out: released, marked not answering (the default), and queued (ann
    // declined it already).
    let ttl = Settings::default().reservation_ttl_ms;
    assert_eq!(state.next_timer_ms(), Some(11_000 + ttl).min(state.next_timer_ms()));
    let events = ok(&mut state, 11_000 + ttl, Command::Tick);
    assert!(events.iter().any(|e| matches!(e, Event::ReservationReleased { reason, .. } if reason == "timed-out")));
    assert_eq!(state.presence["bob"].status_key, "AcdAgentNotAnswering");
    assert_eq!(stage(&state, "call-1"), Stage::Queued);
    assert_eq!(state.routing.interactions["call-1"].declined_by, BTreeSet::from(["ann".into(), "bob".into()]));
    let counters = state.workgroup_stats("support", 30_000).unwrap().counters;
    assert_eq!((counters.routed, counters.rejected, counters.timed_out), (2, 1, 1));
    // An agent may only take or decline its own reservation: ann's accept of bob's is refused.
    ok(&mut state, 30_000, status("bob", "Available"));
    ok(&mut state, 30_000, Command::CancelInteraction { interaction_id: "call-1".into() });
    ok(&mut state, 31_000, route("call-3", 1, &[], 0));
    let holder = reserved_to(&state, "call-3").unwrap();
    let other = if holder == "ann" { "bob" } else { "ann" };
    let by_other = Command::AcceptInteraction { interaction_id: "call-3".into(), agent: Some(other.into()) };
    let refused = apply(&mut state, 32_000, by_other).unwrap_err();
    assert!(refused.to_string().contains(&format!("reserved to {holder}, not {other}")), "{refused}");
    let by_holder = Command::RejectInteraction {
        interaction_id: "call-3".into(),
        agent: Some(holder.to_uppercase()),
        not_answering: false,
    };
    ok(&mut state, 32_000, by_holder);
    ok(&mut state, 33_000, Command::CancelInteraction { interaction_id: "call-3".into() });
    // A reject that asks for it marks the agent too.
    ok(&mut state, 40_000, route("call-2", 1, &[], 0));
    assert_eq!(reserved_to(&state, "call-2").as_deref(), Some("ann"));
    ok(&mut state, 41_000, reject("call-2", true));
    assert_eq!(state.presence["ann"].status_key, "AcdAgentNotAnswering");
}

#[test]
fn an_agent_who_leaves_loses_the_reservation_and_a_cancelled_call_leaves_the_queue() {
    let mut state = world(2, &[("ann", 1, &[]), ("bob", 2, &[])]);
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    assert_eq!(reserved_to(&state, "call-1").as_deref(), Some("ann"));
    let events = ok(&mut state, 11_000, Command::LogOff { username: "ann".into(), reason: "user".into() });
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ReservationReleased { reason, .. } if reason == "agent-unavailable")));
    assert_eq!(reserved_to(&state, "call-1").as_deref(), Some("bob"));
    // Bob's site loses its lease: he is logged off, and the call queues.
    ok(&mut state, 12_000, Command::RevokeLease { site: 2 });
    assert_eq!(stage(&state, "call-1"), Stage::Queued);
    ok(&mut state, 13_000, Command::CancelInteraction { interaction_id: "call-1".into() });
    assert!(matches!(stage(&state, "call-1"), Stage::Finished { outcome, .. } if outcome == "cancelled"));
    assert_eq!(state.routing.index.queue("support").count(), 0);
    // The workgroup can go now that nothing waits in it.
    ok(&mut state, 14_000, Command::DeleteWorkgroup { name: "support".into() });
}

#[test]
fn a_reservation_ending_with_its_agents_lease_releases_without_marking_the_agent() {
    let mut state = world(1, &[("ann", 1, &[])]);
    let ttl_ms = Settings::default().reservation_ttl_ms;
    // The lease runs out before the reservation; no Tick comes in between.
    ok(&mut state, 3_000, Command::GrantLease { site: 1, ttl_ms: 9_000 });
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    let events = ok(&mut state, 10_000 + ttl_ms, Command::Tick);
    assert!(events
        .iter()
        .any(|e| matches!(e, Event::ReservationReleased { reason, .. } if reason == "agent-unavailable")));
    assert!(state.presence["ann"].logon.is_none());
    assert_eq!(state.presence["ann"].status_key, "Available", "a logged-off agent keeps a persistent status");
    assert_eq!(stage(&state, "call-1"), Stage::Queued);
}

#[test]
fn a_deleted_workgroup_leaves_no_routing_data_behind() {
    let mut state = world(1, &[("ann", 1, &[])]);
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    ok(&mut state, 10_000, accept("call-1"));
    ok(&mut state, 11_000, Command::SetRoutingSettings { workgroup: "support".into(), settings: Settings::default() });
    ok(&mut state, 12_000, Command::DeleteWorkgroup { name: "Support".into() });
    // The call it routed ends afterwards: finished, and no counters come back.
    ok(&mut state, 13_000, Command::EndInteraction { username: "ann".into(), interaction_id: "call-1".into() });
    assert!(matches!(stage(&state, "call-1"), Stage::Finished { .. }));
    assert!(state.routing.counters.is_empty() && state.routing.settings.is_empty() && state.routing.cursors.is_empty());
    let workgroup =
        Command::AddWorkgroup { name: "Support".into(), spans_sites: true, required_skills: BTreeMap::new() };
    ok(&mut state, 14_000, workgroup);
    assert_eq!(state.workgroup_stats("support", 14_000).unwrap().counters.routed, 0);
}

#[test]
fn a_workgroup_with_waiting_interactions_cannot_be_deleted() {
    let mut state = world(1, &[]);
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    let refused = apply(&mut state, 11_000, Command::DeleteWorkgroup { name: "support".into() }).unwrap_err();
    assert!(refused.to_string().contains("1 queued"), "{refused}");
}

#[test]
fn bad_requests_are_refused_with_the_field_named() {
    let mut state = world(1, &[("ann", 1, &[])]);
    let cases: Vec<(Command, &str)> = vec![
        (route("", 1, &[], 0), "interaction_id"),
        (route("c", 1, &[("french", 0)], 0), "skills"),
        (route("c", 1, &[("french", 101)], 0), "skills"),
        (route("c", 1, &[], 101), "priority"),
        (route("c", 1000, &[], 0), "origin_site"),
        (
            Command::SetRoutingSettings {
                workgroup: "support".into(),
                settings: Settings { reservation_ttl_ms: 10, ..Settings::default() },
            },
            "settings.reservation_ttl_ms",
        ),
        (Command::SetRouteCost { from: 1, to: 1, cost: 5 }, "to"),
    ];
    for (command, field) in cases {
        match apply(&mut state, 10_000, command) {
            Err(Rejection::InvalidArgument { field: named, .. }) => assert_eq!(named, field),
            other => panic!("expected an invalid {field}, got {other:?}"),
        }
    }
    let unknown = Command::RouteInteraction(RouteRequest {
        workgroup: "sales".into(),
        ..match route("c", 1, &[], 0) {
            Command::RouteInteraction(request) => request,
            _ => unreachable!(),
        }
    });
    assert!(matches!(apply(&mut state, 10_000, unknown), Err(Rejection::NotFound { kind, .. }) if kind == "workgroup"));
    assert!(
        matches!(apply(&mut state, 10_000, route("c", 7, &[], 0)), Err(Rejection::NotFound { kind, .. }) if kind == "site")
    );
}

#[test]
fn a_full_queue_refuses_only_when_no_agent_is_free() {
    let mut state = world(1, &[("ann", 1, &[])]);
    let settings = Settings { queue_max: 1, ..Settings::default() };
    ok(&mut state, 3_000, Command::SetRoutingSettings { workgroup: "Support".into(), settings });
    ok(&mut state, 10_000, route("call-1", 1, &[], 0));
    ok(&mut state, 10_000, route("call-2", 1, &[], 0));
    let full = apply(&mut state, 10_000, route("call-3", 1, &[], 0)).unwrap_err();
    assert!(matches!(full, Rejection::LimitReached { limit: 1, .. }), "{full}");
}

#[test]
fn strategies_and_site_preference_through_apply() {
    let mut state = world(2, &[("remote", 2, &[("fr", 90)]), ("local", 1, &[("fr", 40)])]);
    // Longest idle: the remote agent logged on first.
    ok(&mut state, 10_000, route("a", 1, &[], 0));
    assert_eq!(reserved_to(&state, "a").as_deref(), Some("remote"));
    ok(&mut state, 10_000, Command::CancelInteraction { interaction_id: "a".into() });
    // A margin keeps it at the origin site.
    let margin = Settings { local_margin_ms: 60_000, ..Settings::default() };
    ok(&mut state, 10_000, Command::SetRoutingSettings { workgroup: "support".into(), settings: margin });
    ok(&mut state, 10_000, route("b", 1, &[], 0));
    assert_eq!(reserved_to(&state, "b").as_deref(), Some("local"));
    ok(&mut state, 10_000, Command::CancelInteraction { interaction_id: "b".into() });
    // Most skilled ignores idle time and the margin.
    let skilled = Settings { strategy: Strategy::MostSkilled, local_margin_ms: 60_000, ..Settings::default() };
    ok(&mut state, 10_000, Command::SetRoutingSettings { workgroup: "support".into(), settings: skilled });
    ok(&mut state, 10_000, route("c", 1, &[("fr", 10)], 0));
    assert_eq!(reserved_to(&state, "c").as_deref(), Some("remote"));
    // A route cost can outweigh idle time under longest idle.
    let mut state = world(3, &[("far", 3, &[]), ("near", 2, &[])]);
    ok(&mut state, 5_000, Command::SetRouteCost { from: 1, to: 3, cost: 60_000 });
    ok(&mut state, 10_000, route("d", 1, &[], 0));
    assert_eq!(reserved_to(&state, "d").as_deref(), Some("near"));
}

#[test]
fn a_snapshot_round_trip_rebuilds_the_index_and_renumbering_reaches_routing() {
    let mut state = world(2, &[("ann", 1, &[]), ("bob", 2, &[])]);
    ok(&mut state, 3_000, status("bob", "At Play"));
    ok(&mut state, 10_000, route("call-1", 2, &[], 0));
    ok(&mut state, 10_000, route("call-2", 2, &[], 3));
    ok(&mut state, 10_000, Command::SetRouteCost { from: 2, to: 1, cost: 5 });
    let bytes = serde_json::to_vec(&state).unwrap();
    let restored: State = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(restored, state, "the index rebuilt from a snapshot equals the live one");
    assert_eq!(restored.routing.index.queue("support").collect::<Vec<_>>(), ["call-2"]);
    ok(&mut state, 11_000, Command::ChangeSiteId { old: 2, new: 20 });
    assert_eq!(state.routing.interactions["call-1"].request.origin_site, 20);
    assert_eq!(state.routing.cost(20, 1), 5);
    assert_eq!(state.routing.matrix[&20][&1], 1);
    // Bob, now at site 20, frees up and takes the queued call.
    ok(&mut state, 12_000, status("bob", "Available"));
    assert!(matches!(stage(&state, "call-2"), Stage::Reserved { site: 20, .. }));
}

/// Whether `agent` could take `id` right now, ignoring that it may be reserved.
fn qualifies(state: &State, agent: &str, id: &str) -> bool {
    let interaction = &state.routing.interactions[id];
    let user = &state.users[agent];
    let presence = &state.presence[agent];
    let Some(logon) = &presence.logon else { return false };
    let def = &state.catalog[&presence.status_key];
    let mut required = interaction.request.skills.clone();
    for (skill, level) in &state.workgroups["support"].required_skills {
        let entry = required.entry(skill.clone()).or_insert(*level);
        *entry = (*entry).max(*level);
    }
    def.group == StatusGroup::Available
        && def.acd_available
        && !presence.on_phone()
        && state.sites[&logon.site].active
        && state.leases.get(&logon.site).is_some_and(|lease| lease.expires_at_ms > state.last_at_ms)
        && required.iter().all(|(skill, level)| user.skills.get(skill).is_some_and(|have| have >= level))
        && !interaction.declined_by.contains(agent)
}

fn random_skills<'a>(rng: &mut StdRng, skills: &[&'a str], probability: f64) -> Vec<(&'a str, u32)> {
    let mut chosen = Vec::new();
    for skill in skills {
        if rng.gen_bool(probability) {
            chosen.push((*skill, rng.gen_range(1..=3) * 30));
        }
    }
    chosen
}

/// Random status changes, logons, leases, routes, accepts, rejects, cancels, ends and ticks on
/// a small collective. After every command: the state's invariants (one reservation per
/// agent, the index equal to a rebuild, no queued interaction with a qualifying eligible agent),
/// every reservation made went to an agent that qualified, and an interaction taken from a
/// queue never overtook one ahead of it that the same agent could have taken.
#[test]
fn random_runs_never_double_reserve_or_reserve_an_ineligible_agent() {
    let statuses = ["Available", "Available, Forward", "At Lunch", "Available, No ACD", "Gone Home"];
    for seed in 0..60u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let names: Vec<String> = (0..8).map(|i| format!("agent{i}")).collect();
        let skills: [&'static str; 2] = ["fr", "de"];
        let specs: Vec<OwnedAgentSpec> = names
            .iter()
            .map(|name| {
                let have = random_skills(&mut rng, &skills, 0.6);
                (name.clone(), rng.gen_range(1..=3), have)
            })
            .collect();
        let agents: Vec<AgentSpec> =
            specs.iter().map(|(name, site, skills)| (name.as_str(), *site, skills.as_slice())).collect();
        let mut state = world(3, &agents);
        let mut now = 10_000u64;
        let mut next_id = 0;
        let mut reserved: BTreeMap<String, String> = BTreeMap::new();
        for step in 0..400 {
            now += rng.gen_range(0..3_000);
            let open: Vec<String> = state
                .routing
                .interactions
                .iter()
                .filter(|(_, i)| !matches!(i.stage, Stage::Finished { .. }))
                .map(|(id, _)| id.clone())
                .collect();
            let pick = |rng: &mut StdRng, list: &[String]| list.get(rng.gen_range(0..list.len().max(1))).cloned();
            let name = names[rng.gen_range(0..names.len())].clone();
            let command = match rng.gen_range(0..100) {
                0..=24 => status(&name, statuses[rng.gen_range(0..statuses.len())]),
                25..=29 => Command::LogOn { username: name, site: rng.gen_range(1..=3), server: String::new() },
                30..=33 => Command::LogOff { username: name, reason: "user".into() },
                34..=35 => Command::RevokeLease { site: rng.gen_range(1..=3) },
                36..=38 => Command::GrantLease { site: rng.gen_range(1..=3), ttl_ms: rng.gen_range(5_000..60_000) },
                39..=59 => {
                    next_id += 1;
                    let wanted = random_skills(&mut rng, &skills, 0.3);
                    route(&format!("call-{next_id}"), rng.gen_range(1..=3), &wanted, rng.gen_range(0..3))
                }
                60..=74 => match pick(&mut rng, &open) {
                    Some(id) => Command::AcceptInteraction { interaction_id: id, agent: None },
                    None => Command::Tick,
                },
                75..=80 => match pick(&mut rng, &open) {
                    Some(id) => {
                        Command::RejectInteraction { interaction_id: id, agent: None, not_answering: rng.gen_bool(0.5) }
                    }
                    None => Command::Tick,
                },
                81..=84 => match pick(&mut rng, &open) {
                    Some(id) => Command::CancelInteraction { interaction_id: id },
                    None => Command::Tick,
                },
                85..=94 => {
                    let on_phone: Vec<(String, String)> = state
                        .presence
                        .iter()
                        .flat_map(|(user, p)| p.interactions.iter().map(move |id| (user.to_string(), id.clone())))
                        .collect();
                    match on_phone.get(rng.gen_range(0..on_phone.len().max(1))) {
                        Some((user, id)) => {
                            Command::EndInteraction { username: user.clone(), interaction_id: id.clone() }
                        }
                        None => Command::Tick,
                    }
                }
                _ => Command::Tick,
            };
            let queued_before: Vec<(u32, u64, String)> = state
                .routing
                .interactions
                .iter()
                .filter(|(_, i)| i.stage == Stage::Queued)
                .map(|(id, i)| (u32::MAX - i.request.priority, i.seq, id.clone()))
                .collect();
            let context = format!("seed {seed} step {step}: {command:?}");
            let Ok(events) = apply(&mut state, now, command) else { continue };
            for event in &events {
                match event {
                    Event::AgentReserved { interaction_id, agent, .. } => {
                        let agent = agent.to_lowercase();
                        assert!(
                            reserved.insert(agent.clone(), interaction_id.clone()).is_none(),
                            "{context}: {agent} reserved twice"
                        );
                    }
                    Event::ReservationAccepted { agent, .. } | Event::ReservationReleased { agent, .. } => {
                        reserved.remove(&agent.to_lowercase());
                    }
                    Event::InteractionCancelled { interaction_id, .. } => reserved.retain(|_, id| id != interaction_id),
                    _ => {}
                }
            }
            for event in &events {
                let Event::AgentReserved { interaction_id, agent, .. } = event else { continue };
                let agent = agent.to_lowercase();
                if reserved.get(&agent) != Some(interaction_id) {
                    continue; // released again within the same entry
                }
                assert!(
                    qualifies(&state, &agent, interaction_id),
                    "{context}: {agent} did not qualify for {interaction_id}"
                );
                // Taken from the queue: nothing still queued ahead of it was the agent's to take.
                if let Some((priority, seq, _)) = queued_before.iter().find(|(_, _, id)| id == interaction_id) {
                    for (p, s, ahead) in &queued_before {
                        if (p, s) < (priority, seq) && stage(&state, ahead) == Stage::Queued {
                            assert!(
                                !qualifies(&state, &agent, ahead),
                                "{context}: {agent} took {interaction_id} while {ahead} was ahead in the queue"
                            );
                        }
                    }
                }
            }
            let live: BTreeMap<String, String> = state
                .routing
                .interactions
                .iter()
                .filter_map(|(id, i)| match &i.stage {
                    Stage::Reserved { agent, .. } => Some((agent.clone(), id.clone())),
                    _ => None,
                })
                .collect();
            assert_eq!(live, reserved, "{context}: reservations disagree with the events");
        }
    }
}
