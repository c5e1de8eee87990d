//! (a) No acknowledged write is lost. Every acknowledged write has its own revision; after
//! healing, the final read of each key shows the acknowledged write with the highest revision,
//! or a later one (a write whose outcome was unknown may have applied after it).

use std::collections::BTreeMap;

use super::Violation;
use crate::history::{Op, OpKind};

const CHECK: &str = "acked-writes";

/// Checks the run's operations; `initial` holds each key's value before the workload.
pub fn check(ops: &[Op], initial: &BTreeMap<String, String>) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut by_revision: BTreeMap<u64, &Op> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.acked()) {
        let Some(revision) = op.revision else {
            violations.push(Violation::new(CHECK, format!("{op:?} was acknowledged without a revision")));
            continue;
        };
        if let Some(other) = by_revision.insert(revision, op) {
            violations.push(Violation::new(
                CHECK,
                format!("two writes acknowledged at revision {revision}: {other:?} and {op:?}"),
            ));
        }
    }
    for (key, initial_value) in initial {
        let Some(last_read) = ops.iter().rfind(|op| op.fin && &op.key == key) else {
            violations.push(Violation::new(CHECK, format!("{key}: no final read completed after healing")));
            continue;
        };
        let OpKind::Read(final_value) = &last_read.kind else { continue };
        let writes: Vec<&Op> = ops.iter().filter(|op| &op.key == key && matches!(op.kind, OpKind::Write(_))).collect();
        let last_acked = writes.iter().filter(|op| op.acked()).max_by_key(|op| op.revision);
        let maybe_values: Vec<&str> = writes
            .iter()
            .filter(|op| op.maybe())
            .filter_map(|op| match &op.kind {
                OpKind::Write(value) => Some(value.as_str()),
                OpKind::Read(_) => None,
            })
            .collect();
        let expected = match last_acked {
            Some(op) => match &op.kind {
                OpKind::Write(value) => value.as_str(),
                OpKind::Read(_) => unreachable!("filtered to writes"),
            },
            None => initial_value.as_str(),
        };
        if final_value != expected && !maybe_values.contains(&final_value.as_str()) {
            violations.push(Violation::new(
                CHECK,
                format!(
                    "{key}: the final read shows {final_value:?}, but the last acknowledged write (revision {:?}) \
                     set {expected:?} and no write of unknown outcome set {final_value:?}",
                    last_acked.and_then(|op| op.revision)
                ),
            ));
        }
        // Presence reads carry the presence's modification revision: it may not go back.
        if let (Some(read_revision), Some(acked_revision)) = (last_read.revision, last_acked.and_then(|op| op.revision))
        {
            if read_revision < acked_revision {
                violations.push(Violation::new(
                    CHECK,
                    format!(
                        "{key}: the final read is at revision {read_revision}, older than the write acknowledged \
                         at revision {acked_revision}"
                    ),
                ));
            }
        }
    }
    violations
}
