//! `collective certs generate`: a cluster CA and the certificates signed by it (the vendor's
//! AdminGenSSLCerts), with rcgen.
//!
//! The principal a certificate stands for is its subject common name:
//! - `node:NAME`: a cluster member (server and client authentication, so it serves gRPC and
//!   calls its peers); its subject alternative names are the host names and addresses peers and
//!   clients reach it at;
//! - `site:ID`: a site's client certificate;
//! - `admin:NAME`: an administrator's client certificate.
//!
//! Files are PEM: `ca.pem`/`ca.key`, then `node-NAME.pem`/`.key`, `site-ID.pem`/`.key`,
//! `admin-NAME.pem`/`.key`. Private keys are written with mode 0600, and an existing file is
//! never overwritten (a CA that already exists is reused to sign).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{invalid, io};

/// Longest validity a certificate may be given, in days.
pub const VALIDITY_DAYS_MAX: u32 = 36_500;

/// What to generate.
#[derive(Debug, Clone)]
pub struct Request {
    /// Directory of the CA (`ca.pem`, `ca.key`); created with a new CA when it has none.
    pub ca_dir: PathBuf,
    /// Where the other certificates go.
    pub out_dir: PathBuf,
    /// Node names.
    pub nodes: Vec<String>,
    /// Site ids.
    pub sites: Vec<u32>,
    /// Administrator names.
    pub admins: Vec<String>,
    /// Extra subject alternative names of node certificates (host names or IP addresses),
    /// besides the node's name, `localhost`, `127.0.0.1` and `::1`.
    pub sans: Vec<String>,
    /// Validity of the new certificates, in days.
    pub days: u32,
}

/// One file written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The principal (`ca`, `node:a`, `site:12`, `admin:ops`).
    pub principal: String,
    /// Certificate file.
    pub cert: PathBuf,
    /// Key file.
    pub key: PathBuf,
    /// Whether the CA already existed (only for `ca`).
    pub reused: bool,
}

/// Checks a node or administrator name: 1–64 of `A-Za-z0-9._-`.
pub fn check_name(field: &str, name: &str) -> crate::error::Result<()> {
    if name.is_empty() || name.len() > 64 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(invalid(field, format!("{name:?} must be 1 to 64 letters, digits, '.', '_' or '-'")));
    }
    Ok(())
}

/// Generates what `request` asks for and returns every file pair, the CA first.
pub fn generate(request: &Request) -> crate::error::Result<Vec<Written>> {
    if request.nodes.is_empty() && request.sites.is_empty() && request.admins.is_empty() && ca_exists(&request.ca_dir) {
        return Err(invalid("--ca", "nothing to generate: the CA exists; name a --node, --site or --admin"));
    }
    if request.days == 0 || request.days > VALIDITY_DAYS_MAX {
        return Err(invalid("--days", format!("must be within 1..={VALIDITY_DAYS_MAX}")));
    }
    for node in &request.nodes {
        check_name("--node", node)?;
    }
    for admin in &request.admins {
        check_name("--admin", admin)?;
    }
    for site in &request.sites {
        collective_statemachine::validate::site_id("--site", *site).map_err(|e| invalid("--site", e.to_string()))?;
    }
    for san in &request.sans {
        if san.is_empty() || san.len() > 253 {
            return Err(invalid("--san", format!("{san:?} is not a host name or IP address")));
        }
    }
    let mut written = Vec::new();
    let (ca_cert_pem, ca_key, reused) = load_or_create_ca(&request.ca_dir)?;
    written.push(Written {
        principal: "ca".into(),
        cert: request.ca_dir.join("ca.pem"),
        key: request.ca_dir.join("ca.key"),
        reused,
    });
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key).map_err(|e| {
        invalid("--ca", format!("{}: not a usable CA certificate ({e})", request.ca_dir.join("ca.pem").display()))
    })?;
    std::fs::create_dir_all(&request.out_dir).map_err(io("--out", &request.out_dir))?;
    for node in &request.nodes {
        let mut sans = vec![node.clone(), "localhost".into(), "127.0.0.1".into(), "::1".into()];
        sans.extend(request.sans.iter().cloned());
        sans.dedup();
        let usages = [ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        written.push(leaf(request, &issuer, &format!("node:{node}"), &format!("node-{node}"), sans, &usages)?);
    }
    for site in &request.sites {
        let usages = [ExtendedKeyUsagePurpose::ClientAuth];
        written.push(leaf(request, &issuer, &format!("site:{site}"), &format!("site-{site}"), Vec::new(), &usages)?);
    }
    for admin in &request.admins {
        let usages = [ExtendedKeyUsagePurpose::ClientAuth];
        written.push(leaf(
            request,
            &issuer,
            &format!("admin:{admin}"),
            &format!("admin-{admin}"),
            Vec::new(),
            &usages,
        )?);
    }
    Ok(written)
}

fn ca_exists(dir: &Path) -> bool {
    dir.join("ca.pem").exists() && dir.join("ca.key").exists()
}

/// The CA in `dir`, or a new one (ten years, path length 0: it signs leaves only).
fn load_or_create_ca(dir: &Path) -> crate::error::Result<(String, KeyPair, bool)> {
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    if ca_exists(dir) {
        let cert = std::fs::read_to_string(&cert_path).map_err(io("--ca", &cert_path))?;
        let key = std::fs::read_to_string(&key_path).map_err(io("--ca", &key_path))?;
        let key = KeyPair::from_pem(&key)
            .map_err(|e| invalid("--ca", format!("{}: not a private key ({e})", key_path.display())))?;
        return Ok((cert, key, true));
    }
    if cert_path.exists() || key_path.exists() {
        return Err(invalid("--ca", format!("{}: has only one of ca.pem and ca.key", dir.display())));
    }
    std::fs::create_dir_all(dir).map_err(io("--ca", dir))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = name("collective cluster CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, 3_650);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok((cert.pem(), key, false))
}

fn leaf(
    request: &Request,
    issuer: &Issuer<'_, KeyPair>,
    principal: &str,
    stem: &str,
    sans: Vec<String>,
    usages: &[ExtendedKeyUsagePurpose],
) -> crate::error::Result<Written> {
    let (cert_path, key_path) =
        (request.out_dir.join(format!("{stem}.pem")), request.out_dir.join(format!("{stem}.key")));
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(invalid("--out", format!("{}: exists (remove it to issue a new certificate)", path.display())));
        }
    }
    let mut params = CertificateParams::new(sans).map_err(|e| invalid("--san", format!("{principal}: {e}")))?;
    params.distinguished_name = name(principal);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = usages.to_vec();
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, request.days);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, issuer)?;
    write_new(&key_path, &key.serialize_pem(), true)?;
    write_new(&cert_path, &cert.pem(), false)?;
    Ok(Written { principal: principal.to_string(), cert: cert_path, key: key_path, reused: false })
}

fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "collective");
    name.push(DnType::CommonName, common_name);
    name
}

/// From an hour ago (clock skew between machines) for `days` days.
fn set_validity(params: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days));
}

/// Writes a file that must not exist yet; keys are readable by their owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> crate::error::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io("--out", path))?;
    file.write_all(contents.as_bytes()).map_err(io("--out", path))?;
    Ok(())
}
