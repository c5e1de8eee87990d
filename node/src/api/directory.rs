//! `collective.v1.Directory`: sites, users, workgroups, the status catalog, search and
//! extension resolution.

use std::sync::Arc;

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use collective_proto::v1 as pb;
use collective_proto::v1::directory_server::Directory;
use collective_statemachine::lease::LEASE_TTL_MS_DEFAULT;
use collective_statemachine::{limits, user::key_of, Command, Principal, SearchQuery, SiteSpec, TrustedAccess};
use tonic::{Request, Response, Status};

use super::auth::check_site_password;
use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::node::Node;

/// Serves the directory.
pub struct DirectoryService {
    /// The node.
    pub node: Arc<Node>,
}

type Reply<T> = Result<Response<T>, Status>;

impl DirectoryService {
    async fn write(&self, principal: Principal, command: Command) -> Reply<pb::WriteResponse> {
        let applied = self.node.write(principal, command).await?;
        Ok(Response::new(convert::write_response(applied)))
    }
}

/// Hashes a site password with Argon2id and the given salt (from `Environment::random`). Runs at
/// the edge, before proposal (hashing is random, so `apply` must never do it), under a permit of
/// `Node::argon2`.
pub fn hash_password(password: &str, salt: &[u8; 16]) -> Result<String, ApiError> {
    if password.is_empty() {
        return Err(ApiError::invalid("password", "must not be empty"));
    }
    if password.len() > limits::PASSWORD_BYTES_MAX {
        return Err(ApiError::invalid("password", format!("longer than {} bytes", limits::PASSWORD_BYTES_MAX)));
    }
    let salt = SaltString::encode_b64(salt).map_err(|e| ApiError::Internal(format!("salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ApiError::Internal(format!("hashing: {e}")))
}

#[tonic::async_trait]
impl Directory for DirectoryService {
    async fn add_site(&self, request: Request<pb::AddSiteRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let site = request.site.ok_or_else(|| ApiError::invalid("site", "is required"))?;
        collective_statemachine::validate::site_id("site.id", site.id).map_err(ApiError::from)?;
        let salt = self.node.environment.random::<16>();
        // The permit covers the hashing only, not the write that follows.
        let permit = self.node.argon2.acquire().await.map_err(|e| ApiError::Internal(e.to_string()))?;
        let password_hash = self
            .node
            .environment
            .blocking(move || hash_password(&request.password, &salt))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        drop(permit);
        let access = site.trusted_access.unwrap_or_default();
        self.write(
            principal,
            Command::AddSite(SiteSpec {
                id: site.id,
                name: site.name,
                phone: site.phone,
                password_hash,
                note_id_dial_string: site.note_id_dial_string,
                // Omitted means active: a site is added to take part (the vendor's default).
                active: site.active.unwrap_or(true),
                servers: site.servers,
                trusted_access: TrustedAccess {
                    publish_handlers: access.publish_handlers,
                    manage_handlers: access.manage_handlers,
                    master_administrator: access.master_administrator,
                },
            }),
        )
        .await
    }

    async fn set_site_active(&self, request: Request<pb::SetSiteActiveRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(principal, Command::SetSiteActive { site: request.id, active: request.active }).await
    }

    async fn get_site(&self, request: Request<pb::GetSiteRequest>) -> Reply<pb::Site> {
        let request = request.into_inner();
        let site = read(&self.node, request.serializable, |state| Ok(convert::site(state.site(request.id)?))).await?;
        Ok(Response::new(site))
    }

    async fn list_sites(&self, request: Request<pb::ListSitesRequest>) -> Reply<pb::ListSitesResponse> {
        let request = request.into_inner();
        let response = read(&self.node, request.serializable, |state| {
            Ok(pb::ListSitesResponse {
                sites: state.sites.values().map(convert::site).collect(),
                revision: state.revision,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn check_trusted_access(
        &self,
        request: Request<pb::CheckTrustedAccessRequest>,
    ) -> Reply<pb::CheckTrustedAccessResponse> {
        let request = request.into_inner();
        collective_statemachine::validate::site_id("site", request.site).map_err(ApiError::from)?;
        if request.username.is_empty() {
            return Err(ApiError::invalid("username", "is required").into());
        }
        let (access, home_site) = read(&self.node, request.serializable, |state| {
            let access = state.trusted_access(&request.username, request.site)?;
            Ok((access, state.user(&request.username)?.home_site))
        })
        .await?;
        Ok(Response::new(pb::CheckTrustedAccessResponse {
            home: access.home,
            logged_on: access.logged_on,
            publish_handlers: access.publish_handlers,
            manage_handlers: access.manage_handlers,
            master_administrator: access.master_administrator,
            home_site,
        }))
    }

    async fn check_site(&self, request: Request<pb::CheckSiteRequest>) -> Reply<pb::CheckSiteResponse> {
        let source = request.remote_addr().map(|addr| addr.ip());
        let request = request.into_inner();
        collective_statemachine::validate::site_id("id", request.id).map_err(ApiError::from)?;
        let found = read(&self.node, false, |state| {
            Ok(state.sites.get(&request.id).map(|site| (site.clone(), state.leases.get(&request.id).copied())))
        })
        .await?;
        let Some((site, lease)) = found else {
            return Ok(Response::new(pb::CheckSiteResponse {
                message: format!("site {} does not exist", request.id),
                ..Default::default()
            }));
        };
        let hash = Some(site.password_hash.clone());
        let password_ok = check_site_password(&self.node, site.id, hash, request.password, source).await?;
        // Whether the lease is alive is a question about now: the edge clock answers it, even
        // before the Tick that will end an overdue lease is applied.
        let now_ms = self.node.now_ms();
        let lease_alive = lease.is_some_and(|lease| lease.expires_at_ms > now_ms);
        let mut problems = Vec::new();
        if !password_ok {
            problems.push("the password is wrong".to_string());
        }
        if !site.active {
            problems.push("the site is not active".to_string());
        }
        match lease {
            None => problems.push("the site has no lease (it is not connected)".to_string()),
            Some(lease) if !lease_alive => problems.push(format!("its lease expired at {} ms", lease.expires_at_ms)),
            Some(_) => {}
        }
        let message = if problems.is_empty() {
            format!("site {} exists, the password is right, the site is active and its lease is alive", site.id)
        } else {
            format!("site {} exists but {}", site.id, problems.join(", "))
        };
        Ok(Response::new(pb::CheckSiteResponse {
            exists: true,
            password_ok,
            active: site.active,
            message,
            lease_alive,
            lease_granted_at_ms: lease.map(|l| l.granted_at_ms).unwrap_or(0),
            lease_expires_at_ms: lease.map(|l| l.expires_at_ms).unwrap_or(0),
            lease_ttl_ms: lease.map(|l| l.ttl_ms).unwrap_or(0),
        }))
    }

    async fn change_site_id(&self, request: Request<pb::ChangeSiteIdRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(principal, Command::ChangeSiteId { old: request.old, new: request.new }).await
    }

    async fn grant_lease(&self, request: Request<pb::GrantLeaseRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        let ttl_ms = if request.ttl_ms == 0 { LEASE_TTL_MS_DEFAULT } else { request.ttl_ms };
        self.write(principal, Command::GrantLease { site: request.site, ttl_ms }).await
    }

    async fn keep_alive(&self, request: Request<pb::KeepAliveRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::KeepAlive { site: request.into_inner().site }).await
    }

    async fn revoke_lease(&self, request: Request<pb::RevokeLeaseRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::RevokeLease { site: request.into_inner().site }).await
    }

    async fn add_user(&self, request: Request<pb::UserRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::AddUser(convert::user_spec(request.into_inner().user)?)).await
    }

    async fn update_user(&self, request: Request<pb::UserRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::UpdateUser(convert::user_spec(request.into_inner().user)?)).await
    }

    async fn get_user(&self, request: Request<pb::GetUserRequest>) -> Reply<pb::DirectoryEntry> {
        let request = request.into_inner();
        let entry = read(&self.node, request.serializable, |state| {
            let user = state.user(&request.username)?;
            let presence = &state.presence[key_of(&user.username).as_str()];
            Ok(pb::DirectoryEntry {
                user: Some(convert::user(state, user)),
                presence: Some(convert::presence(state, &user.username, presence)),
            })
        })
        .await?;
        Ok(Response::new(entry))
    }

    async fn delete_user(&self, request: Request<pb::DeleteUserRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::DeleteUser { username: request.into_inner().username }).await
    }

    async fn add_workgroup(&self, request: Request<pb::AddWorkgroupRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let workgroup = request.into_inner().workgroup.ok_or_else(|| ApiError::invalid("workgroup", "is required"))?;
        self.write(
            principal,
            Command::AddWorkgroup {
                name: workgroup.name,
                spans_sites: workgroup.spans_sites,
                required_skills: workgroup.required_skills.into_iter().collect(),
            },
        )
        .await
    }

    async fn delete_workgroup(&self, request: Request<pb::DeleteWorkgroupRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::DeleteWorkgroup { name: request.into_inner().name }).await
    }

    async fn list_workgroups(&self, request: Request<pb::ListWorkgroupsRequest>) -> Reply<pb::ListWorkgroupsResponse> {
        let request = request.into_inner();
        let response = read(&self.node, request.serializable, |state| {
            Ok(pb::ListWorkgroupsResponse {
                workgroups: state.workgroups.values().map(|w| convert::workgroup(state, w)).collect(),
                revision: state.revision,
            })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn add_workgroup_member(&self, request: Request<pb::WorkgroupMemberRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(principal, Command::AddWorkgroupMember { workgroup: request.workgroup, username: request.username })
            .await
    }

    async fn remove_workgroup_member(&self, request: Request<pb::WorkgroupMemberRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        let request = request.into_inner();
        self.write(
            principal,
            Command::RemoveWorkgroupMember { workgroup: request.workgroup, username: request.username },
        )
        .await
    }

    async fn list_statuses(&self, request: Request<pb::ListStatusesRequest>) -> Reply<pb::ListStatusesResponse> {
        let request = request.into_inner();
        let response = read(&self.node, request.serializable, |state| {
            Ok(pb::ListStatusesResponse { statuses: state.catalog.values().map(convert::status_def).collect() })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn put_status(&self, request: Request<pb::PutStatusRequest>) -> Reply<pb::WriteResponse> {
        let principal = principal(&request)?;
        self.write(principal, Command::PutStatusDef(convert::status_def_spec(request.into_inner().status)?)).await
    }

    async fn search(&self, request: Request<pb::SearchRequest>) -> Reply<pb::SearchResponse> {
        let request = request.into_inner();
        let none_if_empty = |text: String| if text.is_empty() { None } else { Some(text) };
        let none_if_zero = |id: u32| if id == 0 { None } else { Some(id) };
        let query = SearchQuery {
            name: none_if_empty(request.name),
            extension: none_if_empty(request.extension),
            email: none_if_empty(request.email),
            visible_at_site: none_if_zero(request.visible_at_site),
            home_site: none_if_zero(request.home_site),
            workgroup: none_if_empty(request.workgroup),
            skill: none_if_empty(request.skill),
            status_group: convert::status_group_filter(&request.status_group)?,
            logged_on: request.logged_on,
            limit: request.limit,
        };
        let response = read(&self.node, request.serializable, |state| {
            let entries = state
                .search(&query)
                .into_iter()
                .map(|entry| pb::DirectoryEntry {
                    user: Some(convert::user(state, entry.user)),
                    presence: Some(convert::presence(state, &entry.user.username, entry.presence)),
                })
                .collect();
            Ok(pb::SearchResponse { entries, revision: state.revision })
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn resolve_extension(
        &self,
        request: Request<pb::ResolveExtensionRequest>,
    ) -> Reply<pb::ResolveExtensionResponse> {
        let request = request.into_inner();
        collective_statemachine::validate::site_id("from_site", request.from_site).map_err(ApiError::from)?;
        if request.extension.is_empty() {
            return Err(ApiError::invalid("extension", "must not be empty").into());
        }
        let response = read(&self.node, request.serializable, |state| {
            let resolution = state.resolve_extension(&request.extension, request.from_site)?;
            Ok(pb::ResolveExtensionResponse {
                user: Some(convert::user(state, resolution.user)),
                current_site: resolution.current_site,
                logged_on: resolution.logged_on,
                dial_string: resolution.dial_string,
                tie_line_dial_string: resolution.tie_line_dial_string,
            })
        })
        .await?;
        Ok(Response::new(response))
    }
}
