//! `Shared`: the applied state and the recent event history, shared by the Raft state machine
//! (the only writer) and the gRPC services (readers and watchers).

use std::collections::VecDeque;
use std::sync::{Mutex, RwLock};

use collective_statemachine::{EventRecord, State};
use tokio::sync::watch;

/// Why a watch cannot start where it asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compacted {
    /// Oldest revision still retained (the first a watch may start at).
    pub oldest_revision: u64,
}

/// The recent event history, bounded by `events_max`.
#[derive(Debug)]
pub struct History {
    /// Retained events, in revision order, gap-free.
    events: VecDeque<EventRecord>,
    /// Revision of the first retained event (or of the next event while empty).
    first_revision: u64,
    /// Most events retained.
    events_max: usize,
}

impl History {
    fn new(next_revision: u64, events_max: usize) -> History {
        History { events: VecDeque::new(), first_revision: next_revision, events_max }
    }

    /// Events with revision ≥ `from`, at most `limit`; an error if `from` is no longer retained.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<EventRecord>, Compacted> {
        if from < self.first_revision {
            return Err(Compacted { oldest_revision: self.first_revision });
        }
        let skip = (from - self.first_revision) as usize;
        Ok(self.events.iter().skip(skip).take(limit).cloned().collect())
    }
}

/// State shared between the state machine and the services.
///
/// `state` is a `std::sync::RwLock`, not a tokio one: no lock is ever held across an `.await`,
/// and reads are short.
pub struct Shared {
    /// The materialised views.
    pub state: RwLock<State>,
    /// Recent events for watchers.
    pub history: Mutex<History>,
    /// Latest applied revision; watchers wait on it.
    revision_tx: watch::Sender<u64>,
}

impl Shared {
    /// Empty shared state retaining at most `history_events_max` events.
    pub fn new(history_events_max: usize) -> Shared {
        let (revision_tx, _) = watch::channel(0);
        Shared {
            state: RwLock::new(State::new()),
            history: Mutex::new(History::new(1, history_events_max)),
            revision_tx,
        }
    }

    /// Replaces the whole state (restart or snapshot install); history restarts after it.
    pub fn reset(&self, state: State) {
        let revision = state.revision;
        let events_max = self.history.lock().expect("history lock").events_max;
        *self.history.lock().expect("history lock") = History::new(revision + 1, events_max);
        *self.state.write().expect("state lock") = state;
        self.revision_tx.send_replace(revision);
    }

    /// Records newly applied events and wakes watchers.
    pub fn publish(&self, records: Vec<EventRecord>) {
        let Some(last) = records.last().map(|record| record.revision) else {
            return;
        };
        {
            let mut history = self.history.lock().expect("history lock");
            for record in records {
                history.events.push_back(record);
            }
            while history.events.len() > history.events_max {
                history.events.pop_front();
                history.first_revision += 1;
            }
        }
        self.revision_tx.send_replace(last);
    }

    /// A receiver that changes whenever new events are published.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision_tx.subscribe()
    }

    /// Latest applied revision.
    pub fn revision(&self) -> u64 {
        *self.revision_tx.borrow()
    }
}
