//! The pending-request table: callers wait for an answer another task delivers by id. The
//! answer races the caller giving up (its deadline, or its request being dropped): exactly one
//! wins, the caller learns which, and no entry outlives both.
//!
//! A deadline can be kept by the table itself: a waiter registered with one is answered by
//! [`PendingTable::expire`] once it is due, which a single sweeping task calls. That spares each
//! waiter a timer of its own (a timer-wheel insert and removal per write on the leader).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::{Arc, Mutex};

/// The table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Most entries the table holds.
    pub limit: usize,
}

struct Slot<T, D> {
    value: Option<T>,
    waker: Option<Waker>,
    deadline: Option<D>,
}

struct Inner<T, D> {
    slots: BTreeMap<u64, Slot<T, D>>,
    next_id: u64,
    limit: usize,
}

/// Requests waiting for answers, at most `limit` at once. `D` is the time of a deadline the
/// table keeps (any monotonic clock the caller chooses).
pub struct PendingTable<T, D = u64> {
    inner: Mutex<Inner<T, D>>,
}

impl<T, D: Ord + Copy> PendingTable<T, D> {
    /// An empty table holding at most `limit` entries.
    pub fn new(limit: usize) -> PendingTable<T, D> {
        PendingTable { inner: Mutex::new(Inner { slots: BTreeMap::new(), next_id: 0, limit }) }
    }

    /// Registers a request; its id is how the answer finds the waiter. With a `deadline`,
    /// `expire` answers it once that time has come (the caller keeps any other deadline). A
    /// deadline earlier than that of a waiter registered before it is raised to that one, so
    /// deadlines follow registration order and `expire` can stop at the first not yet due: callers use
    /// one wait on a monotonic clock, and two writers that read the clock in one order and
    /// register in the other differ by microseconds.
    /// (An associated function: loom's `Arc` cannot be a method receiver.)
    pub fn register(table: &Arc<Self>, deadline: Option<D>) -> Result<Waiter<T, D>, Full> {
        let mut inner = table.inner.lock().expect("pending lock");
        if inner.slots.len() >= inner.limit {
            return Err(Full { limit: inner.limit });
        }
        let id = inner.next_id;
        inner.next_id += 1;
        // The newest waiter with a deadline (ids grow), usually the last slot.
        let latest = inner.slots.values().rev().find_map(|slot| slot.deadline);
        let deadline = deadline.map(|deadline| latest.map_or(deadline, |latest| deadline.max(latest)));
        inner.slots.insert(id, Slot { value: None, waker: None, deadline });
        Ok(Waiter { table: table.clone(), id, done: false })
    }

    /// Answers every unanswered waiter whose deadline is at or before `now` with `timed_out()`;
    /// returns how many. A waiter answered here is answered: a later `complete` for it returns
    /// false. Visits the due slots, those without a deadline, and one more.
    pub fn expire(&self, now: D, mut timed_out: impl FnMut() -> T) -> usize {
        let (mut expired, mut wakers) = (0, Vec::new());
        {
            let mut inner = self.inner.lock().expect("pending lock");
            for slot in inner.slots.values_mut() {
                match slot.deadline {
                    None => continue,
                    Some(deadline) if deadline > now => break,
                    Some(_) if slot.value.is_none() => {
                        slot.value = Some(timed_out());
                        expired += 1;
                        wakers.extend(slot.waker.take());
                    }
                    Some(_) => {}
                }
            }
        }
        for waker in wakers {
            waker.wake();
        }
        expired
    }

    /// Delivers the answer to request `id`. False when its waiter already gave up (or was
    /// answered): the answer is dropped.
    pub fn complete(&self, id: u64, value: T) -> bool {
        let waker = {
            let mut inner = self.inner.lock().expect("pending lock");
            match inner.slots.get_mut(&id) {
                Some(slot) if slot.value.is_none() => {
                    slot.value = Some(value);
                    slot.waker.take()
                }
                _ => return false,
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("pending lock").slots.len()
    }

    /// True when no request waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One registered request. Await it for the answer; `cancel` (or drop) it to give up.
pub struct Waiter<T, D = u64> {
    table: Arc<PendingTable<T, D>>,
    id: u64,
    done: bool,
}

impl<T, D> Waiter<T, D> {
    /// The id the answering task completes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Gives up. Returns the answer if it arrived first (from `complete`, or `expire`'s timeout
    /// value for a waiter with a deadline): the caller must report that answer rather than its
    /// own timeout.
    pub fn cancel(mut self) -> Option<T> {
        self.done = true;
        self.table.inner.lock().expect("pending lock").slots.remove(&self.id).and_then(|slot| slot.value)
    }
}

impl<T, D> Future for Waiter<T, D> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let mut inner = this.table.inner.lock().expect("pending lock");
        let slot = inner.slots.get_mut(&this.id).expect("a waiter's slot lives until it is answered or cancelled");
        match slot.value.take() {
            Some(value) => {
                inner.slots.remove(&this.id);
                this.done = true;
                Poll::Ready(value)
            }
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl<T, D> Drop for Waiter<T, D> {
    fn drop(&mut self) {
        if !self.done {
            self.table.inner.lock().expect("pending lock").slots.remove(&self.id);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_bounded_and_forgets_cancelled_requests() {
        let table = Arc::new(PendingTable::<u32>::new(2));
        let first = PendingTable::register(&table, None).unwrap();
        let second = PendingTable::register(&table, None).unwrap();
        assert_eq!(PendingTable::register(&table, None).err(), Some(Full { limit: 2 }));
        assert!(table.complete(second.id(), 7));
        assert!(!table.complete(second.id(), 8), "answered once");
        assert_eq!(second.cancel(), Some(7), "the answer won the race");
        let id = first.id();
        drop(first);
        assert!(!table.complete(id, 9), "a dropped waiter takes no answer");
        assert!(table.is_empty());
    }

    #[test]
    fn expire_answers_due_waiters_in_order_and_only_once() {
        let table = Arc::new(PendingTable::<&str>::new(8));
        let unbounded = PendingTable::register(&table, None).unwrap();
        let early = PendingTable::register(&table, Some(10)).unwrap();
        let answered = PendingTable::register(&table, Some(10)).unwrap();
        let late = PendingTable::register(&table, Some(20)).unwrap();
        assert!(table.complete(answered.id(), "answer"));
        assert_eq!(table.expire(9, || "timed out"), 0, "nothing is due yet");
        assert_eq!(table.expire(10, || "timed out"), 1, "one due and unanswered; the answered keeps its answer");
        assert!(!table.complete(early.id(), "too late"), "an expired waiter takes no answer");
        assert_eq!(early.cancel(), Some("timed out"));
        assert_eq!(answered.cancel(), Some("answer"));
        assert_eq!(table.expire(10, || "timed out"), 0, "expired once");
        assert_eq!(table.expire(u64::MAX, || "timed out"), 1, "a waiter without a deadline never expires");
        assert_eq!(late.cancel(), Some("timed out"));
        assert_eq!(unbounded.cancel(), None);
        assert!(table.is_empty());
        // A deadline registered after a later one is raised to it, so the sweep's order holds.
        let later = PendingTable::register(&table, Some(40)).unwrap();
        let raised = PendingTable::register(&table, Some(30)).unwrap();
        assert_eq!(table.expire(35, || "timed out"), 0, "30 was raised to 40");
        assert_eq!(table.expire(40, || "timed out"), 2);
        assert_eq!((later.cancel(), raised.cancel()), (Some("timed out"), Some("timed out")));
    }
}
