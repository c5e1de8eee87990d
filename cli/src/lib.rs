//! The `collective` command line, etcdctl style: `serve` plus administrative subcommands that
//! talk to a running cluster over gRPC. Every flag can also come from a `COLLECTIVE_*` variable.

pub mod alert;
pub mod bench;
pub mod bench_board;
pub mod bench_disk;
pub mod bench_failover;
pub mod bench_h2;
pub mod bench_load;
pub mod bench_messages;
pub mod bench_read;
pub mod bench_route;
pub mod client;
pub mod endpoint;
pub mod messaging;
pub mod migrate;
pub mod output;
pub mod routing;
pub mod security;
pub mod source;
pub mod submit;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use collective_proto::v1 as pb;
use collective_proto::v1::cluster_client::ClusterClient;
use collective_proto::v1::directory_client::DirectoryClient;
use collective_proto::v1::history_client::HistoryClient;
use collective_proto::v1::presences_client::PresencesClient;
use tokio_stream::StreamExt;

use client::{Client, Transport};
use collective::config::{NodeConfig, Overrides};
use output::{print, Format};

/// collective: presence, directory and routing state shared by contact-center sites, replicated
/// by Raft.
#[derive(Parser, Debug)]
#[command(name = "collective", version, about)]
pub struct Cli {
    /// Comma-separated gRPC endpoints of cluster members (host:port); the CLI fails over between them.
    #[arg(
        long,
        global = true,
        env = "COLLECTIVE_ENDPOINTS",
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: String,
    /// Output format.
    #[arg(short = 'w', long = "output", global = true, env = "COLLECTIVE_OUTPUT", value_enum, default_value = "table")]
    pub output: Format,
    /// Deadline of each request, in milliseconds.
    #[arg(long, global = true, env = "COLLECTIVE_TIMEOUT_MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Read from the contacted member without a quorum check (possibly stale).
    #[arg(long, global = true, env = "COLLECTIVE_SERIALIZABLE")]
    pub serializable: bool,
    /// The cluster CA (PEM): talk TLS to the members and verify them against it.
    #[arg(long, global = true, env = "COLLECTIVE_CACERT")]
    pub cacert: Option<PathBuf>,
    /// A client certificate (PEM) naming an administrator or a site (with --key and --cacert).
    #[arg(long, global = true, env = "COLLECTIVE_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "COLLECTIVE_KEY")]
    pub key: Option<PathBuf>,
    /// File holding a bearer token: the administrator token, or a site session token from
    /// `collective login`. Without it, the COLLECTIVE_TOKEN variable is used when set.
    #[arg(long, global = true, env = "COLLECTIVE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Log lines on stderr: text (colours only on a terminal) or json (one object per line,
    /// for files, containers and Loki).
    #[arg(long, global = true, env = "COLLECTIVE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a cluster member.
    Serve(ServeArgs),
    /// Cluster-wide status.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Each endpoint on its own: health (a linearizable read) and status (leader, term,
    /// indexes, database size, latency), etcdctl style.
    Endpoint {
        #[command(subcommand)]
        command: endpoint::EndpointCommand,
    },
    /// GET a member's /readyz or /livez and succeed on 200 only (a container's health check).
    Probe(endpoint::ProbeArgs),
    /// Print a shell completion script: `collective completion bash > /etc/bash_completion.d/collective`.
    Completion {
        /// The shell: bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Membership: list, add (as learner), promote, remove.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
    /// Sites of the collective.
    Site {
        #[command(subcommand)]
        command: SiteCommand,
    },
    /// Users, and their logon.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Workgroups and their members.
    Workgroup {
        #[command(subcommand)]
        command: WorkgroupCommand,
    },
    /// Presence: set, get, watch; the status catalog.
    Status {
        #[command(subcommand)]
        command: StatusCommand,
    },
    /// Interactions that put a user on the phone.
    Interaction {
        #[command(subcommand)]
        command: InteractionCommand,
    },
    /// Company-wide directory.
    Directory {
        #[command(subcommand)]
        command: DirectoryCommand,
    },
    /// Extensions.
    Extension {
        #[command(subcommand)]
        command: ExtensionCommand,
    },
    /// The past: presence at a time, who was available, time per status.
    History {
        #[command(subcommand)]
        command: HistoryCommand,
    },
    /// Inter-site messages: send, request, respond, subscribe, ack, backlog.
    Message {
        #[command(subcommand)]
        command: messaging::MessageCommand,
    },
    /// Notes scoped to a site: create, get, update, remove, list.
    Note {
        #[command(subcommand)]
        command: messaging::NoteCommand,
    },
    /// Routing: call, accept, reject, cancel, explain, queue, stats, matrix, settings, cost.
    Route {
        #[command(subcommand)]
        command: routing::RouteCommand,
    },
    /// Alert rules on the board's statistics: add, list, remove, history.
    Alert {
        #[command(subcommand)]
        command: alert::AlertCommand,
    },
    /// Directory sources: users from LDAP / Active Directory (set, get, sync-now, status, remove).
    Source {
        #[command(subcommand)]
        command: source::SourceCommand,
    },
    /// Export configuration to an encrypted file (categories plus what they depend on).
    Export(migrate::ExportArgs),
    /// Import an exported file: migration merges, recovery makes the categories exactly the file.
    Import(migrate::ImportArgs),
    /// Whole-state backup and disaster recovery: save, restore, status.
    Snapshot {
        #[command(subcommand)]
        command: migrate::SnapshotCommand,
    },
    /// Lost quorum: restart the cluster from one stopped member's data, as a one-member cluster
    /// holding every entry that member has (etcd's --force-new-cluster). Offline; then start the
    /// member and add the others back with `member add` and `member promote`.
    Recover(RecoverArgs),
    /// Certificates: a cluster CA, node, site and administrator certificates.
    Certs {
        #[command(subcommand)]
        command: security::CertsCommand,
    },
    /// Exchange a site's id and password for a session token (printed on stdout).
    Login(security::LoginArgs),
    /// The principal these credentials authenticate as.
    Whoami,
    /// Benchmarks against a running cluster (and `bench disk`, of this machine's disk).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Flags of `recover`.
#[derive(Args, Debug)]
pub struct RecoverArgs {
    /// The stopped member's data directory.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// That member's id: it becomes the only voter.
    #[arg(long)]
    pub id: u64,
    /// The address the other members will reach it at, when it differs from the one the old
    /// membership gave it.
    #[arg(long)]
    pub advertise_addr: Option<String>,
}

/// Flags of `serve`; each overrides the config file and `COLLECTIVE_*` variables.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// TOML config file.
    #[arg(long, env = "COLLECTIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Member id (≥ 1).
    #[arg(long)]
    pub id: Option<u64>,
    /// RocksDB directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address (clients and peers).
    #[arg(long)]
    pub grpc_addr: Option<String>,
    /// HTTP listen address (/livez, /readyz, /metrics).
    #[arg(long)]
    pub http_addr: Option<String>,
    /// Initial members: 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// The address peers reach this member at (default: its --initial-cluster address).
    #[arg(long)]
    pub advertise_addr: Option<String>,
    /// When the leader of the cluster --initial-cluster names does not list this member, ask it to add it.
    #[arg(long)]
    pub join: bool,
    /// Take the member id from the hostname's ordinal (StatefulSet pod `collective-0` is 1).
    #[arg(long)]
    pub id_from_hostname: bool,
    /// Events retained in memory for watchers.
    #[arg(long)]
    pub watch_history_events_max: Option<u64>,
    /// Snapshot and compact the log after this many entries.
    #[arg(long)]
    pub snapshot_after_entries: Option<u64>,
    /// This node's certificate (PEM, from `collective certs generate --node`).
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM).
    #[arg(long)]
    pub tls_ca_file: Option<PathBuf>,
    /// Serve without TLS (local development only).
    #[arg(long)]
    pub plaintext: bool,
    /// Serve the HTTP port (board, probes, /metrics) over TLS with the member's certificate.
    #[arg(long)]
    pub http_tls: bool,
    /// File holding the administrator token (the same file on every member).
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// Accept every caller as the administrator (local development only).
    #[arg(long)]
    pub no_auth: bool,
    /// How long a site session token is valid, in ms.
    #[arg(long)]
    pub session_ttl_ms: Option<u64>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Leader, term, applied index and revision, members, memory and snapshot figures, as seen
    /// by the contacted member.
    Status,
    /// Take a Raft snapshot on the contacted member now and compact its log (administrators);
    /// prints its index, size and how long it took.
    Snapshot,
}

#[derive(Subcommand, Debug)]
pub enum MemberCommand {
    /// List members.
    List,
    /// Add a member as a learner; it catches up before this returns.
    Add { id: u64, addr: String },
    /// Promote a learner to voter.
    Promote { id: u64 },
    /// Remove a member.
    Remove { id: u64 },
    /// Hand leadership to voter ID (0 or none: the most up-to-date one) without an outage.
    MoveLeader { id: Option<u64> },
}

#[derive(Subcommand, Debug)]
pub enum SiteCommand {
    /// Add a site. The password comes from --password-file or COLLECTIVE_SITE_PASSWORD.
    Add {
        #[arg(long)]
        id: u32,
        #[arg(long)]
        name: String,
        #[arg(long)]
        phone: String,
        /// File holding the site password (first line).
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Note-id dial string (default *90).
        #[arg(long, default_value = "")]
        note_id_dial_string: String,
        /// Server host names (repeat or comma-separate).
        #[arg(long = "server", value_delimiter = ',')]
        servers: Vec<String>,
        /// Create the site inactive.
        #[arg(long)]
        inactive: bool,
        #[arg(long)]
        publish_handlers: bool,
        #[arg(long)]
        manage_handlers: bool,
        #[arg(long)]
        master_administrator: bool,
    },
    /// List sites.
    List,
    /// Show one site.
    Get { id: u32 },
    /// Check a site's id and password (from --password-file or COLLECTIVE_SITE_PASSWORD).
    Check {
        id: u32,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Connect as the site: grant its lease and keep it alive until stopped (Ctrl-C revokes it;
    /// a killed process lets it expire, logging the site's users off as unreachable).
    Lease {
        id: u32,
        /// Lease time-to-live in ms.
        #[arg(long, default_value_t = collective_statemachine::lease::LEASE_TTL_MS_DEFAULT)]
        ttl_ms: u64,
        /// Grant once and exit, without keepalives.
        #[arg(long)]
        once: bool,
    },
    /// End a site's lease now (its users are logged off as unreachable).
    Revoke { id: u32 },
    /// Renumber a site; every reference to it is rewritten in one step.
    ChangeId { old: u32, new: u32 },
    /// Mark a site active or inactive.
    SetActive {
        id: u32,
        #[arg(action = clap::ArgAction::Set)]
        active: bool,
    },
}

#[derive(Args, Debug)]
pub struct UserFields {
    #[arg(long)]
    username: String,
    #[arg(long)]
    display_name: String,
    #[arg(long)]
    email: String,
    #[arg(long)]
    home_site: u32,
    #[arg(long)]
    extension: String,
    /// Skills as name=level (repeat or comma-separate).
    #[arg(long = "skill", value_delimiter = ',')]
    skills: Vec<String>,
    /// Licences (repeat or comma-separate).
    #[arg(long = "licence", value_delimiter = ',')]
    licences: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user.
    Add(UserFields),
    /// Replace a user's fields.
    Update(UserFields),
    /// Show a user with its presence.
    Get { username: String },
    /// List users (optionally those homed at a site).
    List {
        #[arg(long)]
        site: Option<u32>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Delete a user everywhere.
    Delete { username: String },
    /// What a user may do at a site: at home every right, elsewhere the site's trusted access.
    Access {
        username: String,
        #[arg(long)]
        site: u32,
    },
    /// Log a user on at a site.
    Logon {
        username: String,
        #[arg(long)]
        site: u32,
        #[arg(long, default_value = "")]
        server: String,
    },
    /// Log a user off.
    Logoff {
        username: String,
        #[arg(long, default_value = "user")]
        reason: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum WorkgroupCommand {
    /// Create a workgroup.
    Add {
        name: String,
        #[arg(long)]
        spans_sites: bool,
        /// Required skills as name=level.
        #[arg(long = "skill", value_delimiter = ',')]
        skills: Vec<String>,
    },
    /// Delete a workgroup.
    Delete { name: String },
    /// Add a member.
    AddMember { workgroup: String, username: String },
    /// Remove a member.
    RemoveMember { workgroup: String, username: String },
    /// List workgroups.
    List,
}

#[derive(Subcommand, Debug)]
pub enum StatusCommand {
    /// Set a user's status.
    Set {
        username: String,
        status_key: String,
        /// End of the status in ms since the epoch (for statuses that require a date/time).
        #[arg(long)]
        until_ms: Option<u64>,
        /// End of the status as minutes from now.
        #[arg(long, conflicts_with = "until_ms")]
        until_minutes: Option<u64>,
        #[arg(long, default_value = "")]
        detail: String,
    },
    /// Show users' presence.
    Get { usernames: Vec<String> },
    /// List presence by workgroup, site or status group.
    List {
        #[arg(long, default_value = "")]
        workgroup: String,
        #[arg(long, default_value_t = 0)]
        site: u32,
        #[arg(long, default_value = "")]
        group: String,
    },
    /// Send many presence changes over one stream, one JSON object per line of --file (or of
    /// standard input), and print each line's outcome as it arrives. If the stream ends (its
    /// member stopped), the lines after go on a new one to the next member that answers. A line names its change:
    /// {"change":"set_status","username":"jo","status_key":"Available"}, or "log_on" (username,
    /// site, server), "log_off" (username, reason), "start_interaction" or "end_interaction"
    /// (username, interaction_id). Fails at the end if any line failed.
    Submit {
        /// The changes (default: standard input).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Stream events from a revision (0: from now).
    Watch {
        #[arg(long, default_value_t = 0)]
        from_revision: u64,
        #[arg(long = "user", value_delimiter = ',')]
        users: Vec<String>,
        #[arg(long = "workgroup", value_delimiter = ',')]
        workgroups: Vec<String>,
        #[arg(long = "site", value_delimiter = ',')]
        sites: Vec<u32>,
        #[arg(long = "kind", value_delimiter = ',')]
        kinds: Vec<String>,
        /// Stop after this many events (0: never).
        #[arg(long, default_value_t = 0)]
        count: u64,
    },
    /// The status catalog.
    Catalog,
}

#[derive(Subcommand, Debug)]
pub enum InteractionCommand {
    /// An interaction started (the user is on the phone).
    Start { username: String, interaction_id: String },
    /// An interaction ended.
    End { username: String, interaction_id: String },
}

#[derive(Subcommand, Debug)]
pub enum DirectoryCommand {
    /// Search the company-wide directory.
    Search {
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long, default_value = "")]
        extension: String,
        #[arg(long, default_value = "")]
        email: String,
        /// Only users visible in this site's directory view.
        #[arg(long, default_value_t = 0)]
        site: u32,
        #[arg(long, default_value = "")]
        workgroup: String,
        #[arg(long, default_value = "")]
        skill: String,
        #[arg(long, default_value = "")]
        group: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

/// A point in time: ms since the epoch, or seconds ago.
#[derive(Args, Debug, Clone, Copy)]
pub struct At {
    /// Milliseconds since the epoch.
    #[arg(long, conflicts_with = "ago_seconds")]
    at_ms: Option<u64>,
    /// Seconds before now (default 0: now).
    #[arg(long)]
    ago_seconds: Option<u64>,
}

impl At {
    fn ms(self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.at_ms.unwrap_or_else(|| now.saturating_sub(self.ago_seconds.unwrap_or(0) * 1_000))
    }
}

#[derive(Subcommand, Debug)]
pub enum HistoryCommand {
    /// A user's presence at a time.
    Presence {
        username: String,
        #[command(flatten)]
        at: At,
    },
    /// Who was available (logged on, status group Available) in a workgroup or at a site.
    Available {
        #[arg(long, default_value = "")]
        workgroup: String,
        #[arg(long, default_value_t = 0)]
        site: u32,
        #[command(flatten)]
        at: At,
    },
    /// Time a user spent in each status over the last --seconds (or --from-ms..--to-ms).
    Durations {
        username: String,
        #[arg(long, default_value_t = 3_600)]
        seconds: u64,
        #[arg(long)]
        from_ms: Option<u64>,
        #[arg(long)]
        to_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ExtensionCommand {
    /// Who an extension reaches from a site, and the dial string to the user's current site.
    Resolve {
        extension: String,
        #[arg(long)]
        from_site: u32,
    },
}

fn parse_skills(skills: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, u32>> {
    skills
        .iter()
        .map(|skill| {
            let (name, level) =
                skill.split_once('=').ok_or_else(|| anyhow::anyhow!("--skill {skill:?}: expected name=level"))?;
            Ok((
                name.to_string(),
                level.parse().map_err(|_| anyhow::anyhow!("--skill {skill:?}: level must be a number"))?,
            ))
        })
        .collect()
}

pub(crate) fn read_password(file: &Option<PathBuf>) -> anyhow::Result<String> {
    match file {
        Some(path) => Ok(std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--password-file {}: {e}", path.display()))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string()),
        None => std::env::var("COLLECTIVE_SITE_PASSWORD").map_err(|_| {
            anyhow::anyhow!("a site password is needed: --password-file FILE or COLLECTIVE_SITE_PASSWORD")
        }),
    }
}

fn user_of(fields: UserFields) -> anyhow::Result<pb::User> {
    Ok(pb::User {
        username: fields.username,
        display_name: fields.display_name,
        email: fields.email,
        home_site: fields.home_site,
        extension: fields.extension,
        skills: parse_skills(&fields.skills)?,
        licences: fields.licences,
        workgroups: vec![],
        spanning: false,
    })
}

/// Grants a site's lease and keeps it alive every third of its TTL until Ctrl-C, which revokes it.
/// A keepalive that finds the lease gone (it expired while unreachable) grants a new one.
async fn site_lease(client: &Client, site: u32, ttl_ms: u64, once: bool, format: Format) -> anyhow::Result<()> {
    let grant = || {
        client
            .call(|c| async move { DirectoryClient::new(c).grant_lease(pb::GrantLeaseRequest { site, ttl_ms }).await })
    };
    let response = grant().await?;
    print(format, &response.into_inner(), Some("events"));
    if once {
        return Ok(());
    }
    eprintln!(
        "site {site}: lease granted for {ttl_ms} ms; keeping it alive every {} ms (Ctrl-C revokes it)",
        ttl_ms / 3
    );
    let mut interval = tokio::time::interval(Duration::from_millis(ttl_ms / 3));
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let kept = client.call(|c| async move { DirectoryClient::new(c).keep_alive(pb::KeepAliveRequest { site }).await }).await;
                match kept {
                    Ok(_) => {}
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        eprintln!("site {site}: lease was gone ({}); granting a new one", status.message());
                        grant().await?;
                    }
                    Err(status) => eprintln!("site {site}: keepalive failed: {}", describe(&status)),
                }
            }
            _ = tokio::signal::ctrl_c() => {
                client.call(|c| async move { DirectoryClient::new(c).revoke_lease(pb::RevokeLeaseRequest { site }).await }).await?;
                eprintln!("site {site}: lease revoked");
                return Ok(());
            }
        }
    }
}

/// Formats a gRPC error for a person: the code, the message and the machine reason.
pub fn describe(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(info) = details.error_info() {
        text.push_str(&format!(" [{}]", info.reason));
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            text.push_str(&format!(" (field {})", violation.field));
        }
    }
    text
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let format = cli.output;
    let serializable = cli.serializable;
    if let Command::Serve(args) = cli.command {
        let overrides = Overrides {
            id: args.id,
            data_dir: args.data_dir,
            grpc_addr: args.grpc_addr,
            http_addr: args.http_addr,
            initial_cluster: args.initial_cluster,
            advertise_addr: args.advertise_addr,
            join: args.join.then_some(true),
            id_from_hostname: args.id_from_hostname.then_some(true),
            watch_history_events_max: args.watch_history_events_max,
            snapshot_after_entries: args.snapshot_after_entries,
            tls_cert_file: args.tls_cert_file,
            tls_key_file: args.tls_key_file,
            tls_ca_file: args.tls_ca_file,
            plaintext: args.plaintext.then_some(true),
            http_tls: args.http_tls.then_some(true),
            admin_token_file: args.admin_token_file,
            no_auth: args.no_auth.then_some(true),
            session_ttl_ms: args.session_ttl_ms,
        };
        let config = NodeConfig::load(args.config.as_deref(), overrides)?;
        return Ok(collective::server::serve(config).await?);
    }
    if let Command::Certs { command } = cli.command {
        return security::certs(command, format);
    }
    if let Command::Completion { shell } = cli.command {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "collective", &mut script);
        crate::outln!("{}", String::from_utf8_lossy(&script).trim_end());
        return Ok(());
    }
    if let Command::Probe(args) = cli.command {
        return endpoint::probe(args, Duration::from_millis(cli.timeout_ms)).await;
    }
    if let Command::Recover(args) = cli.command {
        let recovered = collective::store::recover(&args.data_dir, args.id, args.advertise_addr).await?;
        print(format, &recovered, None);
        eprintln!(
            "member {} now forms a one-member cluster with entries up to {}: start it, then add the others back \
             with empty data directories (`member add ID ADDR`, `member promote ID`)",
            recovered.id, recovered.membership_index
        );
        return Ok(());
    }
    let transport = Transport::from_flags(
        cli.cacert.as_deref(),
        cli.cert.as_deref(),
        cli.key.as_deref(),
        cli.token_file.as_deref(),
    )?;
    // Exports and imports of large collectives outlast an ordinary call's deadline.
    let timeout_ms = match cli.command {
        Command::Export(_) | Command::Import(_) => cli.timeout_ms.max(300_000),
        // A new member of a large collective catches up from a snapshot before the add returns.
        Command::Member { command: MemberCommand::Add { .. } } => cli
            .timeout_ms
            .max(collective::node::SNAPSHOT_INSTALL_TIMEOUT_MS + collective::api::cluster::LEARNER_CATCH_UP_MS + 5_000),
        _ => cli.timeout_ms,
    };
    let client = Client::new(&cli.endpoints, Duration::from_millis(timeout_ms), transport)?;
    let result = match cli.command {
        Command::Snapshot { command } => migrate::snapshot(&client, cli.timeout_ms, command, format).await,
        Command::Login(args) => security::login(&client, args, format).await,
        Command::Endpoint { command } => endpoint::endpoint(&client, command, format).await,
        Command::Whoami => security::whoami(&client, format).await,
        Command::Message { command } => messaging::message(&client, command, format, cli.timeout_ms).await,
        Command::Note { command } => messaging::note(&client, command, format, serializable).await,
        Command::Route { command } => routing::route(&client, command, format, serializable).await,
        Command::Source { command } => source::source(&client, command, format, serializable).await,
        Command::Alert { command } => alert::alert(&client, command, format, serializable).await,
        Command::Export(args) => migrate::export(&client, args, format).await,
        Command::Import(args) => migrate::import(&client, args, format).await,
        command => dispatch(&client, command, format, serializable).await,
    };
    result.map_err(|error| match error.downcast::<tonic::Status>() {
        Ok(status) => anyhow::anyhow!(describe(&status)),
        Err(other) => other,
    })
}

async fn dispatch(client: &Client, command: Command, format: Format, serializable: bool) -> anyhow::Result<()> {
    let dir = |c| DirectoryClient::new(c);
    let pres = |c| PresencesClient::new(c);
    let clu = |c| ClusterClient::new(c);
    match command {
        Command::Serve(_) => unreachable!("handled by run"),
        Command::Cluster { command: ClusterCommand::Status } => {
            let status =
                client.call(|c| async move { clu(c).status(pb::ClusterStatusRequest {}).await }).await?.into_inner();
            print(format, &status, None);
        }
        Command::Cluster { command: ClusterCommand::Snapshot } => {
            let client = client
                .with_timeout(std::time::Duration::from_millis(collective::api::cluster::SNAPSHOT_WAIT_MS + 5_000));
            let taken = client
                .call(|c| async move { clu(c).take_snapshot(pb::TakeSnapshotRequest {}).await })
                .await?
                .into_inner();
            print(format, &taken, None);
        }
        Command::Member { command: MemberCommand::MoveLeader { id } } => {
            let id = id.unwrap_or(0);
            let moved = client.call(|c| async move { clu(c).move_leader(pb::MemberIdRequest { id }).await }).await?;
            print(format, &moved.into_inner(), None);
        }
        Command::Member { command } => {
            let members = match command {
                MemberCommand::List => {
                    client.call(|c| async move { clu(c).member_list(pb::MemberListRequest {}).await }).await?
                }
                MemberCommand::Add { id, addr } => {
                    client
                        .call(|c| {
                            let addr = addr.clone();
                            async move { clu(c).member_add(pb::MemberAddRequest { id, addr }).await }
                        })
                        .await?
                }
                MemberCommand::Promote { id } => {
                    client.call(|c| async move { clu(c).member_promote(pb::MemberIdRequest { id }).await }).await?
                }
                MemberCommand::Remove { id } => {
                    client.call(|c| async move { clu(c).member_remove(pb::MemberIdRequest { id }).await }).await?
                }
                MemberCommand::MoveLeader { .. } => unreachable!("handled above"),
            };
            print(format, &members.into_inner(), Some("members"));
        }
        Command::Site { command } => match command {
            SiteCommand::Add {
                id,
                name,
                phone,
                password_file,
                note_id_dial_string,
                servers,
                inactive,
                publish_handlers,
                manage_handlers,
                master_administrator,
            } => {
                let password = read_password(&password_file)?;
                let request = pb::AddSiteRequest {
                    site: Some(pb::Site {
                        id,
                        name,
                        phone,
                        note_id_dial_string,
                        active: Some(!inactive),
                        servers,
                        trusted_access: Some(pb::TrustedAccess {
                            publish_handlers,
                            manage_handlers,
                            master_administrator,
                        }),
                    }),
                    password,
                };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { dir(c).add_site(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            SiteCommand::List => {
                let response = client
                    .call(|c| async move { dir(c).list_sites(pb::ListSitesRequest { serializable }).await })
                    .await?;
                print(format, &response.into_inner(), Some("sites"));
            }
            SiteCommand::Get { id } => {
                let response = client
                    .call(|c| async move { dir(c).get_site(pb::GetSiteRequest { id, serializable }).await })
                    .await?;
                print(format, &response.into_inner(), None);
            }
            SiteCommand::Check { id, password_file } => {
                let password = read_password(&password_file)?;
                let response = client
                    .call(|c| {
                        let password = password.clone();
                        async move { dir(c).check_site(pb::CheckSiteRequest { id, password }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), None);
            }
            SiteCommand::Lease { id, ttl_ms, once } => site_lease(client, id, ttl_ms, once, format).await?,
            SiteCommand::Revoke { id } => {
                let response = client
                    .call(|c| async move { dir(c).revoke_lease(pb::RevokeLeaseRequest { site: id }).await })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            SiteCommand::ChangeId { old, new } => {
                let response = client
                    .call(|c| async move { dir(c).change_site_id(pb::ChangeSiteIdRequest { old, new }).await })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            SiteCommand::SetActive { id, active } => {
                let response = client
                    .call(|c| async move { dir(c).set_site_active(pb::SetSiteActiveRequest { id, active }).await })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
        },
        Command::User { command } => match command {
            UserCommand::Add(fields) => {
                let user = user_of(fields)?;
                let response = client
                    .call(|c| {
                        let user = user.clone();
                        async move { dir(c).add_user(pb::UserRequest { user: Some(user) }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            UserCommand::Update(fields) => {
                let user = user_of(fields)?;
                let response = client
                    .call(|c| {
                        let user = user.clone();
                        async move { dir(c).update_user(pb::UserRequest { user: Some(user) }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            UserCommand::Get { username } => {
                let response = client
                    .call(|c| {
                        let username = username.clone();
                        async move { dir(c).get_user(pb::GetUserRequest { username, serializable }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), None);
            }
            UserCommand::List { site, limit } => {
                let request =
                    pb::SearchRequest { home_site: site.unwrap_or(0), limit, serializable, ..Default::default() };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { dir(c).search(r).await }
                    })
                    .await?
                    .into_inner();
                let users: Vec<pb::User> = response.entries.into_iter().filter_map(|e| e.user).collect();
                print(format, &serde_json::json!({ "users": users, "revision": response.revision }), Some("users"));
            }
            UserCommand::Access { username, site } => {
                let response = client
                    .call(|c| {
                        let request = pb::CheckTrustedAccessRequest { username: username.clone(), site, serializable };
                        async move { dir(c).check_trusted_access(request).await }
                    })
                    .await?;
                print(format, &response.into_inner(), None);
            }
            UserCommand::Delete { username } => {
                let response = client
                    .call(|c| {
                        let username = username.clone();
                        async move { dir(c).delete_user(pb::DeleteUserRequest { username }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            UserCommand::Logon { username, site, server } => {
                let request = pb::LogOnRequest { username, site, server };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { pres(c).log_on(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            UserCommand::Logoff { username, reason } => {
                let request = pb::LogOffRequest { username, reason };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { pres(c).log_off(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
        },
        Command::Workgroup { command } => match command {
            WorkgroupCommand::Add { name, spans_sites, skills } => {
                let workgroup =
                    pb::Workgroup { name, spans_sites, members: vec![], required_skills: parse_skills(&skills)? };
                let response = client
                    .call(|c| {
                        let w = workgroup.clone();
                        async move { dir(c).add_workgroup(pb::AddWorkgroupRequest { workgroup: Some(w) }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            WorkgroupCommand::Delete { name } => {
                let response = client
                    .call(|c| {
                        let name = name.clone();
                        async move { dir(c).delete_workgroup(pb::DeleteWorkgroupRequest { name }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            WorkgroupCommand::AddMember { workgroup, username } => {
                let request = pb::WorkgroupMemberRequest { workgroup, username };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { dir(c).add_workgroup_member(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            WorkgroupCommand::RemoveMember { workgroup, username } => {
                let request = pb::WorkgroupMemberRequest { workgroup, username };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { dir(c).remove_workgroup_member(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            WorkgroupCommand::List => {
                let response = client
                    .call(|c| async move { dir(c).list_workgroups(pb::ListWorkgroupsRequest { serializable }).await })
                    .await?;
                print(format, &response.into_inner(), Some("workgroups"));
            }
        },
        Command::Status { command } => match command {
            StatusCommand::Set { username, status_key, until_ms, until_minutes, detail } => {
                let until_ms = until_ms.or_else(|| {
                    until_minutes.map(|minutes| {
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_millis() as u64)
                            .unwrap_or(0)
                            + minutes * 60_000
                    })
                });
                let request = pb::SetStatusRequest { username, status_key, until_ms, detail };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { pres(c).set_status(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("events"));
            }
            StatusCommand::Get { usernames } => {
                let response = client
                    .call(|c| {
                        let usernames = usernames.clone();
                        async move { pres(c).get_presence(pb::GetPresenceRequest { usernames, serializable }).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("presences"));
            }
            StatusCommand::List { workgroup, site, group } => {
                let request = pb::ListPresenceRequest { workgroup, site, status_group: group, limit: 0, serializable };
                let response = client
                    .call(|c| {
                        let r = request.clone();
                        async move { pres(c).list_presence(r).await }
                    })
                    .await?;
                print(format, &response.into_inner(), Some("presences"));
            }
            StatusCommand::Submit { file } => submit::submit_lines(client, file, format).await?,
            StatusCommand::Watch { from_revision, users, workgroups, sites, kinds, count } => {
                let request =
                    pb::WatchRequest { start_revision: from_revision, usernames: users, workgroups, sites, kinds };
                // A watch has no deadline: it runs until stopped.
                let mut stream = client
                    .call(|c| {
                        let r = request.clone();
                        async move { pres(c).watch(tonic::Request::new(r)).await }
                    })
                    .await?
                    .into_inner();
                let mut seen = 0u64;
                while let Some(event) = stream.next().await {
                    let event = event?;
                    match format {
                        Format::Json => crate::outln!("{}", serde_json::to_string(&event)?),
                        Format::Table => {
                            crate::outln!(
                                "{} {} {}",
                                event.revision,
                                event.principal,
                                serde_json::to_string(&event.body)?
                            )
                        }
                    }
                    seen += 1;
                    if count != 0 && seen >= count {
                        break;
                    }
                }
            }
            StatusCommand::Catalog => {
                let response = client
                    .call(|c| async move { dir(c).list_statuses(pb::ListStatusesRequest { serializable }).await })
                    .await?;
                print(format, &response.into_inner(), Some("statuses"));
            }
        },
        Command::Interaction { command } => {
            let response = match command {
                InteractionCommand::Start { username, interaction_id } => {
                    let request = pb::InteractionRequest { username, interaction_id };
                    client
                        .call(|c| {
                            let r = request.clone();
                            async move { pres(c).start_interaction(r).await }
                        })
                        .await?
                }
                InteractionCommand::End { username, interaction_id } => {
                    let request = pb::InteractionRequest { username, interaction_id };
                    client
                        .call(|c| {
                            let r = request.clone();
                            async move { pres(c).end_interaction(r).await }
                        })
                        .await?
                }
            };
            print(format, &response.into_inner(), Some("events"));
        }
        Command::Directory {
            command: DirectoryCommand::Search { name, extension, email, site, workgroup, skill, group, limit },
        } => {
            let request = pb::SearchRequest {
                name,
                extension,
                email,
                visible_at_site: site,
                home_site: 0,
                workgroup,
                skill,
                status_group: group,
                logged_on: None,
                limit,
                serializable,
            };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { dir(c).search(r).await }
                })
                .await?
                .into_inner();
            let rows: Vec<serde_json::Value> = response
                .entries
                .iter()
                .map(|entry| {
                    let user = entry.user.clone().unwrap_or_default();
                    let presence = entry.presence.clone().unwrap_or_default();
                    serde_json::json!({
                        "username": user.username, "display_name": user.display_name, "extension": user.extension,
                        "home_site": user.home_site, "spanning": user.spanning, "status": presence.status_key,
                        "current_site": presence.current_site, "on_phone": presence.on_phone,
                        "overdue": presence.overdue,
                    })
                })
                .collect();
            match format {
                Format::Json => print(format, &response, None),
                Format::Table => print(format, &serde_json::json!({ "entries": rows }), Some("entries")),
            }
        }
        Command::Extension { command: ExtensionCommand::Resolve { extension, from_site } } => {
            let request = pb::ResolveExtensionRequest { extension, from_site, serializable };
            let response = client
                .call(|c| {
                    let r = request.clone();
                    async move { dir(c).resolve_extension(r).await }
                })
                .await?;
            print(format, &response.into_inner(), None);
        }
        Command::History { command } => {
            let hist = |c| HistoryClient::new(c);
            match command {
                HistoryCommand::Presence { username, at } => {
                    let request = pb::PresenceAtRequest { username, at_ms: at.ms(), serializable };
                    let response = client
                        .call(|c| {
                            let r = request.clone();
                            async move { hist(c).presence_at(r).await }
                        })
                        .await?;
                    print(format, &response.into_inner(), None);
                }
                HistoryCommand::Available { workgroup, site, at } => {
                    let request = pb::AvailableAtRequest { workgroup, site, at_ms: at.ms(), serializable };
                    let response = client
                        .call(|c| {
                            let r = request.clone();
                            async move { hist(c).available_at(r).await }
                        })
                        .await?;
                    print(format, &response.into_inner(), None);
                }
                HistoryCommand::Durations { username, seconds, from_ms, to_ms } => {
                    let to_ms = to_ms.unwrap_or_else(|| At { at_ms: None, ago_seconds: None }.ms());
                    let from_ms = from_ms.unwrap_or(to_ms.saturating_sub(seconds * 1_000));
                    let request = pb::DurationsRequest { username, from_ms, to_ms, serializable };
                    let response = client
                        .call(|c| {
                            let r = request.clone();
                            async move { hist(c).durations(r).await }
                        })
                        .await?;
                    print(format, &response.into_inner(), None);
                }
            }
        }
        Command::Bench { command } => bench::run(client, command, format).await?,
        Command::Message { .. }
        | Command::Note { .. }
        | Command::Route { .. }
        | Command::Source { .. }
        | Command::Alert { .. }
        | Command::Export(_)
        | Command::Import(_)
        | Command::Snapshot { .. }
        | Command::Certs { .. }
        | Command::Recover(_)
        | Command::Probe(_)
        | Command::Completion { .. }
        | Command::Endpoint { .. }
        | Command::Login(_)
        | Command::Whoami => unreachable!("handled by run"),
    }
    Ok(())
}
