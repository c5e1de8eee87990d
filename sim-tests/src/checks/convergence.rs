//! (c) After healing, every node's state machine has the same state hash at the same applied
//! index.

use super::Violation;

const CHECK: &str = "convergence";

/// One node's final position: (node id, applied log index, hash of its state).
pub type Position = (u64, u64, u64);

/// Checks that all nodes reached the same applied index with the same state.
pub fn check(positions: &[Position]) -> Vec<Violation> {
    let Some(&(first_node, index, hash)) = positions.first() else {
        return vec![Violation::new(CHECK, "no node was running after healing")];
    };
    positions
        .iter()
        .filter(|&&(_, other_index, other_hash)| (other_index, other_hash) != (index, hash))
        .map(|&(node, other_index, other_hash)| {
            Violation::new(
                CHECK,
                format!(
                    "node {node} is at applied index {other_index} with state hash {other_hash:016x}; \
                     node {first_node} at {index} with {hash:016x}"
                ),
            )
        })
        .collect()
}
