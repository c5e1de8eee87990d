//! `collective export`, `collective import` and `collective snapshot save|restore|status`.
//!
//! The passphrase comes from `--passphrase-file` or `COLLECTIVE_PASSPHRASE`, never from a flag
//! value (it would show in the process list and shell history).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use collective_proto::v1 as pb;
use collective_proto::v1::config_client::ConfigClient;
use tokio_stream::StreamExt;

use super::client::Client;
use super::output::{print, progress, Counted, Format};

/// Bytes per uploaded chunk.
const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Comma-separated: sites, statuses, users, workgroups, routing, notes (default: all).
    #[arg(long, value_delimiter = ',')]
    pub categories: Vec<String>,
    /// The file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// File holding the passphrase (else COLLECTIVE_PASSPHRASE).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// migration: create and update, never delete; recovery: the file's complete categories
    /// become exactly its content.
    #[arg(long, value_parser = ["migration", "recovery"])]
    pub mode: String,
    /// Print the plan (creates, updates, deletes, conflicts) without applying it.
    #[arg(long)]
    pub dry_run: bool,
    /// File holding the passphrase (else COLLECTIVE_PASSPHRASE).
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
    /// The exported file.
    pub file: PathBuf,
}

/// Whole-state backups, etcdctl style.
#[derive(Subcommand, Debug)]
pub enum SnapshotCommand {
    /// Save the cluster's whole state (read at a linearizable point) to a file.
    Save {
        /// The file to write.
        file: PathBuf,
    },
    /// Create a member's data directory from a saved file, for a new cluster (offline; run it
    /// for every member with the same --initial-cluster, then start them).
    Restore {
        /// The saved file.
        file: PathBuf,
        /// The new member's data directory (must not exist or be empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// Members of the new cluster: 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003.
        #[arg(long)]
        initial_cluster: String,
    },
    /// Check a saved file and print its revision and contents' size.
    Status {
        /// The saved file.
        file: PathBuf,
    },
}

fn passphrase(file: &Option<PathBuf>) -> anyhow::Result<String> {
    match file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--passphrase-file {}: {e}", path.display()))?;
            Ok(text.trim_end_matches(['\r', '\n']).to_string())
        }
        None => std::env::var("COLLECTIVE_PASSPHRASE")
            .map_err(|_| anyhow::anyhow!("a passphrase is needed: --passphrase-file FILE or COLLECTIVE_PASSPHRASE")),
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    // Written beside the target and renamed, so a failed run never leaves half a file.
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes).map_err(|e| anyhow::anyhow!("{}: {e}", partial.display()))?;
    std::fs::rename(&partial, path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(())
}

/// `collective export`.
pub async fn export(client: &Client, args: ExportArgs, format: Format) -> anyhow::Result<()> {
    let request = pb::ExportRequest { categories: args.categories, passphrase: passphrase(&args.passphrase_file)? };
    let mut stream = client
        .call(|c| {
            let r = request.clone();
            async move { ConfigClient::new(c).max_decoding_message_size(64 << 20).export(r).await }
        })
        .await?
        .into_inner();
    let mut file = Vec::new();
    let mut first: Option<pb::ExportChunk> = None;
    let bar = progress("export", None, Counted::Bytes);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        file.extend_from_slice(&chunk.data);
        bar.inc(chunk.data.len() as u64);
        if first.is_none() {
            first = Some(pb::ExportChunk { data: vec![], ..chunk });
        }
    }
    bar.finish_and_clear();
    let first = first.ok_or_else(|| anyhow::anyhow!("the export stream was empty"))?;
    write_new(&args.out, &file)?;
    for line in &first.closure {
        eprintln!("closure: {line}");
    }
    let counts: Vec<String> = first.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!(
        "exported at revision {}: {} ({} bytes) to {}",
        first.revision,
        counts.join(", "),
        file.len(),
        args.out.display()
    );
    if format == Format::Json {
        print(format, &first, None);
    }
    Ok(())
}

/// `collective import`.
pub async fn import(client: &Client, args: ImportArgs, format: Format) -> anyhow::Result<()> {
    let bytes = std::fs::read(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
    let header =
        pb::ImportHeader { mode: args.mode, dry_run: args.dry_run, passphrase: passphrase(&args.passphrase_file)? };
    // The bar counts bytes as the stream takes them, then spins while the cluster decrypts,
    // checks and commits; a retry against another member starts it again.
    let bar = progress("import", Some(bytes.len() as u64), Counted::Bytes);
    let response = client
        .call(|c| {
            bar.reset();
            let mut messages = vec![pb::ImportChunk { part: Some(pb::import_chunk::Part::Header(header.clone())) }];
            messages.extend(
                bytes
                    .chunks(UPLOAD_CHUNK_BYTES)
                    .map(|chunk| pb::ImportChunk { part: Some(pb::import_chunk::Part::Data(chunk.to_vec())) }),
            );
            // Counted as the stream is polled: the iterator is lazy.
            let bar = bar.clone();
            let messages = tokio_stream::iter(messages.into_iter().inspect(move |message| {
                if let Some(pb::import_chunk::Part::Data(data)) = &message.part {
                    bar.inc(data.len() as u64);
                }
            }));
            async move { ConfigClient::new(c).max_decoding_message_size(64 << 20).import(messages).await }
        })
        .await;
    bar.finish_and_clear();
    let response = response?.into_inner();
    if format == Format::Json {
        print(format, &response, None);
        return Ok(());
    }
    let verb = if response.applied { "applied" } else { "plan (dry run, nothing applied)" };
    crate::outln!(
        "{verb} at revision {}: {} creates, {} updates, {} deletes, {} unchanged; complete categories: {}",
        response.revision,
        response.creates.len(),
        response.updates.len(),
        response.deletes.len(),
        response.unchanged,
        if response.complete.is_empty() { "none".to_string() } else { response.complete.join(", ") }
    );
    for (label, items) in [("create", &response.creates), ("update", &response.updates), ("delete", &response.deletes)]
    {
        for item in items {
            crate::outln!("  {label} {item}");
        }
    }
    for conflict in &response.conflicts {
        crate::outln!("  CONFLICT {conflict}");
    }
    if !response.conflicts.is_empty() {
        anyhow::bail!("{} conflicts: the import would be refused", response.conflicts.len());
    }
    Ok(())
}

/// `collective snapshot …`.
pub async fn snapshot(
    client: &Client,
    timeout_ms: u64,
    command: SnapshotCommand,
    format: Format,
) -> anyhow::Result<()> {
    match command {
        SnapshotCommand::Save { file } => {
            let client = client.with_timeout(std::time::Duration::from_millis(timeout_ms.max(60_000)));
            let mut stream = client
                .call(|c| async move {
                    ConfigClient::new(c).max_decoding_message_size(64 << 20).snapshot(pb::SnapshotRequest {}).await
                })
                .await?
                .into_inner();
            let mut bytes = Vec::new();
            let mut revision = 0;
            let bar = progress("snapshot save", None, Counted::Bytes);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                revision = revision.max(chunk.revision);
                bytes.extend_from_slice(&chunk.data);
                bar.inc(chunk.data.len() as u64);
            }
            bar.finish_and_clear();
            collective::store::SnapshotFile::decode(&bytes)?;
            write_new(&file, &bytes)?;
            crate::outln!("saved revision {revision} ({} bytes) to {}", bytes.len(), file.display());
        }
        SnapshotCommand::Restore { file, data_dir, initial_cluster } => {
            let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let saved = collective::store::SnapshotFile::decode(&bytes)?;
            let revision = saved.revision;
            let config =
                collective::config::NodeConfig { id: 1, initial_cluster, ..collective::config::NodeConfig::default() };
            let members =
                config.initial_members()?.into_iter().map(|(id, addr)| (id, openraft::BasicNode { addr })).collect();
            let bar = progress("snapshot restore: writing the data directory", None, Counted::Bytes);
            bar.set_position(bytes.len() as u64);
            let restored = collective::store::restore(&data_dir, saved, members).await;
            bar.finish_and_clear();
            restored?;
            crate::outln!("restored revision {revision} into {}", data_dir.display());
        }
        SnapshotCommand::Status { file } => {
            let bytes = std::fs::read(&file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let saved = collective::store::SnapshotFile::decode(&bytes)?;
            let state = &saved.state;
            let status = serde_json::json!({
                "revision": saved.revision,
                "bytes": bytes.len(),
                "sites": state.sites.len(),
                "users": state.users.len(),
                "workgroups": state.workgroups.len(),
                "interactions": state.routing.interactions.len(),
            });
            print(format, &status, None);
        }
    }
    Ok(())
}
