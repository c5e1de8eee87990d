//! Log entries written by earlier versions must still decode and apply the same way: the Raft
//! log and snapshots outlive the binary that wrote them. Never edit a fixture; add a new one.

use collective_statemachine::{Batch, Event, State};

#[test]
fn batch_v1_entry_still_decodes_and_applies() {
    let batch: Batch = serde_json::from_str(include_str!("fixtures/batch-v1.json")).expect("v1 entry decodes");
    let mut state = State::new();
    let outcomes = state.apply_batch(&batch);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    state.check_invariants();
    let last = outcomes[3].as_ref().unwrap();
    assert!(matches!(&last[0].event, Event::StatusChanged { status_key, .. } if status_key == "Gone Home"));
    assert_eq!(state.revision, 4);
    assert_eq!(state.presence["jo"].logon.as_ref().map(|l| l.server.as_str()), Some("indy1"));
}
