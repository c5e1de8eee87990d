//! loom models of the hub and the pending table: every interleaving of the threads below is
//! explored. Run with `RUSTFLAGS="--cfg loom --cfg tokio_unstable" cargo test -p collective-sync --test loom --release`
//! (`deploy/test.sh` does, in its own target directory so the main build is not invalidated).
#![cfg(loom)]

use collective_sync::hub::{Compacted, Hub};
use collective_sync::pending::PendingTable;
use loom::sync::Arc;
use loom::thread;

/// A subscriber parked on an empty hub is woken by a concurrent publish and reads every item
/// in order: no lost wakeup, no gap, no duplicate.
#[test]
fn publish_wakes_a_parked_subscriber() {
    loom::model(|| {
        let hub = Arc::new(Hub::new(1, 8, 4));
        let mut subscription = Hub::subscribe(&hub, Some(1)).unwrap();
        let publisher = {
            let hub = hub.clone();
            thread::spawn(move || {
                hub.publish([1u64]);
                hub.publish([2u64]);
            })
        };
        let mut seen = Vec::new();
        while seen.len() < 2 {
            let batch = loom::future::block_on(subscription.next_batch(8)).expect("nothing is compacted");
            seen.extend(batch);
        }
        publisher.join().unwrap();
        assert_eq!(seen, vec![1, 2]);
        drop(subscription);
        assert_eq!((hub.subscribers(), hub.parked()), (0, 0));
    });
}

/// A slow subscriber with a one-item ring either reads items in order without gaps or learns
/// it was compacted; the publisher never waits for it.
#[test]
fn a_slow_subscriber_is_compacted_never_skipped() {
    loom::model(|| {
        let hub = Arc::new(Hub::new(1, 1, 4));
        let mut subscription = Hub::subscribe(&hub, Some(1)).unwrap();
        let publisher = {
            let hub = hub.clone();
            thread::spawn(move || {
                hub.publish([1u64]);
                hub.publish([2u64]);
            })
        };
        let mut seen = Vec::new();
        let outcome = loop {
            match loom::future::block_on(subscription.next_batch(8)) {
                Ok(batch) => {
                    seen.extend(batch);
                    if seen.last() == Some(&2) {
                        break Ok(());
                    }
                }
                Err(compacted) => break Err(compacted),
            }
        };
        publisher.join().unwrap();
        match outcome {
            Ok(()) => assert_eq!(seen, vec![1, 2], "in order, no gap"),
            Err(Compacted { oldest }) => {
                assert_eq!(oldest, 2);
                assert!(seen.is_empty(), "compacted only before reading 1: {seen:?}");
            }
        }
    });
}

/// Unsubscribing (dropping the subscription) while a publish runs leaves nothing parked.
#[test]
fn unsubscribe_races_publish() {
    loom::model(|| {
        let hub = Arc::new(Hub::new(1, 4, 4));
        let subscription = Hub::subscribe(&hub, None).unwrap();
        let publisher = {
            let hub = hub.clone();
            thread::spawn(move || {
                hub.publish([1u64]);
            })
        };
        drop(subscription);
        publisher.join().unwrap();
        assert_eq!((hub.subscribers(), hub.parked()), (0, 0));
        assert_eq!(hub.read_from(1, 8), Ok(vec![1]));
    });
}

/// An answer racing the waiter's cancellation: exactly one side wins and the table is empty.
#[test]
fn an_answer_races_its_timeout() {
    loom::model(|| {
        let table = Arc::new(PendingTable::<u32>::new(4));
        let waiter = PendingTable::register(&table, None).unwrap();
        let id = waiter.id();
        let answer = {
            let table = table.clone();
            thread::spawn(move || table.complete(id, 7))
        };
        let taken = waiter.cancel();
        let delivered = answer.join().unwrap();
        assert_eq!(delivered, taken == Some(7), "the answer was delivered iff the waiter took it");
        assert!(table.is_empty());
    });
}

/// A waiter parked on its answer is woken by the answering thread.
#[test]
fn a_parked_waiter_gets_its_answer() {
    loom::model(|| {
        let table = Arc::new(PendingTable::<u32>::new(4));
        let waiter = PendingTable::register(&table, None).unwrap();
        let id = waiter.id();
        let answer = {
            let table = table.clone();
            thread::spawn(move || assert!(table.complete(id, 7)))
        };
        assert_eq!(loom::future::block_on(waiter), 7);
        answer.join().unwrap();
        assert!(table.is_empty());
    });
}

/// The table's own deadline racing the answer, with the waiter parked: the waiter is woken with
/// exactly one of them, and the answer was delivered iff it is what the waiter got.
#[test]
fn an_answer_races_the_table_deadline() {
    loom::model(|| {
        let table = Arc::new(PendingTable::<u32>::new(4));
        let waiter = PendingTable::register(&table, Some(5)).unwrap();
        let id = waiter.id();
        let answer = {
            let table = table.clone();
            thread::spawn(move || table.complete(id, 7))
        };
        let sweeper = {
            let table = table.clone();
            thread::spawn(move || table.expire(5, || 0))
        };
        let got = loom::future::block_on(waiter);
        let delivered = answer.join().unwrap();
        let expired = sweeper.join().unwrap();
        assert_eq!(delivered, got == 7, "the answer was delivered iff the waiter got it");
        assert_eq!(expired == 1, got == 0, "the sweep answered iff the waiter got the timeout");
        assert!(table.is_empty());
    });
}
