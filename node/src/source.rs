//! The directory source's I/O and schedule: the leader reads LDAP (ldap3 over rustls with the ring
//! provider, paged), plans with `collective_statemachine::source::plan::plan` and proposes the
//! steps in bounded batches under the principal `source:ldap`. The rules (fencing, ownership,
//! deactivation) live in the state machine's `source.rs`.
//!
//! A poll: `StartSourcePoll { term }` (refused if a leader of a newer term began one), the
//! directory read, the plan against the applied state, the steps in batches of
//! `SOURCE_STEPS_PER_BATCH`, and `FinishSourcePoll` with the report, which makes the next poll due
//! one interval later. A leader deposed mid-poll stops at its next write; its successor sees a
//! poll of an older term unfinished and runs a new one at once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use collective_statemachine::source::plan::{plan, DirectoryEntry, Plan};
use collective_statemachine::source::{
    report_text, LdapSettings, PollReport, SourceStep, REFUSALS_KEPT_MAX, SOURCE_ENTRIES_MAX, SOURCE_STEPS_PER_BATCH,
};
use collective_statemachine::{Command, Principal, Rejection};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use crate::api::error::ApiError;
use crate::node::Node;
use crate::raft_service::Forwarded;

/// How often the leader checks whether a poll is due.
pub const POLL_CHECK_INTERVAL_MS: u64 = 500;
/// The pause after a poll that could not finish (deposed, no quorum) before the next try.
pub const POLL_RETRY_PAUSE_MS: u64 = 5_000;
/// How long connecting (TCP and TLS) to the directory may take.
pub const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// How long the whole directory read may take.
pub const READ_TIMEOUT_MS: u64 = 10 * 60_000;
/// Entries per page of the paged search.
pub const PAGE_ENTRIES: i32 = 500;

/// The principal of a poll's commands.
pub fn principal() -> Principal {
    Principal::Source("ldap".into())
}

/// Reads every entry the settings' search finds: connect (TLS or StartTLS as configured), bind,
/// paged subtree search. The error names the step that failed.
pub async fn read_directory(settings: &LdapSettings) -> Result<Vec<DirectoryEntry>, String> {
    match tokio::time::timeout(Duration::from_millis(READ_TIMEOUT_MS), read(settings)).await {
        Ok(result) => result,
        Err(_) => Err(format!("reading {} took over {} s", settings.url, READ_TIMEOUT_MS / 1_000)),
    }
}

async fn read(settings: &LdapSettings) -> Result<Vec<DirectoryEntry>, String> {
    let mut connection = LdapConnSettings::new()
        .set_conn_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
        .set_starttls(settings.starttls);
    if !settings.ca_pem.is_empty() {
        connection = connection.set_config(tls_config(&settings.ca_pem)?);
    }
    let (driver, mut ldap) = LdapConnAsync::with_settings(connection, &settings.url)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", settings.url))?;
    tokio::spawn(async move {
        if let Err(error) = driver.drive().await {
            tracing::debug!(%error, "LDAP connection ended");
        }
    });
    ldap.with_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS));
    ldap.simple_bind(&settings.bind_dn, &settings.bind_password)
        .await
        .and_then(|result| result.success())
        .map_err(|e| format!("bind as {} refused: {e}", settings.bind_dn))?;
    let adapters: Vec<Box<dyn Adapter<_, _>>> =
        vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(PAGE_ENTRIES))];
    let attributes = settings.mapping.attributes();
    let mut search = ldap
        .streaming_search_with(adapters, &settings.base_dn, Scope::Subtree, &settings.filter, attributes)
        .await
        .map_err(|e| format!("search under {} failed: {e}", settings.base_dn))?;
    let mut entries = Vec::new();
    while let Some(entry) = search.next().await.map_err(|e| format!("search under {} failed: {e}", settings.base_dn))? {
        if entries.len() >= SOURCE_ENTRIES_MAX {
            return Err(format!("the search returned over {SOURCE_ENTRIES_MAX} entries; narrow the base DN or filter"));
        }
        let entry = SearchEntry::construct(entry);
        let attributes = entry.attrs.into_iter().map(|(name, values)| (name.to_ascii_lowercase(), values)).collect();
        entries.push(DirectoryEntry { dn: entry.dn, attributes });
    }
    search.finish().await.success().map_err(|e| format!("search under {} failed: {e}", settings.base_dn))?;
    let _ = ldap.unbind().await;
    Ok(entries)
}

/// A rustls client configuration (ring provider) trusting the given CA certificates only.
fn tls_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let certificate = certificate.map_err(|e| format!("settings.ca_pem: {e}"))?;
        roots.add(certificate).map_err(|e| format!("settings.ca_pem: {e}"))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// On every member, for as long as it runs: while it leads, runs each poll when it is due.
pub async fn run_polls(node: Arc<Node>) {
    let mut check = tokio::time::interval(Duration::from_millis(POLL_CHECK_INTERVAL_MS));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        check.tick().await;
        if !node.leads() {
            continue;
        }
        let term = node.raft.metrics().borrow().current_term;
        let due = {
            let state = node.shared.state.read().expect("state lock");
            state.source.as_ref().is_some_and(|source| {
                // A poll an earlier leader began and never reported is redone at once.
                let orphaned = source.polling && source.term < term;
                orphaned || node.now_ms() >= source.next_poll_ms
            })
        };
        if !due {
            continue;
        }
        if let Err(error) = poll(&node, term).await {
            tracing::warn!(%error, "directory poll stopped; it is tried again");
            metrics::counter!("collective_source_polls_total", "outcome" => "interrupted").increment(1);
            tokio::time::sleep(Duration::from_millis(POLL_RETRY_PAUSE_MS)).await;
        }
    }
}

/// One poll on the leader of `term`. An error means it could not finish (deposed, no quorum, a
/// newer poll fenced it); a directory that cannot be read is a finished poll whose report says
/// why.
async fn poll(node: &Arc<Node>, term: u64) -> Result<(), ApiError> {
    let begun = node.write_as_leader(principal(), Command::StartSourcePoll { term }).await?;
    let started = Instant::now();
    // The entry's time, not this clock: `sync-now` compares it with the entry time that made the
    // poll due, and entry time never goes backwards across leaders.
    let started_ms = begun.events.first().map_or_else(|| node.now_ms(), |record| record.at_ms);
    let settings = match &node.shared.state.read().expect("state lock").source {
        Some(source) => source.settings.clone(),
        None => return Ok(()),
    };
    let mut report = PollReport { started_ms, ..PollReport::default() };
    match read_directory(&settings).await {
        Err(error) => {
            tracing::warn!(url = %settings.url, %error, "directory poll failed");
            report.error = Some(report_text(&error));
        }
        Ok(entries) => {
            let plan = plan(&node.shared.state.read().expect("state lock"), &settings, &entries);
            apply(node, term, &plan, &mut report).await?;
        }
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    let outcome = if report.error.is_some() { "failed" } else { "ok" };
    metrics::counter!("collective_source_polls_total", "outcome" => outcome).increment(1);
    metrics::histogram!("collective_source_poll_duration_seconds").record(started.elapsed().as_secs_f64());
    for (kind, count) in [
        ("created", report.created),
        ("updated", report.updated),
        ("removed", report.removed),
        ("refused", report.refused),
    ] {
        metrics::counter!("collective_source_changes_total", "kind" => kind).increment(count);
    }
    metrics::gauge!("collective_source_entries").set(report.seen as f64);
    tracing::info!(
        seen = report.seen,
        created = report.created,
        updated = report.updated,
        removed = report.removed,
        refused = report.refused,
        duration_ms = report.duration_ms,
        "directory poll done"
    );
    node.write_as_leader(principal(), Command::FinishSourcePoll { term, report }).await?;
    Ok(())
}

/// Proposes a plan's steps in batches and counts what applied into `report`; a refused step
/// (an extension conflict) is reported and the others go on.
async fn apply(node: &Arc<Node>, term: u64, plan: &Plan, report: &mut PollReport) -> Result<(), ApiError> {
    report.seen = plan.seen;
    report.refused = plan.refused;
    report.refusals = plan.refusals.clone();
    // Users, by lowercase name: a user created by this poll is not also counted as updated
    // when it joins its workgroups.
    let mut created = BTreeSet::new();
    let mut updated = BTreeSet::new();
    for chunk in plan.steps.chunks(SOURCE_STEPS_PER_BATCH) {
        let batch = chunk
            .iter()
            .map(|planned| Forwarded {
                principal: principal(),
                command: Command::SourceStep { term, step: planned.step.clone() },
            })
            .collect();
        for (planned, outcome) in chunk.iter().zip(node.write_batch_as_leader(batch).await) {
            match outcome {
                Ok(_) => match &planned.step {
                    SourceStep::Create(spec) => {
                        created.insert(spec.username.to_lowercase());
                    }
                    SourceStep::Deactivate { .. } | SourceStep::Delete { .. } => report.removed += 1,
                    SourceStep::Claim { .. } => {}
                    step => {
                        updated.insert(step.username().to_lowercase());
                    }
                },
                // Fenced: a newer poll began; this one stops.
                Err(ApiError::Rejected(Rejection::FailedPrecondition { field, reason })) if field == "term" => {
                    return Err(ApiError::Rejected(Rejection::FailedPrecondition { field, reason }));
                }
                Err(ApiError::Rejected(rejection)) => {
                    report.refused += 1;
                    if report.refusals.len() < REFUSALS_KEPT_MAX {
                        report.refusals.push(report_text(&format!("{}: {rejection}", planned.entry)));
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }
    report.created = created.len() as u64;
    report.updated = updated.difference(&created).count() as u64;
    Ok(())
}

/// A plan's changes as lines (`create ada`, `join ada Support`…), the first `limit` of them.
pub fn plan_lines(plan: &Plan, limit: usize) -> Vec<String> {
    plan.steps
        .iter()
        .take(limit)
        .map(|planned| match &planned.step {
            SourceStep::Create(spec) => format!("create {} ({}, site {})", spec.username, spec.email, spec.home_site),
            SourceStep::Update(spec) => format!("update {}", spec.username),
            SourceStep::Claim { username } => format!("claim {username}"),
            SourceStep::Join { username, workgroup } => format!("join {username} {workgroup}"),
            SourceStep::Leave { username, workgroup } => format!("leave {username} {workgroup}"),
            SourceStep::Deactivate { username } => format!("deactivate {username}"),
            SourceStep::Reactivate { username } => format!("reactivate {username}"),
            SourceStep::Delete { username } => format!("delete {username}"),
        })
        .collect()
}
