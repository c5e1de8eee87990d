//! Simulations of collective.
//!
//! - [`run`]: whole clusters of real nodes in turmoil, one seed at a time, with faults, a
//!   workload, a watcher and the checks in [`checks`]. `collective-sim --seeds 1000` soaks.
//! - [`workload`]: the seeded command generator the replica simulation (`tests/replicas.rs`)
//!   feeds straight into state machines.

pub mod checks;
pub mod faults;
pub mod history;
pub mod net;
pub mod run;
pub mod workload;
