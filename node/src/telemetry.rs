//! What a member tells Prometheus: every metric family described (`# HELP`), histograms with
//! buckets (etcd's for fsync, apply and snapshots, so `histogram_quantile` and etcd-style alerts
//! work across members), build info, and process metrics from `metrics-process` (CPU, memory,
//! open files, threads).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use std::fmt::Write as _;

use collective_statemachine::State;

use crate::error::Result;

/// etcd's `etcd_disk_wal_fsync_duration_seconds` and backend commit buckets: 1 ms to 8.192 s,
/// doubling.
pub const DISK_BUCKETS: [f64; 14] =
    [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192];
/// etcd's snapshot buckets: 10 ms to 81.92 s, doubling.
pub const SNAPSHOT_BUCKETS: [f64; 14] =
    [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];
/// Commands or entries per batch: 1 to 1,024, doubling (a batch holds at most 1,024 commands).
pub const BATCH_BUCKETS: [f64; 11] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// Installs the process-wide Prometheus recorder and describes every family; the handle renders
/// `/metrics`. Once per process (the simulations run without a recorder).
pub fn install() -> Result<(PrometheusHandle, metrics_process::Collector)> {
    let full = |name: &str| Matcher::Full(name.to_string());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(full("collective_disk_wal_fsync_duration_seconds"), &DISK_BUCKETS)?
        .set_buckets_for_metric(full("collective_apply_duration_seconds"), &DISK_BUCKETS)?
        .set_buckets_for_metric(full("collective_snapshot_build_seconds"), &SNAPSHOT_BUCKETS)?
        .set_buckets_for_metric(full("collective_snapshot_install_seconds"), &SNAPSHOT_BUCKETS)?
        .set_buckets_for_metric(full("collective_log_append_batch_entries"), &BATCH_BUCKETS)?
        .set_buckets_for_metric(full("collective_proposal_batch_commands"), &BATCH_BUCKETS)?
        .set_buckets_for_metric(full("grpc_server_handling_seconds"), &crate::grpc_metrics::HANDLING_BUCKETS)?
        .set_buckets_for_metric(full("collective_source_poll_duration_seconds"), &SNAPSHOT_BUCKETS)?
        .install_recorder()?;
    describe();
    metrics::gauge!(
        "collective_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "openraft" => "0.10",
    )
    .set(1.0);
    // Counters every member exports from the start, so a follower's series exist (at 0) before
    // it first proposes or forwards.
    for counter in [
        "collective_proposals_committed_total",
        "collective_proposals_applied_total",
        "collective_proposals_forwarded_total",
        "collective_writes_timed_out_total",
        "collective_leader_changes_seen_total",
        "collective_linearizable_reads_total",
        "collective_read_index_rounds_total",
    ] {
        metrics::counter!(counter).increment(0);
    }
    let process = metrics_process::Collector::default();
    process.describe();
    Ok((handle, process))
}

/// `# HELP` and units for every family this crate records.
fn describe() {
    describe_counter!("grpc_server_started_total", "RPCs started on the server.");
    describe_counter!("grpc_server_handled_total", "RPCs completed on the server, by gRPC code.");
    describe_counter!("grpc_server_msg_received_total", "RPC stream messages received by the server.");
    describe_counter!("grpc_server_msg_sent_total", "RPC stream messages sent by the server.");
    describe_histogram!(
        "grpc_server_handling_seconds",
        Unit::Seconds,
        "Time from an RPC's start to its last message (grpc-prometheus' buckets)."
    );
    describe_gauge!("collective_build_info", "Always 1; the version of collective and of openraft in its labels.");
    describe_gauge!("collective_server_has_leader", "1 when this member knows a leader, else 0.");
    describe_gauge!("collective_server_is_leader", "1 when this member is the leader, else 0.");
    describe_counter!("collective_leader_changes_seen_total", "Leader changes this member has seen.");
    describe_gauge!("collective_raft_term", "This member's current Raft term.");
    describe_gauge!("collective_raft_last_log_index", "Index of the last entry in this member's log.");
    describe_gauge!("collective_raft_applied_index", "Index of the last entry this member applied.");
    describe_gauge!(
        "collective_raft_follower_match_index",
        "On the leader: the last log index each follower (label member) is known to hold."
    );
    describe_gauge!(
        "collective_raft_follower_lag_entries",
        "On the leader: entries each follower (label member) lacks; 0 on other members."
    );
    describe_gauge!("collective_revision", "Revision of the last event this member applied.");
    describe_counter!(
        "collective_proposals_committed_total",
        "Commands this member proposed (as leader) that were committed."
    );
    describe_counter!("collective_proposals_applied_total", "Log entries this member applied.");
    describe_counter!("collective_proposals_forwarded_total", "Commands this member forwarded to the leader.");
    describe_gauge!("collective_proposals_pending", "Commands waiting to be proposed on this member.");
    describe_counter!("collective_writes_timed_out_total", "Writes whose deadline passed before they committed.");
    describe_counter!(
        "collective_source_polls_total",
        "Directory source polls on this member as leader, by outcome: ok, failed (the report says why), interrupted."
    );
    describe_histogram!(
        "collective_source_poll_duration_seconds",
        Unit::Seconds,
        "How long a directory source poll took, from its start to its report."
    );
    describe_counter!(
        "collective_source_changes_total",
        "Users the directory source's polls created, updated or removed, and entries refused, by kind."
    );
    describe_gauge!("collective_source_entries", "Entries the last directory source poll on this member read.");
    describe_counter!(
        "collective_alert_webhook_deliveries_total",
        "Alert webhook POSTs by the leader, by outcome (ok: 2xx; failed: retried)."
    );
    describe_gauge!("collective_alert_webhook_pending", "Raised or cleared alerts the leader has yet to deliver.");
    describe_gauge!(
        "collective_alert_webhook_dropped",
        "Alerts that left the history (1,000 kept) before their webhook took them."
    );
    describe_counter!("collective_commands_applied_total", "Commands applied, by command and outcome.");
    describe_histogram!(
        "collective_disk_wal_fsync_duration_seconds",
        Unit::Seconds,
        "Time to write and fsync one append of log entries (etcd's buckets)."
    );
    describe_histogram!(
        "collective_apply_duration_seconds",
        Unit::Seconds,
        "Time to apply one run of committed entries to the state machine."
    );
    describe_histogram!("collective_log_append_batch_entries", "Log entries written per fsync.");
    describe_histogram!("collective_proposal_batch_commands", "Commands per proposed log entry.");
    describe_histogram!("collective_snapshot_build_seconds", Unit::Seconds, "Time to build and write a snapshot.");
    describe_histogram!("collective_snapshot_install_seconds", Unit::Seconds, "Time to install a received snapshot.");
    describe_gauge!("collective_snapshot_bytes", Unit::Bytes, "Size of the current snapshot file.");
    describe_gauge!("collective_db_size_bytes", Unit::Bytes, "Bytes of this member's data directory on disk.");
    describe_counter!("collective_linearizable_reads_total", "Linearizable reads served by this member.");
    describe_counter!("collective_read_index_rounds_total", "Read-index rounds (one serves many reads).");
    describe_gauge!("collective_open_requests", "Inter-site requests waiting for their response.");
    describe_gauge!("collective_routing_queued", "Interactions waiting in a workgroup queue.");
    describe_gauge!("collective_routing_agents_available", "Agents eligible for routing.");
    describe_gauge!("collective_routing_routed", "Interactions routed since the state began.");
    describe_gauge!("collective_routing_accepted", "Reservations accepted since the state began.");
    describe_gauge!(
        "collective_process_resident_memory_bytes",
        Unit::Bytes,
        "Resident memory of this member (also process_resident_memory_bytes)."
    );
}

/// The gauge families whose label sets follow the replicated state: one series per site and
/// per alert rule. They are rendered from the state at each scrape, as a collector of
/// Prometheus' own client libraries does, and appended to the exporter's text. The exporter
/// cannot drop a series (metrics-rs/metrics#243): recorded through it, a removed or renumbered
/// site kept its last values and a removed rule read 0 until the member restarted, where
/// Prometheus should see the series end.
pub fn render_state_families(state: &State, out: &mut String) {
    let queue = |site: &u32| state.messaging.queues.get(site);
    let sites = || state.sites.keys();
    let help = "Messages queued for each site (label site).";
    let messages = sites().map(|site| (site.to_string(), queue(site).map_or(0, |q| q.deliveries.len() as u64)));
    gauge_family(out, "collective_site_queue_messages", help, "site", messages);
    let help = "Bytes queued for each site (label site).";
    let bytes = sites().map(|site| (site.to_string(), queue(site).map_or(0, |q| q.bytes)));
    gauge_family(out, "collective_site_queue_bytes", help, "site", bytes);
    let help = "1 while a site (label site) holds a live lease, else 0.";
    let alive = sites().map(|site| (site.to_string(), u64::from(state.leases.contains_key(site))));
    gauge_family(out, "collective_site_lease_alive", help, "site", alive);
    let help = "1 while the alert rule (label rule) is raised, else 0.";
    let rules = state.alerts.rules.values().map(|alert| (alert.rule.name.as_str(), u64::from(alert.raised)));
    gauge_family(out, "collective_alert_raised", help, "rule", rules);
}

/// One gauge family in the text exposition format, a series per label value.
fn gauge_family<L: AsRef<str>>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    series: impl Iterator<Item = (L, u64)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
    for (label_value, value) in series {
        let _ = writeln!(out, "{name}{{{label}=\"{}\"}} {value}", escape_label(label_value.as_ref()));
    }
    out.push('\n');
}

/// A label value as the text exposition format writes it: backslash, double quote and line
/// feed escaped (rule names are chosen by users).
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_for_the_text_format() {
        assert_eq!(escape_label("plain rule"), "plain rule");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
