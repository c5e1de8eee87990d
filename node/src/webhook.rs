//! Alert webhooks. While it leads, a member POSTs every raised and cleared alert whose rule names
//! a webhook (`alert.rs`: the history keeps the URL with each record), oldest first per URL,
//! retrying with a growing pause until the receiver answers 2xx, and then records in the log how
//! far it got (`AlertsDelivered`). A new leader starts from that mark, so every alert is delivered
//! at least once; one delivered but not yet marked when its leader falls is delivered again with
//! the same event id (the `Idempotency-Key` header and `event_id`: the revision of the alert's
//! event, the same on every member), so a receiver drops the duplicate. Receivers are independent:
//! one that is down delays only its own alerts. The history's bound (1,000 records) bounds what
//! waits; a record that leaves it undelivered is counted (`collective_alert_webhook_dropped`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use collective_statemachine::alert::AlertRecord;
use collective_statemachine::{Command, Principal};
use serde::Serialize;

use crate::node::Node;

/// How often the leader looks for undelivered alerts.
const CHECK_INTERVAL_MS: u64 = 200;
/// One POST's limit, connection included.
const REQUEST_TIMEOUT_MS: u64 = 5_000;
/// The first pause after a failed delivery to a receiver; it doubles up to the longest.
const RETRY_PAUSE_FIRST_MS: u64 = 500;
const RETRY_PAUSE_LONGEST_MS: u64 = 30_000;

/// What a receiver gets, as JSON.
#[derive(Debug, Serialize)]
pub struct Delivery<'a> {
    /// Unique per alert and the same on every member and every retry: drop a repeat.
    pub event_id: String,
    /// The revision of the `AlertRaised` or `AlertCleared` event.
    pub revision: u64,
    /// Entry time, milliseconds since the epoch.
    pub at_ms: u64,
    /// The rule's name.
    pub rule: &'a str,
    /// `raised` or `cleared`.
    pub state: &'static str,
    /// The statistic's value then.
    pub value: u64,
}

impl<'a> Delivery<'a> {
    fn of(record: &'a AlertRecord) -> Delivery<'a> {
        Delivery {
            event_id: format!("alert-{}", record.revision),
            revision: record.revision,
            at_ms: record.at_ms,
            rule: &record.name,
            state: if record.raised { "raised" } else { "cleared" },
            value: record.value,
        }
    }
}

/// A receiver's retry schedule.
struct Backoff {
    pause: Duration,
    next_try: Instant,
}

/// On every member, for as long as it runs: while it leads, delivers the alerts.
pub async fn run_webhooks(node: Arc<Node>) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .user_agent(concat!("collective/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "alert webhooks are off: no HTTP client");
            return;
        }
    };
    let mut check = tokio::time::interval(Duration::from_millis(CHECK_INTERVAL_MS));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Revisions delivered by this leadership and not yet below the mark; dropped on losing it.
    let mut delivered: BTreeSet<u64> = BTreeSet::new();
    let mut backoff: BTreeMap<String, Backoff> = BTreeMap::new();
    loop {
        check.tick().await;
        if !node.leads() {
            delivered.clear();
            backoff.clear();
            continue;
        }
        let (pending, mark, dropped) = {
            let state = node.shared.state.read().expect("state lock");
            let alerts = &state.alerts;
            (alerts.undelivered().cloned().collect::<Vec<_>>(), alerts.delivered_revision, alerts.undelivered_dropped)
        };
        metrics::gauge!("collective_alert_webhook_pending").set(pending.len() as f64);
        metrics::gauge!("collective_alert_webhook_dropped").set(dropped as f64);
        delivered.retain(|revision| *revision > mark);
        if pending.is_empty() {
            continue;
        }
        // Each receiver's undelivered records, oldest first, when its pause is over.
        let mut by_receiver: BTreeMap<&str, Vec<&AlertRecord>> = BTreeMap::new();
        for record in pending.iter().filter(|record| !delivered.contains(&record.revision)) {
            by_receiver.entry(record.webhook.as_str()).or_default().push(record);
        }
        let now = Instant::now();
        by_receiver.retain(|url, _| backoff.get(*url).is_none_or(|b| b.next_try <= now));
        let rounds = by_receiver.into_iter().map(|(url, records)| deliver_in_order(&client, url, records));
        for (url, revisions, failed) in futures::future::join_all(rounds).await {
            delivered.extend(revisions);
            if failed {
                let pause = backoff
                    .get(url)
                    .map_or(Duration::from_millis(RETRY_PAUSE_FIRST_MS), |b| b.pause * 2)
                    .min(Duration::from_millis(RETRY_PAUSE_LONGEST_MS));
                backoff.insert(url.to_string(), Backoff { pause, next_try: Instant::now() + pause });
            } else {
                backoff.remove(url);
            }
        }
        // The mark moves up to just before the oldest record still undelivered.
        let up_to = pending.iter().take_while(|record| delivered.contains(&record.revision)).last();
        if let Some(record) = up_to {
            let command = Command::AlertsDelivered { up_to: record.revision };
            if let Err(error) = node.write_as_leader(Principal::System, command).await {
                tracing::debug!(%error, "could not record delivered alerts; a successor delivers them again");
            }
        }
    }
}

/// Delivers `records` to `url` in order until one fails: the revisions delivered, and whether
/// one failed.
async fn deliver_in_order<'a>(
    client: &reqwest::Client,
    url: &'a str,
    records: Vec<&AlertRecord>,
) -> (&'a str, Vec<u64>, bool) {
    let mut delivered = Vec::new();
    for record in records {
        let delivery = Delivery::of(record);
        let sent = client
            .post(url)
            .header("Idempotency-Key", &delivery.event_id)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&delivery).unwrap_or_default())
            .send()
            .await;
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!("answered {}", response.status())),
            Err(error) => Err(error.without_url().to_string()),
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("collective_alert_webhook_deliveries_total", "outcome" => "ok").increment(1);
                delivered.push(record.revision);
            }
            Err(error) => {
                metrics::counter!("collective_alert_webhook_deliveries_total", "outcome" => "failed").increment(1);
                // The URL's path may carry the receiver's secret: log its host only.
                let host = url::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
                tracing::warn!(rule = %record.name, revision = record.revision, %host, %error, "alert webhook failed; retrying");
                return (url, delivered, true);
            }
        }
    }
    (url, delivered, false)
}
