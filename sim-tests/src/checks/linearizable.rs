//! (b) Per-key histories are linearizable (a register per key), by the Wing–Gong search with
//! Lowe's memoisation, as in Porcupine: linearize any pending call that the register allows,
//! backtrack at a return that could not be placed. A write whose outcome is unknown never
//! returns: it may take effect at any point after its call, or never.

use std::collections::{BTreeMap, HashSet};

use super::Violation;
use crate::history::{Op, OpKind};

const CHECK: &str = "linearizable";
/// Operations listed in a violation (the rest are elided).
const DESCRIBED_OPS_MAX: usize = 200;
/// Search steps per key before giving up (reported as inconclusive, not as a violation).
pub const STEPS_MAX: u64 = 5_000_000;

/// What the search found for one run.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Non-linearizable keys.
    pub violations: Vec<Violation>,
    /// Keys whose search ran out of steps.
    pub inconclusive: Vec<String>,
    /// Operations checked.
    pub ops_checked: usize,
}

/// Checks every key's history, starting from its initial value.
pub fn check(ops: &[Op], initial: &BTreeMap<String, String>) -> Outcome {
    let mut outcome = Outcome::default();
    for (key, initial_value) in initial {
        let key_ops: Vec<&Op> = ops.iter().filter(|op| &op.key == key).collect();
        // A write of unknown outcome that no read ever saw can be dropped: values are unique,
        // so treating it as never applied explains the history at least as well.
        let read_values: HashSet<&str> = key_ops
            .iter()
            .filter_map(|op| match &op.kind {
                OpKind::Read(value) => Some(value.as_str()),
                OpKind::Write(_) => None,
            })
            .collect();
        let key_ops: Vec<&Op> = key_ops
            .into_iter()
            .filter(|op| match &op.kind {
                OpKind::Write(value) => op.completed_ms.is_some() || read_values.contains(value.as_str()),
                OpKind::Read(_) => true,
            })
            .collect();
        outcome.ops_checked += key_ops.len();
        match search(&key_ops, initial_value) {
            Some(true) => {}
            Some(false) => outcome.violations.push(Violation::new(
                CHECK,
                format!("{key}: no linearization of its {} operations exists:\n{}", key_ops.len(), describe(&key_ops)),
            )),
            None => outcome.inconclusive.push(key.clone()),
        }
    }
    outcome
}

fn describe(ops: &[&Op]) -> String {
    let mut sorted: Vec<&&Op> = ops.iter().collect();
    sorted.sort_by_key(|op| op.invoked_ms);
    sorted
        .iter()
        .take(DESCRIBED_OPS_MAX)
        .map(|op| {
            let end = op.completed_ms.map(|ms| ms.to_string()).unwrap_or_else(|| "?".into());
            format!("  {:>7}..{:<7} {:<4} {:?} rev {:?}", op.invoked_ms, end, op.client, op.kind, op.revision)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One call or return in the doubly linked event list (index 0 is the head sentinel).
#[derive(Clone, Copy)]
struct Event {
    op: usize,
    call: bool,
    /// For a call: the index of its return event, if it returns.
    ret: Option<usize>,
    prev: usize,
    next: usize,
}

const NIL: usize = usize::MAX;

/// `Some(true)`: linearizable; `Some(false)`: not; `None`: ran out of steps.
fn search(ops: &[&Op], initial: &str) -> Option<bool> {
    // Values interned: the register state is a small number.
    let mut values: BTreeMap<&str, u32> = BTreeMap::from([(initial, 0)]);
    let mut kinds: Vec<(bool, u32)> = Vec::with_capacity(ops.len());
    for op in ops {
        let (write, value) = match &op.kind {
            OpKind::Write(value) => (true, value.as_str()),
            OpKind::Read(value) => (false, value.as_str()),
        };
        let next = values.len() as u32;
        kinds.push((write, *values.entry(value).or_insert(next)));
    }
    // Calls before returns at the same millisecond: touching operations count as concurrent.
    let mut timeline: Vec<(u64, bool, usize)> = Vec::new();
    for (index, op) in ops.iter().enumerate() {
        timeline.push((op.invoked_ms, false, index));
        if let Some(completed) = op.completed_ms {
            timeline.push((completed, true, index));
        }
    }
    timeline.sort();
    let mut events = vec![Event { op: NIL, call: false, ret: None, prev: NIL, next: NIL }];
    let mut call_of = vec![NIL; ops.len()];
    for &(_, is_return, op) in &timeline {
        let index = events.len();
        events.push(Event { op, call: !is_return, ret: None, prev: index - 1, next: NIL });
        events[index - 1].next = index;
        if is_return {
            events[call_of[op]].ret = Some(index);
        } else {
            call_of[op] = index;
        }
    }
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, u32)> = HashSet::new();
    let mut stack: Vec<(usize, u32)> = Vec::new();
    let mut state = 0u32;
    let mut entry = events[0].next;
    let mut steps = 0u64;
    while events[0].next != NIL {
        steps += 1;
        if steps > STEPS_MAX {
            return None;
        }
        if entry != NIL && events[entry].call {
            let op = events[entry].op;
            let (write, value) = kinds[op];
            let allowed = write || value == state;
            let next_state = if write { value } else { state };
            if allowed {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), next_state)) {
                    stack.push((entry, state));
                    state = next_state;
                    lift(&mut events, entry);
                    entry = events[0].next;
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            entry = events[entry].next;
        } else {
            // A return whose call is not linearized yet (or the end): backtrack.
            let Some((call, previous_state)) = stack.pop() else { return Some(false) };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = previous_state;
            unlift(&mut events, call);
            entry = events[call].next;
        }
    }
    Some(true)
}

fn lift(events: &mut [Event], call: usize) {
    unlink(events, call);
    if let Some(ret) = events[call].ret {
        unlink(events, ret);
    }
}

fn unlift(events: &mut [Event], call: usize) {
    if let Some(ret) = events[call].ret {
        relink(events, ret);
    }
    relink(events, call);
}

fn unlink(events: &mut [Event], index: usize) {
    let Event { prev, next, .. } = events[index];
    events[prev].next = next;
    if next != NIL {
        events[next].prev = prev;
    }
}

fn relink(events: &mut [Event], index: usize) {
    let Event { prev, next, .. } = events[index];
    events[prev].next = index;
    if next != NIL {
        events[next].prev = index;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, invoked_ms: u64, completed_ms: Option<u64>) -> Op {
        Op { client: "c".into(), key: "k".into(), kind, invoked_ms, completed_ms, revision: None, fin: false }
    }

    fn w(value: &str, from: u64, to: Option<u64>) -> Op {
        op(OpKind::Write(value.into()), from, to)
    }

    fn r(value: &str, from: u64, to: u64) -> Op {
        op(OpKind::Read(value.into()), from, Some(to))
    }

    fn linearizable(ops: &[Op]) -> bool {
        let initial = BTreeMap::from([("k".to_string(), "0".to_string())]);
        let outcome = check(ops, &initial);
        assert!(outcome.inconclusive.is_empty());
        outcome.violations.is_empty()
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        assert!(linearizable(&[w("1", 0, Some(10)), r("1", 20, 30)]));
        assert!(!linearizable(&[w("1", 0, Some(10)), r("0", 20, 30)]), "a stale read after the write returned");
        assert!(linearizable(&[w("1", 0, Some(50)), r("0", 10, 20), r("1", 30, 40)]), "reads during the write");
        assert!(
            !linearizable(&[w("1", 0, Some(50)), r("1", 10, 20), r("0", 30, 40)]),
            "a read may not go back to the old value once another saw the new one"
        );
        assert!(!linearizable(&[r("7", 0, 10)]), "a value nobody wrote");
    }

    #[test]
    fn unknown_writes_may_apply_late_or_never() {
        assert!(linearizable(&[w("1", 0, None), r("0", 10, 20), r("1", 30, 40)]), "applied late");
        assert!(linearizable(&[w("1", 0, None), r("0", 10, 20)]), "never applied");
        assert!(!linearizable(&[w("1", 0, None), r("1", 10, 20), r("0", 30, 40)]), "applied, then undone");
        assert!(!linearizable(&[r("1", 0, 10), w("1", 20, None)]), "applied before it was sent");
    }
}
