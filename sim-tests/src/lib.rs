//! Simulations of `collective`, seeded and deterministic.
//!
//! Today: [`workload`], a seeded generator of plausible (and sometimes invalid) commands, used by
//! `tests/replicas.rs` to drive replicas of the pure state machine through long random histories.
//! Whole-cluster turmoil simulations with faults arrive with their own issue.

pub mod workload;
