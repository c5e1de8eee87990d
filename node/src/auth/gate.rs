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
use super::{AuthError, Authenticated, Authenticator, Caller, Credential};
use crate::api::error::ERROR_DOMAIN;
use crate::node::Node;
use collective_statemachine::State;

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
    const ADMINISTRATORS: [&str; 8] = [
        "/collective.v1.Cluster/MemberAdd",
        "/collective.v1.Cluster/MoveLeader",
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
    } else if ADMINISTRATORS.contains(&path) || path.starts_with("/collective.v1.Sources/") {
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

/// What a caller presented with its request: its bearer token, the subject of its client
/// certificate, and its address. A long-lived stream (`Presences/Submit`) keeps it to
/// authenticate its caller again as the state changes ([`reauthenticate`]). No `Debug`: it
/// holds the token.
#[derive(Clone)]
pub struct Presented {
    bearer: Option<String>,
    certificate: Option<Result<Subject, String>>,
    source: Option<IpAddr>,
}

impl Presented {
    /// From a request's headers and what the transport put in its extensions: the connection's
    /// address and, under TLS, the client certificate (rustls has verified it against the
    /// cluster CA).
    fn of(
        headers: &http::HeaderMap,
        tcp: Option<&TcpConnectInfo>,
        tls: Option<&TlsConnectInfo<TcpConnectInfo>>,
    ) -> Result<Presented, tonic::Status> {
        let bearer = match headers.get("authorization") {
            None => None,
            Some(value) => {
                let value =
                    value.to_str().map_err(|_| unauthenticated("the authorization header is not text".into()))?;
                let token = value
                    .strip_prefix("Bearer ")
                    .ok_or_else(|| unauthenticated("the authorization header must be \"Bearer <token>\"".into()))?;
                Some(token.trim().to_string())
            }
        };
        let source =
            tcp.and_then(TcpConnectInfo::remote_addr).or_else(|| tls.and_then(|info| info.get_ref().remote_addr()));
        Ok(Presented { bearer, certificate: certificate(tls), source: source.map(|addr| addr.ip()) })
    }

    fn of_http<B>(request: &http::Request<B>) -> Result<Presented, tonic::Status> {
        let extensions = request.extensions();
        Presented::of(request.headers(), extensions.get(), extensions.get())
    }

    /// From a request as a service sees it.
    pub fn of_request<T>(request: &tonic::Request<T>) -> Result<Presented, tonic::Status> {
        let extensions = request.extensions();
        Presented::of(request.metadata().as_ref(), extensions.get(), extensions.get())
    }
}

/// The principal named by the client certificate, if one was presented (rustls has verified it
/// against the cluster CA).
fn certificate(tls: Option<&TlsConnectInfo<TcpConnectInfo>>) -> Option<Result<Subject, String>> {
    tls.and_then(TlsConnectInfo::peer_certs).and_then(|certs| certs.first().map(|der| subject(der)))
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

/// The caller when authentication is off (local development): everyone is the administrator,
/// one shared name for all requests.
fn anyone() -> Authenticated {
    static ADMIN: std::sync::LazyLock<std::sync::Arc<str>> = std::sync::LazyLock::new(|| "admin".into());
    Authenticated { caller: Caller::Admin(ADMIN.clone()), credential: Credential::None }
}

/// Who `presented` authenticates as in `state`: a bearer token first, else a client
/// certificate (a site's must name an active site). A refused token counts against its
/// address in the failure limiter unless `again` (a re-check of what was admitted before).
fn authenticate(
    auth: &Authenticator,
    presented: &Presented,
    now_ms: u64,
    state: &State,
    again: bool,
) -> Result<Authenticated, tonic::Status> {
    match (&presented.bearer, &presented.certificate) {
        (Some(token), _) if again => Ok(auth.token_caller(token, now_ms, state)?),
        (Some(token), _) => Ok(auth.verify_token(token, presented.source, now_ms, state)?),
        (None, Some(Err(reason))) => Err(unauthenticated(reason.clone())),
        (None, Some(Ok(subject))) => {
            let caller = match subject {
                Subject::Node(name) => Caller::Node(name.clone()),
                Subject::Admin(name) => Caller::Admin(name.as_str().into()),
                Subject::Site(site) => match state.sites.get(site) {
                    Some(known) if known.active => Caller::Site(*site),
                    Some(_) => {
                        return Err(unauthenticated(format!("the certificate names site {site}, which is inactive")))
                    }
                    None => {
                        return Err(unauthenticated(format!("the certificate names site {site}, which does not exist")))
                    }
                },
            };
            Ok(Authenticated { caller, credential: Credential::Certificate })
        }
        (None, None) => Err(unauthenticated(
            "this cluster requires credentials: an administrator token or a site session token \
             (`collective login`) in --token-file, or a client certificate (--cert, --key)"
                .into(),
        )),
    }
}

/// For a long-lived stream: who what its caller presented authenticates as now, as the gate
/// would answer a new request (a session expired, a site deactivated or its password changed
/// since the stream opened: refused), except that a refusal is not counted as a failed attempt.
pub fn reauthenticate(node: &Node, presented: &Presented) -> Result<Authenticated, tonic::Status> {
    let Some(auth) = node.security.auth.as_ref() else { return Ok(anyone()) };
    let state = node.shared.state.read().expect("state lock");
    authenticate(auth, presented, node.now_ms(), &state, true)
}

/// Authenticates `request` and applies its RPC's rule; on success the caller is in its extensions.
fn admit<B>(node: &Node, request: &mut http::Request<B>) -> Result<(), tonic::Status> {
    let rule = rule(request.uri().path());
    // A stopping member takes no new client requests; members still reach its Raft service (the
    // hand-over needs it) and probes its health (NOT_SERVING).
    if node.is_stopping() && matches!(rule, Rule::Principals | Rule::Administrators) {
        return Err(tonic::Status::unavailable("this member is stopping: try another member"));
    }
    // Under TLS the Raft service takes a member's certificate and nothing else (mutual TLS
    // between members; a token alone is not enough).
    if rule == Rule::Members && node.security.tls.is_some() {
        let Some(Ok(Subject::Node(name))) = certificate(request.extensions().get()) else {
            return Err(denied("the Raft service needs a member certificate of the cluster CA".into()));
        };
        let member = Authenticated { caller: Caller::Node(name), credential: Credential::Certificate };
        request.extensions_mut().insert(member);
        return Ok(());
    }
    let Some(auth) = node.security.auth.as_ref() else {
        request.extensions_mut().insert(anyone());
        return Ok(());
    };
    if rule == Rule::Public {
        return Ok(());
    }
    let presented = Presented::of_http(request)?;
    let state = node.shared.state.read().expect("state lock");
    let authenticated = authenticate(auth, &presented, node.now_ms(), &state, false)?;
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
