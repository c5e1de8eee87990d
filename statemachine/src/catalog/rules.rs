//! Status catalog rules: define a status; its persistent and date/time flags cannot change while
//! users are in it.

use super::StatusDef;
use crate::event::Event;
use crate::limits::STATUSES_MAX;
use crate::rejection::Rejection;
use crate::state::State;

impl State {
    pub(crate) fn decide_put_status_def(&self, def: &StatusDef) -> Result<Vec<Event>, Rejection> {
        if !self.catalog.contains_key(&def.key) && self.catalog.len() >= STATUSES_MAX {
            return Err(Rejection::LimitReached { what: "status catalog entries".into(), limit: STATUSES_MAX as u64 });
        }
        if let Some(current) = self.catalog.get(&def.key) {
            // Users in (or falling back to) this status rely on these two flags.
            let changes_meaning =
                current.persistent != def.persistent || current.requires_until() != def.requires_until();
            let in_use = self
                .presence
                .values()
                .filter(|p| p.status_key == def.key || p.last_persistent_status == def.key)
                .count();
            if changes_meaning && in_use > 0 {
                return Err(Rejection::precondition(
                    "status",
                    format!(
                        "status {:?} is in use by {in_use} users; its persistent and date/time flags cannot change",
                        def.key
                    ),
                ));
            }
        }
        Ok(vec![Event::StatusDefined(def.clone())])
    }

    pub(crate) fn fold_status_defined(&mut self, def: &StatusDef) {
        self.catalog.insert(def.key.clone(), def.clone());
    }
}
