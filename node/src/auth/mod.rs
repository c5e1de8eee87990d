//! Who is calling, and whether they may call this RPC at all.
//!
//! - [`tls`]: rustls through tonic; mutual TLS between nodes; principals named by certificates.
//! - [`certs`]: `collective certs generate` (rcgen).
//! - [`limiter`]: failed authentication, rate-limited per address and per site id.
//! - [`gate`]: the one tower layer every gRPC request passes: it authenticates the caller,
//!   applies the per-RPC rule (public, node only, administrator only, any principal) and hands
//!   the caller to the service in the request's extensions.
//!
//! Which entities a site may change is decided inside `apply` (`collective_statemachine::
//! authorize`), against the very state the command changes.
//!
//! Credentials:
//! - **Administrator token**: the contents of `admin_token_file` (every member has the same
//!   file), sent as `authorization: Bearer <token>`; compared as SHA-256 digests in constant time.
//! - **Site session token**: `cst1.<site>.<expires_ms>.<nonce>.<mac>` from `Auth.Login` (site id
//!   and password, verified against the site's Argon2id hash). The MAC is HMAC-SHA256 under a
//!   key derived from the administrator token, over the fields and a digest of the site's
//!   password hash: any member verifies it without shared session state, and changing the site's
//!   password revokes every session of the site.
//! - **Peer token**: derived from the administrator token; members send it on Raft RPCs so a
//!   plaintext cluster with authentication still refuses Raft traffic from anyone else.
//! - **Certificates** (TLS): a client certificate from the cluster CA whose common name is
//!   `admin:NAME`, `site:ID` or `node:NAME`.

pub mod certs;
pub mod gate;
pub mod limiter;
pub mod tls;

use std::net::IpAddr;
use std::path::Path;

use collective_statemachine::{Principal, SiteId, State};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::NodeConfig;
use crate::error::invalid;
use limiter::{Key, Limiter};

type HmacSha256 = Hmac<Sha256>;

/// Shortest administrator token accepted.
pub const ADMIN_TOKEN_CHARS_MIN: usize = 32;
/// Longest token (of any kind) looked at; longer ones are refused unread.
pub const TOKEN_CHARS_MAX: usize = 512;
/// Prefix of site session tokens.
const SESSION_PREFIX: &str = "cst1";
/// Prefix of the peer token.
const PEER_PREFIX: &str = "cpt1";

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// An administrator (token or certificate), by name (shared with the principal its
    /// commands are recorded under).
    Admin(std::sync::Arc<str>),
    /// A site (session token or certificate).
    Site(SiteId),
    /// A cluster member (node certificate or peer token).
    Node(String),
}

impl Caller {
    /// The principal that commands of this caller are recorded under (`None` for members, which
    /// only forward other callers' commands).
    pub fn principal(&self) -> Option<Principal> {
        match self {
            Caller::Admin(name) => Some(Principal::Admin(name.clone())),
            Caller::Site(site) => Some(Principal::Site(*site)),
            Caller::Node(_) => None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Admin(name) => write!(f, "admin:{name}"),
            Caller::Site(site) => write!(f, "site:{site}"),
            Caller::Node(name) => write!(f, "node:{name}"),
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// Authentication is off: every caller is the administrator.
    None,
    /// The administrator or peer token.
    Token,
    /// A site session token, valid until this time.
    Session {
        /// Expiry, ms since the epoch.
        expires_at_ms: u64,
    },
    /// A client certificate.
    Certificate,
}

/// The caller and its credential, as the gate puts them in a request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated {
    /// Who.
    pub caller: Caller,
    /// How.
    pub credential: Credential,
}

/// Why a caller was not authenticated; the text never contains the credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing, unknown, expired or forged credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Too many failures from this address or for this site.
    #[error("too many failed authentications; retry in {retry_after_ms} ms")]
    RateLimited {
        /// When the next attempt is allowed.
        retry_after_ms: u64,
    },
}

/// The node's credentials and the failure limiter (present when authentication is on).
pub struct Authenticator {
    admin_digest: [u8; 32],
    session_key: [u8; 32],
    peer_token: String,
    session_ttl_ms: u64,
    /// Failed authentications per address and per site.
    pub failures: std::sync::Arc<Limiter>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").field("session_ttl_ms", &self.session_ttl_ms).finish_non_exhaustive()
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
        mac.update(&[0]);
    }
    mac.finalize().into_bytes().into()
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of lowercase or uppercase hex; `None` if it is not hex.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

impl Authenticator {
    /// Keys derived from the administrator token.
    pub fn new(admin_token: &str, session_ttl_ms: u64) -> crate::error::Result<Authenticator> {
        let token = admin_token.trim();
        if token.chars().count() < ADMIN_TOKEN_CHARS_MIN || token.len() > TOKEN_CHARS_MAX {
            return Err(invalid(
                "admin_token_file",
                format!("the token must be {ADMIN_TOKEN_CHARS_MIN} to {TOKEN_CHARS_MAX} characters"),
            ));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("admin_token_file", "the token must be one line without spaces"));
        }
        if token.starts_with(&format!("{SESSION_PREFIX}.")) || token.starts_with(&format!("{PEER_PREFIX}.")) {
            return Err(invalid(
                "admin_token_file",
                format!("the token may not start with {SESSION_PREFIX}. or {PEER_PREFIX}."),
            ));
        }
        Ok(Authenticator {
            admin_digest: Sha256::digest(token.as_bytes()).into(),
            session_key: hmac(token.as_bytes(), &[b"collective session key v1"]),
            peer_token: format!("{PEER_PREFIX}.{}", hex(&hmac(token.as_bytes(), &[b"collective peer token v1"]))),
            session_ttl_ms,
            failures: std::sync::Arc::default(),
        })
    }

    /// Reads the administrator token from `path`.
    pub fn load(path: &Path, session_ttl_ms: u64) -> crate::error::Result<Authenticator> {
        let token = std::fs::read_to_string(path)
            .map_err(|e| invalid("admin_token_file", format!("{}: {e}", path.display())))?;
        Authenticator::new(&token, session_ttl_ms)
    }

    /// The token members send each other on Raft RPCs.
    pub fn peer_token(&self) -> &str {
        &self.peer_token
    }

    /// A session token for `site` whose password hash is `password_hash`, and its expiry.
    pub fn issue(&self, site: SiteId, password_hash: &str, now_ms: u64, nonce: u64) -> (String, u64) {
        let expires_at_ms = now_ms.saturating_add(self.session_ttl_ms);
        let body = format!("{SESSION_PREFIX}.{site}.{expires_at_ms}.{nonce:016x}");
        let mac = hmac(&self.session_key, &[body.as_bytes(), &Sha256::digest(password_hash.as_bytes())]);
        (format!("{body}.{}", hex(&mac)), expires_at_ms)
    }

    /// Who a bearer token stands for. A valid token always passes (tokens are too long to
    /// guess, so a flood from a shared address must not lock its honest callers out); failures
    /// are counted under the caller's address only (counting them against the site a token
    /// names would let anyone lock that site out), and once over the limit they are answered
    /// `RateLimited`.
    pub fn verify_token(
        &self,
        token: &str,
        source: Option<IpAddr>,
        now_ms: u64,
        state: &State,
    ) -> Result<Authenticated, AuthError> {
        let reason = match self.token_caller(token, now_ms, state) {
            Err(AuthError::Unauthenticated(reason)) => reason,
            other => return other,
        };
        let named_site = session_site(token);
        let keys = [Key::Source(source)];
        if let Err(retry_after_ms) = self.failures.check(&keys, now_ms) {
            return Err(AuthError::RateLimited { retry_after_ms });
        }
        self.failures.fail(&keys, now_ms);
        tracing::warn!(source = ?source, site = ?named_site, %reason, "authentication failed");
        Err(AuthError::Unauthenticated(reason))
    }

    /// Who `token` names in `state`, without counting a refusal in the failure limiter: for a
    /// token already admitted once, checked again (a long-lived stream's), which is no guess.
    pub fn token_caller(&self, token: &str, now_ms: u64, state: &State) -> Result<Authenticated, AuthError> {
        let refuse = |reason: &str| Err(AuthError::Unauthenticated(reason.to_string()));
        if token.len() > TOKEN_CHARS_MAX {
            return refuse("the bearer token is too long");
        }
        if token.starts_with(&format!("{PEER_PREFIX}.")) {
            return if bool::from(token.as_bytes().ct_eq(self.peer_token.as_bytes())) {
                Ok(Authenticated { caller: Caller::Node("peer".into()), credential: Credential::Token })
            } else {
                refuse("the peer token is wrong (members need the same admin_token_file)")
            };
        }
        if token.starts_with(&format!("{SESSION_PREFIX}.")) {
            return self.session_caller(token, now_ms, state);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if bool::from(digest.ct_eq(&self.admin_digest)) {
            Ok(Authenticated { caller: Caller::Admin("admin".into()), credential: Credential::Token })
        } else {
            refuse("the bearer token is not a valid administrator or session token")
        }
    }

    fn session_caller(&self, token: &str, now_ms: u64, state: &State) -> Result<Authenticated, AuthError> {
        let refuse = |reason: String| Err(AuthError::Unauthenticated(reason));
        let parts: Vec<&str> = token.split('.').collect();
        let [_, site, expires, nonce, mac] = parts[..] else {
            return refuse("the session token is malformed".into());
        };
        let (Ok(site), Ok(expires_at_ms), Some(mac)) = (site.parse::<SiteId>(), expires.parse::<u64>(), unhex(mac))
        else {
            return refuse("the session token is malformed".into());
        };
        let Some(known) = state.sites.get(&site) else {
            return refuse(format!("the session token names site {site}, which does not exist"));
        };
        let body = format!("{SESSION_PREFIX}.{site}.{expires_at_ms}.{nonce}");
        let expected = hmac(&self.session_key, &[body.as_bytes(), &Sha256::digest(known.password_hash.as_bytes())]);
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return refuse(format!(
                "the session token of site {site} is not valid (forged, from another cluster, or the site's password changed)"
            ));
        }
        if expires_at_ms <= now_ms {
            return refuse(format!("the session token of site {site} expired at {expires_at_ms} ms; log in again"));
        }
        if !known.active {
            return refuse(format!("site {site} is inactive; its sessions are suspended"));
        }
        Ok(Authenticated { caller: Caller::Site(site), credential: Credential::Session { expires_at_ms } })
    }
}

/// The site a session token claims (before it is verified), for rate limiting.
fn session_site(token: &str) -> Option<SiteId> {
    let mut parts = token.split('.');
    (parts.next() == Some(SESSION_PREFIX)).then(|| parts.next()?.parse().ok()).flatten()
}

/// A node's transport and authentication settings, loaded from its configuration.
#[derive(Debug, Default)]
pub struct Security {
    /// TLS material, when the node serves TLS.
    pub tls: Option<tls::Tls>,
    /// Credentials, when authentication is on.
    pub auth: Option<Authenticator>,
}

impl Security {
    /// Reads the files `config` names (it has been validated: TLS or plaintext, a token or
    /// no authentication, each chosen explicitly).
    pub fn load(config: &NodeConfig) -> crate::error::Result<Security> {
        let tls = match (&config.tls_cert_file, &config.tls_key_file, &config.tls_ca_file) {
            (Some(cert), Some(key), Some(ca)) => Some(tls::Tls::load(cert, key, ca)?),
            _ => None,
        };
        let auth = match &config.admin_token_file {
            Some(path) => Some(Authenticator::load(path, config.session_ttl_ms)?),
            None => None,
        };
        Ok(Security { tls, auth })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "an-administrator-token-of-enough-length";

    fn state_with_site(hash: &str) -> State {
        let mut state = State::new();
        let spec = collective_statemachine::SiteSpec {
            id: 4,
            name: "Four".into(),
            phone: "+1 555 0100".into(),
            password_hash: hash.into(),
            note_id_dial_string: String::new(),
            active: true,
            servers: vec!["cic4".into()],
            trusted_access: Default::default(),
        };
        let envelope = collective_statemachine::Envelope {
            at_ms: 1,
            principal: Principal::System,
            command: collective_statemachine::Command::AddSite(spec),
        };
        state.apply(&envelope).unwrap();
        state
    }

    #[test]
    fn tokens_authenticate_and_expire_and_die_with_the_password() {
        let auth = Authenticator::new(ADMIN, 60_000).unwrap();
        let state = state_with_site("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA");
        let admin = auth.verify_token(ADMIN, None, 1_000, &state).unwrap();
        assert_eq!(admin.caller, Caller::Admin("admin".into()));
        let peer = auth.verify_token(auth.peer_token(), None, 1_000, &state).unwrap();
        assert_eq!(peer.caller, Caller::Node("peer".into()));

        let (token, expires) = auth.issue(4, &state.sites[&4].password_hash, 1_000, 7);
        assert_eq!(expires, 61_000);
        let site = auth.verify_token(&token, None, 2_000, &state).unwrap();
        assert_eq!((site.caller, site.credential), (Caller::Site(4), Credential::Session { expires_at_ms: 61_000 }));
        let expired = auth.verify_token(&token, None, 61_000, &state).unwrap_err().to_string();
        assert!(expired.contains("expired"), "{expired}");
        // Another password hash (the password changed) or another cluster's key: refused.
        let changed = state_with_site("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$b3RoZXI");
        assert!(auth.verify_token(&token, Some([10, 0, 0, 2].into()), 2_000, &changed).is_err());
        let other = Authenticator::new("another-administrator-token-also-long", 60_000).unwrap();
        assert!(other.verify_token(&token, Some([10, 0, 0, 3].into()), 2_000, &state).is_err());
        // A tampered expiry breaks the MAC.
        let forged = token.replace(".61000.", ".99999999.");
        assert!(auth.verify_token(&forged, Some([10, 0, 0, 4].into()), 2_000, &state).is_err());
    }

    #[test]
    fn failures_are_rate_limited_and_never_echo_the_token() {
        let auth = Authenticator::new(ADMIN, 60_000).unwrap();
        let state = State::new();
        let source = Some(IpAddr::from([10, 0, 0, 9]));
        for _ in 0..limiter::BURST {
            let error = auth.verify_token("guess-guess-guess", source, 1_000, &state).unwrap_err();
            assert!(matches!(&error, AuthError::Unauthenticated(text) if !text.contains("guess")), "{error}");
        }
        // Further failures from that address are answered "rate limited", but a valid token
        // still passes (it cannot have been guessed).
        let limited = auth.verify_token("guess-again-guess-again", source, 1_000, &state).unwrap_err();
        assert!(matches!(limited, AuthError::RateLimited { .. }), "{limited}");
        assert!(auth.verify_token(ADMIN, source, 1_000, &state).is_ok());
        let other = auth.verify_token("guess-guess-guess", Some(IpAddr::from([10, 0, 0, 10])), 1_000, &state);
        assert!(matches!(other, Err(AuthError::Unauthenticated(_))));
    }

    #[test]
    fn weak_admin_tokens_are_refused() {
        assert!(Authenticator::new("short", 1).unwrap_err().to_string().contains("32"));
        assert!(Authenticator::new("with spaces in the middle of a long token", 1).is_err());
        assert!(Authenticator::new("cst1.looks-like-a-session-token-but-long", 1).is_err());
    }
}
