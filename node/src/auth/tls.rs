//! TLS with rustls through tonic: the server accepts clients with or without a certificate
//! (tokens authenticate the latter) but any certificate presented must chain to the cluster CA;
//! peers always present their node certificate, so a node holding a certificate from another CA
//! fails the handshake and can neither join nor send Raft RPCs.

use std::path::Path;

use crate::error::invalid;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// Installs rustls's ring provider as the process default (once). tonic's server builds its
/// rustls config from the default provider; only ring is compiled in (aws-lc beside it would
/// make rustls panic on the ambiguity).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

/// A node's TLS material: its identity and the cluster CA.
#[derive(Clone)]
pub struct Tls {
    identity: Identity,
    ca: Certificate,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

fn read(field: &str, path: &Path) -> crate::error::Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| invalid(field, format!("{}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN") {
        return Err(invalid(field, format!("{} is not a PEM file", path.display())));
    }
    Ok(bytes)
}

impl Tls {
    /// Reads the certificate, key and CA files (PEM).
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> crate::error::Result<Tls> {
        install_crypto_provider();
        let (cert, key, ca) = (read("tls_cert_file", cert)?, read("tls_key_file", key)?, read("tls_ca_file", ca)?);
        let tls = Tls { identity: Identity::from_pem(cert, key), ca: Certificate::from_pem(ca) };
        // Fail at start-up rather than at the first handshake: building the server and client
        // sides parses the certificate, the key and the CA.
        tonic::transport::Server::builder().tls_config(tls.server()).map_err(|e| {
            invalid("tls_cert_file, tls_key_file, tls_ca_file", format!("not a usable certificate, key and CA ({e:?})"))
        })?;
        tonic::transport::Endpoint::from_static("https://127.0.0.1:1").tls_config(tls.client()).map_err(|e| {
            invalid("tls_cert_file, tls_key_file, tls_ca_file", format!("not a usable client identity ({e:?})"))
        })?;
        Ok(tls)
    }

    /// The server side: this node's identity; client certificates optional but verified.
    pub fn server(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(self.identity.clone())
            .client_ca_root(self.ca.clone())
            .client_auth_optional(true)
            // A connection that stalls in its handshake is dropped.
            .timeout(std::time::Duration::from_millis(HANDSHAKE_TIMEOUT_MS))
    }

    /// The client side towards peers: trust the cluster CA only, present this node's identity.
    pub fn client(&self) -> ClientTlsConfig {
        ClientTlsConfig::new().ca_certificate(self.ca.clone()).identity(self.identity.clone())
    }
}

/// What a certificate's subject common name says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `node:NAME`.
    Node(String),
    /// `site:ID`.
    Site(u32),
    /// `admin:NAME`.
    Admin(String),
}

/// The principal named by a (CA-verified) DER certificate, or why it names none.
pub fn subject(der: &[u8]) -> Result<Subject, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| "the certificate has no common name".to_string())?;
    parse_subject(common_name)
}

/// Parses `node:NAME`, `site:ID` or `admin:NAME`.
pub fn parse_subject(common_name: &str) -> Result<Subject, String> {
    let bad = || format!("certificate common name {common_name:?} is not node:NAME, site:ID or admin:NAME");
    let (kind, name) = common_name.split_once(':').ok_or_else(bad)?;
    if name.is_empty() {
        return Err(bad());
    }
    match kind {
        "node" => Ok(Subject::Node(name.to_string())),
        "admin" => Ok(Subject::Admin(name.to_string())),
        "site" => name.parse().map(Subject::Site).map_err(|_| bad()),
        _ => Err(bad()),
    }
}
