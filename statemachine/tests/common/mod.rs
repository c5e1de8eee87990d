//! Helpers shared by the state machine's tests: apply a command the way the log does, and
//! check after each that the invariants hold and that a refused command changed nothing.
#![allow(dead_code)] // each test binary uses its own subset

use collective_statemachine::{Command, Envelope, Event, Principal, Rejection, SiteSpec, State, TrustedAccess};

/// A well-formed argon2id hash (the state machine never verifies it).
pub const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";

/// Applies `command` as `principal` at entry time `at_ms`, returning its events.
pub fn apply_as(
    state: &mut State,
    at_ms: u64,
    principal: Principal,
    command: Command,
) -> Result<Vec<Event>, Rejection> {
    let before = state.clone();
    let result = state.apply(&Envelope { at_ms, principal, command });
    state.check_invariants();
    if result.is_err() {
        assert_eq!(*state, before, "a rejected command changed the state");
    }
    result.map(|records| records.into_iter().map(|r| r.event).collect())
}

/// Applies `command` as the system.
pub fn apply(state: &mut State, at_ms: u64, command: Command) -> Result<Vec<Event>, Rejection> {
    apply_as(state, at_ms, Principal::System, command)
}

/// An active site with no servers.
pub fn site_spec(id: u32, name: &str) -> SiteSpec {
    SiteSpec {
        id,
        name: name.into(),
        phone: "+1 555 0100".into(),
        password_hash: HASH.into(),
        note_id_dial_string: String::new(),
        active: true,
        servers: vec![],
        trusted_access: TrustedAccess::default(),
    }
}
