//! The pending-request table: callers wait for an answer another task delivers by id. The
//! answer races the caller giving up (its deadline, or its request being dropped): exactly one
//! wins, the caller learns which, and no entry outlives both.

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

struct Slot<T> {
    value: Option<T>,
    waker: Option<Waker>,
}

struct Inner<T> {
    slots: BTreeMap<u64, Slot<T>>,
    next_id: u64,
    limit: usize,
}

/// Requests waiting for answers, at most `limit` at once.
pub struct PendingTable<T> {
    inner: Mutex<Inner<T>>,
}

impl<T> PendingTable<T> {
    /// An empty table holding at most `limit` entries.
    pub fn new(limit: usize) -> PendingTable<T> {
        PendingTable { inner: Mutex::new(Inner { slots: BTreeMap::new(), next_id: 0, limit }) }
    }

    /// Registers a request; its id is how the answer finds the waiter.
    /// (An associated function: loom's `Arc` cannot be a method receiver.)
    pub fn register(table: &Arc<Self>) -> Result<Waiter<T>, Full> {
        let mut inner = table.inner.lock().expect("pending lock");
        if inner.slots.len() >= inner.limit {
            return Err(Full { limit: inner.limit });
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.slots.insert(id, Slot { value: None, waker: None });
        Ok(Waiter { table: table.clone(), id, done: false })
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
pub struct Waiter<T> {
    table: Arc<PendingTable<T>>,
    id: u64,
    done: bool,
}

impl<T> Waiter<T> {
    /// The id the answering task completes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Gives up. Returns the answer if it arrived first: then the request did complete, and the
    /// caller must report that answer rather than a timeout.
    pub fn cancel(mut self) -> Option<T> {
        self.done = true;
        self.table.inner.lock().expect("pending lock").slots.remove(&self.id).and_then(|slot| slot.value)
    }
}

impl<T> Future for Waiter<T> {
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

impl<T> Drop for Waiter<T> {
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
        let first = PendingTable::register(&table).unwrap();
        let second = PendingTable::register(&table).unwrap();
        assert_eq!(PendingTable::register(&table).err(), Some(Full { limit: 2 }));
        assert!(table.complete(second.id(), 7));
        assert!(!table.complete(second.id(), 8), "answered once");
        assert_eq!(second.cancel(), Some(7), "the answer won the race");
        let id = first.id();
        drop(first);
        assert!(!table.complete(id, 9), "a dropped waiter takes no answer");
        assert!(table.is_empty());
    }
}
