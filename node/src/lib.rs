//! The `collective` node: openraft over tonic with RocksDB storage and the gRPC services, around
//! the pure `collective-statemachine`. The binary, its command line and the benchmarks are
//! `collective-cli` (`cli/`).
//!
//! Reading order:
//! - [`error`]: the library's typed error.
//! - [`config`]: `NodeConfig`, layered and validated.
//! - [`raft_types`]: the openraft type configuration; [`runtime`]: tokio with a seedable RNG.
//! - [`environment`]: the clock and connector a node runs with (real or simulated).
//! - [`shared`]: applied state and event history shared by Raft and the services.
//! - [`store`]: RocksDB log store and state machine (durable appends, snapshots).
//! - [`history`]: the presence history index in RocksDB (past presence, availability, durations).
//! - [`network`]: the Raft transport over tonic; [`raft_service`]: its server side.
//! - [`node`]: one member: stamping, proposing, forwarding, read barriers, bootstrap.
//! - [`handover`]: leadership handed over without an outage (`member move-leader`, SIGTERM).
//! - [`join`]: a member the leader does not list adds itself (StatefulSet scale-up, after `recover`).
//! - [`auth`]: TLS, credentials, the gate every gRPC request passes, certificate generation.
//! - [`api`]: the client gRPC services and the error mapping.
//! - [`server`]: wiring gRPC, health, reflection, HTTP probes and metrics; [`telemetry`]: the
//!   Prometheus families, their help, buckets, build info and process metrics; [`grpc_metrics`]:
//!   per-RPC metrics in grpc-prometheus' shape.

pub mod api;
pub mod auth;
pub mod board;
pub mod bundle;
pub mod codec;
pub mod config;
mod dispatch;
pub mod environment;
pub mod error;
pub mod grpc_metrics;
pub mod handover;
pub mod history;
pub mod http_tls;
pub mod join;
pub mod memory;
pub mod network;
pub mod node;
pub mod raft_service;
pub mod raft_types;
pub mod runtime;
pub mod server;
pub mod shared;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod webhook;
