//! Alert rules: decided on `Tick`s inside the log, raised once the condition held for its
//! window, cleared when it stops; bad rules refused naming the field; the history bounded.

use std::collections::BTreeMap;

use collective_statemachine::alert::{AlertRule, Comparison, Statistic, ALERT_EVALUATION_MS};
use collective_statemachine::routing::RouteRequest;
use collective_statemachine::{Command, Event, Principal, Rejection, State};

mod common;
use common::{apply, apply_as, site_spec};

fn alert_events(events: Vec<Event>) -> Vec<Event> {
    events.into_iter().filter(|e| e.kind().starts_with("Alert")).collect()
}

fn setup() -> State {
    let mut state = State::new();
    apply(&mut state, 1_000, Command::AddSite(site_spec(1, "Indianapolis"))).unwrap();
    let sales = Command::AddWorkgroup { name: "Sales".into(), spans_sites: false, required_skills: BTreeMap::new() };
    apply(&mut state, 1_000, sales).unwrap();
    state
}

fn queued_rule(for_ms: u64) -> AlertRule {
    AlertRule {
        name: "Sales queue".into(),
        statistic: Statistic::WorkgroupQueued,
        workgroup: "Sales".into(),
        site: 0,
        comparison: Comparison::Above,
        threshold: 0,
        for_ms,
    }
}

fn call(id: &str) -> Command {
    Command::RouteInteraction(RouteRequest {
        interaction_id: id.into(),
        media: collective_statemachine::routing::MediaType::Call,
        origin_site: 1,
        workgroup: "Sales".into(),
        skills: BTreeMap::new(),
        priority: 0,
    })
}

#[test]
fn an_alert_is_raised_after_its_window_and_cleared_when_the_condition_ends() {
    let mut state = setup();
    assert_eq!(state.next_timer_ms(), None, "no rules: no ticks");
    apply(&mut state, 2_000, Command::PutAlertRule(queued_rule(3_000))).unwrap();
    assert_eq!(state.next_timer_ms(), Some(3_000), "rules are evaluated every second");
    apply(&mut state, 2_500, call("c1")).unwrap();

    let pending = alert_events(apply(&mut state, 3_000, Command::Tick).unwrap());
    assert_eq!(pending, vec![Event::AlertPending { name: "Sales queue".into(), value: 1 }]);
    assert!(alert_events(apply(&mut state, 5_000, Command::Tick).unwrap()).is_empty(), "2 s of 3");
    let raised = alert_events(apply(&mut state, 6_000, Command::Tick).unwrap());
    assert_eq!(raised, vec![Event::AlertRaised { name: "Sales queue".into(), value: 1 }]);
    assert!(alert_events(apply(&mut state, 7_000, Command::Tick).unwrap()).is_empty(), "raised once");

    apply(&mut state, 7_500, Command::CancelInteraction { interaction_id: "c1".into() }).unwrap();
    let cleared = alert_events(apply(&mut state, 8_000, Command::Tick).unwrap());
    assert_eq!(cleared, vec![Event::AlertCleared { name: "Sales queue".into(), value: 0, was_raised: true }]);
    let history: Vec<(bool, u64)> = state.alerts.history.iter().map(|r| (r.raised, r.at_ms)).collect();
    assert_eq!(history, vec![(true, 6_000), (false, 8_000)]);

    // A condition that ends within its window never raises, and leaves no history.
    apply(&mut state, 8_500, call("c2")).unwrap();
    apply(&mut state, 9_000, Command::Tick).unwrap();
    apply(&mut state, 9_500, Command::CancelInteraction { interaction_id: "c2".into() }).unwrap();
    let ended = alert_events(apply(&mut state, 10_000, Command::Tick).unwrap());
    assert_eq!(ended, vec![Event::AlertCleared { name: "Sales queue".into(), value: 0, was_raised: false }]);
    assert_eq!(state.alerts.history.len(), 2);

    apply(&mut state, 11_000, Command::RemoveAlertRule { name: "sales QUEUE".into() }).unwrap();
    assert_eq!(state.next_timer_ms(), None);
}

#[test]
fn a_lost_lease_raises_at_once_with_no_window() {
    let mut state = setup();
    let rule = AlertRule {
        name: "site 1 lease".into(),
        statistic: Statistic::SiteLease,
        workgroup: String::new(),
        site: 1,
        comparison: Comparison::Below,
        threshold: 1,
        for_ms: 0,
    };
    apply(&mut state, 2_000, Command::GrantLease { site: 1, ttl_ms: 5_000 }).unwrap();
    apply(&mut state, 2_000, Command::PutAlertRule(rule)).unwrap();
    assert!(alert_events(apply(&mut state, 3_000, Command::Tick).unwrap()).is_empty());
    let events = alert_events(apply(&mut state, 7_000, Command::Tick).unwrap());
    assert_eq!(
        events,
        vec![
            Event::AlertPending { name: "site 1 lease".into(), value: 0 },
            Event::AlertRaised { name: "site 1 lease".into(), value: 0 }
        ]
    );
    assert_eq!(state.next_timer_ms(), Some(7_000 + ALERT_EVALUATION_MS));
}

#[test]
fn bad_rules_are_refused_naming_the_field() {
    let mut state = setup();
    for (rule, field) in [
        (AlertRule { threshold: 5_000_000_000, ..queued_rule(0) }, "rule.threshold"),
        (AlertRule { for_ms: 7 * 24 * 3_600_000, ..queued_rule(0) }, "rule.for_ms"),
        (AlertRule { name: String::new(), ..queued_rule(0) }, "rule.name"),
        (AlertRule { statistic: Statistic::SiteBacklog, site: 1_000, ..queued_rule(0) }, "rule.site"),
    ] {
        let refused = apply(&mut state, 2_000, Command::PutAlertRule(rule)).unwrap_err();
        assert!(matches!(&refused, Rejection::InvalidArgument { field: f, .. } if f == field), "{refused:?}");
    }
    let unknown = AlertRule { workgroup: "Nope".into(), ..queued_rule(0) };
    assert!(matches!(apply(&mut state, 2_000, Command::PutAlertRule(unknown)), Err(Rejection::NotFound { .. })));
    let site = apply_as_site(&mut state, Command::PutAlertRule(queued_rule(0)));
    assert!(matches!(site, Err(Rejection::PermissionDenied { .. })));
    assert!(Statistic::parse("workgroup.queued").is_some() && Statistic::parse("workgroup.mood").is_none());
}

fn apply_as_site(state: &mut State, command: Command) -> Result<Vec<Event>, Rejection> {
    apply_as(state, 2_000, Principal::Site(1), command)
}
