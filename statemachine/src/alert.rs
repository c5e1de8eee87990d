//! Alerts on the board's statistics (the vendor's "custom alerts ... on any statistic displayed
//! in a view"): a rule names a statistic of a workgroup or a site, a comparison, a threshold and
//! how long the condition must hold. Whether a rule fires or clears is decided inside the log,
//! like lease expiry: while rules exist the leader proposes a `Tick` every second, and each Tick
//! evaluates every rule against the state at the entry's time, so every member agrees.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::limits::NAME_CHARS_MAX;
use crate::rejection::Rejection;
use crate::site::SiteId;
use crate::validate::{site_id, text};

mod rules;

/// Rules per collective at most.
pub const ALERT_RULES_MAX: usize = 64;
/// Raised and cleared alerts kept in the history.
pub const ALERT_HISTORY_MAX: usize = 1_000;
/// How often rules are evaluated: the leader proposes a `Tick` on every such boundary.
pub const ALERT_EVALUATION_MS: u64 = 1_000;
/// The longest a condition may be required to hold: a day.
pub const ALERT_WINDOW_MS_MAX: u64 = 24 * 3_600_000;
/// The largest threshold: no statistic comes near it.
pub const ALERT_THRESHOLD_MAX: u64 = 1_000_000_000;
/// The longest webhook URL.
pub const WEBHOOK_URL_CHARS_MAX: usize = 2_048;

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Statistic {
    /// Members of the workgroup logged on.
    WorkgroupLoggedOn,
    /// Logged-on members in an ACD-available status.
    WorkgroupReady,
    /// Members who can take an interaction now.
    WorkgroupAvailable,
    /// Members on the phone.
    WorkgroupOnPhone,
    /// Members holding a reservation.
    WorkgroupReserved,
    /// Interactions waiting in the workgroup's queue.
    WorkgroupQueued,
    /// How long the oldest queued interaction has waited, ms.
    WorkgroupLongestWaitMs,
    /// 1 while the site holds a live lease, else 0.
    SiteLease,
    /// Messages waiting for the site.
    SiteBacklog,
}

impl Statistic {
    /// Every statistic, with its name.
    pub const ALL: [(Statistic, &'static str); 9] = [
        (Statistic::WorkgroupLoggedOn, "workgroup.logged_on"),
        (Statistic::WorkgroupReady, "workgroup.ready"),
        (Statistic::WorkgroupAvailable, "workgroup.available"),
        (Statistic::WorkgroupOnPhone, "workgroup.on_phone"),
        (Statistic::WorkgroupReserved, "workgroup.reserved"),
        (Statistic::WorkgroupQueued, "workgroup.queued"),
        (Statistic::WorkgroupLongestWaitMs, "workgroup.longest_wait_ms"),
        (Statistic::SiteLease, "site.lease"),
        (Statistic::SiteBacklog, "site.backlog"),
    ];

    /// `workgroup.queued`, …
    pub fn name(self) -> &'static str {
        Statistic::ALL.iter().find(|(statistic, _)| *statistic == self).map_or("", |(_, name)| name)
    }

    /// The statistic a name gives, if any.
    pub fn parse(name: &str) -> Option<Statistic> {
        Statistic::ALL.iter().find(|(_, known)| *known == name).map(|(statistic, _)| *statistic)
    }

    /// Whether it is about a site (else a workgroup).
    pub fn of_site(self) -> bool {
        matches!(self, Statistic::SiteLease | Statistic::SiteBacklog)
    }
}

/// How a value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// Holds while the value is greater than the threshold.
    Above,
    /// Holds while the value is less than the threshold.
    Below,
}

/// An alert rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Unique name.
    pub name: String,
    /// What it watches.
    pub statistic: Statistic,
    /// The workgroup (for `workgroup.*`).
    pub workgroup: String,
    /// The site (for `site.*`).
    pub site: SiteId,
    /// Above or below.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: u64,
    /// How long the condition must hold before the alert is raised (0: at the next evaluation).
    pub for_ms: u64,
    /// Where the leader POSTs the rule's raised and cleared alerts (http or https; empty: nowhere).
    #[serde(default)]
    pub webhook: String,
}

impl AlertRule {
    /// Whether `value` meets the condition.
    pub fn holds(&self, value: u64) -> bool {
        match self.comparison {
            Comparison::Above => value > self.threshold,
            Comparison::Below => value < self.threshold,
        }
    }

    /// What the rule watches, for people: `workgroup.queued of Support`, `site.lease of site 4`.
    pub fn subject(&self) -> String {
        if self.statistic.of_site() {
            format!("{} of site {}", self.statistic.name(), self.site)
        } else {
            format!("{} of {}", self.statistic.name(), self.workgroup)
        }
    }
}

/// A rule and where its condition stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertState {
    /// The rule.
    pub rule: AlertRule,
    /// Entry time since which the condition holds.
    pub holding_since_ms: Option<u64>,
    /// Whether the alert is raised.
    pub raised: bool,
    /// The value at the last change.
    pub value: u64,
}

/// A raised or cleared alert, as the history keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// The revision of its event.
    pub revision: u64,
    /// Entry time.
    pub at_ms: u64,
    /// The rule's name.
    pub name: String,
    /// True when raised, false when cleared.
    pub raised: bool,
    /// The statistic's value then.
    pub value: u64,
    /// The rule's webhook when it was raised or cleared (empty: none).
    #[serde(default)]
    pub webhook: String,
}

/// Every rule, the history of raised and cleared alerts, and how far their webhooks got.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alerts {
    /// Rules by lowercase name.
    pub rules: BTreeMap<String, AlertState>,
    /// The newest [`ALERT_HISTORY_MAX`] raised and cleared alerts, oldest first.
    pub history: VecDeque<AlertRecord>,
    /// Every record with a webhook up to this revision has been delivered (at least once).
    #[serde(default)]
    pub delivered_revision: u64,
    /// Records that left the history before their webhook took them (a receiver down for
    /// longer than [`ALERT_HISTORY_MAX`] alerts).
    #[serde(default)]
    pub undelivered_dropped: u64,
}

impl Alerts {
    /// The records whose webhook has not yet taken them, oldest first.
    pub fn undelivered(&self) -> impl Iterator<Item = &AlertRecord> {
        self.history.iter().filter(|record| record.revision > self.delivered_revision && !record.webhook.is_empty())
    }
}

/// Checks a rule's fields; the first problem names its field.
pub fn validate_rule(rule: &AlertRule) -> Result<(), Rejection> {
    text("rule.name", &rule.name, 1, NAME_CHARS_MAX)?;
    if rule.statistic.of_site() {
        site_id("rule.site", rule.site)?;
    } else {
        text("rule.workgroup", &rule.workgroup, 1, NAME_CHARS_MAX)?;
    }
    if rule.threshold > ALERT_THRESHOLD_MAX {
        return Err(Rejection::invalid("rule.threshold", format!("at most {ALERT_THRESHOLD_MAX}")));
    }
    if rule.for_ms > ALERT_WINDOW_MS_MAX {
        return Err(Rejection::invalid("rule.for_ms", format!("at most {ALERT_WINDOW_MS_MAX} ms (a day)")));
    }
    if !rule.webhook.is_empty() {
        validate_webhook(&rule.webhook).map_err(|reason| Rejection::invalid("rule.webhook", reason))?;
    }
    Ok(())
}

/// A webhook is an absolute http(s) URL with a host and no credentials (they would show in
/// `alert list` and in logs; a receiver that needs a secret reads it from its own URL path).
fn validate_webhook(webhook: &str) -> Result<(), String> {
    if webhook.chars().count() > WEBHOOK_URL_CHARS_MAX {
        return Err(format!("longer than {WEBHOOK_URL_CHARS_MAX} characters"));
    }
    let url = url::Url::parse(webhook).map_err(|error| format!("{webhook:?} is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{webhook:?} is not http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{webhook:?} names no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in a webhook URL".to_string());
    }
    Ok(())
}
