//! State machine tests: each command produces exactly the expected events, and every rule
//! rejects deterministically with nothing changed. `check_invariants` runs after every apply.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::{
    Command, Envelope, Event, Principal, Rejection, SearchQuery, SiteSpec, State, StatusGroup, TrustedAccess, UserSpec,
};

const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA";

struct Fixture {
    state: State,
    at_ms: u64,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture { state: State::new(), at_ms: 1_000_000 }
    }

    /// Applies a command and returns its events; checks invariants, and on rejection checks that
    /// nothing changed.
    fn apply(&mut self, command: Command) -> Result<Vec<Event>, Rejection> {
        self.at_ms += 1_000;
        let before = self.state.clone();
        let result =
            self.state.apply(&Envelope { at_ms: self.at_ms, principal: Principal::Admin("test".into()), command });
        self.state.check_invariants();
        match result {
            Ok(records) => {
                for (offset, record) in records.iter().enumerate() {
                    assert_eq!(record.revision, before.revision + 1 + offset as u64, "revisions are gap-free");
                    assert_eq!(record.at_ms, self.at_ms);
                }
                Ok(records.into_iter().map(|r| r.event).collect())
            }
            Err(rejection) => {
                assert_eq!(self.state, before, "a rejected command changed the state");
                Err(rejection)
            }
        }
    }

    fn ok(&mut self, command: Command) -> Vec<Event> {
        self.apply(command).expect("command accepted")
    }
}

fn site(id: u32, name: &str) -> SiteSpec {
    SiteSpec {
        id,
        name: name.into(),
        phone: "+1 317-555 0100".into(),
        password_hash: HASH.into(),
        note_id_dial_string: String::new(),
        active: true,
        servers: vec![format!("cic{id}")],
        trusted_access: TrustedAccess::default(),
    }
}

fn user(name: &str, home_site: u32, extension: &str) -> UserSpec {
    UserSpec {
        username: name.into(),
        display_name: name.to_uppercase(),
        email: format!("{name}@example.com"),
        home_site,
        extension: extension.into(),
        skills: BTreeMap::from([("english".to_string(), 50)]),
        licences: BTreeSet::new(),
    }
}

/// Two sites, users alice (site 1, 8001) and bob (site 2, 8002), spanning workgroup Support.
fn two_sites() -> Fixture {
    let mut f = Fixture::new();
    f.ok(Command::AddSite(site(1, "Indy")));
    f.ok(Command::AddSite(site(2, "Boca")));
    f.ok(Command::AddUser(user("alice", 1, "8001")));
    f.ok(Command::AddUser(user("bob", 2, "8002")));
    f.ok(Command::AddWorkgroup { name: "Support".into(), spans_sites: true, required_skills: BTreeMap::new() });
    f
}

fn invalid_field(result: Result<Vec<Event>, Rejection>) -> String {
    match result {
        Err(Rejection::InvalidArgument { field, .. }) => field,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn add_site_normalises_phone_and_defaults_dial_string() {
    let mut f = Fixture::new();
    let events = f.ok(Command::AddSite(site(7, "Paris")));
    let Event::SiteAdded(added) = &events[0] else { panic!("{events:?}") };
    assert_eq!(events.len(), 1);
    assert_eq!(added.phone, "+13175550100");
    assert_eq!(added.note_id_dial_string, "*90");
}

#[test]
fn site_rules() {
    let mut f = Fixture::new();
    assert_eq!(invalid_field(f.apply(Command::AddSite(site(0, "Zero")))), "site.id");
    assert_eq!(invalid_field(f.apply(Command::AddSite(site(1000, "Big")))), "site.id");
    let mut bad_phone = site(3, "Phone");
    bad_phone.phone = "555-CALL-NOW".into();
    assert_eq!(invalid_field(f.apply(Command::AddSite(bad_phone))), "site.phone");
    assert_eq!(invalid_field(f.apply(Command::AddSite(site(4, "")))), "site.name");
    assert_eq!(invalid_field(f.apply(Command::AddSite(site(4, &"x".repeat(129))))), "site.name");
    let mut clear_password = site(5, "Clear");
    clear_password.password_hash = "secret".into();
    assert_eq!(invalid_field(f.apply(Command::AddSite(clear_password))), "site.password");
    f.ok(Command::AddSite(site(1, "Indy")));
    assert!(
        matches!(f.apply(Command::AddSite(site(1, "Other"))), Err(Rejection::AlreadyExists { field, .. }) if field == "id")
    );
    assert!(
        matches!(f.apply(Command::AddSite(site(2, "INDY"))), Err(Rejection::AlreadyExists { field, .. }) if field == "name")
    );
}

#[test]
fn spanning_membership_emits_spanning_events_and_controls_visibility() {
    let mut f = two_sites();
    assert!(!f.state.visible_at(f.state.user("alice").unwrap(), 2));
    let events = f.ok(Command::AddWorkgroupMember { workgroup: "support".into(), username: "ALICE".into() });
    assert_eq!(
        events,
        vec![
            Event::UserAddedToWorkgroup { workgroup: "Support".into(), username: "alice".into() },
            Event::UserStartedSpanning { username: "alice".into() },
        ]
    );
    assert!(f.state.visible_at(f.state.user("alice").unwrap(), 2));
    let at_site_2 = f.state.search(&SearchQuery { visible_at_site: Some(2), ..SearchQuery::default() });
    assert_eq!(at_site_2.iter().map(|e| e.user.username.as_str()).collect::<Vec<_>>(), vec!["alice", "bob"]);

    let events = f.ok(Command::RemoveWorkgroupMember { workgroup: "Support".into(), username: "alice".into() });
    assert_eq!(
        events,
        vec![
            Event::UserRemovedFromWorkgroup { workgroup: "Support".into(), username: "alice".into() },
            Event::UserStoppedSpanning { username: "alice".into() },
        ]
    );
    assert!(!f.state.visible_at(f.state.user("alice").unwrap(), 2));
}

#[test]
fn extension_rule_names_the_conflicting_user_and_site() {
    let mut f = two_sites();
    // Same extension at another site is fine while neither spans.
    f.ok(Command::AddUser(user("carol", 2, "8001")));
    // Same extension at the same site is not.
    let conflict = f.apply(Command::AddUser(user("dave", 1, "8001"))).unwrap_err();
    assert_eq!(
        conflict,
        Rejection::ExtensionConflict {
            extension: "8001".into(),
            other_user: "alice".into(),
            other_site: 1,
            suggestion: "18001".into()
        }
    );
    // alice cannot span while carol at site 2 has 8001.
    let conflict =
        f.apply(Command::AddWorkgroupMember { workgroup: "Support".into(), username: "alice".into() }).unwrap_err();
    assert!(
        matches!(conflict, Rejection::ExtensionConflict { ref other_user, other_site: 2, .. } if other_user == "carol")
    );
    assert!(conflict.to_string().contains("carol") && conflict.to_string().contains("site 2"));
    // A spanning user's extension blocks new users everywhere.
    f.ok(Command::AddWorkgroupMember { workgroup: "Support".into(), username: "bob".into() });
    let conflict = f.apply(Command::AddUser(user("erin", 1, "8002"))).unwrap_err();
    assert!(
        matches!(conflict, Rejection::ExtensionConflict { ref other_user, other_site: 2, .. } if other_user == "bob")
    );
}

#[test]
fn user_rules() {
    let mut f = two_sites();
    assert!(
        matches!(f.apply(Command::AddUser(user("Alice", 1, "9001"))), Err(Rejection::AlreadyExists { field, .. }) if field == "username")
    );
    let mut same_email = user("zed", 1, "9002");
    same_email.email = "ALICE@example.com".into();
    assert!(
        matches!(f.apply(Command::AddUser(same_email)), Err(Rejection::AlreadyExists { field, .. }) if field == "email")
    );
    assert!(
        matches!(f.apply(Command::AddUser(user("zed", 9, "9003"))), Err(Rejection::FailedPrecondition { field, .. }) if field == "user.home_site")
    );
    assert_eq!(invalid_field(f.apply(Command::AddUser(user("zed", 1, "1")))), "user.extension");
    assert_eq!(invalid_field(f.apply(Command::AddUser(user("zed", 1, "12345678901234567")))), "user.extension");
    assert_eq!(invalid_field(f.apply(Command::AddUser(user("zed", 1, "80a1")))), "user.extension");
    let mut bad_email = user("zed", 1, "9004");
    bad_email.email = "not-an-email".into();
    assert_eq!(invalid_field(f.apply(Command::AddUser(bad_email))), "user.email");
    let mut bad_skill = user("zed", 1, "9005");
    bad_skill.skills.insert("french".into(), 101);
    assert_eq!(invalid_field(f.apply(Command::AddUser(bad_skill))), "user.skills");
}

#[test]
fn status_rules() {
    let mut f = two_sites();
    let set = |key: &str, until_ms: Option<u64>, detail: &str| Command::SetStatus {
        username: "alice".into(),
        status_key: key.into(),
        until_ms,
        detail: detail.into(),
    };
    assert!(matches!(f.apply(set("Dancing", None, "")), Err(Rejection::NotFound { kind, .. }) if kind == "status"));
    assert_eq!(invalid_field(f.apply(set("At Lunch", None, ""))), "until");
    assert_eq!(invalid_field(f.apply(set("At Lunch", Some(10), ""))), "until");
    assert_eq!(invalid_field(f.apply(set("Gone Home", Some(f.at_ms + 60_000), ""))), "until");
    // A client's -1 sent as an unsigned value is no date.
    assert_eq!(invalid_field(f.apply(set("At Lunch", Some(u64::MAX), ""))), "until_ms");
    assert_eq!(invalid_field(f.apply(set("Gone Home", None, &"d".repeat(257)))), "detail");
    let until = f.at_ms + 3_600_000;
    let events = f.ok(set("At Lunch", Some(until), "back at 1"));
    assert_eq!(
        events,
        vec![Event::StatusChanged {
            username: "alice".into(),
            status_key: "At Lunch".into(),
            until_ms: Some(until),
            detail: "back at 1".into()
        }]
    );
}

/// A status's `until` passing: the `Tick` at or after it marks the presence overdue (the status
/// stays, as the vendor's does), no `Tick` before it does, and the next change clears it.
#[test]
fn a_passed_until_marks_the_status_overdue_until_the_next_change() {
    let mut f = two_sites();
    let until = f.at_ms + 10_000;
    f.ok(Command::SetStatus {
        username: "alice".into(),
        status_key: "At Lunch".into(),
        until_ms: Some(until),
        detail: String::new(),
    });
    assert_eq!(f.state.next_timer_ms(), Some(until));
    assert_eq!(f.ok(Command::Tick), vec![]);
    assert!(!f.state.presence["alice"].overdue);
    f.at_ms = until;
    assert_eq!(
        f.ok(Command::Tick),
        vec![Event::StatusOverdue { username: "alice".into(), status_key: "At Lunch".into(), until_ms: until }]
    );
    let presence = &f.state.presence["alice"];
    assert!(presence.overdue && presence.status_key == "At Lunch" && presence.until_ms == Some(until));
    assert_eq!(f.state.next_timer_ms(), None, "an overdue status is not due again");
    assert_eq!(f.ok(Command::Tick), vec![]);
    f.ok(Command::SetStatus {
        username: "alice".into(),
        status_key: "Available".into(),
        until_ms: None,
        detail: String::new(),
    });
    assert!(!f.state.presence["alice"].overdue, "the next change clears it");
    // A deleted user's deadline goes with it.
    f.ok(Command::SetStatus {
        username: "bob".into(),
        status_key: "At Lunch".into(),
        until_ms: Some(f.at_ms + 5_000),
        detail: String::new(),
    });
    f.ok(Command::DeleteUser { username: "bob".into() });
    assert_eq!(f.state.next_timer_ms(), None);
}

#[test]
fn logoff_reverts_non_persistent_status_and_ends_interactions() {
    let mut f = two_sites();
    f.ok(Command::SetStatus {
        username: "alice".into(),
        status_key: "Gone Home".into(),
        until_ms: None,
        detail: String::new(),
    });
    assert_eq!(
        f.ok(Command::LogOn { username: "alice".into(), site: 2, server: String::new() }),
        vec![Event::UserLoggedOn { username: "alice".into(), site: 2, server: "cic2".into() }]
    );
    // Roaming: the current site is where the user logged on.
    assert_eq!(f.state.presence["alice"].logon.as_ref().unwrap().site, 2);
    f.ok(Command::SetStatus {
        username: "alice".into(),
        status_key: "Code Red".into(),
        until_ms: None,
        detail: String::new(),
    });
    f.ok(Command::StartInteraction { username: "alice".into(), interaction_id: "call-1".into() });
    assert!(f.state.presence["alice"].on_phone());
    let events = f.ok(Command::LogOff { username: "alice".into(), reason: "user".into() });
    assert_eq!(
        events,
        vec![
            Event::InteractionEnded { username: "alice".into(), interaction_id: "call-1".into() },
            Event::UserLoggedOff { username: "alice".into(), site: 2, reason: "user".into() },
            Event::StatusChanged {
                username: "alice".into(),
                status_key: "Gone Home".into(),
                until_ms: None,
                detail: String::new()
            },
        ]
    );
    assert!(matches!(
        f.apply(Command::LogOff { username: "alice".into(), reason: "user".into() }),
        Err(Rejection::FailedPrecondition { .. })
    ));
}

#[test]
fn logon_at_another_site_logs_off_first_and_inactive_sites_refuse() {
    let mut f = two_sites();
    f.ok(Command::LogOn { username: "bob".into(), site: 2, server: String::new() });
    assert_eq!(
        f.ok(Command::LogOn { username: "bob".into(), site: 1, server: "cic1".into() }),
        vec![
            Event::UserLoggedOff { username: "bob".into(), site: 2, reason: "logged-on-elsewhere".into() },
            Event::UserLoggedOn { username: "bob".into(), site: 1, server: "cic1".into() },
        ]
    );
    assert_eq!(f.ok(Command::LogOn { username: "bob".into(), site: 1, server: "cic1".into() }), vec![], "idempotent");
    f.ok(Command::SetSiteActive { site: 2, active: false });
    assert!(matches!(
        f.apply(Command::LogOn { username: "alice".into(), site: 2, server: String::new() }),
        Err(Rejection::FailedPrecondition { .. })
    ));
    assert_eq!(
        invalid_field(f.apply(Command::LogOn { username: "alice".into(), site: 1, server: "elsewhere".into() })),
        "server"
    );
}

#[test]
fn resolve_extension_gives_the_current_sites_dial_string() {
    let mut f = two_sites();
    f.ok(Command::AddWorkgroupMember { workgroup: "Support".into(), username: "alice".into() });
    f.ok(Command::LogOn { username: "alice".into(), site: 2, server: String::new() });
    let resolution = f.state.resolve_extension("8001", 2).unwrap();
    assert_eq!((resolution.user.username.as_str(), resolution.current_site), ("alice", 2));
    assert_eq!(resolution.dial_string, "8001@cic2");
    assert_eq!(resolution.tie_line_dial_string, "*908001");
    // bob does not span: site 1 cannot dial him by extension.
    assert!(matches!(f.state.resolve_extension("8002", 1), Err(Rejection::NotFound { .. })));
}

#[test]
fn delete_user_removes_it_everywhere() {
    let mut f = two_sites();
    f.ok(Command::AddWorkgroupMember { workgroup: "Support".into(), username: "alice".into() });
    f.ok(Command::LogOn { username: "alice".into(), site: 2, server: String::new() });
    f.ok(Command::StartInteraction { username: "alice".into(), interaction_id: "call-9".into() });
    assert_eq!(
        f.ok(Command::DeleteUser { username: "Alice".into() }),
        vec![
            Event::InteractionEnded { username: "alice".into(), interaction_id: "call-9".into() },
            Event::UserLoggedOff { username: "alice".into(), site: 2, reason: "user-deleted".into() },
            Event::UserRemovedFromWorkgroup { workgroup: "Support".into(), username: "alice".into() },
            Event::UserStoppedSpanning { username: "alice".into() },
            Event::UserDeleted { username: "alice".into() },
        ]
    );
    assert!(f.state.workgroup("Support").unwrap().members.is_empty());
    assert!(f.state.search(&SearchQuery::default()).iter().all(|e| e.user.username != "alice"));
    // The extension is free again.
    f.ok(Command::AddUser(user("alice2", 1, "8001")));
}

#[test]
fn search_filters_combine() {
    let mut f = two_sites();
    f.ok(Command::LogOn { username: "bob".into(), site: 2, server: String::new() });
    f.ok(Command::SetStatus {
        username: "alice".into(),
        status_key: "On Break".into(),
        until_ms: None,
        detail: String::new(),
    });
    let query = |q: SearchQuery| f.state.search(&q).iter().map(|e| e.user.username.clone()).collect::<Vec<_>>();
    assert_eq!(query(SearchQuery { status_group: Some(StatusGroup::Break), ..Default::default() }), vec!["alice"]);
    assert_eq!(query(SearchQuery { logged_on: Some(true), ..Default::default() }), vec!["bob"]);
    assert_eq!(query(SearchQuery { name: Some("BO".into()), ..Default::default() }), vec!["bob"]);
    assert_eq!(query(SearchQuery { extension: Some("8001".into()), ..Default::default() }), vec!["alice"]);
    assert_eq!(query(SearchQuery { skill: Some("english".into()), limit: 1, ..Default::default() }), vec!["alice"]);
}

#[test]
fn update_user_keeps_memberships_and_rechecks_the_rules() {
    let mut f = two_sites();
    f.ok(Command::AddWorkgroupMember { workgroup: "Support".into(), username: "alice".into() });
    let mut moved = user("ALICE", 2, "8003");
    moved.display_name = "Alice Roamer".into();
    let events = f.ok(Command::UpdateUser(moved.clone()));
    let Event::UserUpdated(updated) = &events[0] else { panic!("{events:?}") };
    assert_eq!((updated.username.as_str(), updated.home_site, updated.extension.as_str()), ("alice", 2, "8003"));
    assert!(updated.workgroups.contains("support"), "memberships survive an update");
    assert_eq!(f.ok(Command::UpdateUser(moved)), vec![], "an unchanged update records nothing");
    // alice spans: she cannot take bob's extension, even at another site.
    let conflict = f.apply(Command::UpdateUser(user("alice", 1, "8002"))).unwrap_err();
    assert!(matches!(conflict, Rejection::ExtensionConflict { ref other_user, .. } if other_user == "bob"));
    assert!(matches!(f.apply(Command::UpdateUser(user("nobody", 1, "8009"))), Err(Rejection::NotFound { .. })));
}

#[test]
fn a_status_in_use_keeps_its_persistence() {
    let mut f = two_sites();
    let mut available = f.state.catalog["Available"].clone();
    available.persistent = false;
    assert!(matches!(f.apply(Command::PutStatusDef(available.clone())), Err(Rejection::FailedPrecondition { .. })));
    available.persistent = true;
    available.message = "Ready".into();
    assert_eq!(f.ok(Command::PutStatusDef(available.clone())), vec![Event::StatusDefined(available)]);
}

#[test]
fn catalog_starts_with_the_vendor_table() {
    let state = State::new();
    assert_eq!(state.catalog.len(), 36);
    let lunch = &state.catalog["At Lunch"];
    assert_eq!((lunch.group, lunch.persistent, lunch.requires_time), (StatusGroup::Break, true, true));
    assert!(state.catalog["Available"].acd_available);
    assert!(!state.catalog["AcdAgentNotAnswering"].user_selectable);
}
