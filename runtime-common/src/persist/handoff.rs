//! What the broker task and the committer's thread share: the batches
//! handed over and not yet taken, the stop request, and "durable up to
//! seq".
//!
//! The broker task [hands batches over](Handoff::hand_over) and reads
//! [`durable`](Handoff::durable) without waiting for the thread; the
//! thread [takes](Handoff::take) everything pending (sleeping while there
//! is nothing and no stop), commits it, then
//! [publishes](Handoff::publish_durable) the last sequence number.
//!
//! Built on [`crate::sync`], so its loom models (`loom_handoff` here,
//! `loom_committer` in the committer) check every interleaving: no item lost
//! or taken twice, order kept, no lost wake-up (the thread never sleeps with
//! an item pending unless stopping), a stop requested with items pending
//! lets the thread take them, and durable only moves forward.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::sync::{AtomicU64, Condvar, Mutex, MutexGuard};

/// Items handed over and not yet taken, and whether a stop was requested.
#[derive(Debug)]
struct Queue<T> {
    pending: Vec<T>,
    stop: bool,
}

/// The hand-off between one producer (the broker task) and one consumer
/// (the committer's thread); see the [module](self).
#[derive(Debug)]
pub(super) struct Handoff<T> {
    queue: Mutex<Queue<T>>,
    /// Only the consumer waits on it.
    wake: Condvar,
    durable: AtomicU64,
}

impl<T> Default for Handoff<T> {
    fn default() -> Self {
        Self {
            queue: Mutex::new(Queue { pending: Vec::new(), stop: false }),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
        }
    }
}

impl<T> Handoff<T> {
    fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        // The lock guards plain data, left consistent at every point.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Producer: hands `item` over, without waiting. Items are taken in
    /// the order they are handed over.
    pub(super) fn hand_over(&self, item: T) {
        let mut queue = self.lock();
        queue.pending.push(item);
        self.wake.notify_one();
    }

    /// Producer: asks the consumer to stop once it has taken what is
    /// pending.
    pub(super) fn request_stop(&self) {
        let mut queue = self.lock();
        queue.stop = true;
        self.wake.notify_one();
    }

    /// Consumer: appends everything pending to `group`, in order. When
    /// `group` is empty and nothing is pending, first sleeps until
    /// something is handed over or a stop is requested (a `group` still
    /// to be committed never waits). Returns whether a stop was requested:
    /// with `group` still empty, it is time to end.
    pub(super) fn take(&self, group: &mut Vec<T>) -> bool {
        let mut queue = self.lock();
        while queue.pending.is_empty() && group.is_empty() && !queue.stop {
            queue = self.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
        }
        group.append(&mut queue.pending);
        queue.stop
    }

    /// Consumer: sleeps until `at`, or until a stop is requested (then
    /// until `at` or `stop_at`, whichever comes first, once the consumer
    /// knows `stop_at`). Items handed over meanwhile do not cut it short:
    /// the consumer takes them when it wakes.
    ///
    /// A stop requested while the consumer was busy (its notification
    /// woke nobody) ends the sleep at once, as one arriving during it
    /// does: the consumer learns of it only from [`take`](Self::take), so
    /// `stop_at` is `None` until then.
    ///
    /// Under loom the timeout never fires (loom's `wait_timeout` waits for
    /// a notification): the models see a timer slower than anything else,
    /// so they check that a stop wakes the consumer by itself.
    pub(super) fn sleep_until(&self, at: Instant, stop_at: Option<Instant>) {
        let mut queue = self.lock();
        loop {
            if queue.stop && stop_at.is_none() {
                // Go back to `take`, which reports the stop.
                return;
            }
            let deadline = if queue.stop { stop_at.map_or(at, |s| s.min(at)) } else { at };
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            queue = self.wake.wait_timeout(queue, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
    }

    /// Consumer: everything up to `seq` is durable. Never moves durable
    /// back.
    pub(super) fn publish_durable(&self, seq: u64) {
        let before = self.durable.fetch_max(seq, Ordering::Release);
        debug_assert!(before <= seq, "durable moved back from {before} to {seq}");
    }

    /// The last sequence number published durable, 0 before any.
    pub(super) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }
}

#[cfg(all(test, culex_loom))]
mod loom_handoff {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sync::Arc;

    /// What the consumer committed, under a loom lock: the producer may
    /// read it between any two steps of the consumer.
    type Record = Mutex<Vec<u64>>;

    /// The consumer of the models: takes, "commits" (records), publishes,
    /// until a stop with nothing left. `notify` runs after each publish.
    fn consume(handoff: &Handoff<u64>, committed: &Record, notify: impl Fn()) {
        let mut group = Vec::new();
        loop {
            let stop = handoff.take(&mut group);
            let Some(&last) = group.last() else {
                assert!(stop, "take returned nothing without a stop");
                return;
            };
            committed.lock().unwrap().extend(group.drain(..));
            handoff.publish_durable(last);
            notify();
        }
    }

    /// What the producer reads: durable, which must not pass what was
    /// committed at that time and must not move back from `seen`.
    fn read_durable(handoff: &Handoff<u64>, committed: &Record, seen: &mut u64) -> u64 {
        let durable = handoff.durable();
        let last = committed.lock().unwrap().last().copied().unwrap_or(0);
        assert!(durable <= last, "durable {durable} passes what was committed ({last})");
        assert!(durable >= *seen, "durable moved back from {seen} to {durable}");
        *seen = durable;
        durable
    }

    /// Three items handed over with durable read between them, then an
    /// immediate stop: each item committed once, in order, before the
    /// consumer ends, whichever of them were still pending at the stop.
    #[test]
    fn stop_with_items_pending() {
        loom::model(|| {
            let handoff = Arc::new(Handoff::default());
            let committed = Arc::new(Record::default());
            let consumer = loom::thread::spawn({
                let (handoff, committed) = (handoff.clone(), committed.clone());
                move || consume(&handoff, &committed, || ())
            });
            let mut seen = 0;
            for seq in 1..=3 {
                handoff.hand_over(seq);
                read_durable(&handoff, &committed, &mut seen);
            }
            handoff.request_stop();
            consumer.join().unwrap();
            assert_eq!(*committed.lock().unwrap(), [1, 2, 3]);
            assert_eq!(read_durable(&handoff, &committed, &mut seen), 3);
        });
    }

    /// The producer hands two items over, then waits, as the broker task
    /// does, for the consumer's notification and reads durable until both
    /// are durable; only then does it stop the consumer. A lost wake-up
    /// would leave both asleep: loom reports the deadlock.
    #[test]
    fn no_lost_wake_up() {
        loom::model(|| {
            let handoff = Arc::new(Handoff::default());
            let committed = Arc::new(Record::default());
            let told = Arc::new(loom::sync::Notify::new());
            let consumer = loom::thread::spawn({
                let (handoff, committed, told) = (handoff.clone(), committed.clone(), told.clone());
                move || consume(&handoff, &committed, || told.notify())
            });
            let mut seen = 0;
            handoff.hand_over(1);
            handoff.hand_over(2);
            while read_durable(&handoff, &committed, &mut seen) < 2 {
                told.wait();
            }
            handoff.request_stop();
            consumer.join().unwrap();
            assert_eq!(*committed.lock().unwrap(), [1, 2]);
        });
    }
}
