//! The directory source: a poll's steps are fenced by the Raft term of the poll that began last,
//! a plan of an unchanged directory is empty, a user whose entry left is logged off and refused
//! logon until it returns, and the source's principal may do nothing but apply its polls.

use std::collections::BTreeMap;

use collective_statemachine::source::plan::{plan, DirectoryEntry};
use collective_statemachine::source::{LdapSettings, Mapping, OnMissing, PollReport, SourceStep};
use collective_statemachine::{Command, Event, Principal, Rejection, State};

mod common;
use common::{apply_as, site_spec};

fn apply(state: &mut State, at_ms: u64, command: Command) -> Result<Vec<Event>, Rejection> {
    apply_as(state, at_ms, Principal::Source("ldap".into()), command)
}

fn settings() -> LdapSettings {
    LdapSettings {
        url: "ldaps://ldap.example.com".into(),
        starttls: false,
        ca_pem: String::new(),
        bind_dn: "cn=reader,dc=example,dc=com".into(),
        bind_password: "secret".into(),
        base_dn: "dc=example,dc=com".into(),
        filter: "(objectClass=inetOrgPerson)".into(),
        mapping: Mapping { workgroups: "businessCategory".into(), ..Mapping::default() },
        interval_s: 60,
        on_missing: OnMissing::Deactivate,
    }
}

fn entry(uid: &str, site: &str, phone: &str, groups: &[&str]) -> DirectoryEntry {
    let mut attributes = BTreeMap::new();
    attributes.insert("uid".to_string(), vec![uid.to_string()]);
    attributes.insert("cn".to_string(), vec![format!("{uid} from the directory")]);
    attributes.insert("mail".to_string(), vec![format!("{}@Example.com", uid.to_uppercase())]);
    attributes.insert("telephonenumber".to_string(), vec![phone.to_string()]);
    attributes.insert("businesscategory".to_string(), groups.iter().map(|g| g.to_string()).collect());
    DirectoryEntry { dn: format!("uid={uid},ou={site},dc=example,dc=com"), attributes }
}

fn setup() -> State {
    let mut state = State::new();
    for (id, name) in [(1, "Indianapolis"), (2, "Paris")] {
        let site = site_spec(id, name);
        apply_as(&mut state, 1_000, Principal::System, Command::AddSite(site)).unwrap();
    }
    let support =
        Command::AddWorkgroup { name: "Support".into(), spans_sites: false, required_skills: BTreeMap::new() };
    apply_as(&mut state, 1_000, Principal::System, support).unwrap();
    let set = Command::SetSource { settings: settings(), next_poll_ms: None };
    assert_eq!(
        apply_as(&mut state, 2_000, Principal::Admin("root".into()), set).unwrap(),
        vec![Event::SourceSet { settings: settings(), next_poll_ms: 2_000 }]
    );
    state
}

/// Runs one poll of `term` at `at_ms` as the node does; returns the refused steps.
fn poll(state: &mut State, at_ms: u64, term: u64, entries: &[DirectoryEntry]) -> Vec<Rejection> {
    apply(state, at_ms, Command::StartSourcePoll { term }).unwrap();
    let planned = plan(state, &settings(), entries);
    let refused = planned
        .steps
        .iter()
        .filter_map(|p| apply(state, at_ms, Command::SourceStep { term, step: p.step.clone() }).err())
        .collect();
    let report = PollReport { started_ms: at_ms, seen: planned.seen, ..PollReport::default() };
    apply(state, at_ms, Command::FinishSourcePoll { term, report }).unwrap();
    refused
}

#[test]
fn a_poll_fills_the_directory_and_a_second_changes_nothing() {
    let mut state = setup();
    let entries = [entry("ada", "Paris", "+33 2101", &["Support"]), entry("ken", "1", "1102", &[])];
    assert!(poll(&mut state, 3_000, 1, &entries).is_empty());
    let ada = state.user("ada").unwrap();
    assert_eq!((ada.home_site, ada.extension.as_str(), ada.email.as_str()), (2, "332101", "ADA@Example.com"));
    assert!(ada.workgroups.contains("support"));
    assert_eq!(state.user("ken").unwrap().home_site, 1);
    let source = state.source.as_ref().unwrap();
    assert_eq!(source.owned.len(), 2);
    assert_eq!(source.next_poll_ms, 3_000 + 60_000, "the next poll is one interval after the report");
    assert!(!source.polling);

    assert!(plan(&state, &settings(), &entries).steps.is_empty(), "an unchanged directory plans nothing");
    // Matched by email whatever its case; a changed attribute is one update.
    let mut changed = entries.clone();
    changed[1].attributes.insert("cn".into(), vec!["Ken Thompson".into()]);
    let planned = plan(&state, &settings(), &changed);
    assert_eq!((planned.updates, planned.creates, planned.steps.len()), (1, 0, 1));
}

#[test]
fn steps_of_a_superseded_poll_change_nothing() {
    let mut state = setup();
    apply(&mut state, 3_000, Command::StartSourcePoll { term: 4 }).unwrap();
    // A new leader (term 5) begins its own poll: the old leader's steps and report are refused.
    apply(&mut state, 3_100, Command::StartSourcePoll { term: 5 }).unwrap();
    let step = plan(&state, &settings(), &[entry("ada", "Paris", "2101", &[])]).steps[0].step.clone();
    let stale = apply(&mut state, 3_200, Command::SourceStep { term: 4, step: step.clone() }).unwrap_err();
    assert!(matches!(&stale, Rejection::FailedPrecondition { field, .. } if field == "term"), "{stale:?}");
    let report = Command::FinishSourcePoll { term: 4, report: PollReport::default() };
    assert!(apply(&mut state, 3_200, report).is_err());
    // And the old leader may not begin again under its older term.
    assert!(apply(&mut state, 3_300, Command::StartSourcePoll { term: 4 }).is_err());
    apply(&mut state, 3_400, Command::SourceStep { term: 5, step }).unwrap();
    assert!(state.user("ada").is_ok());
    // Once the poll reported, even its own term's steps are over.
    apply(&mut state, 3_500, Command::FinishSourcePoll { term: 5, report: PollReport::default() }).unwrap();
    let late = SourceStep::Delete { username: "ada".into() };
    assert!(apply(&mut state, 3_600, Command::SourceStep { term: 5, step: late }).is_err());
}

#[test]
fn a_user_whose_entry_left_is_logged_off_and_refused_logon_until_it_returns() {
    let mut state = setup();
    let ada = entry("ada", "Paris", "2101", &[]);
    poll(&mut state, 3_000, 1, &[ada.clone(), entry("ken", "Paris", "2102", &[])]);
    let logon = || Command::LogOn { username: "ada".into(), site: 2, server: String::new() };
    apply_as(&mut state, 4_000, Principal::System, logon()).unwrap();

    poll(&mut state, 5_000, 1, &[entry("ken", "Paris", "2102", &[])]);
    assert!(state.presence["ada"].logon.is_none(), "deactivated users are logged off");
    let refused = apply_as(&mut state, 5_100, Principal::System, logon()).unwrap_err();
    assert!(refused.to_string().contains("deactivated"), "{refused}");

    // An empty answer (a wrong base DN, most likely) deactivates nobody.
    let planned = plan(&state, &settings(), &[]);
    assert!(planned.steps.is_empty() && planned.refused == 1, "{planned:?}");

    poll(&mut state, 6_000, 1, &[ada, entry("ken", "Paris", "2102", &[])]);
    apply_as(&mut state, 6_100, Principal::System, logon()).unwrap();
}

#[test]
fn refused_entries_are_reported_and_the_rest_apply() {
    let mut state = setup();
    let entries = [
        entry("ada", "Paris", "2101", &[]),
        entry("bob", "Paris", "2101", &[]),       // ada's extension at the same site
        entry("cat", "Atlantis", "2103", &[]),    // no such site
        entry("dan", "Paris", "2104", &["Nope"]), // no such workgroup
    ];
    let planned = plan(&state, &settings(), &entries);
    assert_eq!(planned.refused, 2, "{planned:?}");
    assert!(planned.refusals.iter().any(|r| r.contains("Atlantis")), "{:?}", planned.refusals);
    assert!(planned.refusals.iter().any(|r| r.contains("nope")), "{:?}", planned.refusals);
    let refused = poll(&mut state, 3_000, 1, &entries);
    assert_eq!(refused.len(), 1, "bob's extension conflicts with ada's: {refused:?}");
    assert!(matches!(refused[0], Rejection::ExtensionConflict { .. }));
    assert!(state.user("ada").is_ok() && state.user("bob").is_err());
}

#[test]
fn the_source_may_only_apply_its_polls_and_sites_may_not_configure_it() {
    let mut state = setup();
    let add = Command::DeleteWorkgroup { name: "Support".into() };
    assert!(matches!(apply(&mut state, 3_000, add), Err(Rejection::PermissionDenied { .. })));
    let set = Command::SetSource { settings: settings(), next_poll_ms: None };
    assert!(matches!(apply_as(&mut state, 3_000, Principal::Site(1), set), Err(Rejection::PermissionDenied { .. })));
    let bad = LdapSettings { filter: "objectClass=person".into(), ..settings() };
    let refused =
        apply_as(&mut state, 3_000, Principal::System, Command::SetSource { settings: bad, next_poll_ms: None });
    assert!(
        matches!(&refused, Err(Rejection::InvalidArgument { field, .. }) if field == "settings.filter"),
        "{refused:?}"
    );
    assert!(!format!("{:?}", settings()).contains("secret"), "Debug shows the password");
}

#[test]
fn a_report_line_is_kept_whatever_the_directory_said() {
    let long = format!("line one\nline two\t{}", "x".repeat(5_000));
    let line = collective_statemachine::source::report_text(&long);
    assert!(!line.contains('\n') && line.chars().count() == collective_statemachine::source::SOURCE_TEXT_CHARS_MAX);
    let mut state = setup();
    apply(&mut state, 3_000, Command::StartSourcePoll { term: 1 }).unwrap();
    let report = PollReport {
        error: Some(line),
        refusals: vec![collective_statemachine::source::report_text("\n")],
        ..PollReport::default()
    };
    apply(&mut state, 3_000, Command::FinishSourcePoll { term: 1, report }).unwrap();
}
