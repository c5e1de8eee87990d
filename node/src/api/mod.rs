//! The client-facing gRPC services and what they share.
//!
//! - [`error`]: `ApiError` and its single mapping to gRPC status codes.
//! - [`convert`]: wire ⇄ domain conversions.
//! - [`directory`], [`presence`], [`history`], [`cluster`], [`messages`], [`notes`], [`routing`]:
//!   the services.

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

use collective_statemachine::{Principal, State};

use crate::node::Node;
use error::ApiError;

/// The principal of client requests until authentication lands (issue "Security"): every caller
/// is treated as the local administrator.
pub fn principal() -> Principal {
    Principal::Admin("admin".to_string())
}

/// Runs `read` over the applied state after the read barrier.
pub async fn read<T>(
    node: &Node,
    serializable: bool,
    read: impl FnOnce(&State) -> Result<T, ApiError>,
) -> Result<T, ApiError> {
    node.read_barrier(serializable).await?;
    let state = node.shared.state.read().expect("state lock");
    read(&state)
}
