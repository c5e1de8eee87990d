//! `collective recover`: a cluster that lost its quorum restarts from one surviving member's data
//! as a one-member cluster, like etcd's `--force-new-cluster`.
//!
//! The member's log is kept whole (committed entries and any it holds beyond them) and one entry
//! is appended: a membership of this member alone, in a term above every term the data has seen,
//! with the vote moved to that term. Started again, the member is the only voter: it elects
//! itself, commits everything in its log with its first entry, and serves. The other members are
//! then added back as new ones (`member add`, `member promote`) with empty data directories.
//!
//! Offline only: RocksDB's lock on the directory refuses a member that is still running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, EntryPayload, Membership};

use super::{open, Shared};
use crate::environment::Environment;
use crate::error::invalid;
use crate::raft_types::{CommittedLeaderId, Entry, LogId, NodeId, Vote};

/// What `recover` found and wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recovered {
    /// The member that now forms the cluster alone.
    pub id: NodeId,
    /// The address the others reach it at.
    pub addr: String,
    /// Members of the membership the data held before (voters and learners).
    pub previous_members: Vec<NodeId>,
    /// Last entry the data held before recovery; all of it is kept.
    pub last_index: u64,
    /// Last entry this member had applied (it knew these were committed).
    pub applied_index: u64,
    /// Index of the appended one-member membership entry.
    pub membership_index: u64,
    /// Its term, above every term the data had seen.
    pub term: u64,
}

/// Rewrites the membership of the data in `dir` to `id` alone (see the module documentation).
/// `advertise_addr` replaces the address the old membership gave `id`.
pub async fn recover(dir: &Path, id: NodeId, advertise_addr: Option<String>) -> crate::error::Result<Recovered> {
    if id == 0 {
        return Err(invalid("--id", "member ids start at 1"));
    }
    if let Some(addr) = &advertise_addr {
        crate::config::check_peer_addr(addr).map_err(|e| invalid("--advertise-addr", e.to_string()))?;
    }
    if !dir.is_dir() {
        return Err(invalid("--data-dir", format!("{}: no such directory", dir.display())));
    }
    if !dir.join("CURRENT").exists() {
        return Err(invalid(
            "--data-dir",
            format!(
                "{} holds no collective database (empty, or not a member's data directory); recover needs the \
                 data directory of a surviving member",
                dir.display()
            ),
        ));
    }
    let shared = Arc::new(Shared::new(1));
    let (mut log_store, mut state_machine, _history) =
        open(dir, shared, &Environment::system()).await.map_err(|error| {
            let text = format!("{error:#}");
            if text.contains("lock") || text.contains("LOCK") {
                invalid(
                    "--data-dir",
                    format!(
                        "{} is in use by a running member (its database lock is held): stop that member first; \
                         recover works only on a stopped member's data",
                        dir.display()
                    ),
                )
            } else {
                error
            }
        })?;
    let log_state = log_store.get_log_state().await?;
    let Some(last) = log_state.last_log_id else {
        return Err(invalid(
            "--data-dir",
            format!("{} holds no log entries and no snapshot: there is nothing to recover", dir.display()),
        ));
    };
    let (applied, applied_membership) = state_machine.applied_state().await?;
    // The newest membership in the log is the member's effective one; else the applied one.
    let first = log_state.last_purged_log_id.map_or(0, |purged| purged.index + 1);
    let entries = log_store.get_log_reader().await.try_get_log_entries(first..=last.index).await?;
    let membership = entries
        .iter()
        .rev()
        .find_map(|entry| match &entry.payload {
            EntryPayload::Membership(membership) => Some(membership.clone()),
            _ => None,
        })
        .unwrap_or_else(|| applied_membership.membership().clone());
    let previous_members: Vec<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
    let addr = match advertise_addr {
        Some(addr) => addr,
        None => membership.get_node(&id).map(|node| node.addr.clone()).ok_or_else(|| {
            invalid(
                "--id",
                format!(
                    "{id} is not a member in the data of {} (its members are {previous_members:?}); give the \
                     member's own id, or --advertise-addr to name its address",
                    dir.display()
                ),
            )
        })?,
    };
    let vote = log_store.read_vote().await?;
    let term = vote.map_or(0, |vote| vote.leader_id.term).max(last.leader_id.term) + 1;
    let log_id = LogId::new(CommittedLeaderId::new(term), last.index + 1);
    let alone = Membership::new(vec![BTreeSet::from([id])], BTreeMap::from([(id, BasicNode { addr: addr.clone() })]))
        .map_err(|e| invalid("--id", format!("a membership of member {id} alone: {e}")))?;
    // The vote first: an entry of a term the vote has not reached would be refused at start.
    log_store.save_vote(&Vote::new(term, id)).await?;
    log_store.write_entries([Entry { log_id, payload: EntryPayload::Membership(alone) }]).await?;
    Ok(Recovered {
        id,
        addr,
        previous_members,
        last_index: last.index,
        applied_index: applied.map_or(0, |applied| applied.index),
        membership_index: log_id.index,
        term,
    })
}
