//! A seeded workload: commands drawn from a small universe of sites, users and workgroups so that
//! collisions, conflicts and rejections happen often.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::messaging::{Destination, Element, MessageKind, QueueLimits};
use collective_statemachine::notes::{Attribute, UpdateOp};
use collective_statemachine::routing::{MediaType, RouteRequest, Settings, Strategy};
use collective_statemachine::{Command, SiteSpec, State, TrustedAccess, UserSpec};
use rand::rngs::StdRng;
use rand::Rng;

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
const STATUSES: [&str; 6] = ["Available", "Gone Home", "At Lunch", "On Break", "Code Red", "No Such Status"];

/// Draws the next command. Reads the state only to pick plausible targets.
pub fn next_command(rng: &mut StdRng, state: &State, at_ms: u64) -> Command {
    let site = rng.gen_range(1..=4u32);
    let user = format!("user{}", rng.gen_range(0..24));
    let workgroup = ["Support", "Sales", "Billing"][rng.gen_range(0..3)].to_string();
    match rng.gen_range(0..100) {
        0..=4 => Command::AddSite(SiteSpec {
            id: site,
            name: format!("Site {}", rng.gen_range(1..=5)),
            phone: "+1 555 0100".into(),
            password_hash: HASH.into(),
            note_id_dial_string: String::new(),
            active: rng.gen_bool(0.9),
            servers: vec![format!("cic{site}")],
            trusted_access: TrustedAccess::default(),
        }),
        5..=6 => Command::SetSiteActive { site, active: rng.gen_bool(0.7) },
        7..=16 => Command::AddUser(UserSpec {
            username: user.clone(),
            display_name: user.to_uppercase(),
            email: format!("{user}@example.com"),
            home_site: site,
            extension: format!("{}", 100 + rng.gen_range(0..12)),
            skills: BTreeMap::from([("english".to_string(), rng.gen_range(1..=100))]),
            licences: BTreeSet::new(),
        }),
        17..=18 => Command::DeleteUser { username: user },
        19..=21 => {
            Command::AddWorkgroup { name: workgroup, spans_sites: rng.gen_bool(0.6), required_skills: BTreeMap::new() }
        }
        22 => Command::DeleteWorkgroup { name: workgroup },
        23..=32 => Command::AddWorkgroupMember { workgroup, username: user },
        33..=37 => Command::RemoveWorkgroupMember { workgroup, username: user },
        38..=62 => {
            let status_key = STATUSES[rng.gen_range(0..STATUSES.len())].to_string();
            let needs_until = state.catalog.get(&status_key).is_some_and(|d| d.requires_date || d.requires_time);
            let until_ms = (needs_until && rng.gen_bool(0.9)).then(|| at_ms + rng.gen_range(1..3_600_000));
            Command::SetStatus { username: user, status_key, until_ms, detail: String::new() }
        }
        63..=77 => Command::LogOn { username: user, site, server: String::new() },
        78..=85 => Command::LogOff { username: user, reason: "user".into() },
        86..=87 => Command::GrantLease { site, ttl_ms: rng.gen_range(1_000..5_000) },
        88 => Command::KeepAlive { site },
        89 => Command::Tick,
        90 => match rng.gen_range(0..4) {
            0 => Command::ChangeSiteId { old: site, new: rng.gen_range(1..=6) },
            1 => Command::RevokeLease { site },
            _ => Command::RenewLeases,
        },
        91..=92 => Command::StartInteraction { username: user, interaction_id: format!("call{}", rng.gen_range(0..4)) },
        93 => Command::EndInteraction { username: user, interaction_id: format!("call{}", rng.gen_range(0..4)) },
        94..=96 => next_routing_command(rng, &workgroup, site),
        _ => next_messaging_command(rng, state, site),
    }
}

/// Routes, accepts, rejects, cancels, settings and costs over a few interaction ids (so repeats,
/// conflicts and interactions ending under a reservation happen).
fn next_routing_command(rng: &mut StdRng, workgroup: &str, site: u32) -> Command {
    let interaction_id = format!("route{}", rng.gen_range(0..12));
    match rng.gen_range(0..10) {
        0..=3 => Command::RouteInteraction(RouteRequest {
            interaction_id,
            media: MediaType::Call,
            origin_site: site,
            workgroup: workgroup.to_string(),
            skills: if rng.gen_bool(0.3) {
                BTreeMap::from([("english".to_string(), rng.gen_range(1..=100))])
            } else {
                BTreeMap::new()
            },
            priority: rng.gen_range(0..3),
        }),
        4..=5 => Command::AcceptInteraction { interaction_id, agent: None },
        6 => Command::RejectInteraction {
            interaction_id,
            agent: rng.gen_bool(0.5).then(|| format!("user{}", rng.gen_range(0..24))),
            not_answering: rng.gen_bool(0.5),
        },
        7 => Command::CancelInteraction { interaction_id },
        8 => Command::SetRoutingSettings {
            workgroup: workgroup.to_string(),
            settings: Settings {
                strategy: Strategy::ALL[rng.gen_range(0..3)],
                local_margin_ms: rng.gen_range(0..3) * 1_000,
                reservation_ttl_ms: rng.gen_range(1_000..5_000),
                not_answering_on_timeout: rng.gen_bool(0.5),
                queue_max: rng.gen_range(1..5),
            },
        },
        _ => Command::SetRouteCost { from: site, to: rng.gen_range(1..=4), cost: rng.gen_range(0..3) * 1_000 },
    }
}

/// Messages, acknowledgements, requests, responses and notes between the same few sites.
fn next_messaging_command(rng: &mut StdRng, state: &State, site: u32) -> Command {
    let other = rng.gen_range(1..=4u32);
    let note = ["Order", "Case", "Call"][rng.gen_range(0..3)].to_string();
    let elements = vec![Element::String(format!("m{}", rng.gen_range(0..100))), Element::Integer(rng.gen())];
    match rng.gen_range(0..9) {
        0 | 1 => Command::SendMessage {
            from_site: site,
            to: if rng.gen_bool(0.2) { Destination::AllOthers } else { Destination::Site(other) },
            object_id: "Orders".into(),
            event_id: "New".into(),
            kind: MessageKind::Event,
            elements,
        },
        2 => Command::SendMessage {
            from_site: site,
            to: Destination::Site(other),
            object_id: "Orders".into(),
            event_id: "Price".into(),
            kind: MessageKind::Request { timeout_ms: rng.gen_range(0..5_000) },
            elements,
        },
        3 => {
            // Answer some open request (or a made-up one).
            let open = state.messaging.requests.iter().next().map(|(id, r)| (*id, r.to_site, r.from_site));
            let (correlation_id, from_site, to) = open.unwrap_or((rng.gen_range(1..50), site, other));
            Command::SendMessage {
                from_site,
                to: Destination::Site(to),
                object_id: "response".into(),
                event_id: "response".into(),
                kind: MessageKind::Response { correlation_id },
                elements,
            }
        }
        4 => {
            let ids = state
                .messaging
                .queues
                .get(&site)
                .map(|q| q.deliveries.iter().take(rng.gen_range(1..4)).map(|d| d.id).collect())
                .unwrap_or_else(|| vec![rng.gen_range(1..50)]);
            Command::AckMessages { site, ids }
        }
        5 => Command::CreateNote { site, name: note, ttl_minutes: rng.gen_bool(0.5).then(|| rng.gen_range(1..3)) },
        6 => Command::UpdateNoteAttribute {
            site,
            name: note,
            attribute: ["qty", "tags"][rng.gen_range(0..2)].into(),
            op: [UpdateOp::Append, UpdateOp::Replace, UpdateOp::Remove][rng.gen_range(0..3)],
            values: if rng.gen_bool(0.7) {
                Attribute::Integer(vec![rng.gen_range(0..5)])
            } else {
                Attribute::String(vec!["x".into()])
            },
        },
        7 => Command::RemoveNote { site, name: note },
        _ => match state.messaging.requests.keys().next() {
            Some(id) => Command::CloseRequest { correlation_id: *id, reason: "answered".into() },
            None => Command::SetQueueLimits(QueueLimits { messages: rng.gen_range(1..20), bytes: 1 << 20 }),
        },
    }
}
