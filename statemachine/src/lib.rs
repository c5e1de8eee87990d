//! The pure, deterministic state machine of `collective`.
//!
//! A command, stamped by the Raft leader with the time and the principal ([`Envelope`]), is
//! applied by [`State::apply`], which returns numbered events ([`EventRecord`]) or a typed
//! [`Rejection`]. No I/O, clock, randomness or async runtime lives here (`tests/purity.rs`
//! enforces it), so every replica that applies the same log reaches the same state.
//!
//! Reading order:
//! - [`limits`]: every limit, named, units last.
//! - [`command`]: what callers ask for; [`event`]: the facts `apply` records; [`rejection`]: why a
//!   command is refused; [`validate`]: syntax and limits, checked before proposal;
//!   [`authorize`]: who may do what.
//! - `apply.rs`: `State::apply` — validate, authorise, decide, fold — dispatching each command and
//!   event, one line each, to the file of its concept.
//! - One module per domain concept: `CONCEPT.rs` holds its types, `CONCEPT/rules.rs` its commands'
//!   decisions and its events' folds (types never import rules, so no module imports another in a
//!   circle): [`site`], [`user`] (the extension rule, `user/rules.rs`), [`workgroup`] (spanning),
//!   [`catalog`], [`presence`] (status, logon, roaming, logoff), [`lease`] (lease expiry,
//!   `lease/rules.rs`), [`messaging`] (inter-site messages and requests), [`notes`], [`routing`]
//!   (interactions, reservations, queues; the agent choice is `collective-routing`), [`config`]
//!   (export and import), [`source`] (the directory filled from LDAP: settings, fenced polls,
//!   the plan that matches entries to users by email), [`alert`] (rules on the board's
//!   statistics, evaluated on every `Tick`).
//! - [`state`]: the views, their accessors and `check_invariants`.
//! - [`directory`]: read-only views: per-site visibility, search, extension resolution.
//! - [`history`]: the presence versions the node's history index records after each change.
#![deny(missing_docs)]

pub mod alert;
mod apply;
pub mod authorize;
pub mod catalog;
pub mod command;
pub mod config;
pub mod directory;
pub mod event;
pub mod history;
pub mod lease;
pub mod limits;
pub mod messaging;
pub mod notes;
pub mod presence;
pub mod rejection;
pub mod routing;
pub mod site;
pub mod small;
pub mod sorted_map;
pub mod source;
pub mod state;
pub mod user;
pub mod validate;
pub mod workgroup;

pub use authorize::Access;
pub use catalog::{StatusDef, StatusGroup};
pub use command::{Batch, Command, Envelope, Principal, Proposal, SiteSpec};
pub use config::rules::ImportPlan;
pub use directory::{Entry, Resolution, SearchQuery};
pub use event::{Event, EventRecord};
pub use lease::Lease;
pub use presence::{Logon, Presence};
pub use rejection::Rejection;
pub use site::{Site, SiteId, TrustedAccess};
pub use state::State;
pub use user::{User, UserSpec};
pub use workgroup::Workgroup;
