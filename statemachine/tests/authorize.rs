//! Authorization inside `apply`: what a site may change (presence of users homed or logged on at
//! it, directory entries of its home users, its own lease, messages, notes and calls), that
//! collective-wide configuration needs an administrator or a master-administrator site, that a
//! refusal changes nothing, that every event records its principal, and the trusted-access
//! answer for roaming users.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::messaging::{Destination, MessageKind};
use collective_statemachine::routing::{MediaType, RouteRequest};
use collective_statemachine::{
    Command, Envelope, EventRecord, Principal, Rejection, SiteSpec, State, TrustedAccess, UserSpec,
};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

fn apply(state: &mut State, principal: Principal, command: Command) -> Result<Vec<EventRecord>, Rejection> {
    let before = state.clone();
    let result = state.apply(&Envelope { at_ms: 10_000, principal, command });
    state.check_invariants();
    if result.is_err() {
        assert_eq!(*state, before, "a refused command changed the state");
    }
    result
}

fn admin(state: &mut State, command: Command) {
    let kind = command.kind();
    apply(state, Principal::Admin("root".into()), command).unwrap_or_else(|e| panic!("{kind}: {e}"));
}

fn user(name: &str, home_site: u32) -> UserSpec {
    UserSpec {
        username: name.into(),
        display_name: name.into(),
        email: format!("{name}@example.com"),
        home_site,
        extension: (name.bytes().fold(7u64, |acc, b| acc * 31 + u64::from(b)) % 100_000 + 100).to_string(),
        skills: BTreeMap::new(),
        licences: BTreeSet::new(),
    }
}

/// Sites 1 and 2, and site 3 whose trusted access makes it a master administrator (and lets
/// roaming users publish handlers). Ann is homed at 1, Bob homed and logged on at 2, Cara homed
/// at 2 and roaming at 1.
fn world() -> State {
    let mut state = State::new();
    for id in 1..=3 {
        let spec = SiteSpec {
            id,
            name: format!("Site {id}"),
            phone: "+1 555 0100".into(),
            password_hash: HASH.into(),
            note_id_dial_string: String::new(),
            active: true,
            servers: vec![format!("cic{id}")],
            trusted_access: TrustedAccess {
                publish_handlers: id == 3,
                manage_handlers: false,
                master_administrator: id == 3,
            },
        };
        admin(&mut state, Command::AddSite(spec));
        admin(&mut state, Command::GrantLease { site: id, ttl_ms: 300_000 });
    }
    admin(&mut state, Command::AddUser(user("ann", 1)));
    admin(&mut state, Command::AddUser(user("bob", 2)));
    admin(&mut state, Command::AddUser(user("cara", 2)));
    admin(&mut state, Command::LogOn { username: "bob".into(), site: 2, server: String::new() });
    admin(&mut state, Command::LogOn { username: "cara".into(), site: 1, server: String::new() });
    state
}

fn set_status(username: &str, key: &str) -> Command {
    Command::SetStatus { username: username.into(), status_key: key.into(), until_ms: None, detail: String::new() }
}

fn denied(result: Result<Vec<EventRecord>, Rejection>) -> String {
    match result {
        Err(Rejection::PermissionDenied { reason }) => reason,
        other => panic!("expected PERMISSION_DENIED, got {other:?}"),
    }
}

#[test]
fn a_site_changes_presence_only_for_users_homed_or_logged_on_at_it() {
    let mut state = world();
    // Bob is homed at and logged on at site 2: site 1 may not touch him.
    let reason = denied(apply(&mut state, Principal::Site(1), set_status("bob", "Away from desk")));
    assert!(reason.contains("bob") && reason.contains("site 1"), "{reason}");
    denied(apply(&mut state, Principal::Site(1), Command::LogOff { username: "bob".into(), reason: "user".into() }));
    let start = Command::StartInteraction { username: "bob".into(), interaction_id: "i1".into() };
    denied(apply(&mut state, Principal::Site(1), start));
    assert_eq!(state.presence["bob"].status_key, "Available");

    // Cara roams at site 1: both her current site and her home site may change her status.
    apply(&mut state, Principal::Site(1), set_status("cara", "Away from desk")).unwrap();
    apply(&mut state, Principal::Site(2), set_status("cara", "At Play")).unwrap();
    // A master-administrator site and an administrator may change anyone.
    apply(&mut state, Principal::Site(3), set_status("bob", "Away from desk")).unwrap();
    apply(&mut state, Principal::Admin("root".into()), set_status("bob", "At Play")).unwrap();
    assert_eq!(state.presence["bob"].status_key, "At Play");
}

#[test]
fn a_site_logs_users_on_at_itself_and_its_home_users_anywhere() {
    let mut state = world();
    // Ann (homed at 1) arrives at site 2: site 2 logs her on at itself.
    apply(&mut state, Principal::Site(2), Command::LogOn { username: "ann".into(), site: 2, server: String::new() })
        .unwrap();
    // Site 1 may not log Bob on at site 2, but site 2 may log its own Bob on at site 1.
    let elsewhere = Command::LogOn { username: "bob".into(), site: 2, server: String::new() };
    denied(apply(&mut state, Principal::Site(1), elsewhere));
    // Bob is logged on at site 2: site 1 may not pull him over (that would log him off there).
    let takeover = Command::LogOn { username: "bob".into(), site: 1, server: String::new() };
    let reason = denied(apply(&mut state, Principal::Site(1), takeover.clone()));
    assert!(reason.contains("logged on at site 2"), "{reason}");
    apply(&mut state, Principal::Site(2), takeover).unwrap();
    // Once logged off, site 1 may log him on there.
    apply(&mut state, Principal::Site(2), Command::LogOff { username: "bob".into(), reason: "user".into() }).unwrap();
    apply(&mut state, Principal::Site(1), Command::LogOn { username: "bob".into(), site: 1, server: String::new() })
        .unwrap();
}

#[test]
fn a_site_changes_directory_entries_only_of_its_home_users() {
    let mut state = world();
    denied(apply(&mut state, Principal::Site(1), Command::AddUser(user("dan", 2))));
    apply(&mut state, Principal::Site(1), Command::AddUser(user("dan", 1))).unwrap();
    // Cara is logged on at site 1 but homed at 2: her entry is site 2's.
    let mut cara = user("cara", 2);
    cara.display_name = "Cara C.".into();
    denied(apply(&mut state, Principal::Site(1), Command::UpdateUser(cara.clone())));
    apply(&mut state, Principal::Site(2), Command::UpdateUser(cara)).unwrap();
    // Moving a home user to another site needs an administrator.
    let reason = denied(apply(&mut state, Principal::Site(1), Command::UpdateUser(user("ann", 2))));
    assert!(reason.contains("moved"), "{reason}");
    denied(apply(&mut state, Principal::Site(1), Command::DeleteUser { username: "bob".into() }));
    apply(&mut state, Principal::Site(1), Command::DeleteUser { username: "dan".into() }).unwrap();
    assert!(state.users.contains_key("bob") && !state.users.contains_key("dan"));
}

#[test]
fn collective_wide_configuration_needs_an_administrator_or_a_master_administrator_site() {
    let mut state = world();
    let workgroup =
        || Command::AddWorkgroup { name: "Sales".into(), spans_sites: true, required_skills: BTreeMap::new() };
    for command in [
        workgroup(),
        Command::SetSiteActive { site: 2, active: false },
        Command::SetSiteActive { site: 1, active: false },
        Command::SetRouteCost { from: 1, to: 2, cost: 10 },
    ] {
        let reason = denied(apply(&mut state, Principal::Site(1), command));
        assert!(reason.contains("administrator"), "{reason}");
    }
    apply(&mut state, Principal::Site(3), workgroup()).unwrap();
    assert!(state.workgroups.contains_key("sales"));
}

#[test]
fn a_site_acts_only_for_its_own_lease_messages_notes_and_calls() {
    let mut state = world();
    denied(apply(&mut state, Principal::Site(1), Command::KeepAlive { site: 2 }));
    apply(&mut state, Principal::Site(1), Command::KeepAlive { site: 1 }).unwrap();
    let send = |from_site| Command::SendMessage {
        from_site,
        to: Destination::Site(1),
        object_id: "o".into(),
        event_id: "e".into(),
        kind: MessageKind::Event,
        elements: Vec::new(),
    };
    denied(apply(&mut state, Principal::Site(1), send(2)));
    apply(&mut state, Principal::Site(2), send(2)).unwrap();
    denied(apply(&mut state, Principal::Site(2), Command::AckMessages { site: 1, ids: vec![1] }));
    assert!(state.authorize_site_read(&Principal::Site(2), 1).is_err());
    assert!(state.authorize_site_read(&Principal::Site(1), 1).is_ok());
    assert!(state.authorize_site_read(&Principal::Site(3), 1).is_ok());
    let note = |site| Command::CreateNote { site, name: "n".into(), ttl_minutes: None };
    denied(apply(&mut state, Principal::Site(1), note(2)));
    apply(&mut state, Principal::Site(2), note(2)).unwrap();

    admin(
        &mut state,
        Command::AddWorkgroup { name: "Support".into(), spans_sites: true, required_skills: BTreeMap::new() },
    );
    admin(&mut state, Command::AddWorkgroupMember { workgroup: "support".into(), username: "bob".into() });
    let route = |origin_site| {
        Command::RouteInteraction(RouteRequest {
            interaction_id: format!("call-{origin_site}"),
            media: MediaType::Call,
            origin_site,
            workgroup: "support".into(),
            skills: BTreeMap::new(),
            priority: 0,
        })
    };
    denied(apply(&mut state, Principal::Site(1), route(2)));
    apply(&mut state, Principal::Site(1), route(1)).unwrap();
    // The call is reserved to Bob (site 2): only a site acting for Bob accepts it, and only the
    // origin site cancels it.
    let accept = Command::AcceptInteraction { interaction_id: "call-1".into(), agent: None };
    denied(apply(&mut state, Principal::Site(1), accept.clone()));
    denied(apply(&mut state, Principal::Site(2), Command::CancelInteraction { interaction_id: "call-1".into() }));
    apply(&mut state, Principal::Site(2), accept).unwrap();
}

#[test]
fn every_event_records_its_principal() {
    let mut state = world();
    let records = apply(&mut state, Principal::Site(1), set_status("cara", "At Play")).unwrap();
    assert!(!records.is_empty());
    assert!(records.iter().all(|r| r.principal == Principal::Site(1)), "{records:?}");
    let records = apply(&mut state, Principal::Admin("root".into()), set_status("cara", "Available")).unwrap();
    assert!(records.iter().all(|r| r.principal.to_string() == "admin:root"));
}

#[test]
fn trusted_access_answers_what_a_roaming_user_may_do() {
    let state = world();
    let home = state.trusted_access("bob", 2).unwrap();
    assert!(home.home && home.logged_on && home.publish_handlers && home.master_administrator);
    let at_one = state.trusted_access("cara", 1).unwrap();
    assert!(!at_one.home && at_one.logged_on && !at_one.publish_handlers && !at_one.master_administrator);
    let at_three = state.trusted_access("ann", 3).unwrap();
    assert!(!at_three.logged_on && at_three.publish_handlers && !at_three.manage_handlers);
    assert!(at_three.master_administrator);
    assert!(matches!(state.trusted_access("nobody", 1), Err(Rejection::NotFound { .. })));
    assert!(matches!(state.trusted_access("ann", 9), Err(Rejection::NotFound { .. })));
}
