//! The watch fan-out hub: a bounded, gap-free ring of sequenced items with per-subscriber cursors.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use crate::{Arc, Mutex};

/// Why a subscriber cannot read where its cursor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// The oldest sequence number still retained (the first a subscriber may read).
    pub oldest: u64,
}

/// Why a subscription was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscribeError {
    /// The start is no longer retained.
    Compacted(Compacted),
    /// `subscribers_max` subscriptions are open.
    TooManySubscribers {
        /// The limit.
        limit: usize,
    },
}

struct Inner<T> {
    /// Retained items; `items[0]` has sequence number `first`.
    items: VecDeque<T>,
    first: u64,
    items_max: usize,
    /// Parked subscribers by subscription id (a subscriber parks at most once).
    waiting: BTreeMap<u64, Waker>,
    subscribers: usize,
    subscribers_max: usize,
    next_id: u64,
}

impl<T> Inner<T> {
    /// Sequence number the next published item gets.
    fn next(&self) -> u64 {
        self.first + self.items.len() as u64
    }
}

/// A bounded ring of items numbered by consecutive sequence numbers (collective revisions),
/// read by any number of subscribers. `publish` never blocks on a subscriber: one that falls
/// more than `items_max` behind reads `Compacted` and must start over.
pub struct Hub<T> {
    inner: Mutex<Inner<T>>,
}

impl<T: Clone> Hub<T> {
    /// An empty hub whose first item will have sequence number `next`.
    pub fn new(next: u64, items_max: usize, subscribers_max: usize) -> Hub<T> {
        Hub {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                first: next,
                items_max: items_max.max(1),
                waiting: BTreeMap::new(),
                subscribers: 0,
                subscribers_max,
                next_id: 0,
            }),
        }
    }

    /// Appends items (numbered from the hub's next sequence number on), drops the oldest beyond
    /// `items_max`, and wakes every parked subscriber. Returns the next sequence number.
    pub fn publish(&self, items: impl IntoIterator<Item = T>) -> u64 {
        let (next, wake) = {
            let mut inner = self.inner.lock().expect("hub lock");
            inner.items.extend(items);
            while inner.items.len() > inner.items_max {
                inner.items.pop_front();
                inner.first += 1;
            }
            (inner.next(), std::mem::take(&mut inner.waiting))
        };
        // Woken outside the lock: a woken subscriber may run on another thread at once.
        for waker in wake.into_values() {
            waker.wake();
        }
        next
    }

    /// Forgets every item: the next one published has sequence number `next` (a snapshot
    /// replaced the state). Subscribers behind `next` read `Compacted`.
    pub fn reset(&self, next: u64) {
        let wake = {
            let mut inner = self.inner.lock().expect("hub lock");
            inner.items.clear();
            inner.first = next;
            std::mem::take(&mut inner.waiting)
        };
        for waker in wake.into_values() {
            waker.wake();
        }
    }

    /// The sequence number the next published item will get.
    pub fn next_sequence(&self) -> u64 {
        self.inner.lock().expect("hub lock").next()
    }

    /// Open subscriptions.
    pub fn subscribers(&self) -> usize {
        self.inner.lock().expect("hub lock").subscribers
    }

    /// Parked subscriptions (for tests: a dropped subscription leaves none behind).
    pub fn parked(&self) -> usize {
        self.inner.lock().expect("hub lock").waiting.len()
    }

    /// Items with sequence ≥ `from`, at most `limit`, without subscribing.
    pub fn read_from(&self, from: u64, limit: usize) -> Result<Vec<T>, Compacted> {
        let inner = self.inner.lock().expect("hub lock");
        read(&inner, from, limit)
    }

    /// A subscription reading from sequence `from` (`None`: from the next item published).
    /// (An associated function: loom's `Arc` cannot be a method receiver.)
    pub fn subscribe(hub: &Arc<Self>, from: Option<u64>) -> Result<Subscription<T>, SubscribeError> {
        let mut inner = hub.inner.lock().expect("hub lock");
        let cursor = from.unwrap_or_else(|| inner.next());
        if cursor < inner.first {
            return Err(SubscribeError::Compacted(Compacted { oldest: inner.first }));
        }
        if inner.subscribers >= inner.subscribers_max {
            return Err(SubscribeError::TooManySubscribers { limit: inner.subscribers_max });
        }
        inner.subscribers += 1;
        let id = inner.next_id;
        inner.next_id += 1;
        Ok(Subscription { hub: hub.clone(), id, cursor })
    }
}

fn read<T: Clone>(inner: &Inner<T>, from: u64, limit: usize) -> Result<Vec<T>, Compacted> {
    if from < inner.first {
        return Err(Compacted { oldest: inner.first });
    }
    let skip = (from - inner.first) as usize;
    Ok(inner.items.iter().skip(skip).take(limit).cloned().collect())
}

/// One subscriber's cursor. Dropping it unsubscribes.
pub struct Subscription<T> {
    hub: Arc<Hub<T>>,
    id: u64,
    cursor: u64,
}

impl<T: Clone> Subscription<T> {
    /// The sequence number of the next item this subscriber reads.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Waits for the next items (at most `limit`, at least one), in order and without gaps, or
    /// `Compacted` once the subscriber fell behind the ring.
    pub fn next_batch(&mut self, limit: usize) -> NextBatch<'_, T> {
        NextBatch { subscription: self, limit: limit.max(1) }
    }

    fn poll_batch(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Vec<T>, Compacted>> {
        let mut inner = self.hub.inner.lock().expect("hub lock");
        match read(&inner, self.cursor, limit) {
            Err(compacted) => {
                inner.waiting.remove(&self.id);
                Poll::Ready(Err(compacted))
            }
            Ok(items) if items.is_empty() => {
                // Checked and parked under one lock: a publish cannot slip in between.
                inner.waiting.insert(self.id, cx.waker().clone());
                Poll::Pending
            }
            Ok(items) => {
                inner.waiting.remove(&self.id);
                self.cursor += items.len() as u64;
                Poll::Ready(Ok(items))
            }
        }
    }
}

impl<T> Drop for Subscription<T> {
    fn drop(&mut self) {
        let mut inner = self.hub.inner.lock().expect("hub lock");
        inner.waiting.remove(&self.id);
        inner.subscribers -= 1;
    }
}

/// The future of [`Subscription::next_batch`].
pub struct NextBatch<'a, T> {
    subscription: &'a mut Subscription<T>,
    limit: usize,
}

impl<T: Clone> Future for NextBatch<'_, T> {
    type Output = Result<Vec<T>, Compacted>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.subscription.poll_batch(cx, this.limit)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_reads_in_order_and_a_slow_one_is_compacted() {
        let hub = Arc::new(Hub::new(1, 3, 2));
        let mut fast = Hub::subscribe(&hub, None).unwrap();
        let mut slow = Hub::subscribe(&hub, Some(1)).unwrap();
        assert_eq!(hub.publish([1, 2]), 3);
        let waker = futures_task_noop();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(fast.poll_batch(&mut cx, 10), Poll::Ready(Ok(vec![1, 2])));
        assert_eq!(fast.poll_batch(&mut cx, 10), Poll::Pending);
        assert_eq!(hub.parked(), 1);
        hub.publish([3, 4, 5]);
        assert_eq!(hub.parked(), 0, "publish wakes and unparks");
        assert_eq!(fast.poll_batch(&mut cx, 2), Poll::Ready(Ok(vec![3, 4])));
        assert_eq!(slow.poll_batch(&mut cx, 10), Poll::Ready(Err(Compacted { oldest: 3 })));
        assert_eq!(Hub::subscribe(&hub, None).err(), Some(SubscribeError::TooManySubscribers { limit: 2 }));
        drop(slow);
        assert_eq!(Hub::subscribe(&hub, Some(2)).err(), Some(SubscribeError::Compacted(Compacted { oldest: 3 })));
        hub.reset(10);
        assert_eq!(fast.poll_batch(&mut cx, 10), Poll::Ready(Err(Compacted { oldest: 10 })));
        drop(fast);
        assert_eq!((hub.subscribers(), hub.parked()), (0, 0));
    }

    fn futures_task_noop() -> Waker {
        struct Noop;
        impl std::task::Wake for Noop {
            fn wake(self: std::sync::Arc<Self>) {}
        }
        Waker::from(std::sync::Arc::new(Noop))
    }
}
