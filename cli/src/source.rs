//! `collective source ldap set|get|sync-now|status|remove`: the directory source.
//!
//! The bind password comes from `--bind-password-file` only, never a flag value (the process
//! list and shell history would show it), and no command prints it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use collective_proto::v1 as pb;
use collective_proto::v1::sources_client::SourcesClient;

use super::client::Client;
use super::output::{print, Format};

/// Directory sources.
#[derive(Subcommand, Debug)]
pub enum SourceCommand {
    /// Users from LDAP / Active Directory, polled by the leader and matched by email.
    Ldap {
        #[command(subcommand)]
        command: LdapCommand,
    },
}

/// The LDAP source.
#[derive(Subcommand, Debug)]
pub enum LdapCommand {
    /// Configure it (replacing the current settings; the password is kept unless given).
    Set(Box<LdapSetArgs>),
    /// Show the settings (never the password).
    Get,
    /// Poll now and wait for the report, or with --dry-run show what a poll would change.
    SyncNow {
        /// Read the directory and print the plan; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Seconds to wait for the poll's report.
        #[arg(long, default_value_t = 600)]
        wait_s: u64,
    },
    /// The schedule and the last poll: counts, duration, each refused entry with its reason.
    Status,
    /// Remove the source; the users it filled stay, none deactivated any more.
    Remove,
}

#[derive(Args, Debug)]
pub struct LdapSetArgs {
    /// ldap://HOST[:PORT] or ldaps://HOST[:PORT].
    #[arg(long)]
    pub url: String,
    /// Upgrade ldap:// with StartTLS.
    #[arg(long)]
    pub starttls: bool,
    /// CA certificates (PEM) the server's certificate must chain to (else the system's roots).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The DN to bind as.
    #[arg(long)]
    pub bind_dn: String,
    /// File holding the bind password (needed the first time; afterwards the stored one is kept).
    #[arg(long)]
    pub bind_password_file: Option<PathBuf>,
    /// Where the search starts.
    #[arg(long)]
    pub base_dn: String,
    /// Search filter.
    #[arg(long, default_value = "(objectClass=inetOrgPerson)")]
    pub filter: String,
    /// FIELD=SOURCE, repeatable: username, display_name, email, home_site, extension, skills,
    /// workgroups from an attribute (`email=mail`) or a DN part (`home_site=dn:ou`).
    #[arg(long = "map")]
    pub mappings: Vec<String>,
    /// Seconds between polls (POLLING_INTERVAL).
    #[arg(long, default_value_t = 3_600)]
    pub interval_s: u32,
    /// When the next poll is due (NEXT_POLLING_TIME): RFC 3339, e.g. 2026-12-05T02:00:00Z;
    /// at once when absent.
    #[arg(long)]
    pub next_polling_time: Option<String>,
    /// What happens to a user whose entry leaves the directory: deactivate or delete.
    #[arg(long, default_value = "deactivate", value_parser = ["deactivate", "delete"])]
    pub on_missing: String,
}

fn read_file(flag: &str, path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{flag} {}: {e}", path.display()))
}

fn mapping(pairs: &[String]) -> anyhow::Result<pb::LdapMapping> {
    let mut mapping = pb::LdapMapping::default();
    for pair in pairs {
        let (field, source) =
            pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--map {pair:?}: expected FIELD=SOURCE"))?;
        let slot = match field {
            "username" => &mut mapping.username,
            "display_name" => &mut mapping.display_name,
            "email" => &mut mapping.email,
            "home_site" => &mut mapping.home_site,
            "extension" => &mut mapping.extension,
            "skills" => &mut mapping.skills,
            "workgroups" => &mut mapping.workgroups,
            other => anyhow::bail!(
                "--map {pair:?}: {other:?} is not one of username, display_name, email, home_site, extension, \
                 skills, workgroups"
            ),
        };
        *slot = source.to_string();
    }
    Ok(mapping)
}

fn epoch_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| anyhow::anyhow!("{flag} {text:?}: not an RFC 3339 time (2026-12-05T02:00:00Z): {e}"))?;
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| anyhow::anyhow!("{flag} {text:?}: before 1970"))
}

/// `collective source …`.
pub async fn source(client: &Client, command: SourceCommand, format: Format, serializable: bool) -> anyhow::Result<()> {
    let SourceCommand::Ldap { command } = command;
    let sc = |c| SourcesClient::new(c);
    match command {
        LdapCommand::Set(args) => {
            let bind_password = match &args.bind_password_file {
                Some(path) => read_file("--bind-password-file", path)?.trim_end_matches(['\r', '\n']).to_string(),
                None => String::new(),
            };
            let ca_pem = match &args.ca_file {
                Some(path) => read_file("--ca-file", path)?,
                None => String::new(),
            };
            let next_poll_ms =
                args.next_polling_time.as_deref().map(|t| epoch_ms("--next-polling-time", t)).transpose()?;
            let request = pb::SetLdapRequest {
                settings: Some(pb::LdapSettings {
                    url: args.url,
                    starttls: args.starttls,
                    ca_pem,
                    bind_dn: args.bind_dn,
                    bind_password,
                    base_dn: args.base_dn,
                    filter: args.filter,
                    mapping: Some(mapping(&args.mappings)?),
                    interval_s: args.interval_s,
                    on_missing: args.on_missing,
                }),
                next_poll_ms,
            };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { sc(c).set_ldap(r).await }
                })
                .await?
                .into_inner();
            match format {
                Format::Json => print(format, &response, None),
                Format::Table => crate::outln!("directory source set at revision {}", response.revision),
            }
        }
        LdapCommand::Get => {
            let request = pb::GetLdapRequest { serializable };
            let source = client.call(|c| async move { sc(c).get_ldap(request).await }).await?.into_inner();
            print(format, &source, None);
        }
        LdapCommand::Status => {
            let request = pb::SourceStatusRequest { serializable };
            let status = client.call(|c| async move { sc(c).status(request).await }).await?.into_inner();
            print_status(format, &status);
        }
        LdapCommand::Remove => {
            let response =
                client.call(|c| async move { sc(c).remove_ldap(pb::RemoveLdapRequest {}).await }).await?.into_inner();
            match format {
                Format::Json => print(format, &response, None),
                Format::Table => crate::outln!("directory source removed at revision {}", response.revision),
            }
        }
        LdapCommand::SyncNow { dry_run: true, .. } => {
            // Reading a large directory takes longer than one request's usual deadline.
            let client = client.with_timeout(Duration::from_millis(collective::source::READ_TIMEOUT_MS));
            let request = pb::SyncNowRequest { dry_run: true };
            let response = client.call(|c| async move { sc(c).sync_now(request).await }).await?.into_inner();
            let plan = response.plan.unwrap_or_default();
            match format {
                Format::Json => print(format, &plan, None),
                Format::Table => {
                    crate::outln!(
                        "plan (dry run, nothing applied): {} entries seen, {} creates, {} updates, {} removes, {} refused",
                        plan.seen,
                        plan.creates,
                        plan.updates,
                        plan.removes,
                        plan.refused
                    );
                    for change in &plan.changes {
                        crate::outln!("  {change}");
                    }
                    for refusal in &plan.refusals {
                        crate::outln!("  REFUSED {refusal}");
                    }
                }
            }
        }
        LdapCommand::SyncNow { dry_run: false, wait_s } => {
            let request = pb::SyncNowRequest { dry_run: false };
            let due_ms = client.call(|c| async move { sc(c).sync_now(request).await }).await?.into_inner().due_ms;
            let deadline = Instant::now() + Duration::from_secs(wait_s);
            let bar = super::output::progress("waiting for the poll", None, super::output::Counted::Writes);
            let status = loop {
                let request = pb::SourceStatusRequest { serializable: false };
                let status = client.call(|c| async move { sc(c).status(request).await }).await?.into_inner();
                let reported = status.last_poll.as_ref().is_some_and(|poll| poll.started_ms >= due_ms);
                if reported && !status.polling {
                    break status;
                }
                if Instant::now() >= deadline {
                    anyhow::bail!("no poll reported within {wait_s} s (see `collective source ldap status`)");
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            };
            bar.finish_and_clear();
            print_status(format, &status);
            if let Some(error) = status.last_poll.as_ref().map(|poll| &poll.error).filter(|e| !e.is_empty()) {
                anyhow::bail!("the poll failed: {error}");
            }
        }
    }
    Ok(())
}

fn print_status(format: Format, status: &pb::SourceStatus) {
    if format == Format::Json {
        print(format, status, None);
        return;
    }
    if !status.configured {
        crate::outln!("no directory source is configured");
        return;
    }
    print(format, status, None);
}
