//! (e) Each watch stream is gap-free and in revision order: it starts at the revision asked
//! for, then every revision follows the one before; and every stream that saw a revision saw
//! the same event there.

use std::collections::BTreeMap;

use super::Violation;
use crate::history::WatchSession;

const CHECK: &str = "watch-gap-free";

/// Checks every watch session; returns violations and the number of events checked.
pub fn check(sessions: &[WatchSession]) -> (Vec<Violation>, usize) {
    let mut violations = Vec::new();
    let mut seen: BTreeMap<u64, (&str, &str)> = BTreeMap::new();
    let mut checked = 0;
    for session in sessions {
        let mut expected = (session.start != 0).then_some(session.start);
        for (revision, digest) in &session.events {
            checked += 1;
            if let Some(expected) = expected {
                if *revision != expected {
                    violations.push(Violation::new(
                        CHECK,
                        format!(
                            "a watch on {} from revision {} got revision {revision} where {expected} was due",
                            session.node, session.start
                        ),
                    ));
                    break;
                }
            }
            expected = Some(revision + 1);
            match seen.get(revision) {
                Some((node, other)) if other != digest => violations.push(Violation::new(
                    CHECK,
                    format!("revision {revision} is {other} on {node} but {digest} on {}", session.node),
                )),
                Some(_) => {}
                None => {
                    seen.insert(*revision, (&session.node, digest));
                }
            }
        }
    }
    (violations, checked)
}
