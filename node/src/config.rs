//! Node configuration: defaults → TOML file → `COLLECTIVE_*` environment → flags, validated
//! before the node starts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

use crate::error::invalid;
use crate::raft_types::NodeId;

/// Everything `collective serve` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This member's id (≥ 1), as in `initial_cluster`.
    pub id: NodeId,
    /// Where RocksDB keeps the log and snapshots.
    pub data_dir: PathBuf,
    /// gRPC listen address for clients and peers.
    pub grpc_addr: String,
    /// HTTP listen address for `/livez`, `/readyz`, `/metrics`.
    pub http_addr: String,
    /// Initial members, etcd style: `1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003`
    /// (hostnames are resolved when connecting). Empty: this node joins later through
    /// `member add`.
    pub initial_cluster: String,
    /// The address peers reach this member at (`host:port`). Default: its `initial_cluster`
    /// address, else `grpc_addr`. Needed with `join` (Kubernetes: the pod's stable DNS name).
    pub advertise_addr: Option<String>,
    /// When the cluster's leader does not list this member (a StatefulSet scaled up, or an empty
    /// member after `recover`): ask it to add this one as a learner and promote it once it has
    /// caught up. A member the cluster removed sets its old data aside and joins as a new one.
    pub join: bool,
    /// Take `id` from the hostname's ordinal suffix plus one (`collective-0` is member 1), as a
    /// Kubernetes StatefulSet names its pods.
    pub id_from_hostname: bool,
    /// Leader heartbeat interval.
    pub heartbeat_interval_ms: u64,
    /// Lower bound of the randomised election timeout.
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_timeout_max_ms: u64,
    /// Take a snapshot (and compact the log) after this many entries.
    pub snapshot_after_entries: u64,
    /// Events kept in memory for watchers; older watch starts get "compacted".
    pub watch_history_events_max: u64,
    /// Deadline of a forwarded write or read-index request to the leader, and of a write
    /// waiting on the leader for its batch to commit (then its outcome is unknown).
    pub forward_timeout_ms: u64,
    /// Presence history older than this is forgotten.
    pub history_max_age_ms: u64,
    /// About this many presence versions are kept at most (older ones go first).
    pub history_versions_max: u64,
    /// How often the presence history is pruned; 0 never prunes.
    pub history_prune_interval_ms: u64,
    /// Check every state invariant after every applied entry (simulations and debugging; slow).
    pub check_invariants: bool,
    /// This node's certificate (PEM, signed by `tls_ca_file`, common name `node:NAME`). With
    /// `tls_key_file` and `tls_ca_file`, clients and peers talk TLS, and peers must present a
    /// member certificate of the same CA.
    pub tls_cert_file: Option<PathBuf>,
    /// This node's private key (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    pub tls_ca_file: Option<PathBuf>,
    /// Serve gRPC without TLS (local development). Must be chosen explicitly when no certificate
    /// is configured.
    pub plaintext: bool,
    /// Serve the HTTP port (board, probes, `/metrics`) over TLS with `tls_cert_file` and
    /// `tls_key_file`; no client certificate is asked for.
    pub http_tls: bool,
    /// File holding the administrator token (32 to 512 characters, one line). It also keys the
    /// site session tokens and the members' peer credential: every member needs the same file.
    pub admin_token_file: Option<PathBuf>,
    /// Accept every caller as the administrator (local development). Must be chosen explicitly
    /// when no administrator token is configured.
    pub no_auth: bool,
    /// How long a site's session token (from `Auth.Login`) is valid.
    pub session_ttl_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            data_dir: PathBuf::from("collective-data"),
            grpc_addr: "127.0.0.1:7001".into(),
            http_addr: "127.0.0.1:8001".into(),
            initial_cluster: String::new(),
            advertise_addr: None,
            join: false,
            id_from_hostname: false,
            // Failover: openraft 0.9 checks timers every 1.5 heartbeats, and a follower that
            // knows a leader starts an election `election_timeout_max + r` (r drawn once in
            // min..max) after the last AppendEntries it processed (the leader's lease is fixed
            // at max). With 100 / 320..440 ms that is 760-880 ms plus a tick of at most 150 ms:
            // writes resume about 1 s after a leader dies (it was 3-4.4 s with 250 / 1,000..2,000).
            // A spurious election needs ~760 ms without a processed AppendEntries, far beyond
            // this disk's fsync stalls (~100 ms). The heartbeat interval is also openraft's
            // AppendEntries deadline: a follower stalled past it costs a resend, not an election.
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 320,
            election_timeout_max_ms: 440,
            snapshot_after_entries: 20_000,
            watch_history_events_max: 100_000,
            forward_timeout_ms: 5_000,
            history_max_age_ms: 7 * 24 * 3_600_000,
            history_versions_max: 20_000_000,
            history_prune_interval_ms: 60_000,
            check_invariants: false,
            tls_cert_file: None,
            tls_key_file: None,
            tls_ca_file: None,
            plaintext: false,
            http_tls: false,
            admin_token_file: None,
            no_auth: false,
            session_ttl_ms: 3_600_000,
        }
    }
}

/// Flags of `collective serve` that override the file and environment.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub initial_cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub join: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_from_hostname: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch_history_events_max: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_after_entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plaintext: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_tls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_auth: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_ttl_ms: Option<u64>,
}

impl NodeConfig {
    /// Layers defaults, the TOML file, `COLLECTIVE_*` variables and flags, then validates.
    pub fn load(file: Option<&std::path::Path>, overrides: Overrides) -> crate::error::Result<NodeConfig> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(invalid("--config", format!("{} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        let mut config: NodeConfig = figment
            .merge(Env::prefixed("COLLECTIVE_").only(&[
                "id",
                "data_dir",
                "grpc_addr",
                "http_addr",
                "initial_cluster",
                "advertise_addr",
                "join",
                "id_from_hostname",
                "heartbeat_interval_ms",
                "election_timeout_min_ms",
                "election_timeout_max_ms",
                "snapshot_after_entries",
                "watch_history_events_max",
                "forward_timeout_ms",
                "history_max_age_ms",
                "history_versions_max",
                "history_prune_interval_ms",
                "check_invariants",
                "tls_cert_file",
                "tls_key_file",
                "tls_ca_file",
                "plaintext",
                "http_tls",
                "admin_token_file",
                "no_auth",
                "session_ttl_ms",
            ]))
            .merge(Serialized::defaults(overrides))
            .extract()?;
        if config.id_from_hostname {
            config.id = id_from_hostname(&hostname())?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every field; the error names the field.
    pub fn validate(&self) -> crate::error::Result<()> {
        if self.id == 0 {
            return Err(invalid("id", "must be at least 1"));
        }
        self.grpc_addr
            .parse::<SocketAddr>()
            .map_err(|e| invalid("grpc_addr", format!("{:?} is not host:port ({e})", self.grpc_addr)))?;
        self.http_addr
            .parse::<SocketAddr>()
            .map_err(|e| invalid("http_addr", format!("{:?} is not host:port ({e})", self.http_addr)))?;
        let members = self.initial_members()?;
        if let Some(addr) = &self.advertise_addr {
            check_peer_addr(addr).map_err(|e| invalid("advertise_addr", format!("{e}")))?;
        }
        if !members.is_empty() && !members.contains_key(&self.id) {
            if !self.join {
                return Err(invalid(
                    "initial_cluster",
                    format!(
                        "does not name this node's id {}; choose join to join the cluster it names as \
                     a new member",
                        self.id
                    ),
                ));
            }
            if self.advertise_addr.is_none() {
                return Err(invalid("advertise_addr", "a joining member must say where its peers reach it"));
            }
        }
        if self.heartbeat_interval_ms == 0 {
            return Err(invalid("heartbeat_interval_ms", "must be positive"));
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms * 3 {
            return Err(invalid(
                "election_timeout_min_ms",
                format!("must exceed three times heartbeat_interval_ms ({})", self.heartbeat_interval_ms),
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(invalid(
                "election_timeout_max_ms",
                format!("must exceed election_timeout_min_ms ({})", self.election_timeout_min_ms),
            ));
        }
        if self.snapshot_after_entries < 100 {
            return Err(invalid("snapshot_after_entries", "must be at least 100"));
        }
        if !(10..=10_000_000).contains(&self.watch_history_events_max) {
            return Err(invalid("watch_history_events_max", "must be within 10..=10000000"));
        }
        if self.history_max_age_ms < 60_000 {
            return Err(invalid("history_max_age_ms", "must be at least 60000 (one minute)"));
        }
        if self.history_versions_max < 1_000 {
            return Err(invalid("history_versions_max", "must be at least 1000"));
        }
        if self.forward_timeout_ms < 100 {
            return Err(invalid("forward_timeout_ms", "must be at least 100"));
        }
        self.validate_security()
    }

    /// TLS or plaintext, a token or no authentication: each chosen explicitly.
    fn validate_security(&self) -> crate::error::Result<()> {
        let tls = [&self.tls_cert_file, &self.tls_key_file, &self.tls_ca_file];
        match (tls.iter().filter(|f| f.is_some()).count(), self.plaintext) {
            (0, false) => {
                return Err(invalid(
                    "tls_cert_file",
                    "no TLS certificate is configured; give tls_cert_file, tls_key_file and tls_ca_file \
                 (see `collective certs generate`), or choose plaintext for local development",
                ))
            }
            (3, true) => return Err(invalid("plaintext", "chosen together with TLS certificates; choose one")),
            (1 | 2, _) => {
                return Err(invalid("tls_cert_file", "tls_cert_file, tls_key_file and tls_ca_file go together"))
            }
            _ => {}
        }
        if self.http_tls && self.tls_cert_file.is_none() {
            return Err(invalid("http_tls", "needs tls_cert_file and tls_key_file (the member's certificate)"));
        }
        match (&self.admin_token_file, self.no_auth) {
            (None, false) => {
                return Err(invalid(
                    "admin_token_file",
                    "no administrator token is configured; give admin_token_file, or choose no_auth \
                 for local development",
                ))
            }
            (Some(_), true) => return Err(invalid("no_auth", "chosen together with admin_token_file; choose one")),
            _ => {}
        }
        if !(60_000..=30 * 24 * 3_600_000).contains(&self.session_ttl_ms) {
            return Err(invalid("session_ttl_ms", "must be within 60000 (a minute) and 2592000000 (30 days)"));
        }
        Ok(())
    }

    /// The parsed `initial_cluster`.
    pub fn initial_members(&self) -> crate::error::Result<BTreeMap<NodeId, String>> {
        let mut members = BTreeMap::new();
        for part in self.initial_cluster.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| invalid("initial_cluster", format!("{part:?} is not ID=HOST:PORT")))?;
            let id: NodeId =
                id.trim().parse().map_err(|_| invalid("initial_cluster", format!("{id:?} is not a member id")))?;
            if id == 0 {
                return Err(invalid("initial_cluster", "member ids start at 1"));
            }
            check_peer_addr(addr.trim()).map_err(|e| invalid("initial_cluster", format!("{e}")))?;
            if members.insert(id, addr.trim().to_string()).is_some() {
                return Err(invalid("initial_cluster", format!("member {id} appears twice")));
            }
        }
        Ok(members)
    }

    /// The address peers reach this node at.
    pub fn advertise_addr(&self) -> String {
        if let Some(addr) = &self.advertise_addr {
            return addr.clone();
        }
        self.initial_members().ok().and_then(|m| m.get(&self.id).cloned()).unwrap_or_else(|| self.grpc_addr.clone())
    }
}

/// This machine's hostname: `HOSTNAME` (set in every container and pod), else the kernel's.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// The member id of a StatefulSet pod's hostname: its ordinal plus one (`collective-2` → 3).
pub fn id_from_hostname(hostname: &str) -> crate::error::Result<NodeId> {
    let short = hostname.split('.').next().unwrap_or_default();
    let ordinal = short.rsplit_once('-').and_then(|(name, ordinal)| {
        (!name.is_empty() && !ordinal.is_empty() && ordinal.chars().all(|c| c.is_ascii_digit()))
            .then(|| ordinal.parse::<NodeId>().ok())
            .flatten()
    });
    match ordinal {
        Some(ordinal) if ordinal < NodeId::MAX => Ok(ordinal + 1),
        _ => Err(invalid(
            "id_from_hostname",
            format!(
                "hostname {hostname:?} does not end in -ORDINAL as a StatefulSet pod's does \
             (collective-0 is member 1); set id instead"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves the layering order (defaults → TOML → env → flags) and that validation names the field.
    #[test]
    fn layers_and_validates() {
        let dir = std::env::temp_dir().join(format!("collective-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "id = 2\ngrpc_addr = \"127.0.0.1:7102\"\ninitial_cluster = \"1=127.0.0.1:7101,2=127.0.0.1:7102\"\n\
             plaintext = true\nno_auth = true\n",
        )
        .unwrap();
        let overrides = Overrides { grpc_addr: Some("127.0.0.1:7202".into()), ..Overrides::default() };
        // A flag wins over the file; peers still reach the node at its initial-cluster address.
        let config = NodeConfig::load(Some(&file), overrides).unwrap();
        assert_eq!((config.grpc_addr.as_str(), config.advertise_addr().as_str()), ("127.0.0.1:7202", "127.0.0.1:7102"));

        let config = NodeConfig::load(Some(&file), Overrides::default()).unwrap();
        assert_eq!((config.id, config.grpc_addr.as_str(), config.heartbeat_interval_ms), (2, "127.0.0.1:7102", 100));
        assert_eq!(config.advertise_addr(), "127.0.0.1:7102");
        let flags = Overrides { id: Some(1), ..Overrides::default() };
        assert_eq!(NodeConfig::load(Some(&file), flags).unwrap().id, 1);

        std::fs::write(&file, "id = 0\n").unwrap();
        assert!(NodeConfig::load(Some(&file), Overrides::default()).unwrap_err().to_string().contains("id"));
        std::fs::write(&file, "unknown_key = 1\n").unwrap();
        assert!(NodeConfig::load(Some(&file), Overrides::default()).unwrap_err().to_string().contains("unknown_key"));
        assert!(NodeConfig::load(Some(&dir.join("missing.toml")), Overrides::default()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let bad = |change: fn(&mut NodeConfig)| {
            let mut config = NodeConfig::default();
            change(&mut config);
            config.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.grpc_addr = "nowhere".into()).starts_with("grpc_addr"));
        assert!(bad(|c| c.http_addr = "".into()).starts_with("http_addr"));
        assert!(bad(|c| c.initial_cluster = "1=127.0.0.1:1,1=127.0.0.1:2".into()).starts_with("initial_cluster"));
        assert!(bad(|c| c.initial_cluster = "2=127.0.0.1:1".into()).contains("does not name this node"));
        assert!(bad(|c| {
            c.initial_cluster = "2=127.0.0.1:1".into();
            c.join = true;
        })
        .starts_with("advertise_addr: a joining member"));
        assert!(bad(|c| c.advertise_addr = Some("bad_host:1".into())).starts_with("advertise_addr"));
        assert!(bad(|c| c.election_timeout_min_ms = 300).starts_with("election_timeout_min_ms"));
        assert!(bad(|c| c.election_timeout_max_ms = 320).starts_with("election_timeout_max_ms"));
        assert!(bad(|c| c.snapshot_after_entries = 5).starts_with("snapshot_after_entries"));
        assert!(bad(|c| c.watch_history_events_max = 1).starts_with("watch_history_events_max"));
        // Transport and authentication are each chosen explicitly.
        assert!(bad(|c| c.no_auth = true).starts_with("tls_cert_file: no TLS certificate"));
        assert!(bad(|c| {
            c.plaintext = true;
            c.tls_ca_file = Some("ca.pem".into());
        })
        .contains("go together"));
        assert!(bad(|c| c.plaintext = true).starts_with("admin_token_file: no administrator token"));
        assert!(bad(|c| {
            c.plaintext = true;
            c.no_auth = true;
            c.admin_token_file = Some("token".into());
        })
        .starts_with("no_auth"));
        assert!(bad(|c| {
            c.plaintext = true;
            c.no_auth = true;
            c.session_ttl_ms = 5;
        })
        .starts_with("session_ttl_ms"));
        assert!(bad(|c| {
            c.plaintext = true;
            c.no_auth = true;
            c.http_tls = true;
        })
        .starts_with("http_tls: needs tls_cert_file"));
        let mut development = NodeConfig { plaintext: true, no_auth: true, ..NodeConfig::default() };
        assert!(development.validate().is_ok());
        development.tls_cert_file = Some("node.pem".into());
        development.tls_key_file = Some("node.key".into());
        development.tls_ca_file = Some("ca.pem".into());
        assert!(development.validate().unwrap_err().to_string().starts_with("plaintext"));
    }
}

/// A peer address: `IP:PORT` or `HOSTNAME:PORT` (resolved when connecting, as etcd does).
pub fn check_peer_addr(addr: &str) -> crate::error::Result<()> {
    if addr.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| invalid(format!("{addr:?}"), "is not host:port"))?;
    let hostname_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !hostname_ok {
        return Err(invalid(format!("{addr:?}"), format!("{host:?} is neither an IP address nor a hostname")));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(invalid(format!("{addr:?}"), format!("port {port:?} is not within 1..=65535"))),
    }
}

#[cfg(test)]
mod peer_addr_tests {
    use super::{check_peer_addr, id_from_hostname};

    #[test]
    fn a_pod_ordinal_names_the_member() {
        assert_eq!(id_from_hostname("collective-0").unwrap(), 1);
        assert_eq!(id_from_hostname("collective-12.collective-peer.ns.svc.cluster.local").unwrap(), 13);
        assert_eq!(id_from_hostname("my-cc-cluster-2").unwrap(), 3);
        for bad in ["collective", "collective-", "-3", "collective-x1", "", "4f3a9c2b1d0e"] {
            let error = id_from_hostname(bad).unwrap_err().to_string();
            assert!(error.contains("does not end in -ORDINAL"), "{bad}: {error}");
        }
    }

    #[test]
    fn peers_are_ip_or_hostname_with_a_port() {
        for ok in ["127.0.0.1:7001", "[::1]:7001", "n1:7000", "node-2.example.com:443"] {
            assert!(check_peer_addr(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("n1", "not host:port"),
            ("n1:0", "port"),
            ("n1:99999", "port"),
            ("bad_host:7000", "neither"),
            (":7000", "neither"),
        ] {
            let error = check_peer_addr(bad).unwrap_err().to_string();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
