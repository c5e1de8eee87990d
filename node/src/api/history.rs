//! `collective.v1.History`: presence at a past time, who was available, time per status.

use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::history_server::History;
use collective_statemachine::user::key_of;
use tonic::{Request, Response, Status};

use super::error::ApiError;
use crate::node::Node;

/// Serves the history.
pub struct HistoryService {
    /// The node.
    pub node: Arc<Node>,
}

impl HistoryService {
    /// Waits for the read barrier, then runs the (blocking) RocksDB query off the async threads.
    async fn query<T: Send + 'static>(
        &self,
        serializable: bool,
        query: impl FnOnce(&crate::history::HistoryStore) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, Status> {
        self.node.read_barrier(serializable).await?;
        let history = self.node.history.clone();
        let result = self
            .node
            .environment
            .blocking(move || query(&history))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(result?)
    }
}

#[tonic::async_trait]
impl History for HistoryService {
    async fn presence_at(
        &self,
        request: Request<pb::PresenceAtRequest>,
    ) -> Result<Response<pb::PresenceAtResponse>, Status> {
        let request = request.into_inner();
        if request.username.is_empty() {
            return Err(ApiError::invalid("username", "must not be empty").into());
        }
        let user_key = key_of(&request.username);
        let found =
            self.query(request.serializable, move |history| Ok(history.presence_at(&user_key, request.at_ms)?)).await?;
        Ok(Response::new(match found {
            None => pb::PresenceAtResponse::default(),
            Some((since_ms, version)) => pb::PresenceAtResponse {
                found: true,
                since_ms,
                status_key: version.status_key,
                status_group: version.status_group.as_str().to_string(),
                current_site: version.logged_on_site.unwrap_or(0),
                on_phone: version.on_phone,
                overdue: version.overdue,
            },
        }))
    }

    async fn available_at(
        &self,
        request: Request<pb::AvailableAtRequest>,
    ) -> Result<Response<pb::AvailableAtResponse>, Status> {
        let request = request.into_inner();
        let (workgroup, site) = match (request.workgroup.is_empty(), request.site) {
            (false, 0) => (Some(key_of(&request.workgroup)), None),
            (true, site) if site != 0 => (None, Some(site)),
            _ => return Err(ApiError::invalid("workgroup", "give exactly one of workgroup and site").into()),
        };
        let versions = self
            .query(request.serializable, move |history| {
                Ok(history.users_at(request.at_ms, |version| {
                    version.available()
                        && workgroup.as_ref().is_none_or(|wg| version.workgroups.contains(wg))
                        && site.is_none_or(|site| version.logged_on_site == Some(site))
                })?)
            })
            .await?;
        Ok(Response::new(pb::AvailableAtResponse { usernames: versions.into_iter().map(|v| v.username).collect() }))
    }

    async fn durations(
        &self,
        request: Request<pb::DurationsRequest>,
    ) -> Result<Response<pb::DurationsResponse>, Status> {
        let request = request.into_inner();
        if request.from_ms >= request.to_ms {
            return Err(ApiError::invalid("to_ms", "must be after from_ms").into());
        }
        let user_key = key_of(&request.username);
        let totals = self
            .query(request.serializable, move |history| {
                Ok(history.durations(&user_key, request.from_ms, request.to_ms)?)
            })
            .await?;
        Ok(Response::new(pb::DurationsResponse { ms_by_status: totals.into_iter().collect() }))
    }
}
