//! Inter-site messages and notes in the state machine: queues in id order, broadcast to every
//! other active site, bounded queues, requests and responses by correlation id, acknowledgement,
//! notes with typed attributes and expiry by entry time.

use std::collections::BTreeMap;

use collective_statemachine::messaging::{Attribute, Destination, Element, MessageKind, QueueLimits, UpdateOp};
use collective_statemachine::{Command, Event, Rejection, SiteSpec, State, TrustedAccess};

mod common;
use common::{apply, HASH};

fn sites(active: &[(u32, bool)]) -> State {
    let mut state = State::new();
    for &(id, active) in active {
        let site = SiteSpec {
            id,
            name: format!("Site {id}"),
            phone: "+1 555 0100".into(),
            password_hash: HASH.into(),
            note_id_dial_string: String::new(),
            active,
            servers: vec![format!("cic{id}")],
            trusted_access: TrustedAccess::default(),
        };
        apply(&mut state, 1_000, Command::AddSite(site)).unwrap();
    }
    state
}

fn send(from_site: u32, to: Destination, kind: MessageKind, elements: Vec<Element>) -> Command {
    Command::SendMessage { from_site, to, object_id: "Orders".into(), event_id: "New".into(), kind, elements }
}

fn queued_ids(state: &State, site: u32) -> Vec<u64> {
    state.messaging.queues.get(&site).map(|q| q.deliveries.iter().map(|d| d.id).collect()).unwrap_or_default()
}

#[test]
fn events_queue_in_order_and_acknowledged_ones_leave() {
    let mut state = sites(&[(1, true), (2, true)]);
    for i in 0..3 {
        let elements = vec![Element::String(format!("hello {i}")), Element::Integer(i)];
        apply(&mut state, 2_000, send(1, Destination::Site(2), MessageKind::Event, elements)).unwrap();
    }
    assert_eq!(queued_ids(&state, 2), vec![1, 2, 3]);
    let delivery = &state.messaging.queues[&2].deliveries[0];
    assert_eq!((delivery.from_site, delivery.correlation_id, delivery.response_destination), (1, 0, 0));
    assert_eq!(
        apply(&mut state, 2_000, Command::AckMessages { site: 2, ids: vec![1, 3, 99] }).unwrap(),
        vec![Event::MessagesAcked { site: 2, ids: vec![1, 3] }]
    );
    assert_eq!(queued_ids(&state, 2), vec![2]);
    assert_eq!(
        apply(&mut state, 2_000, Command::AckMessages { site: 2, ids: vec![1] }).unwrap(),
        vec![],
        "twice is harmless"
    );
}

#[test]
fn broadcast_reaches_every_other_active_site_once() {
    let mut state = sites(&[(1, true), (2, true), (3, true), (4, false)]);
    let events = apply(&mut state, 2_000, send(1, Destination::AllOthers, MessageKind::Event, vec![])).unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(
        (queued_ids(&state, 1), queued_ids(&state, 2), queued_ids(&state, 3), queued_ids(&state, 4)),
        (vec![], vec![1], vec![2], vec![])
    );
    let alone = &mut sites(&[(1, true), (2, false)]);
    assert!(matches!(
        apply(alone, 2_000, send(1, Destination::AllOthers, MessageKind::Event, vec![])),
        Err(Rejection::FailedPrecondition { .. })
    ));
}

#[test]
fn unknown_inactive_and_full_destinations_are_refused() {
    let mut state = sites(&[(1, true), (2, true), (3, false)]);
    assert!(matches!(
        apply(&mut state, 2_000, send(1, Destination::Site(9), MessageKind::Event, vec![])),
        Err(Rejection::NotFound { .. })
    ));
    assert!(matches!(
        apply(&mut state, 2_000, send(1, Destination::Site(3), MessageKind::Event, vec![])),
        Err(Rejection::FailedPrecondition { .. })
    ));
    apply(&mut state, 2_000, Command::SetQueueLimits(QueueLimits { messages: 2, bytes: 1 << 20 })).unwrap();
    apply(&mut state, 2_000, send(1, Destination::Site(2), MessageKind::Event, vec![])).unwrap();
    apply(&mut state, 2_000, send(1, Destination::Site(2), MessageKind::Event, vec![])).unwrap();
    assert_eq!(
        apply(&mut state, 2_000, send(1, Destination::Site(2), MessageKind::Event, vec![])),
        Err(Rejection::LimitReached { what: "queued messages for site 2".into(), limit: 2 })
    );
    // A broadcast is all or nothing: site 2 is full, so site 1 gets nothing either.
    apply(&mut state, 2_000, Command::SetSiteActive { site: 3, active: true }).unwrap();
    assert!(apply(&mut state, 2_000, send(3, Destination::AllOthers, MessageKind::Event, vec![])).is_err());
    assert_eq!(queued_ids(&state, 1), Vec::<u64>::new());
}

#[test]
fn a_response_finds_its_request_by_correlation_id() {
    let mut state = sites(&[(1, true), (2, true), (3, true)]);
    let events = apply(
        &mut state,
        2_000,
        send(1, Destination::Site(2), MessageKind::Request { timeout_ms: 5_000 }, vec![Element::Integer(7)]),
    )
    .unwrap();
    let Event::MessageQueued(request) = &events[0] else { panic!("{events:?}") };
    assert_eq!((request.correlation_id, request.response_destination), (request.id, 1));
    let correlation_id = request.correlation_id;
    let respond = |from: u32, to: u32, correlation_id: u64| {
        send(from, Destination::Site(to), MessageKind::Response { correlation_id }, vec![Element::Integer(14)])
    };
    assert!(matches!(apply(&mut state, 2_100, respond(2, 1, 999)), Err(Rejection::NotFound { .. })));
    assert!(matches!(
        apply(&mut state, 2_100, respond(2, 3, correlation_id)),
        Err(Rejection::FailedPrecondition { .. })
    ));
    assert!(matches!(
        apply(&mut state, 2_100, respond(3, 1, correlation_id)),
        Err(Rejection::FailedPrecondition { .. })
    ));
    apply(&mut state, 2_100, respond(2, 1, correlation_id)).unwrap();
    assert!(matches!(apply(&mut state, 2_100, respond(2, 1, correlation_id)), Err(Rejection::AlreadyExists { .. })));
    let response = state.messaging.requests[&correlation_id].response.clone().unwrap();
    assert_eq!(response.elements, vec![Element::Integer(14)]);
    assert_eq!(queued_ids(&state, 1), Vec::<u64>::new(), "a response waits with its request, not in a queue");
    apply(&mut state, 2_200, Command::CloseRequest { correlation_id, reason: "answered".into() }).unwrap();
    assert!(state.messaging.requests.is_empty());
    // A request nobody closes expires after its timeout and the grace period.
    apply(&mut state, 3_000, send(1, Destination::Site(2), MessageKind::Request { timeout_ms: 1_000 }, vec![]))
        .unwrap();
    let due = state.next_timer_ms().unwrap();
    assert_eq!(due, 3_000 + 1_000 + collective_statemachine::limits::REQUEST_GRACE_MS);
    assert_eq!(apply(&mut state, due - 1, Command::Tick).unwrap(), vec![]);
    assert!(matches!(apply(&mut state, due, Command::Tick).unwrap()[..], [Event::RequestClosed { .. }]));
}

#[test]
fn notes_have_typed_attributes_and_expire_by_entry_time() {
    let mut state = sites(&[(1, true)]);
    let update = |attribute: &str, op: UpdateOp, values: Attribute| Command::UpdateNoteAttribute {
        site: 1,
        name: "Order".into(),
        attribute: attribute.into(),
        op,
        values,
    };
    assert!(matches!(
        apply(&mut state, 1_000, update("n", UpdateOp::Replace, Attribute::Integer(vec![1]))),
        Err(Rejection::NotFound { .. })
    ));
    apply(&mut state, 1_000, Command::CreateNote { site: 1, name: "Order".into(), ttl_minutes: Some(1) }).unwrap();
    assert!(matches!(
        apply(&mut state, 1_000, Command::CreateNote { site: 1, name: "order".into(), ttl_minutes: None }),
        Err(Rejection::AlreadyExists { .. })
    ));
    assert!(
        matches!(
            apply(&mut state, 1_000, update("n", UpdateOp::Append, Attribute::Integer(vec![1]))),
            Err(Rejection::NotFound { .. })
        ),
        "append needs the attribute"
    );
    apply(&mut state, 1_000, update("n", UpdateOp::Replace, Attribute::Integer(vec![1, 2, 2]))).unwrap();
    apply(&mut state, 1_000, update("n", UpdateOp::Append, Attribute::Integer(vec![3]))).unwrap();
    apply(&mut state, 1_000, update("n", UpdateOp::Remove, Attribute::Integer(vec![2]))).unwrap();
    assert!(matches!(
        apply(&mut state, 1_000, update("n", UpdateOp::Append, Attribute::String(vec!["x".into()]))),
        Err(Rejection::FailedPrecondition { .. })
    ));
    let note = state.messaging.note(1, "ORDER", 1_000).unwrap();
    assert_eq!(note.value.attributes, BTreeMap::from([("n".to_string(), Attribute::Integer(vec![1, 3]))]));
    // Gone for every command at its deadline, and removed by the Tick.
    assert_eq!(state.next_timer_ms(), Some(61_000));
    assert!(matches!(
        apply(&mut state, 61_000, Command::RemoveNote { site: 1, name: "Order".into() }),
        Err(Rejection::NotFound { .. })
    ));
    assert_eq!(
        apply(&mut state, 61_000, Command::Tick).unwrap(),
        vec![Event::NoteRemoved { site: 1, name: "Order".into(), reason: "expired".into() }]
    );
    assert!(state.messaging.notes.is_empty());
}

#[test]
fn a_renumbered_site_keeps_its_queue_and_notes() {
    let mut state = sites(&[(1, true), (2, true)]);
    apply(&mut state, 2_000, send(1, Destination::Site(2), MessageKind::Event, vec![])).unwrap();
    apply(&mut state, 2_000, Command::CreateNote { site: 2, name: "N".into(), ttl_minutes: None }).unwrap();
    apply(&mut state, 2_000, Command::ChangeSiteId { old: 2, new: 20 }).unwrap();
    assert_eq!(queued_ids(&state, 20), vec![1]);
    assert!(state.messaging.note(20, "N", 2_000).is_ok());
}

#[test]
fn a_request_without_timeout_still_ends_and_renumbering_reaches_its_response() {
    let mut state = sites(&[(1, true), (2, true)]);
    let events =
        apply(&mut state, 1_000, send(1, Destination::Site(2), MessageKind::Request { timeout_ms: 0 }, vec![]))
            .unwrap();
    let Event::MessageQueued(request) = &events[0] else { panic!("{events:?}") };
    let correlation_id = request.correlation_id;
    let limit =
        collective_statemachine::limits::REQUEST_TIMEOUT_MS_MAX + collective_statemachine::limits::REQUEST_GRACE_MS;
    assert_eq!(state.messaging.requests[&correlation_id].expires_at_ms, Some(1_000 + limit));
    let response = send(2, Destination::Site(1), MessageKind::Response { correlation_id }, vec![]);
    apply(&mut state, 2_000, response).unwrap();
    apply(&mut state, 2_000, Command::ChangeSiteId { old: 2, new: 20 }).unwrap();
    let stored = state.messaging.requests[&correlation_id].response.clone().unwrap();
    assert_eq!((stored.from_site, stored.to_site), (20, 1));
}
