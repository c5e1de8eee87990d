//! (i) A member restarted on a damaged log (the `DamageLog` fault: a Raft log segment, or
//! RocksDB's write-ahead log) either refuses to start, or starts with every entry it had
//! acknowledged: never serves a log that forgot one.

use super::Violation;
use crate::faults::Damage;

/// Checks the damaged member's next start: `refused` says whether it was refused; `starts` is
/// every successful start (host, simulated ms, its log's last index then).
pub fn check(damage: Option<&Damage>, refused: bool, starts: &[(String, u64, Option<u64>)]) -> Vec<Violation> {
    let Some(damage) = damage else { return vec![] };
    if refused {
        return vec![];
    }
    let restart = starts.iter().find(|(host, at_ms, _)| *host == damage.host && *at_ms >= damage.at_ms);
    match (restart, damage.acknowledged) {
        (Some((_, at_ms, last)), Some(acknowledged)) if last.is_none_or(|last| last < acknowledged) => {
            vec![Violation::new(
                "damaged-log",
                format!(
                    "{} started at {at_ms} ms on a damaged log ending at {last:?}, below the index {acknowledged} it \
                     had acknowledged",
                    damage.host
                ),
            )]
        }
        _ => vec![],
    }
}
