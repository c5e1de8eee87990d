//! Site leases: a connected site keeps its lease alive; when the lease expires, the users logged
//! on at that site are logged off with reason `site-unreachable`, so nobody stays "ghost online".

use serde::{Deserialize, Serialize};

mod rules;

/// Shortest lease a site may ask for.
pub const LEASE_TTL_MS_MIN: u64 = 1_000;
/// Longest lease a site may ask for.
pub const LEASE_TTL_MS_MAX: u64 = 300_000;
/// Lease time-to-live when the site does not say.
pub const LEASE_TTL_MS_DEFAULT: u64 = 10_000;
/// Reason recorded when users are logged off because their site's lease expired.
pub const LOGOFF_REASON_SITE_UNREACHABLE: &str = "site-unreachable";

/// The live lease of one site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Time-to-live granted.
    pub ttl_ms: u64,
    /// Entry time of the grant.
    pub granted_at_ms: u64,
    /// Entry time at which the lease expires unless kept alive.
    pub expires_at_ms: u64,
}
