//! One store for the shards of a process: a [`Committer`] shared by them.
//!
//! Each shard's broker numbers its batches from where its journal started
//! (from 1 after a restore into several shards); the store needs one
//! sequence. [`SharedCommitter::commit`] numbers each batch in the order
//! the shards hand them over and remembers whose it was, so that a commit
//! tells each shard, in its own numbering, how far it is durable, and
//! wakes only the shards it concerns.

use std::collections::VecDeque;
use std::sync::PoisonError;

use culex_core::persistence::StoreBatch;

use super::{Committer, Store};
use crate::sync::{Arc, Mutex, MutexGuard};

/// The store's numbers of the batches handed over and not yet durable,
/// and each shard's durable batch in its own numbering.
#[derive(Debug)]
struct Numbering {
    /// The store's number of the next batch.
    next: u64,
    /// Batches handed over and not yet durable: the store's number, the
    /// shard, the shard's number.
    pending: VecDeque<(u64, usize, u64)>,
    /// Each shard's last durable batch, in its numbering.
    durable: Vec<u64>,
}

impl Numbering {
    /// A numbering for `shards` shards, the store's last batch being
    /// `last`.
    fn new(shards: u16, last: u64) -> Self {
        Self { next: last + 1, pending: VecDeque::new(), durable: vec![0; usize::from(shards.max(1))] }
    }

    /// Gives shard `shard`'s `batch` the store's next number and hands it
    /// to `committer`, still under the lock of `numbering`: the store's
    /// numbers reach the committer in order whichever shards race.
    fn hand_over(numbering: &Mutex<Self>, shard: u16, mut batch: StoreBatch, committer: impl FnOnce(StoreBatch)) {
        let mut numbering = lock(numbering);
        let global = numbering.next;
        numbering.next += 1;
        numbering.pending.push_back((global, usize::from(shard), batch.seq));
        batch.seq = global;
        committer(batch);
    }

    /// Everything the store numbered up to `seq` is durable: the shards
    /// whose durable batch moved.
    fn durable_through(&mut self, seq: u64) -> Vec<usize> {
        let mut moved = Vec::new();
        while let Some(&(global, shard, local)) = self.pending.front() {
            if global > seq {
                break;
            }
            self.pending.pop_front();
            if let Some(durable) = self.durable.get_mut(shard) {
                *durable = local;
            }
            if !moved.contains(&shard) {
                moved.push(shard);
            }
        }
        moved
    }
}

/// A [`Committer`] the shards of a process hand their batches to (see
/// the [module](self)). With one shard it numbers batches as the shard
/// does.
#[derive(Debug)]
pub struct SharedCommitter {
    committer: Committer,
    numbering: Arc<Mutex<Numbering>>,
}

impl SharedCommitter {
    /// Starts the committer on `store` for `shards` shards; `wake(shard)`
    /// is called, from the committer's thread, when some of that shard's
    /// batches became durable.
    ///
    /// # Errors
    ///
    /// When the store's last batch cannot be read or the thread cannot be
    /// started.
    pub fn spawn(
        mut store: Box<dyn Store>,
        shards: u16,
        wake: impl Fn(u16) + Send + 'static,
    ) -> Result<Self, std::io::Error> {
        let last = store.last_batch().map_err(std::io::Error::other)?;
        let numbering = Arc::new(Mutex::new(Numbering::new(shards, last)));
        let notify = {
            let numbering = numbering.clone();
            Box::new(move |seq| {
                let moved = lock(&numbering).durable_through(seq);
                for shard in moved {
                    wake(u16::try_from(shard).unwrap_or(0));
                }
            })
        };
        let committer = Committer::spawn(store, notify)?;
        Ok(Self { committer, numbering })
    }

    /// Hands shard `shard`'s `batch` over, without waiting. A shard's
    /// batches must come in the order of its numbers.
    pub fn commit(&self, shard: u16, batch: StoreBatch) {
        Numbering::hand_over(&self.numbering, shard, batch, |batch| self.committer.commit(batch));
    }

    /// Shard `shard`'s last durable batch, in its numbering (0 before any).
    pub fn durable(&self, shard: u16) -> u64 {
        lock(&self.numbering).durable.get(usize::from(shard)).copied().unwrap_or(0)
    }

    /// The store's size on disk after its last commit.
    pub fn size(&self) -> Option<u64> {
        self.committer.size()
    }

    /// Commits what is pending and stops the thread: whether every batch
    /// handed over is durable (see [`Committer::shutdown`]).
    pub fn shutdown(self) -> bool {
        self.committer.shutdown()
    }
}

/// The numbering, locked. It is plain data left consistent at every
/// point, so a panic elsewhere does not spoil it.
fn lock(numbering: &Mutex<Numbering>) -> MutexGuard<'_, Numbering> {
    numbering.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(all(test, culex_loom))]
mod loom_shared {
    //! Two shards handing batches over at once to a committer thread
    //! that takes whatever is pending, "commits" it and reports it
    //! durable, on the real [`Handoff`](super::super::handoff::Handoff).
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::persist::handoff::Handoff;

    /// The store's numbers reach the committer in order, each batch once;
    /// a shard is never told a batch of its own is durable before the
    /// committer committed it, and both end told their last.
    #[test]
    fn racing_shards_reach_the_store_in_order() {
        loom::model(|| {
            let numbering = Arc::new(Mutex::new(Numbering::new(2, 0)));
            let handoff = Arc::new(Handoff::<StoreBatch>::default());
            let committed = Arc::new(Mutex::new(Vec::<u64>::new()));
            let shards: Vec<_> = (0..2u16)
                .map(|shard| {
                    let (numbering, handoff) = (numbering.clone(), handoff.clone());
                    loom::thread::spawn(move || {
                        for seq in 1..=2 {
                            let batch = StoreBatch { seq, ops: Vec::new() };
                            Numbering::hand_over(&numbering, shard, batch, |b| handoff.hand_over(b));
                        }
                    })
                })
                .collect();
            let consumer = loom::thread::spawn({
                let (numbering, handoff, committed) = (numbering.clone(), handoff.clone(), committed.clone());
                move || {
                    let mut group = Vec::new();
                    let mut seen = 0;
                    while seen < 4 {
                        handoff.take(&mut group);
                        for batch in group.drain(..) {
                            committed.lock().unwrap().push(batch.seq);
                            seen += 1;
                        }
                        let last = *committed.lock().unwrap().last().unwrap();
                        lock(&numbering).durable_through(last);
                    }
                }
            });
            for shard in shards {
                shard.join().unwrap();
            }
            handoff.request_stop();
            consumer.join().unwrap();
            assert_eq!(*committed.lock().unwrap(), [1, 2, 3, 4], "out of order or lost");
            assert_eq!(lock(&numbering).durable, [2, 2]);
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::mpsc;
    use std::time::Duration;

    use culex_core::persistence::Restore;

    use super::*;
    use crate::persist::StoreError;

    fn batch(seq: u64) -> StoreBatch {
        StoreBatch { seq, ops: Vec::new() }
    }

    /// A store that records the numbers of the batches it commits, after
    /// seven.
    #[derive(Debug, Clone, Default)]
    struct Numbers(Arc<Mutex<Vec<u64>>>);

    impl Store for Numbers {
        /// It holds nothing but the numbers it was given.
        fn replace(&mut self, _: &culex_core::persistence::StoredState) -> Result<(), StoreError> {
            Ok(())
        }

        fn load_into(&mut self, _: &mut dyn Restore) -> Result<(), StoreError> {
            Ok(())
        }

        fn last_batch(&mut self) -> Result<u64, StoreError> {
            Ok(7)
        }

        fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
            self.0.lock().unwrap().extend(batches.iter().map(|b| b.seq));
            Ok(())
        }

        fn size(&self) -> Option<u64> {
            None
        }
    }

    /// Two shards numbering their batches each from 1: the store gets
    /// one sequence after its last batch, and each shard hears of its own
    /// batches in its numbering.
    #[test]
    fn shards_batches_are_numbered_for_the_store_and_reported_to_each() {
        let store = Numbers::default();
        let (woken, wakes) = mpsc::channel();
        let shared = SharedCommitter::spawn(Box::new(store.clone()), 2, move |shard| {
            let _ = woken.send(shard);
        })
        .unwrap();
        shared.commit(0, batch(1));
        shared.commit(1, batch(1));
        shared.commit(0, batch(2));
        let mut seen = Vec::new();
        while seen.len() < 2 || shared.durable(0) < 2 || shared.durable(1) < 1 {
            seen.push(wakes.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        assert!(seen.contains(&0) && seen.contains(&1), "{seen:?}");
        assert!(shared.shutdown());
        assert_eq!(*store.0.lock().unwrap(), [8, 9, 10]);
    }
}
