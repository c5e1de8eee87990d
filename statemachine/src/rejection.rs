//! `Rejection`: why a command was refused. Deterministic, so every replica agrees.

use serde::{Deserialize, Serialize};

/// Why `apply` (or edge validation) refused a command. Nothing changes when a command is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Rejection {
    /// A field is malformed or out of range; `field` names it.
    #[error("invalid {field}: {reason}")]
    InvalidArgument {
        /// The offending field, e.g. `site.id`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The named entity does not exist.
    #[error("{kind} {key:?} not found")]
    NotFound {
        /// The kind of entity: `site`, `user`, `workgroup`, `status`.
        kind: String,
        /// Its key.
        key: String,
    },
    /// An entity with the same unique key already exists.
    #[error("{kind} with {field} {key:?} already exists")]
    AlreadyExists {
        /// The kind of entity.
        kind: String,
        /// The unique field that collides.
        field: String,
        /// The colliding value.
        key: String,
    },
    /// The extension would not dial unambiguously from every site.
    #[error(
        "extension {extension} conflicts with user {other_user:?} at site {other_site}; \
         make it unique, e.g. prefix the site id ({suggestion})"
    )]
    ExtensionConflict {
        /// The extension in question.
        extension: String,
        /// The user that already has it.
        other_user: String,
        /// That user's home site.
        other_site: u32,
        /// The vendor's fix: the extension prefixed with the home site id.
        suggestion: String,
    },
    /// A state-dependent rule forbids the command; `field` names what it is about.
    #[error("{field}: {reason}")]
    FailedPrecondition {
        /// The field or entity concerned.
        field: String,
        /// The rule that was broken.
        reason: String,
    },
    /// The principal may not do this.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Why not.
        reason: String,
    },
    /// A collective-wide limit is reached.
    #[error("limit reached: {what} (at most {limit})")]
    LimitReached {
        /// What is full.
        what: String,
        /// The limit.
        limit: u64,
    },
}

impl Rejection {
    /// Shorthand for an `InvalidArgument` rejection.
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Rejection::InvalidArgument { field: field.to_string(), reason: reason.into() }
    }

    /// Shorthand for a `NotFound` rejection.
    pub fn not_found(kind: &str, key: impl ToString) -> Self {
        Rejection::NotFound { kind: kind.to_string(), key: key.to_string() }
    }

    /// Shorthand for an `AlreadyExists` rejection.
    pub fn exists(kind: &str, field: &str, key: impl ToString) -> Self {
        Rejection::AlreadyExists { kind: kind.to_string(), field: field.to_string(), key: key.to_string() }
    }

    /// Shorthand for a `FailedPrecondition` rejection.
    pub fn precondition(field: &str, reason: impl Into<String>) -> Self {
        Rejection::FailedPrecondition { field: field.to_string(), reason: reason.into() }
    }
}
