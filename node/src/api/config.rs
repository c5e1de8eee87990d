//! `collective.v1.Config`: encrypted configuration export and import (the vendor's Interaction
//! Migrator), and whole-state snapshots for `snapshot save`.
//!
//! Export reads the chosen categories and their closure at a linearizable point, encodes them
//! as a `ConfigBundle` (ordered maps and sorted lists: equal content, equal bytes), and seals it
//! with [`crate::bundle`]. Import opens and decodes the file, plans it against the current
//! state (a dry run stops there), stages it in parts (`StageImport`, one log entry each, kept
//! small because openraft 0.9 gives an AppendEntries only the heartbeat interval) and commits it
//! with `CommitImport`, one entry that `apply` plans again and applies whole or refuses whole.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use collective_proto::v1 as pb;
use collective_proto::v1::config_server::Config;
use collective_statemachine::config::{
    Category, ConfigSet, ImportMode, RouteCost, SiteNote, WorkgroupConfig, WorkgroupSettings,
};
use collective_statemachine::{self as sm, Command, Principal};
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert;
use super::error::ApiError;
use super::{principal, read};
use crate::bundle::{self, BundleError};
use crate::node::Node;

/// Bytes per streamed chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Largest file an import accepts (the largest body a file may have).
const IMPORT_FILE_BYTES_MAX: usize = bundle::HEADER_BYTES + bundle::BODY_BYTES_MAX as usize;

/// Imports one node handles at once (each holds its file, the decrypted body and a plan).
static IMPORTS_RUNNING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Serves export, import and snapshots.
pub struct ConfigService {
    /// The node.
    pub node: Arc<Node>,
}

type ChunkStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ExportChunk, Status>> + Send>>;

fn categories(names: &[String]) -> Result<BTreeSet<Category>, ApiError> {
    if names.is_empty() {
        return Ok(Category::ALL.into_iter().collect());
    }
    names
        .iter()
        .map(|name| {
            Category::parse(name).ok_or_else(|| {
                ApiError::invalid(
                    "categories",
                    format!("{name:?} is not sites, statuses, users, workgroups, routing or notes"),
                )
            })
        })
        .collect()
}

fn mode(name: &str) -> Result<ImportMode, ApiError> {
    match name {
        "migration" => Ok(ImportMode::Migration),
        "recovery" => Ok(ImportMode::Recovery),
        other => Err(ApiError::invalid("mode", format!("{other:?} is not migration or recovery"))),
    }
}

/// The wire form of an exported configuration.
fn bundle_out(set: &ConfigSet, revision: u64, at_ms: u64) -> pb::ConfigBundle {
    pb::ConfigBundle {
        format_version: u32::from(bundle::FORMAT_VERSION),
        exported_at_ms: at_ms,
        revision,
        complete: set.complete.iter().map(|c| c.as_str().to_string()).collect(),
        sites: set
            .sites
            .iter()
            .map(|site| pb::ExportedSite { site: Some(convert::site(site)), password_hash: site.password_hash.clone() })
            .collect(),
        statuses: set.statuses.iter().map(convert::status_def).collect(),
        users: set
            .users
            .iter()
            .map(|user| pb::User {
                username: user.username.clone(),
                display_name: user.display_name.clone(),
                email: user.email.clone(),
                home_site: user.home_site,
                extension: user.extension.clone(),
                skills: user.skills.clone(),
                licences: user.licences.iter().cloned().collect(),
                ..pb::User::default()
            })
            .collect(),
        workgroups: set
            .workgroups
            .iter()
            .map(|w| pb::Workgroup {
                name: w.name.clone(),
                spans_sites: w.spans_sites,
                members: w.members.clone(),
                required_skills: w.required_skills.clone(),
            })
            .collect(),
        routing_settings: set
            .routing_settings
            .iter()
            .map(|s| convert::routing_settings(&s.workgroup, &s.settings))
            .collect(),
        route_costs: set.route_costs.iter().map(|c| pb::RouteCost { from: c.from, to: c.to, cost: c.cost }).collect(),
        notes: set
            .notes
            .iter()
            .map(|n| pb::ExportedNote { site: n.site, note: Some(convert::note_value_out(&n.value, n.expires_at_ms)) })
            .collect(),
    }
}

/// A decoded file's configuration; any field out of shape names where it is.
fn bundle_in(bundle: pb::ConfigBundle) -> Result<ConfigSet, ApiError> {
    let mut sites = Vec::with_capacity(bundle.sites.len());
    for exported in bundle.sites {
        let site = exported.site.ok_or_else(|| ApiError::invalid("file", "a site entry without its site"))?;
        let access = site.trusted_access.unwrap_or_default();
        sites.push(sm::Site {
            id: site.id,
            name: site.name,
            phone: site.phone,
            password_hash: exported.password_hash,
            note_id_dial_string: site.note_id_dial_string,
            // Bundles written before `active` had presence omit it when false.
            active: site.active.unwrap_or(false),
            servers: site.servers,
            trusted_access: sm::TrustedAccess {
                publish_handlers: access.publish_handlers,
                manage_handlers: access.manage_handlers,
                master_administrator: access.master_administrator,
            },
        });
    }
    let mut statuses = Vec::with_capacity(bundle.statuses.len());
    for status in bundle.statuses {
        statuses.push(convert::status_def_spec(Some(status))?);
    }
    let mut users = Vec::with_capacity(bundle.users.len());
    for user in bundle.users {
        users.push(convert::user_spec(Some(user))?);
    }
    let mut notes = Vec::with_capacity(bundle.notes.len());
    for exported in bundle.notes {
        let note = exported.note.ok_or_else(|| ApiError::invalid("file", "a note entry without its note"))?;
        let expires_at_ms = note.expires_at_ms;
        notes.push(SiteNote { site: exported.site, value: convert::note_value_in(note, "file")?, expires_at_ms });
    }
    let mut routing_settings = Vec::with_capacity(bundle.routing_settings.len());
    for settings in bundle.routing_settings {
        let parsed = convert::routing_settings_in(&settings)?;
        routing_settings.push(WorkgroupSettings { workgroup: settings.workgroup, settings: parsed });
    }
    Ok(ConfigSet {
        complete: categories(&bundle.complete)
            .map_err(|_| ApiError::invalid("file", "names a category this collective does not know"))?
            .into_iter()
            .filter(|_| !bundle.complete.is_empty())
            .collect(),
        sites,
        statuses,
        users,
        workgroups: bundle
            .workgroups
            .into_iter()
            .map(|w| WorkgroupConfig {
                name: w.name,
                spans_sites: w.spans_sites,
                required_skills: w.required_skills,
                members: w.members,
            })
            .collect(),
        routing_settings,
        route_costs: bundle
            .route_costs
            .into_iter()
            .map(|c| RouteCost { from: c.from, to: c.to, cost: c.cost })
            .collect(),
        notes,
    })
}

fn bundle_error(error: BundleError) -> ApiError {
    match error {
        BundleError::WrongPassphrase | BundleError::Passphrase(_) => ApiError::invalid("passphrase", error.to_string()),
        other => ApiError::invalid("file", other.to_string()),
    }
}

/// Streams `bytes` in chunks, the first carrying `first`'s metadata.
fn stream_chunks(bytes: Vec<u8>, first: pb::ExportChunk) -> ChunkStream {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut chunks = bytes.chunks(CHUNK_BYTES).peekable();
        let mut head = Some(first);
        if chunks.peek().is_none() {
            let _ = tx.send(Ok(head.take().expect("first"))).await;
        }
        for chunk in chunks {
            let mut message = head.take().unwrap_or_default();
            message.data = chunk.to_vec();
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn plan_response(plan: sm::ImportPlan, set: &ConfigSet, revision: u64, applied: bool) -> pb::ImportResponse {
    pb::ImportResponse {
        revision,
        applied,
        creates: plan.creates,
        updates: plan.updates,
        deletes: plan.deletes,
        unchanged: plan.unchanged,
        conflicts: plan.conflicts,
        complete: set.complete.iter().map(|c| c.as_str().to_string()).collect(),
    }
}

/// Stages the set in parts (each one log entry of about a megabyte) and commits it (one entry
/// that applies all of it); on any failure the staging is discarded.
async fn stage_and_commit(
    node: &Node,
    principal: &Principal,
    mode: ImportMode,
    set: &ConfigSet,
) -> Result<u64, ApiError> {
    let import_id = format!("import-{:016x}", rand::random::<u64>());
    let parts = set.split();
    let result = async {
        for (part, config) in parts.iter().enumerate() {
            let command = Command::StageImport {
                import_id: import_id.clone(),
                part: part as u32,
                config: Box::new(config.clone()),
            };
            node.write(principal.clone(), command).await?;
        }
        let commit = Command::CommitImport { import_id: import_id.clone(), parts: parts.len() as u32, mode };
        node.write(principal.clone(), commit).await.map(|applied| applied.revision)
    }
    .await;
    if result.is_err() {
        // Best effort: an abandoned staging also expires on its own.
        let _ = node.write(principal.clone(), Command::AbortImport { import_id }).await;
    }
    result
}

#[tonic::async_trait]
impl Config for ConfigService {
    type ExportStream = ChunkStream;

    async fn export(&self, request: Request<pb::ExportRequest>) -> Result<Response<Self::ExportStream>, Status> {
        let request = request.into_inner();
        let chosen = categories(&request.categories)?;
        if request.passphrase.chars().count() < bundle::PASSPHRASE_CHARS_MIN {
            return Err(ApiError::invalid(
                "passphrase",
                format!("at least {} characters", bundle::PASSPHRASE_CHARS_MIN),
            )
            .into());
        }
        let now = self.node.now_ms();
        let (set, closure, revision) = read(&self.node, false, |state| {
            let (set, closure) = state.export_config(&chosen);
            Ok((set, closure, state.revision))
        })
        .await?;
        let counts = set.counts().into_iter().map(|(k, v)| (k.to_string(), v as u64)).collect();
        let body = bundle_out(&set, revision, now).encode_to_vec();
        let passphrase = request.passphrase;
        // Argon2id takes tens of ms of CPU: off the async workers.
        let file = self
            .node
            .environment
            .blocking(move || bundle::seal(&body, &passphrase))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(bundle_error)?;
        let first = pb::ExportChunk { data: vec![], closure, counts, revision };
        Ok(Response::new(stream_chunks(file, first)))
    }

    async fn import(
        &self,
        request: Request<Streaming<pb::ImportChunk>>,
    ) -> Result<Response<pb::ImportResponse>, Status> {
        let principal = principal(&request)?;
        let _running = IMPORTS_RUNNING.try_acquire().map_err(|_| {
            ApiError::Rejected(sm::Rejection::LimitReached { what: "imports running on this node".into(), limit: 1 })
        })?;
        let mut stream = request.into_inner();
        let header = match stream.next().await {
            Some(Ok(pb::ImportChunk { part: Some(pb::import_chunk::Part::Header(header)) })) => header,
            Some(Err(status)) => return Err(super::error::conventional(status)),
            _ => return Err(ApiError::invalid("header", "the first message must be the import header").into()),
        };
        let mode = mode(&header.mode)?;
        let mut file = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk.map_err(super::error::conventional)?.part {
                Some(pb::import_chunk::Part::Data(data)) => file.extend_from_slice(&data),
                _ => return Err(ApiError::invalid("data", "only the first message may be a header").into()),
            }
            if file.len() > IMPORT_FILE_BYTES_MAX {
                return Err(ApiError::invalid("file", format!("larger than {IMPORT_FILE_BYTES_MAX} bytes")).into());
            }
        }
        let passphrase = header.passphrase;
        let body = self
            .node
            .environment
            .blocking(move || bundle::open(&file, &passphrase))
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .map_err(bundle_error)?;
        let decoded = pb::ConfigBundle::decode(body.as_slice())
            .map_err(|e| ApiError::invalid("file", format!("the decrypted body does not decode: {e}")))?;
        if decoded.format_version != u32::from(bundle::FORMAT_VERSION) {
            return Err(ApiError::invalid("file", format!("body format version {}", decoded.format_version)).into());
        }
        let set = bundle_in(decoded)?;
        let now = self.node.now_ms();
        let (plan, revision) = read(&self.node, false, |state| {
            Ok((state.plan_import(mode, &set, now.max(state.last_at_ms)), state.revision))
        })
        .await?;
        if header.dry_run {
            return Ok(Response::new(plan_response(plan, &set, revision, false)));
        }
        if !plan.conflicts.is_empty() {
            let shown: Vec<&str> = plan.conflicts.iter().take(20).map(String::as_str).collect();
            return Err(ApiError::Rejected(sm::Rejection::precondition(
                "import",
                format!("{} conflicts, nothing imported: {}", plan.conflicts.len(), shown.join("; ")),
            ))
            .into());
        }
        // In its own task: a caller that disconnects mid-way must not leave parts staged (the
        // task finishes, or aborts the staging, whatever happens to the call).
        let node = self.node.clone();
        let staged_set = set.clone();
        let revision = tokio::spawn(async move { stage_and_commit(&node, &principal, mode, &staged_set).await })
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))??;
        Ok(Response::new(plan_response(plan, &set, revision, true)))
    }

    type SnapshotStream = ChunkStream;

    async fn snapshot(&self, _request: Request<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        let (mut bytes, revision) = read(&self.node, false, |state| {
            let bytes = crate::store::SnapshotFile::encode(state).map_err(|e| ApiError::Internal(e.to_string()))?;
            Ok((bytes, state.revision))
        })
        .await?;
        let digest = Sha256::digest(&bytes);
        bytes.extend_from_slice(&digest);
        Ok(Response::new(stream_chunks(bytes, pb::ExportChunk { revision, ..pb::ExportChunk::default() })))
    }
}
