//! The node's own concurrent structures, small enough to model-check with loom:
//!
//! - [`hub::Hub`]: the watch fan-out. The Raft state machine publishes applied events into a
//!   bounded ring; every watcher reads from its own cursor and is woken on publish. A watcher that
//!   falls behind the ring is told it was compacted; the publisher never waits for anyone.
//! - [`pending::PendingTable`]: requests waiting for an answer from another task (a write waiting
//!   for its batch to commit). The answer races the waiter's timeout; exactly one side wins.
//!
//! Under `RUSTFLAGS="--cfg loom"` the locks and `Arc` come from loom, and `tests/loom.rs`
//! explores every interleaving of the models (see `deploy/test.sh`).

pub mod hub;
pub mod pending;

#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};
