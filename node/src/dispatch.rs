//! `Services`: hands each gRPC request to its service by the service name in its path, as
//! tonic's `Routes` do, without the axum router underneath them.
//!
//! Per request, `Routes` matched a wildcard route, stored the matched parameter in the request's
//! extensions, cloned a boxed service and wrapped the request and the response bodies in two
//! more boxed bodies each, whose every frame then went through those layers. Here a request
//! costs a comparison per service before its own and a clone of that one service (hyper clones
//! the whole stack per request, so the services sit behind one `Arc`); the generated servers
//! already return boxed futures.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use collective_proto::raft::raft_server::RaftServer;
use collective_proto::v1::alerts_server::AlertsServer;
use collective_proto::v1::auth_server::AuthServer;
use collective_proto::v1::cluster_server::ClusterServer;
use collective_proto::v1::config_server::ConfigServer;
use collective_proto::v1::directory_server::DirectoryServer;
use collective_proto::v1::history_server::HistoryServer;
use collective_proto::v1::messages_server::MessagesServer;
use collective_proto::v1::notes_server::NotesServer;
use collective_proto::v1::presences_server::PresencesServer;
use collective_proto::v1::routing_server::RoutingServer;
use collective_proto::v1::sources_server::SourcesServer;
use tonic::body::Body;
use tonic::codegen::BoxFuture;
use tonic::server::NamedService;
use tower::Service;

use crate::api::alerts::AlertsService;
use crate::api::auth::AuthService;
use crate::api::cluster::ClusterService;
use crate::api::config::ConfigService;
use crate::api::directory::DirectoryService;
use crate::api::history::HistoryService;
use crate::api::messages::MessagesService;
use crate::api::notes::NotesService;
use crate::api::presence::PresenceService;
use crate::api::routing::RoutingService;
use crate::api::sources::SourcesService;
use crate::raft_service::RaftService;

type Request = tonic::codegen::http::Request<Body>;
type Response = tonic::codegen::http::Response<Body>;

/// Every gRPC service of a node, shared by the copies hyper and the gate make per request.
pub struct Services<H, R1, R2>(Arc<ServiceSet<H, R1, R2>>);

impl<H, R1, R2> Clone for Services<H, R1, R2> {
    fn clone(&self) -> Self {
        Services(self.0.clone())
    }
}

impl<H, R1, R2> Services<H, R1, R2> {
    /// Serves `set`.
    pub fn new(set: ServiceSet<H, R1, R2>) -> Self {
        Services(Arc::new(set))
    }
}

/// The services themselves. `H` is the health service, `R1` and `R2` the reflection services
/// (v1 and v1alpha), whose types their crates do not name.
pub struct ServiceSet<H, R1, R2> {
    /// Writes, the hottest path: tried first.
    pub presences: PresencesServer<PresenceService>,
    /// Raft between members.
    pub raft: RaftServer<RaftService>,
    /// Sites, users, workgroups.
    pub directory: DirectoryServer<DirectoryService>,
    /// Logins.
    pub auth: AuthServer<AuthService>,
    /// Membership and status.
    pub cluster: ClusterServer<ClusterService>,
    /// Presence history.
    pub history: HistoryServer<HistoryService>,
    /// Inter-site messages.
    pub messages: MessagesServer<MessagesService>,
    /// Notes.
    pub notes: NotesServer<NotesService>,
    /// Interaction routing.
    pub routing: RoutingServer<RoutingService>,
    /// The directory source.
    pub sources: SourcesServer<SourcesService>,
    /// Alert rules.
    pub alerts: AlertsServer<AlertsService>,
    /// Configuration bundles.
    pub config: ConfigServer<ConfigService>,
    /// gRPC health.
    pub health: H,
    /// gRPC reflection.
    pub reflection_v1: R1,
    /// gRPC reflection, the older version.
    pub reflection_v1alpha: R2,
}

/// The service name of a gRPC path (`/package.Service/Method`), if it has that shape.
fn service_name(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty()).then_some(service)
}

/// UNIMPLEMENTED, as tonic's router answers a path no service serves.
fn unimplemented() -> BoxFuture<Response, Infallible> {
    let (parts, ()) = tonic::Status::unimplemented("").into_http::<()>().into_parts();
    Box::pin(std::future::ready(Ok(Response::from_parts(parts, Body::empty()))))
}

/// Calls `service` if `name` is its name. Its response passes `conventional_response`, so an
/// undecodable or oversized request gets the conventional code (`api::error::conventional`).
macro_rules! route {
    ($name:expr, $request:expr, $($service:expr),+ $(,)?) => {
        $(if $name == named(&$service) {
            let response = $service.clone().call($request);
            return Box::pin(async move { response.await.map(crate::api::error::conventional_response) });
        })+
    };
}

fn named<S: NamedService>(_: &S) -> &'static str {
    S::NAME
}

impl<H, R1, R2> Service<Request> for Services<H, R1, R2>
where
    H: Service<Request, Response = Response, Error = Infallible, Future = BoxFuture<Response, Infallible>>
        + NamedService
        + Clone,
    R1: Service<Request, Response = Response, Error = Infallible, Future = BoxFuture<Response, Infallible>>
        + NamedService
        + Clone,
    R2: Service<Request, Response = Response, Error = Infallible, Future = BoxFuture<Response, Infallible>>
        + NamedService
        + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Response, Infallible>;

    /// The generated servers are always ready.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let Some(name) = service_name(request.uri().path()) else {
            return unimplemented();
        };
        let set = &*self.0;
        route!(
            name,
            request,
            set.presences,
            set.raft,
            set.directory,
            set.auth,
            set.cluster,
            set.history,
            set.messages,
            set.notes,
            set.routing,
            set.config,
            set.sources,
            set.alerts,
            set.health,
            set.reflection_v1,
            set.reflection_v1alpha,
        );
        unimplemented()
    }
}

#[cfg(test)]
mod tests {
    use super::service_name;

    #[test]
    fn service_names_come_from_grpc_paths() {
        assert_eq!(service_name("/collective.v1.Presences/SetStatus"), Some("collective.v1.Presences"));
        assert_eq!(service_name("/grpc.health.v1.Health/Check"), Some("grpc.health.v1.Health"));
        assert_eq!(service_name("/collective.v1.Presences/"), None);
        assert_eq!(service_name("//SetStatus"), None);
        assert_eq!(service_name("/collective.v1.Presences"), None);
        assert_eq!(service_name("collective.v1.Presences/SetStatus"), None);
    }
}
