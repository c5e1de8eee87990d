//! (d) At most one leader per term (Raft's election safety), from every node's own view of
//! itself, sampled after every simulation step.

use std::collections::BTreeMap;

use super::Violation;

/// Checks the leaders seen per term.
pub fn check(leaders: &BTreeMap<u64, Vec<u64>>) -> Vec<Violation> {
    leaders
        .iter()
        .filter(|(_, nodes)| nodes.len() > 1)
        .map(|(term, nodes)| Violation::new("one-leader-per-term", format!("term {term} had leaders {nodes:?}")))
        .collect()
}
