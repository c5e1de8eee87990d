//! Configuration export and import in the state machine: the dependency closure, a round trip
//! between two collectives, migration (merge, never delete) against recovery (exactly the file),
//! and conflicts that refuse the whole import, naming what is wrong.

use std::collections::{BTreeMap, BTreeSet};

use collective_statemachine::config::{Category, ConfigSet, ImportMode};
use collective_statemachine::messaging::{Attribute, UpdateOp};
use collective_statemachine::routing::Settings;
use collective_statemachine::{
    Command, Envelope, Event, Principal, Rejection, SiteSpec, State, TrustedAccess, UserSpec,
};

mod common;
use common::site_spec;

fn apply(state: &mut State, command: Command) -> Result<Vec<Event>, Rejection> {
    let before = state.clone();
    let at_ms = state.last_at_ms + 1_000;
    let result = state.apply(&Envelope { at_ms, principal: Principal::System, command });
    state.check_invariants();
    if result.is_err() {
        assert_eq!(*state, before, "a rejected command changed the state");
    }
    result.map(|records| records.into_iter().map(|r| r.event).collect())
}

fn ok(state: &mut State, command: Command) -> Vec<Event> {
    let kind = command.kind();
    apply(state, command).unwrap_or_else(|e| panic!("{kind}: {e}"))
}

fn site(id: u32, name: &str) -> Command {
    Command::AddSite(SiteSpec { servers: vec![format!("cic{id}")], ..site_spec(id, name) })
}

fn user(name: &str, home: u32, extension: &str) -> UserSpec {
    UserSpec {
        username: name.into(),
        display_name: name.to_uppercase(),
        email: format!("{name}@example.com"),
        home_site: home,
        extension: extension.into(),
        skills: BTreeMap::from([("english".to_string(), 70)]),
        licences: BTreeSet::new(),
    }
}

/// Sites 1–3, users at 1 and 2, spanning Support (ann, bob) and local Sales (cy), routing.
fn source() -> State {
    let mut state = State::new();
    for (id, name) in [(1, "Indianapolis"), (2, "Paris"), (3, "Lyon")] {
        ok(&mut state, site(id, name));
    }
    for (name, home, extension) in [("ann", 1, "1100"), ("bob", 2, "2100"), ("cy", 1, "1200"), ("dee", 3, "3100")] {
        ok(&mut state, Command::AddUser(user(name, home, extension)));
    }
    ok(
        &mut state,
        Command::AddWorkgroup { name: "Support".into(), spans_sites: true, required_skills: BTreeMap::new() },
    );
    ok(
        &mut state,
        Command::AddWorkgroup { name: "Sales".into(), spans_sites: false, required_skills: BTreeMap::new() },
    );
    for (workgroup, username) in [("Support", "ann"), ("Support", "bob"), ("Sales", "cy")] {
        ok(&mut state, Command::AddWorkgroupMember { workgroup: workgroup.into(), username: username.into() });
    }
    let settings = Settings { local_margin_ms: 30_000, ..Settings::default() };
    ok(&mut state, Command::SetRoutingSettings { workgroup: "Support".into(), settings });
    ok(&mut state, Command::SetRouteCost { from: 1, to: 2, cost: 5_000 });
    ok(&mut state, Command::CreateNote { site: 1, name: "Order".into(), ttl_minutes: None });
    let qty = Command::UpdateNoteAttribute {
        site: 1,
        name: "Order".into(),
        attribute: "qty".into(),
        op: UpdateOp::Replace,
        values: Attribute::Integer(vec![3, 4]),
    };
    ok(&mut state, qty);
    state
}

fn categories(list: &[Category]) -> BTreeSet<Category> {
    list.iter().copied().collect()
}

/// Stages the set in parts, then commits it; a refused commit discards the staging.
fn import(state: &mut State, mode: ImportMode, config: &ConfigSet) -> Result<Vec<Event>, Rejection> {
    let parts = config.split();
    for (part, set) in parts.iter().enumerate() {
        let stage = Command::StageImport { import_id: "imp".into(), part: part as u32, config: Box::new(set.clone()) };
        apply(state, stage)?;
    }
    let result = apply(state, Command::CommitImport { import_id: "imp".into(), parts: parts.len() as u32, mode });
    if result.is_err() {
        ok(state, Command::AbortImport { import_id: "imp".into() });
    }
    assert!(state.imports.is_empty(), "the staging is gone after a commit or an abort");
    result
}

#[test]
fn an_export_carries_what_its_categories_depend_on() {
    let state = source();
    let (set, closure) = state.export_config(&categories(&[Category::Workgroups]));
    let users: Vec<&str> = set.users.iter().map(|u| u.username.as_str()).collect();
    assert_eq!(users, ["ann", "bob", "cy"], "members, not every user");
    assert_eq!(set.sites.iter().map(|s| s.id).collect::<Vec<_>>(), [1, 2], "the members' home sites");
    assert!(set.routing_settings.is_empty() && set.statuses.is_empty());
    assert_eq!(closure.len(), 2, "{closure:?}");
    assert!(closure[0].starts_with("users: 3") && closure[1].starts_with("sites: 2"), "{closure:?}");
    let (routing, _) = state.export_config(&categories(&[Category::Routing]));
    assert_eq!(routing.workgroups.iter().map(|w| w.name.as_str()).collect::<Vec<_>>(), ["Support"]);
    assert_eq!(routing.route_costs.len(), 1);
    // Deterministic: the same state exports the same set.
    assert_eq!(state.export_config(&categories(&Category::ALL)), state.export_config(&categories(&Category::ALL)));
}

#[test]
fn a_round_trip_into_an_empty_collective_gives_the_same_configuration() {
    let source = source();
    let chosen = categories(&Category::ALL);
    let (set, _) = source.export_config(&chosen);
    let mut target = State::new();
    let plan = target.plan_import(ImportMode::Migration, &set, 1_000);
    assert!(plan.conflicts.is_empty(), "{:?}", plan.conflicts);
    // 3 sites, 4 users, 2 workgroups, 3 memberships, settings, a cost, a note and its attribute.
    assert_eq!((plan.creates.len(), plan.updates.len(), plan.deletes.len()), (3 + 4 + 2 + 3 + 1 + 1 + 2, 0, 0));
    let events = import(&mut target, ImportMode::Migration, &set).unwrap();
    assert!(matches!(events.last(), Some(Event::ConfigImported { creates: 16, .. })));
    assert_eq!(
        target.messaging.note(1, "Order", target.last_at_ms).unwrap().value,
        source.messaging.note(1, "Order", source.last_at_ms).unwrap().value
    );
    assert_eq!(target.export_config(&chosen).0, set);
    // Importing the same file again changes nothing but says so.
    let again = target.plan_import(ImportMode::Migration, &set, 2_000);
    assert!(again.creates.is_empty() && again.updates.is_empty() && again.unchanged > 0);
}

#[test]
fn migration_merges_and_recovery_makes_the_categories_exactly_the_file() {
    let (set, _) = source().export_config(&categories(&[Category::Sites, Category::Users, Category::Workgroups]));
    let mut target = source();
    // The target has drifted: an extra user in Support, bob changed, and an extra site.
    ok(&mut target, site(4, "Boca Raton"));
    ok(&mut target, Command::AddUser(user("eve", 4, "4100")));
    ok(&mut target, Command::AddWorkgroupMember { workgroup: "Support".into(), username: "eve".into() });
    ok(&mut target, Command::UpdateUser(UserSpec { display_name: "Robert".into(), ..user("bob", 2, "2100") }));

    let mut merged = target.clone();
    import(&mut merged, ImportMode::Migration, &set).unwrap();
    assert!(merged.users.contains_key("eve"), "migration never deletes");
    assert!(merged.workgroups["support"].members.contains("eve"));
    assert_eq!(merged.users["bob"].display_name, "BOB", "matching users are updated");

    let plan = target.plan_import(ImportMode::Recovery, &set, 1_000_000);
    assert!(plan.deletes.iter().any(|d| d == "user eve"), "{:?}", plan.deletes);
    assert!(plan.deletes.iter().any(|d| d.starts_with("site 4")), "{:?}", plan.deletes);
    import(&mut target, ImportMode::Recovery, &set).unwrap();
    assert!(!target.users.contains_key("eve"));
    assert!(!target.sites[&4].active, "a site not in the file is deactivated, never deleted");
    assert_eq!(target.export_config(&categories(&[Category::Users, Category::Workgroups])).0.users, set.users);
}

#[test]
fn conflicts_refuse_the_whole_import_and_name_the_entity() {
    let (set, _) = source().export_config(&categories(&[Category::Users]));
    // A spanning user here already has extension 2100 (bob's in the file).
    let mut target = State::new();
    ok(&mut target, site(1, "Indianapolis"));
    ok(&mut target, site(2, "Paris"));
    ok(&mut target, Command::AddUser(user("zed", 1, "2100")));
    ok(
        &mut target,
        Command::AddWorkgroup { name: "Everyone".into(), spans_sites: true, required_skills: BTreeMap::new() },
    );
    ok(&mut target, Command::AddWorkgroupMember { workgroup: "Everyone".into(), username: "zed".into() });
    let plan = target.plan_import(ImportMode::Migration, &set, 10_000);
    assert_eq!(plan.conflicts.len(), 1, "{:?}", plan.conflicts);
    assert!(
        plan.conflicts[0].starts_with("user bob: extension 2100 conflicts with user \"zed\""),
        "{:?}",
        plan.conflicts
    );
    let refused = import(&mut target, ImportMode::Migration, &set).unwrap_err();
    assert!(refused.to_string().contains("1 conflicts, nothing imported"), "{refused}");
    assert!(!target.users.contains_key("ann"), "nothing of a refused import is applied");

    // A site id held by another name.
    let mut renamed = State::new();
    ok(&mut renamed, site(1, "Zurich"));
    let plan = renamed.plan_import(ImportMode::Migration, &set, 10_000);
    assert!(plan.conflicts.iter().any(|c| c.contains("site id 1 is \"Zurich\" here")), "{:?}", plan.conflicts);

    // A dependency neither in the file nor in the collective: the home site is named.
    let mut bare = State::new();
    let plan = bare.plan_import(ImportMode::Migration, &ConfigSet { sites: vec![], ..set.clone() }, 10_000);
    assert!(
        plan.conflicts.iter().any(|c| c == "user ann: user.home_site: site 1 does not exist"),
        "{:?}",
        plan.conflicts
    );
    assert!(import(&mut bare, ImportMode::Migration, &ConfigSet { sites: vec![], ..set }).is_err());
}

#[test]
fn a_large_set_splits_into_parts_that_assemble_back() {
    let mut state = State::new();
    ok(&mut state, site(1, "Indianapolis"));
    ok(
        &mut state,
        Command::AddWorkgroup { name: "Everyone".into(), spans_sites: false, required_skills: BTreeMap::new() },
    );
    // Built without checking invariants after every command (that is quadratic at this size).
    for i in 0..5_000 {
        let name = format!("u{i:05}");
        let commands = [
            Command::AddUser(user(&name, 1, &format!("{}", 10_000 + i))),
            Command::AddWorkgroupMember { workgroup: "Everyone".into(), username: name },
        ];
        for command in commands {
            state.apply(&Envelope { at_ms: 2_000, principal: Principal::System, command }).unwrap();
        }
    }
    state.check_invariants();
    let (set, _) = state.export_config(&categories(&[Category::Workgroups]));
    let parts = set.split();
    assert_eq!(parts.len(), 3, "5,000 users and 5,000 members in parts of 4,000");
    for part in &parts {
        let staged = Command::StageImport { import_id: "v".into(), part: 0, config: Box::new(part.clone()) };
        collective_statemachine::validate::validate(&staged).expect("every part passes the edge check");
    }
    assert!(parts.iter().all(|p| p.entities() <= collective_statemachine::config::IMPORT_PART_ENTITIES_MAX));
    let staged = collective_statemachine::config::StagedImport {
        started_at_ms: 0,
        parts: parts.into_iter().enumerate().map(|(i, p)| (i as u32, p)).collect(),
    };
    assert_eq!(staged.assembled(), set);
    let mut target = State::new();
    let parts = set.split();
    for (part, config) in parts.iter().enumerate() {
        let command =
            Command::StageImport { import_id: "big".into(), part: part as u32, config: Box::new(config.clone()) };
        target.apply(&Envelope { at_ms: 3_000, principal: Principal::System, command }).unwrap();
    }
    let commit =
        Command::CommitImport { import_id: "big".into(), parts: parts.len() as u32, mode: ImportMode::Migration };
    target.apply(&Envelope { at_ms: 3_000, principal: Principal::System, command: commit }).unwrap();
    target.check_invariants();
    assert_eq!(target.workgroups["everyone"].members.len(), 5_000);
}

#[test]
fn a_commit_needs_every_part_and_an_abandoned_staging_expires() {
    let (set, _) = source().export_config(&categories(&[Category::Users]));
    let mut target = State::new();
    let stage = |part| Command::StageImport { import_id: "x".into(), part, config: Box::new(set.clone()) };
    ok(&mut target, stage(1));
    let missing =
        apply(&mut target, Command::CommitImport { import_id: "x".into(), parts: 2, mode: ImportMode::Migration });
    assert!(missing.unwrap_err().to_string().contains("part 0 of import x was never staged"));
    assert_eq!(
        target.next_timer_ms(),
        Some(target.last_at_ms + collective_statemachine::config::IMPORT_STAGING_TTL_MS)
    );
    let at_ms = target.last_at_ms + collective_statemachine::config::IMPORT_STAGING_TTL_MS;
    let events = target.apply(&Envelope { at_ms, principal: Principal::System, command: Command::Tick }).unwrap();
    assert!(events.iter().any(|r| matches!(&r.event, Event::ImportDiscarded { reason, .. } if reason == "expired")));
    assert!(target.imports.is_empty());
    // Bounded: a fifth import cannot start while four are staged.
    for id in ["a", "b", "c", "d"] {
        ok(&mut target, Command::StageImport { import_id: id.into(), part: 0, config: Box::new(ConfigSet::default()) });
    }
    let full = apply(
        &mut target,
        Command::StageImport { import_id: "e".into(), part: 0, config: Box::new(ConfigSet::default()) },
    );
    assert!(matches!(full, Err(Rejection::LimitReached { limit: 4, .. })));
}

#[test]
fn an_extension_moving_from_one_user_to_a_new_one_imports() {
    let mut source = State::new();
    ok(&mut source, site(1, "Indianapolis"));
    ok(&mut source, Command::AddUser(user("alice", 1, "101")));
    ok(&mut source, Command::AddUser(user("adam", 1, "100")));
    let (set, _) = source.export_config(&categories(&[Category::Users]));
    // Here alice still has 100, which the file gives to adam (sorted before her).
    let mut target = State::new();
    ok(&mut target, site(1, "Indianapolis"));
    ok(&mut target, Command::AddUser(user("alice", 1, "100")));
    import(&mut target, ImportMode::Recovery, &set).unwrap();
    assert_eq!((target.users["adam"].extension.as_str(), target.users["alice"].extension.as_str()), ("100", "101"));
}

#[test]
fn recovery_of_the_sites_restores_a_renamed_site_and_migration_refuses_it() {
    let (set, _) = source().export_config(&categories(&[Category::Sites]));
    let mut target = source();
    let renamed = SiteSpec {
        id: 3,
        name: "Marseille".into(),
        phone: "+1 555 0100".into(),
        password_hash: String::new(),
        note_id_dial_string: String::new(),
        active: true,
        servers: vec!["cic3".into()],
        trusted_access: TrustedAccess::default(),
    };
    ok(&mut target, Command::UpdateSite(renamed));
    assert_eq!(target.sites[&3].name, "Marseille");
    let refused = import(&mut target, ImportMode::Migration, &set).unwrap_err();
    assert!(refused.to_string().contains("site id 3 is \"Marseille\" here"), "{refused}");
    import(&mut target, ImportMode::Recovery, &set).unwrap();
    assert_eq!(target.sites[&3].name, "Lyon");
    assert_eq!(target.site_names.get("lyon"), Some(&3));
    assert!(!target.site_names.contains_key("marseille"));
}

#[test]
fn notes_export_with_their_sites_and_recovery_removes_notes_not_in_the_file() {
    let state = source();
    let (set, closure) = state.export_config(&categories(&[Category::Notes]));
    assert_eq!(set.notes.len(), 1);
    assert_eq!(set.sites.iter().map(|s| s.id).collect::<Vec<_>>(), [1], "{closure:?}");
    let mut target = source();
    ok(&mut target, Command::CreateNote { site: 2, name: "Stale".into(), ttl_minutes: Some(30) });
    import(&mut target, ImportMode::Migration, &set).unwrap();
    assert!(target.messaging.note(2, "Stale", target.last_at_ms).is_ok(), "migration never deletes");
    import(&mut target, ImportMode::Recovery, &set).unwrap();
    assert!(target.messaging.note(2, "Stale", target.last_at_ms).is_err());
    assert!(target.messaging.note(1, "Order", target.last_at_ms).is_ok());
}
