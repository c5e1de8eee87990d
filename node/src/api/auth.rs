//! `collective.v1.Auth`: a site logs in with its id and password for a session token; any caller
//! asks who it authenticated as. Site passwords are checked here only (`Login`, and `CheckSite`
//! through [`check_site_password`]), always through the failure limiter.

use std::net::IpAddr;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use collective_proto::v1 as pb;
use collective_proto::v1::auth_server::Auth;
use collective_statemachine::validate::site_id;
use collective_statemachine::{limits, Command, Principal, Rejection, SiteId};
use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::{authenticated, read};
use crate::auth::limiter;
use crate::auth::{AuthError, Credential};
use crate::node::Node;

type Reply<T> = Result<Response<T>, Status>;

/// How long a password check may wait for one of the Argon2id permits.
pub const VERIFICATION_WAIT_MS: u64 = 5_000;

/// An Argon2id hash no password matches, verified for unknown sites so that an unknown site
/// and a wrong password cost the same time.
const DECOY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Serves `collective.v1.Auth`.
pub struct AuthService {
    /// The node.
    pub node: Arc<Node>,
}

/// Whether `password` is site `site`'s (`hash` is its Argon2id hash; `None` for an unknown site,
/// which never matches). With authentication on, failures count against the caller's address
/// and the site, and an attempt over the limit is refused before any check.
pub async fn check_site_password(
    node: &Arc<Node>,
    site: SiteId,
    hash: Option<String>,
    password: String,
    source: Option<IpAddr>,
) -> Result<bool, Status> {
    if password.len() > limits::PASSWORD_BYTES_MAX {
        let reason = format!("longer than {} bytes", limits::PASSWORD_BYTES_MAX);
        return Err(ApiError::invalid("password", reason).into());
    }
    let keys = limiter::keys(site, source);
    let auth = node.security.auth.as_ref();
    if let Some(auth) = auth {
        // Failures other members recorded are counted here as they apply: a linearizable
        // barrier first makes every failure committed so far count. Without a quorum (or
        // within `FAILURE_BARRIER_WAIT_MS`) the member goes on with what it has applied.
        let barrier = std::time::Duration::from_millis(FAILURE_BARRIER_WAIT_MS);
        if !matches!(tokio::time::timeout(barrier, node.read_barrier(false)).await, Ok(Ok(()))) {
            tracing::debug!("checking a site password without the latest recorded failures");
        }
        // The attempt is taken before the check (and given back if the password is right),
        // so attempts sent together cannot all slip under the limit.
        auth.failures
            .acquire(&keys, node.now_ms())
            .map_err(|retry_after_ms| Status::from(AuthError::RateLimited { retry_after_ms }))?;
    }
    let waiting = tokio::time::timeout(std::time::Duration::from_millis(VERIFICATION_WAIT_MS), node.argon2.acquire());
    let _permit = match waiting.await {
        Ok(Ok(permit)) => permit,
        _ => {
            if let Some(auth) = auth {
                auth.failures.refund(&keys, node.now_ms());
            }
            let reason = "too many password checks at once on this member; retry shortly";
            return Err(ApiError::Unavailable(reason.into()).into());
        }
    };
    let known = hash.is_some();
    let hash = hash.unwrap_or_else(|| DECOY_HASH.to_string());
    let matches = node
        .environment
        .blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .unwrap_or(false)
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        && known;
    if matches {
        if let Some(auth) = auth {
            auth.failures.refund(&keys, node.now_ms());
        }
    } else {
        let reason = if known { "wrong password" } else { "unknown site" };
        tracing::warn!(site, source = ?source, reason, "site authentication failed");
        if auth.is_some() {
            record_failure(node, site, source).await;
        }
    }
    Ok(matches)
}

/// How long a password check waits to see the failures other members recorded (a read barrier).
pub const FAILURE_BARRIER_WAIT_MS: u64 = 500;
/// How long a refused password's answer waits for the failure to be recorded in the log.
pub const FAILURE_RECORD_WAIT_MS: u64 = 2_000;

/// Records a refused site password in the log, so every member's limiter counts it (this one
/// counted it already). Waited for, within `FAILURE_RECORD_WAIT_MS`, so the caller's next attempt
/// meets the failure on any member; without a quorum it is counted here only.
async fn record_failure(node: &Node, site: SiteId, source: Option<IpAddr>) {
    let command = Command::RecordAuthFailure { member: node.id, site, source: limiter::source_text(source) };
    let wait = std::time::Duration::from_millis(FAILURE_RECORD_WAIT_MS);
    match tokio::time::timeout(wait, node.write(Principal::System, command)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => tracing::warn!(%error, site, "recording a failed authentication"),
        Err(_) => {
            tracing::warn!(site, "recording a failed authentication: no commit within {FAILURE_RECORD_WAIT_MS} ms")
        }
    }
}

#[tonic::async_trait]
impl Auth for AuthService {
    async fn login(&self, request: Request<pb::LoginRequest>) -> Reply<pb::LoginResponse> {
        let source = request.remote_addr().map(|addr| addr.ip());
        let pb::LoginRequest { site, password } = request.into_inner();
        site_id("site", site).map_err(ApiError::from)?;
        if password.is_empty() {
            return Err(ApiError::invalid("password", "is required").into());
        }
        let Some(auth) = self.node.security.auth.as_ref() else {
            let reason = "authentication is off on this cluster (no_auth): every caller is the administrator";
            return Err(ApiError::Rejected(Rejection::precondition("login", reason)).into());
        };
        // The member's own state: a session is checked against it too (a site added a moment
        // ago on another member may need a retry).
        let known =
            read(&self.node, true, |state| Ok(state.sites.get(&site).map(|s| (s.password_hash.clone(), s.active))))
                .await?;
        let hash = known.as_ref().map(|(hash, _)| hash.clone());
        if !check_site_password(&self.node, site, hash.clone(), password, source).await? {
            return Err(AuthError::Unauthenticated(format!("site {site}: unknown site or wrong password")).into());
        }
        if known.is_some_and(|(_, active)| !active) {
            let reason = format!("site {site} is inactive; an administrator must activate it first");
            return Err(ApiError::Rejected(Rejection::precondition("site", reason)).into());
        }
        let nonce = u64::from_le_bytes(self.node.environment.random());
        let (token, expires_at_ms) = auth.issue(site, &hash.unwrap_or_default(), self.node.now_ms(), nonce);
        tracing::info!(site, source = ?source, expires_at_ms, "site logged in");
        Ok(Response::new(pb::LoginResponse { token, expires_at_ms, site }))
    }

    async fn who_am_i(&self, request: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIResponse> {
        let authenticated = authenticated(&request)?;
        let (credential, expires_at_ms) = match authenticated.credential {
            Credential::None => ("none", 0),
            Credential::Token => ("token", 0),
            Credential::Session { expires_at_ms } => ("session", expires_at_ms),
            Credential::Certificate => ("certificate", 0),
        };
        Ok(Response::new(pb::WhoAmIResponse {
            principal: authenticated.caller.to_string(),
            credential: credential.into(),
            expires_at_ms,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The decoy must be a well-formed Argon2id hash, or an unknown site would skip the Argon2
    /// work and answer faster than a wrong password.
    #[test]
    fn the_decoy_hash_costs_a_real_verification() {
        let parsed = PasswordHash::new(DECOY_HASH).expect("the decoy parses");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        assert!(Argon2::default().verify_password(b"anything", &parsed).is_err());
    }
}
