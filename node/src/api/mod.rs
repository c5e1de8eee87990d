//! The client-facing gRPC services and what they share.
//!
//! - [`error`]: `ApiError` and its single mapping to gRPC status codes.
//! - [`convert`]: wire ⇄ domain conversions.
//! - [`directory`], [`presence`], [`history`], [`cluster`], [`messages`], [`notes`], [`routing`],
//!   [`config`], [`sources`], [`alerts`], [`auth`]: the services.

pub mod alerts;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod directory;
pub mod error;
pub mod history;
pub mod messages;
pub mod notes;
pub mod presence;
pub mod routing;
pub mod sources;

use std::sync::Arc;

use collective_statemachine::{Principal, State};

use crate::auth::Authenticated;
use crate::node::Node;
use error::ApiError;

/// The principal a request's commands are recorded under, as the gate (`auth::gate`)
/// authenticated it.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, ApiError> {
    let authenticated = gated(request)?;
    authenticated.caller.principal().ok_or_else(|| {
        ApiError::Rejected(collective_statemachine::Rejection::PermissionDenied {
            reason: format!("{} is a member credential, not a principal", authenticated.caller),
        })
    })
}

/// The caller of a request, as the gate put it in the request's extensions.
pub fn authenticated<T>(request: &tonic::Request<T>) -> Result<Authenticated, ApiError> {
    gated(request).cloned()
}

fn gated<T>(request: &tonic::Request<T>) -> Result<&Authenticated, ApiError> {
    request
        .extensions()
        .get::<Authenticated>()
        .ok_or_else(|| ApiError::Internal("the request did not pass the authentication gate".into()))
}

/// Runs `read` over the applied state after the read barrier.
pub async fn read<T>(
    node: &Arc<Node>,
    serializable: bool,
    read: impl FnOnce(&State) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    node.read_barrier(serializable).await?;
    let state = node.shared.state.read().expect("state lock");
    read(&state)
}
