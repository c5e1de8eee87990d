//! `collective certs generate`, `collective login` and `collective whoami`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use collective_proto::v1 as pb;
use collective_proto::v1::auth_client::AuthClient;

use super::client::Client;
use super::output::{print, Format};
use collective::auth::certs;

#[derive(Subcommand, Debug)]
pub enum CertsCommand {
    /// Create the cluster CA (when the --ca directory has none) and certificates signed by it:
    /// one per --node (server and peer), --site and --admin (client certificates).
    Generate(GenerateArgs),
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Directory of the cluster CA (ca.pem, ca.key); a new CA is created there when it has none.
    #[arg(long)]
    pub ca: PathBuf,
    /// Where the certificates go (default: the CA directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A member's name: writes node-NAME.pem/.key (common name node:NAME). Repeatable.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// A site id: writes site-ID.pem/.key (common name site:ID). Repeatable.
    #[arg(long = "site")]
    pub sites: Vec<u32>,
    /// An administrator's name: writes admin-NAME.pem/.key (common name admin:NAME). Repeatable.
    #[arg(long = "admin")]
    pub admins: Vec<String>,
    /// More host names or IP addresses for node certificates (besides the node name,
    /// localhost, 127.0.0.1 and ::1). Repeatable.
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Validity of the new certificates, in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
}

/// `collective certs …`.
pub fn certs(command: CertsCommand, format: Format) -> anyhow::Result<()> {
    let CertsCommand::Generate(args) = command;
    let request = certs::Request {
        out_dir: args.out.unwrap_or_else(|| args.ca.clone()),
        ca_dir: args.ca,
        nodes: args.nodes,
        sites: args.sites,
        admins: args.admins,
        sans: args.sans,
        days: args.days,
    };
    let written = certs::generate(&request)?;
    let rows: Vec<serde_json::Value> = written
        .iter()
        .map(|w| {
            serde_json::json!({
                "principal": w.principal,
                "certificate": w.cert.display().to_string(),
                "key": w.key.display().to_string(),
                "status": if w.reused { "existing" } else { "created" },
            })
        })
        .collect();
    print(format, &serde_json::json!({ "certificates": rows }), Some("certificates"));
    Ok(())
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The site id.
    #[arg(long)]
    pub site: u32,
    /// File holding the site password (first line); otherwise COLLECTIVE_SITE_PASSWORD.
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

/// `collective login`: prints the session token alone on stdout (for `COLLECTIVE_TOKEN=$(…)` or
/// a --token-file), its expiry on stderr.
pub async fn login(client: &Client, args: LoginArgs, format: Format) -> anyhow::Result<()> {
    let password = super::read_password(&args.password_file)?;
    let site = args.site;
    let response = client
        .call(|c| {
            let password = password.clone();
            async move { AuthClient::new(c).login(pb::LoginRequest { site, password }).await }
        })
        .await?
        .into_inner();
    match format {
        Format::Json => print(format, &response, None),
        Format::Table => {
            eprintln!("site {} logged in; the token expires at {} ms", response.site, response.expires_at_ms);
            crate::outln!("{}", response.token);
        }
    }
    Ok(())
}

/// `collective whoami`.
pub async fn whoami(client: &Client, format: Format) -> anyhow::Result<()> {
    let response =
        client.call(|c| async move { AuthClient::new(c).who_am_i(pb::WhoAmIRequest {}).await }).await?.into_inner();
    print(format, &response, None);
    Ok(())
}
