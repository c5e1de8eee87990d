//! `ApiError` and the one place that maps errors to gRPC status codes with rich details
//! (`ErrorInfo` with a machine reason, `BadRequest` field violations).

use collective_statemachine::Rejection;
use serde::{Deserialize, Serialize};
use tonic_types::{ErrorDetails, StatusExt};

use crate::raft_types::NodeId;

/// Domain of every `ErrorInfo` we send.
pub const ERROR_DOMAIN: &str = "collective";

/// Every error a client can get. Serializable so a leader can return it to a forwarding follower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApiError {
    /// The state machine (or edge validation) refused the command.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// This node is not the leader and could not forward.
    #[error("not the leader; the leader is node {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        /// The leader, if known.
        leader_id: Option<NodeId>,
        /// Its address, if known.
        leader_addr: Option<String>,
    },
    /// The cluster cannot serve now (no quorum, shutting down, timeout).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for a revision that is no longer retained.
    #[error("revision {requested} is compacted; the oldest retained revision is {oldest}")]
    Compacted {
        /// What was asked.
        requested: u64,
        /// The oldest revision a watch may start at.
        oldest: u64,
    },
    /// A history question about a time before this node's retained history.
    #[error("{asked_ms} ms is before the retained history, which starts at {oldest_ms} ms")]
    HistoryCompacted {
        /// The time asked about.
        asked_ms: u64,
        /// The earliest time answered.
        oldest_ms: u64,
    },
    /// A bug or storage failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// An `InvalidArgument` rejection for a field.
    pub fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
        ApiError::Rejected(Rejection::invalid(field, reason))
    }
}

impl From<crate::history::HistoryError> for ApiError {
    fn from(error: crate::history::HistoryError) -> ApiError {
        match error {
            crate::history::HistoryError::Compacted { asked_ms, oldest_ms } => {
                ApiError::HistoryCompacted { asked_ms, oldest_ms }
            }
            crate::history::HistoryError::Storage(message) => ApiError::Internal(message),
        }
    }
}

impl From<ApiError> for tonic::Status {
    fn from(error: ApiError) -> tonic::Status {
        let message = error.to_string();
        let info = |reason: &str, metadata: Vec<(String, String)>| {
            ErrorDetails::with_error_info(
                reason,
                ERROR_DOMAIN,
                metadata.into_iter().collect::<std::collections::HashMap<_, _>>(),
            )
        };
        let (code, details) = match &error {
            ApiError::Rejected(rejection) => match rejection {
                Rejection::InvalidArgument { field, reason } => {
                    (tonic::Code::InvalidArgument, ErrorDetails::with_bad_request_violation(field, reason))
                }
                Rejection::NotFound { kind, key } => (
                    tonic::Code::NotFound,
                    info("NOT_FOUND", vec![("kind".into(), kind.clone()), ("key".into(), key.clone())]),
                ),
                Rejection::AlreadyExists { kind, field, .. } => (
                    tonic::Code::AlreadyExists,
                    info("ALREADY_EXISTS", vec![("kind".into(), kind.clone()), ("field".into(), field.clone())]),
                ),
                Rejection::ExtensionConflict { other_user, other_site, suggestion, .. } => (
                    tonic::Code::FailedPrecondition,
                    info(
                        "EXTENSION_CONFLICT",
                        vec![
                            ("other_user".into(), other_user.clone()),
                            ("other_site".into(), other_site.to_string()),
                            ("suggestion".into(), suggestion.clone()),
                        ],
                    ),
                ),
                Rejection::FailedPrecondition { field, .. } => (
                    tonic::Code::FailedPrecondition,
                    info("FAILED_PRECONDITION", vec![("field".into(), field.clone())]),
                ),
                Rejection::PermissionDenied { .. } => {
                    (tonic::Code::PermissionDenied, info("PERMISSION_DENIED", vec![]))
                }
                Rejection::LimitReached { what, limit } => (
                    tonic::Code::ResourceExhausted,
                    info("LIMIT_REACHED", vec![("what".into(), what.clone()), ("limit".into(), limit.to_string())]),
                ),
            },
            ApiError::NotLeader { leader_id, leader_addr } => (
                tonic::Code::Unavailable,
                info(
                    "NOT_LEADER",
                    vec![
                        ("leader_id".into(), leader_id.map(|id| id.to_string()).unwrap_or_default()),
                        ("leader_addr".into(), leader_addr.clone().unwrap_or_default()),
                    ],
                ),
            ),
            ApiError::Unavailable(_) => (tonic::Code::Unavailable, info("UNAVAILABLE", vec![])),
            ApiError::Compacted { oldest, .. } => (
                tonic::Code::OutOfRange,
                info("REVISION_COMPACTED", vec![("compact_revision".into(), oldest.to_string())]),
            ),
            ApiError::HistoryCompacted { oldest_ms, .. } => {
                (tonic::Code::OutOfRange, info("HISTORY_COMPACTED", vec![("oldest_ms".into(), oldest_ms.to_string())]))
            }
            ApiError::Internal(_) => (tonic::Code::Internal, info("INTERNAL", vec![])),
        };
        tonic::Status::with_error_details(code, message, details)
    }
}

/// Rewrites the statuses tonic itself gives to undecodable requests into the conventional codes:
/// a message over the size limit is `RESOURCE_EXHAUSTED` (tonic says `OUT_OF_RANGE`), and a
/// message prost cannot decode (a string that is not UTF-8, a bad wire type) is
/// `INVALID_ARGUMENT` naming the field (tonic says `INTERNAL`). Every other status is kept.
pub fn conventional(status: tonic::Status) -> tonic::Status {
    const DECODE: &str = "failed to decode Protobuf message: ";
    match status.code() {
        tonic::Code::OutOfRange if status.message().contains("message length too large") => {
            tonic::Status::with_error_details(
                tonic::Code::ResourceExhausted,
                status.message(),
                ErrorDetails::with_error_info(
                    "MESSAGE_TOO_LARGE",
                    ERROR_DOMAIN,
                    std::collections::HashMap::<String, String>::new(),
                ),
            )
        }
        tonic::Code::Internal if status.message().starts_with(DECODE) => {
            // prost's message: "failed to decode Protobuf message: Outer.field: Inner.field: reason".
            let rest = &status.message()[DECODE.len()..];
            let mut path = Vec::new();
            let mut reason = rest;
            while let Some((part, after)) = reason.split_once(": ") {
                let Some((_message, field)) = part.split_once('.') else { break };
                if field.is_empty() || !field.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    break;
                }
                path.push(field);
                reason = after;
            }
            let field = if path.is_empty() { "request".to_string() } else { path.join(".") };
            ApiError::invalid(&field, format!("cannot be decoded: {reason}")).into()
        }
        _ => status,
    }
}

/// [`conventional`] for a response tonic already turned into HTTP (a trailers-only response,
/// whose status is in the headers): unchanged unless it carries one of the statuses rewritten.
pub fn conventional_response(
    response: tonic::codegen::http::Response<tonic::body::Body>,
) -> tonic::codegen::http::Response<tonic::body::Body> {
    let rewritable = matches!(response.headers().get("grpc-status").map(|v| v.as_bytes()), Some(b"11") | Some(b"13"));
    if !rewritable {
        return response;
    }
    let Some(status) = tonic::Status::from_header_map(response.headers()) else { return response };
    let (code, message) = (status.code(), status.message().to_string());
    let rewritten = conventional(status);
    if rewritten.code() == code && rewritten.message() == message {
        return response;
    }
    let (parts, ()) = rewritten.into_http::<()>().into_parts();
    tonic::codegen::http::Response::from_parts(parts, tonic::body::Body::empty())
}

#[cfg(test)]
mod conventional_tests {
    use super::*;

    #[test]
    fn undecodable_requests_get_the_conventional_codes() {
        let utf8 = tonic::Status::internal(
            "failed to decode Protobuf message: SetStatusRequest.detail: invalid string value: data is not UTF-8 encoded",
        );
        let mapped = conventional(utf8);
        assert_eq!(mapped.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            mapped.message(),
            "invalid detail: cannot be decoded: invalid string value: data is not UTF-8 encoded"
        );
        let nested = conventional(tonic::Status::internal(
            "failed to decode Protobuf message: AddSiteRequest.site: Site.name: invalid string value: data is not UTF-8 encoded",
        ));
        assert!(nested.message().starts_with("invalid site.name: "), "{}", nested.message());
        let large = conventional(tonic::Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        ));
        assert_eq!(large.code(), tonic::Code::ResourceExhausted);
        let other = conventional(tonic::Status::out_of_range("revision compacted"));
        assert_eq!(other.code(), tonic::Code::OutOfRange);
    }
}
