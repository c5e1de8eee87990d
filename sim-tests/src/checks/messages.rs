//! (g) Inter-site messages: every acknowledged send is delivered to the receiving site, under
//! the id it was acknowledged with; each message has one id (a second receipt is a redelivery
//! of the same id, never a copy under a new one); a site's deliveries never go backwards: the
//! first receipt of each id comes in increasing id order; nothing arrives that was not sent.

use std::collections::BTreeMap;

use super::Violation;
use crate::history::MessageLog;

const CHECK: &str = "messages";

/// Checks the run's messages.
pub fn check(log: &MessageLog) -> Vec<Violation> {
    let mut violations = Vec::new();
    let sent: BTreeMap<i64, Option<u64>> = log.sends.iter().copied().collect();
    let mut id_of_seq: BTreeMap<i64, u64> = BTreeMap::new();
    let mut last_new = 0;
    for &(id, seq, _) in &log.deliveries {
        match sent.get(&seq) {
            None => violations.push(Violation::new(CHECK, format!("delivery {id} carries {seq}, which nobody sent"))),
            Some(Some(acked)) if *acked != id => violations.push(Violation::new(
                CHECK,
                format!("send {seq} was acknowledged as message {acked} but delivered as {id}"),
            )),
            Some(_) => {}
        }
        match id_of_seq.insert(seq, id) {
            Some(previous) if previous != id => {
                violations.push(Violation::new(CHECK, format!("send {seq} was delivered as {previous} and as {id}")))
            }
            Some(_) => {}
            None => {
                if id <= last_new {
                    violations.push(Violation::new(
                        CHECK,
                        format!("message {id} arrived for the first time after {last_new}: reordered"),
                    ));
                }
                last_new = last_new.max(id);
            }
        }
    }
    for (seq, id) in &sent {
        if let Some(id) = id {
            if id_of_seq.get(seq) != Some(id) {
                violations
                    .push(Violation::new(CHECK, format!("acknowledged send {seq} (message {id}) was never delivered")));
            }
        }
    }
    violations
}
