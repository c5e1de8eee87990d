//! The one layer every gRPC request passes before its service: it authenticates the caller, applies
//! the RPC's rule and puts the [`Authenticated`] caller in the request's extensions, where the
//! services take it (`api::caller`). Refusals never reach a service.
//!
//! | rule | RPCs | who |
//! |---|---|---|
//! | public | health, reflection, `Auth/Login` | anyone |
//! | members | `collective.raft.v1.Raft/*` | a member (node certificate or peer token) |
//! | administrators | member add/promote/remove, export, import, snapshot | an administrator or a master-administrator site |
//! | principals | everything else | an administrator or a site (entity rules apply in `apply`) |

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic_types::{ErrorDetails, StatusExt};

use super::tls::{subject, Subject};
use super::{AuthError, Authenticated, Caller, Credential};
use crate::api::error::ERROR_DOMAIN;
use crate::node::Node;

/// Who may call an RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Anyone, without credentials.
    Public,
    /// Cluster members only.
    Members,
    /// Administrators and master-administrator sites.
    Administrators,
    /// Any authenticated administrator or site.
    Principals,
}

/// The rule of the RPC at `path` (`/package.Service/Method`).
pub fn rule(path: &str) -> Rule {
    const ADMINISTRATORS: [&str; 7] = [
        "/collective.v1.Cluster/MemberAdd",
        "/collective.v1.Cluster/TakeSnapshot",
        "/collective.v1.Cluster/MemberPromote",
        "/collective.v1.Cluster/MemberRemove",
        "/collective.v1.Config/Export",
        "/collective.v1.Config/Import",
        "/collective.v1.Config/Snapshot",
    ];
    if path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
        || path == "/collective.v1.Auth/Login"
    {
        Rule::Public
    } else if path.starts_with("/collective.raft.v1.Raft/") {
        Rule::Members
    } else if ADMINISTRATORS.contains(&path) {
        Rule::Administrators
    } else {
        Rule::Principals
    }
}

/// Builds [`Gate`]s around the services (`dispatch::Services`).
#[derive(Clone)]
pub struct GateLayer {
    node: Arc<Node>,
}

impl GateLayer {
    /// The gate of `node`.
    pub fn new(node: Arc<Node>) -> GateLayer {
        GateLayer { node }
    }
}

impl<S> tower::Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate { inner, node: self.node.clone() }
    }
}

/// The gate around a service.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    node: Arc<Node>,
}

impl<S, B> tower::Service<http::Request<B>> for Gate<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match admit(&self.node, &mut request) {
            Ok(()) => {
                // The ready service is the one in `self`; a fresh clone takes its place.
                let ready = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, ready);
                Box::pin(inner.call(request))
            }
            Err(status) => Box::pin(std::future::ready(Ok(status.into_http()))),
        }
    }
}

/// The caller's address, from the connection.
fn source<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.get_ref().remote_addr()))
        .map(|addr| addr.ip())
}

/// The principal named by the client certificate, if one was presented (rustls has verified it
/// against the cluster CA).
fn certificate<B>(request: &http::Request<B>) -> Option<Result<Subject, String>> {
    let certs = request.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?.peer_certs()?;
    certs.first().map(|der| subject(der))
}

fn unauthenticated(message: String) -> tonic::Status {
    let details = ErrorDetails::with_error_info("UNAUTHENTICATED", ERROR_DOMAIN, []);
    tonic::Status::with_error_details(tonic::Code::Unauthenticated, message, details)
}

fn denied(message: String) -> tonic::Status {
    let details = ErrorDetails::with_error_info("PERMISSION_DENIED", ERROR_DOMAIN, []);
    tonic::Status::with_error_details(tonic::Code::PermissionDenied, message, details)
}

impl From<AuthError> for tonic::Status {
    fn from(error: AuthError) -> tonic::Status {
        match error {
            AuthError::Unauthenticated(message) => unauthenticated(message),
            AuthError::RateLimited { retry_after_ms } => {
                let mut details = ErrorDetails::with_error_info(
                    "AUTH_RATE_LIMITED",
                    ERROR_DOMAIN,
                    [("retry_after_ms".to_string(), retry_after_ms.to_string())],
                );
                details.set_retry_info(Some(std::time::Duration::from_millis(retry_after_ms)));
                let message = AuthError::RateLimited { retry_after_ms }.to_string();
                tonic::Status::with_error_details(tonic::Code::ResourceExhausted, message, details)
            }
        }
    }
}

/// Authenticates `request` and applies its RPC's rule; on success the caller is in its extensions.
fn admit<B>(node: &Node, request: &mut http::Request<B>) -> Result<(), tonic::Status> {
    let rule = rule(request.uri().path());
    // Under TLS the Raft service takes a member's certificate and nothing else (mutual TLS
    // between members; a token alone is not enough).
    if rule == Rule::Members && node.security.tls.is_some() {
        let Some(Ok(Subject::Node(name))) = certificate(request) else {
            return Err(denied("the Raft service needs a member certificate of the cluster CA".into()));
        };
        let member = Authenticated { caller: Caller::Node(name), credential: Credential::Certificate };
        request.extensions_mut().insert(member);
        return Ok(());
    }
    let Some(auth) = node.security.auth.as_ref() else {
        // Authentication off (local development): everyone is the administrator, one shared
        // name for all requests.
        static ADMIN: std::sync::LazyLock<std::sync::Arc<str>> = std::sync::LazyLock::new(|| "admin".into());
        let admin = Authenticated { caller: Caller::Admin(ADMIN.clone()), credential: Credential::None };
        request.extensions_mut().insert(admin);
        return Ok(());
    };
    if rule == Rule::Public {
        return Ok(());
    }
    let bearer = match request.headers().get("authorization") {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| unauthenticated("the authorization header is not text".into()))?;
            let token = value
                .strip_prefix("Bearer ")
                .ok_or_else(|| unauthenticated("the authorization header must be \"Bearer <token>\"".into()))?;
            Some(token.trim().to_string())
        }
    };
    let source = source(request);
    let now_ms = node.now_ms();
    let state = node.shared.state.read().expect("state lock");
    let authenticated = {
        match (bearer, certificate(request)) {
            (Some(token), _) => auth.verify_token(&token, source, now_ms, &state)?,
            (None, Some(Err(reason))) => return Err(unauthenticated(reason)),
            (None, Some(Ok(subject))) => {
                let caller = match subject {
                    Subject::Node(name) => Caller::Node(name),
                    Subject::Admin(name) => Caller::Admin(name.into()),
                    Subject::Site(site) => match state.sites.get(&site) {
                        Some(known) if known.active => Caller::Site(site),
                        Some(_) => {
                            return Err(unauthenticated(format!(
                                "the certificate names site {site}, which is inactive"
                            )))
                        }
                        None => {
                            return Err(unauthenticated(format!(
                                "the certificate names site {site}, which does not exist"
                            )))
                        }
                    },
                };
                Authenticated { caller, credential: Credential::Certificate }
            }
            (None, None) => {
                return Err(unauthenticated(
                    "this cluster requires credentials: an administrator token or a site session token \
                     (`collective login`) in --token-file, or a client certificate (--cert, --key)"
                        .into(),
                ))
            }
        }
    };
    match (rule, &authenticated.caller) {
        (Rule::Members, Caller::Node(_)) => {}
        (Rule::Members, caller) => {
            return Err(denied(format!("{caller} may not call the Raft service (members only)")))
        }
        (_, Caller::Node(name)) => {
            return Err(denied(format!("node:{name} is a member credential, for the Raft service only")))
        }
        (Rule::Administrators, Caller::Site(site)) if !state.is_master_administrator(*site) => {
            return Err(denied(format!(
                "site:{site} may not call {}: it needs an administrator or a master-administrator site",
                request.uri().path()
            )))
        }
        _ => {}
    }
    drop(state);
    request.extensions_mut().insert(authenticated);
    Ok(())
}
