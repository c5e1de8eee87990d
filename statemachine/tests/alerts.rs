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
        webhook: String::new(),
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
        webhook: String::new(),
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
        (AlertRule { webhook: "ftp://example.com/".into(), ..queued_rule(0) }, "rule.webhook"),
        (AlertRule { webhook: "https://a:b@example.com/".into(), ..queued_rule(0) }, "rule.webhook"),
        (AlertRule { webhook: "/relative".into(), ..queued_rule(0) }, "rule.webhook"),
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

#[test]
fn the_webhook_mark_only_moves_forward_and_a_record_dropped_undelivered_is_counted() {
    let mut state = setup();
    let rule = AlertRule { webhook: "https://hooks.example.com/sales".into(), ..queued_rule(0) };
    apply(&mut state, 2_000, Command::PutAlertRule(rule)).unwrap();
    apply(&mut state, 2_500, call("c1")).unwrap();
    apply(&mut state, 3_000, Command::Tick).unwrap();
    apply(&mut state, 3_500, Command::CancelInteraction { interaction_id: "c1".into() }).unwrap();
    apply(&mut state, 4_000, Command::Tick).unwrap();
    let records: Vec<(u64, String)> = state.alerts.undelivered().map(|r| (r.revision, r.webhook.clone())).collect();
    assert_eq!(records.len(), 2, "raised and cleared, each with the rule's webhook: {records:?}");
    assert!(records.iter().all(|(_, webhook)| webhook == "https://hooks.example.com/sales"));

    let beyond = state.revision + 10;
    let ahead = apply(&mut state, 5_000, Command::AlertsDelivered { up_to: beyond });
    assert!(matches!(ahead, Err(Rejection::InvalidArgument { .. })), "{ahead:?}");
    let first = records[0].0;
    apply(&mut state, 5_000, Command::AlertsDelivered { up_to: first }).unwrap();
    assert_eq!(state.alerts.undelivered().count(), 1);
    // A deposed leader's late report changes nothing.
    assert!(apply(&mut state, 5_000, Command::AlertsDelivered { up_to: first - 1 }).unwrap().is_empty());
    assert_eq!(state.alerts.delivered_revision, first);

    // A receiver down for longer than the history holds: what leaves it undelivered is counted.
    let mut at = 6_000;
    for i in 0..600 {
        apply(&mut state, at, call(&format!("x{i}"))).unwrap();
        apply(&mut state, at + 1_000, Command::Tick).unwrap();
        apply(&mut state, at + 1_500, Command::CancelInteraction { interaction_id: format!("x{i}") }).unwrap();
        apply(&mut state, at + 2_000, Command::Tick).unwrap();
        at += 2_000;
    }
    assert_eq!(state.alerts.history.len(), 1_000);
    assert_eq!(state.alerts.undelivered_dropped, 1 + 2 * 600 - 1_000);
}
