//! `collective.v1.Sources`: the directory source (LDAP / Active Directory). Administrators only
//! (`auth::gate`). The poll itself runs on the leader (`crate::source`).

use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::sources_server::Sources;
use collective_statemachine::source::plan::plan;
use collective_statemachine::source::{LdapSettings, Mapping, OnMissing, PollReport};
use collective_statemachine::{Command, Rejection};
use tonic::{Request, Response, Status};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;

/// Polling interval when a request gives none: an hour.
pub const INTERVAL_S_DEFAULT: u32 = 3_600;
/// The search filter when a request gives none.
pub const FILTER_DEFAULT: &str = "(objectClass=inetOrgPerson)";
/// Changes a dry run lists (its counts cover them all).
pub const DRY_RUN_LINES_MAX: usize = 1_000;

/// Serves the directory source.
pub struct SourcesService {
    /// The node.
    pub node: Arc<Node>,
}

type Reply<T> = Result<Response<T>, Status>;

/// The settings a request asks for, defaults filled in; an empty password keeps `current`'s.
fn settings_in(settings: Option<pb::LdapSettings>, current: Option<&LdapSettings>) -> Result<LdapSettings, ApiError> {
    let settings = settings.ok_or_else(|| ApiError::invalid("settings", "missing"))?;
    let defaults = Mapping::default();
    let mapping = settings.mapping.unwrap_or_default();
    let or = |value: String, default: &str| if value.is_empty() { default.to_string() } else { value };
    let on_missing = match settings.on_missing.as_str() {
        "" | "deactivate" => OnMissing::Deactivate,
        "delete" => OnMissing::Delete,
        other => {
            return Err(ApiError::invalid("settings.on_missing", format!("{other:?} is not deactivate or delete")))
        }
    };
    let bind_password = match (settings.bind_password.is_empty(), current) {
        (true, Some(current)) => current.bind_password.clone(),
        _ => settings.bind_password,
    };
    Ok(LdapSettings {
        url: settings.url,
        starttls: settings.starttls,
        ca_pem: settings.ca_pem,
        bind_dn: settings.bind_dn,
        bind_password,
        base_dn: settings.base_dn,
        filter: or(settings.filter, FILTER_DEFAULT),
        mapping: Mapping {
            username: or(mapping.username, &defaults.username),
            display_name: or(mapping.display_name, &defaults.display_name),
            email: or(mapping.email, &defaults.email),
            home_site: or(mapping.home_site, &defaults.home_site),
            extension: or(mapping.extension, &defaults.extension),
            skills: mapping.skills,
            workgroups: mapping.workgroups,
        },
        interval_s: if settings.interval_s == 0 { INTERVAL_S_DEFAULT } else { settings.interval_s },
        on_missing,
    })
}

/// The settings as a read shows them: never the password.
fn settings_out(settings: &LdapSettings) -> pb::LdapSettings {
    let mapping = &settings.mapping;
    pb::LdapSettings {
        url: settings.url.clone(),
        starttls: settings.starttls,
        ca_pem: settings.ca_pem.clone(),
        bind_dn: settings.bind_dn.clone(),
        bind_password: String::new(),
        base_dn: settings.base_dn.clone(),
        filter: settings.filter.clone(),
        mapping: Some(pb::LdapMapping {
            username: mapping.username.clone(),
            display_name: mapping.display_name.clone(),
            email: mapping.email.clone(),
            home_site: mapping.home_site.clone(),
            extension: mapping.extension.clone(),
            skills: mapping.skills.clone(),
            workgroups: mapping.workgroups.clone(),
        }),
        interval_s: settings.interval_s,
        on_missing: settings.on_missing.as_str().to_string(),
    }
}

/// A poll's report on the wire.
pub fn report_out(report: &PollReport) -> pb::SourcePollReport {
    pb::SourcePollReport {
        started_ms: report.started_ms,
        duration_ms: report.duration_ms,
        seen: report.seen,
        created: report.created,
        updated: report.updated,
        removed: report.removed,
        refused: report.refused,
        refusals: report.refusals.clone(),
        error: report.error.clone().unwrap_or_default(),
    }
}

fn no_source() -> ApiError {
    Rejection::not_found("directory source", "ldap").into()
}

#[tonic::async_trait]
impl Sources for SourcesService {
    async fn set_ldap(&self, request: Request<pb::SetLdapRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let current = self.node.shared.state.read().expect("state lock").source.as_ref().map(|s| s.settings.clone());
        let settings = settings_in(request.settings, current.as_ref())?;
        if settings.bind_password.is_empty() {
            return Err(ApiError::invalid("settings.bind_password", "must not be empty").into());
        }
        let applied =
            self.node.write(principal, Command::SetSource { settings, next_poll_ms: request.next_poll_ms }).await?;
        Ok(Response::new(convert::write_response(applied)))
    }

    async fn get_ldap(&self, request: Request<pb::GetLdapRequest>) -> Reply<pb::LdapSource> {
        let source = read(&self.node, request.into_inner().serializable, |state| {
            let source = state.source.as_ref().ok_or_else(no_source)?;
            Ok(pb::LdapSource {
                settings: Some(settings_out(&source.settings)),
                has_bind_password: !source.settings.bind_password.is_empty(),
                next_poll_ms: source.next_poll_ms,
            })
        })
        .await?;
        Ok(Response::new(source))
    }

    async fn sync_now(&self, request: Request<pb::SyncNowRequest>) -> Reply<pb::SyncNowResponse> {
        let principal = principal(&request)?;
        if !request.into_inner().dry_run {
            let applied = self.node.write(principal, Command::PollSourceNow).await?;
            let due_ms = applied.events.first().map_or(0, |record| record.at_ms);
            return Ok(Response::new(pb::SyncNowResponse { revision: applied.revision, plan: None, due_ms }));
        }
        // A dry run reads the directory here and plans against this member's current state.
        let settings =
            read(&self.node, false, |state| Ok(state.source.as_ref().ok_or_else(no_source)?.settings.clone())).await?;
        let entries = crate::source::read_directory(&settings)
            .await
            .map_err(|error| ApiError::from(Rejection::precondition("source", error)))?;
        let plan = plan(&self.node.shared.state.read().expect("state lock"), &settings, &entries);
        Ok(Response::new(pb::SyncNowResponse {
            revision: 0,
            due_ms: 0,
            plan: Some(pb::SourcePlan {
                seen: plan.seen,
                creates: plan.creates,
                updates: plan.updates,
                removes: plan.removes,
                refused: plan.refused,
                refusals: plan.refusals.clone(),
                changes: crate::source::plan_lines(&plan, DRY_RUN_LINES_MAX),
            }),
        }))
    }

    async fn status(&self, request: Request<pb::SourceStatusRequest>) -> Reply<pb::SourceStatus> {
        let status = read(&self.node, request.into_inner().serializable, |state| {
            Ok(match &state.source {
                None => pb::SourceStatus::default(),
                Some(source) => pb::SourceStatus {
                    configured: true,
                    next_poll_ms: source.next_poll_ms,
                    polling: source.polling,
                    last_poll: source.last_poll.as_ref().map(report_out),
                    owned: source.owned.len() as u64,
                    deactivated: source.deactivated.len() as u64,
                },
            })
        })
        .await?;
        Ok(Response::new(status))
    }

    async fn remove_ldap(&self, request: Request<pb::RemoveLdapRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let applied = self.node.write(principal, Command::RemoveSource).await?;
        Ok(Response::new(convert::write_response(applied)))
    }
}
