//! Simulations of collective.
//!
//! - [`run`]: whole clusters of real nodes in turmoil, one seed at a time, with faults, a
//!   workload, a watcher and the checks in [`checks`]. `collective-sim --seeds 1000` soaks.
//! - [`durability`]: the commit quorum counts only members whose copy of an entry is on disk.
//! - [`workload`]: the seeded command generator the replica simulation (`tests/replicas.rs`)
//!   feeds straight into state machines.

pub mod checks;
pub mod durability;
pub mod faults;
pub mod history;
pub mod net;
pub mod run;
pub mod workload;
