//! (f) `State::check_invariants()` holds on every node after every applied entry. The nodes run
//! with `check_invariants = true`, which checks after each entry and keeps what failed; this
//! collects it from every node instance of the run, restarted ones included.

use super::Violation;

/// Turns each node's kept violations into this check's.
pub fn check(per_node: &[(String, Vec<String>)]) -> Vec<Violation> {
    per_node
        .iter()
        .flat_map(|(node, violations)| {
            violations.iter().map(move |violation| Violation::new("invariants", format!("{node}: {violation}")))
        })
        .collect()
}
