//! Alert rules: put and remove them, evaluate them on every `Tick`, keep the history.

use super::{
    AlertRecord, AlertRule, AlertState, Alerts, Statistic, ALERT_EVALUATION_MS, ALERT_HISTORY_MAX, ALERT_RULES_MAX,
};
use crate::event::Event;
use crate::rejection::Rejection;
use crate::state::State;
use crate::user::key_of;

impl State {
    pub(crate) fn decide_put_alert_rule(&self, rule: &AlertRule) -> Result<Vec<Event>, Rejection> {
        if rule.statistic.of_site() {
            self.site(rule.site)?;
        } else {
            self.workgroup(&rule.workgroup)?;
        }
        let key = key_of(&rule.name);
        if !self.alerts.rules.contains_key(&key) && self.alerts.rules.len() >= ALERT_RULES_MAX {
            return Err(Rejection::LimitReached { what: "alert rules".into(), limit: ALERT_RULES_MAX as u64 });
        }
        Ok(vec![Event::AlertRuleSet(rule.clone())])
    }

    pub(crate) fn decide_remove_alert_rule(&self, name: &str) -> Result<Vec<Event>, Rejection> {
        let state = self.alerts.rules.get(&key_of(name)).ok_or_else(|| Rejection::not_found("alert rule", name))?;
        Ok(vec![Event::AlertRuleRemoved { name: state.rule.name.clone() }])
    }

    /// The leader's webhook sender reports every record up to `up_to` delivered. A stale or
    /// repeated report changes nothing (the mark only moves forward).
    pub(crate) fn decide_alerts_delivered(&self, up_to: u64) -> Result<Vec<Event>, Rejection> {
        if up_to > self.revision {
            return Err(Rejection::invalid(
                "up_to",
                format!("revision {up_to} is ahead of the state ({})", self.revision),
            ));
        }
        if up_to <= self.alerts.delivered_revision {
            return Ok(vec![]);
        }
        Ok(vec![Event::AlertsDelivered { up_to }])
    }

    /// The statistic's value now, if its workgroup or site still exists.
    pub fn statistic_value(&self, rule: &AlertRule, at_ms: u64) -> Option<u64> {
        if rule.statistic.of_site() {
            self.sites.get(&rule.site)?;
            return Some(match rule.statistic {
                Statistic::SiteLease => u64::from(self.leases.contains_key(&rule.site)),
                _ => self.messaging.queues.get(&rule.site).map_or(0, |queue| queue.deliveries.len() as u64),
            });
        }
        let stats = self.workgroup_stats(&rule.workgroup, at_ms).ok()?;
        Some(match rule.statistic {
            Statistic::WorkgroupLoggedOn => stats.agents.logged_on,
            Statistic::WorkgroupReady => stats.agents.ready,
            Statistic::WorkgroupAvailable => stats.agents.available,
            Statistic::WorkgroupOnPhone => stats.agents.on_phone,
            Statistic::WorkgroupReserved => stats.agents.reserved,
            Statistic::WorkgroupQueued => stats.queued,
            _ => stats.longest_wait_ms,
        })
    }

    /// What a `Tick` at `at_ms` changes in the alerts: a condition that began to hold, held
    /// long enough, or stopped. A rule whose workgroup or site is gone clears.
    pub(crate) fn alert_events(&self, at_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for state in self.alerts.rules.values() {
            let rule = &state.rule;
            let name = rule.name.clone();
            let value = self.statistic_value(rule, at_ms);
            match (value.filter(|v| rule.holds(*v)), state.holding_since_ms) {
                (Some(value), None) => {
                    events.push(Event::AlertPending { name: name.clone(), value });
                    if rule.for_ms == 0 {
                        events.push(Event::AlertRaised { name, value });
                    }
                }
                (Some(value), Some(since)) if !state.raised && at_ms.saturating_sub(since) >= rule.for_ms => {
                    events.push(Event::AlertRaised { name, value });
                }
                (Some(_), Some(_)) => {}
                (None, Some(_)) => {
                    events.push(Event::AlertCleared { name, value: value.unwrap_or(0), was_raised: state.raised })
                }
                (None, None) => {}
            }
        }
        events
    }

    /// The next entry time at which the rules are evaluated, while any exist.
    pub(crate) fn next_alert_evaluation_ms(&self) -> Option<u64> {
        (!self.alerts.rules.is_empty()).then(|| (self.last_at_ms / ALERT_EVALUATION_MS + 1) * ALERT_EVALUATION_MS)
    }

    pub(crate) fn fold_alert(&mut self, event: &Event, at_ms: u64) {
        let revision = self.revision;
        let alerts = &mut self.alerts;
        match event {
            Event::AlertRuleSet(rule) => {
                // A changed rule starts over: its condition is judged afresh.
                alerts.rules.insert(
                    key_of(&rule.name),
                    AlertState { rule: rule.clone(), holding_since_ms: None, raised: false, value: 0 },
                );
            }
            Event::AlertRuleRemoved { name } => {
                alerts.rules.remove(&key_of(name));
            }
            Event::AlertPending { name, value } => {
                if let Some(state) = alerts.rules.get_mut(&key_of(name)) {
                    state.holding_since_ms = Some(at_ms);
                    state.value = *value;
                }
            }
            Event::AlertRaised { name, value } => {
                if let Some(state) = alerts.rules.get_mut(&key_of(name)) {
                    state.raised = true;
                    state.value = *value;
                }
                let webhook = alerts.webhook_of(name);
                alerts.record(AlertRecord {
                    revision,
                    at_ms,
                    name: name.clone(),
                    raised: true,
                    value: *value,
                    webhook,
                });
            }
            Event::AlertCleared { name, value, was_raised } => {
                if let Some(state) = alerts.rules.get_mut(&key_of(name)) {
                    state.holding_since_ms = None;
                    state.raised = false;
                    state.value = *value;
                }
                if *was_raised {
                    let webhook = alerts.webhook_of(name);
                    let record =
                        AlertRecord { revision, at_ms, name: name.clone(), raised: false, value: *value, webhook };
                    alerts.record(record);
                }
            }
            Event::AlertsDelivered { up_to } => {
                alerts.delivered_revision = alerts.delivered_revision.max(*up_to);
            }
            _ => {}
        }
    }
}

impl Alerts {
    /// Keeps a raised or cleared alert, dropping the oldest past [`ALERT_HISTORY_MAX`]; a dropped
    /// record its webhook never took is counted.
    fn record(&mut self, record: AlertRecord) {
        self.history.push_back(record);
        while self.history.len() > ALERT_HISTORY_MAX {
            if let Some(dropped) = self.history.pop_front() {
                if dropped.revision > self.delivered_revision && !dropped.webhook.is_empty() {
                    self.undelivered_dropped += 1;
                }
            }
        }
    }

    fn webhook_of(&self, name: &str) -> String {
        self.rules.get(&key_of(name)).map(|state| state.rule.webhook.clone()).unwrap_or_default()
    }
}
