//! (h) Routing: every acknowledged route is in the final state with the decision the caller was
//! told (the agent it was reserved to, or the queue), and every acknowledged accept left the
//! interaction active or completed with that agent. That no agent is ever reserved twice is an
//! invariant every node checks after every entry (`invariants`).

use collective_statemachine::routing::Stage;
use collective_statemachine::State;

use super::Violation;
use crate::history::RoutingLog;

const CHECK: &str = "routing";

/// Checks the run's routing against one converged node's final state.
pub fn check(log: &RoutingLog, state: &State) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (id, agent) in &log.routed {
        let Some(interaction) = state.routing.interactions.get(id) else {
            violations.push(Violation::new(CHECK, format!("acknowledged route {id} is not in the final state")));
            continue;
        };
        let first = interaction.decisions.first().and_then(|d| d.decision.winner()).map(|w| w.agent.clone());
        if first != *agent {
            violations.push(Violation::new(
                CHECK,
                format!("route {id} was acknowledged as {agent:?} but the state's first decision is {first:?}"),
            ));
        }
    }
    for (id, agent) in &log.accepted {
        let holder = match state.routing.interactions.get(id).map(|i| &i.stage) {
            Some(Stage::Active { agent, .. }) => Some(agent.clone()),
            Some(Stage::Finished { outcome, .. }) if outcome == "completed" => Some(agent.clone()),
            _ => None,
        };
        if holder.as_ref() != Some(agent) {
            violations.push(Violation::new(
                CHECK,
                format!(
                    "accept of {id} by {agent} was acknowledged but the interaction is not active or completed with it"
                ),
            ));
        }
    }
    violations
}
