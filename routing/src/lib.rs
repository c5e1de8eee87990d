//! Agent selection for `collective`'s routing (the vendor's Interaction Director).
//!
//! The state machine keeps, per workgroup, the agents that are *eligible* right now (logged on,
//! in an ACD-available status, not on the phone, not reserved, at an active site with a lease) in
//! an [`Index`]; [`select`] picks the best of them for one interaction without scanning them all,
//! and [`select_among`] ranks any given set the same way (the reference the index is tested
//! against, and what serves a queue when a few agents free up). Everything here is pure and
//! deterministic: the time comes in the [`Request`], site liveness and route costs as closures.
//!
//! Reading order: [`settings`] (strategies and their knobs), [`index`] (the eligible agents and
//! their orderings), [`select`](mod@select) (ranking, the indexed search and the explanation).
#![deny(missing_docs)]

pub mod index;
pub mod select;
pub mod settings;

pub use index::{Agent, Index, Pool};
pub use select::{select, select_among, Candidate, Context, Decision, Request};
pub use settings::{Settings, Strategy};

/// A site id (1..=999), as the state machine numbers sites.
pub type SiteId = u32;
