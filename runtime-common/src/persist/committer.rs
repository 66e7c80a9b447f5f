//! The committer: a thread that owns the store and makes batches durable,
//! several at a time.
//!
//! Commits block on `fdatasync`, so they run on a plain thread, never on
//! the runtime's executor. The broker task hands batches over without
//! waiting ([`Committer::commit`]); the thread takes everything that has
//! piled up, commits it in one transaction and reports the last sequence
//! number through the callback. While one commit runs the next batches
//! gather: the busier the broker, the more batches share one sync. What
//! the two share is a [`Handoff`], model-checked with loom.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use culex_core::persistence::StoreBatch;
use tracing::{error, info, warn};

use super::handoff::Handoff;
use super::{Store, panic_text};

/// How the committer retries and how long it tries at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitterOptions {
    /// Wait before the first retry of a failed commit; doubled at each
    /// failure up to `max_retry`.
    pub first_retry: Duration,
    /// The longest wait between retries.
    pub max_retry: Duration,
    /// At shutdown, how long to keep retrying a failing commit before
    /// giving up on what is pending.
    pub shutdown_grace: Duration,
}

impl Default for CommitterOptions {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_millis(50),
            max_retry: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// The callback told "every batch up to this sequence number is durable",
/// from the committer's thread.
pub type Notify = Box<dyn Fn(u64) + Send>;

/// `u64::MAX` stands for "size unknown" (a store in memory).
const UNKNOWN_SIZE: u64 = u64::MAX;

/// What the broker task and the thread share: the hand-off, and figures
/// for reports (plain std atomics, outside the loom models: nothing waits
/// on them or orders anything by them).
#[derive(Debug)]
struct Shared {
    handoff: Handoff<StoreBatch>,
    size: AtomicU64,
    commits: AtomicU64,
}

impl Shared {
    fn new(size: Option<u64>) -> Self {
        Self {
            handoff: Handoff::default(),
            size: AtomicU64::new(size.unwrap_or(UNKNOWN_SIZE)),
            commits: AtomicU64::new(0),
        }
    }
}

/// Owns a [`Store`] on a thread and commits the batches handed to it,
/// grouping those that pile up during a commit (see the
/// [persist](super) module). Dropping it shuts it down as
/// [`shutdown`](Self::shutdown) does.
pub struct Committer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<bool>>,
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer").field("durable", &self.durable()).field("size", &self.size()).finish()
    }
}

impl Committer {
    /// Starts the thread, with the default [`CommitterOptions`]. `notify`
    /// is called, from that thread, with the sequence number of the last
    /// batch of each successful commit.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn(store: Box<dyn Store>, notify: Notify) -> std::io::Result<Self> {
        Self::spawn_with(store, notify, CommitterOptions::default())
    }

    /// [`spawn`](Self::spawn), with `options`.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn spawn_with(store: Box<dyn Store>, notify: Notify, options: CommitterOptions) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::new(store.size()));
        let thread = std::thread::Builder::new().name("culex-store".into()).spawn({
            let shared = shared.clone();
            move || run(store, &notify, &shared, options)
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Hands a batch over, without waiting. Batches must come in the order
    /// of their sequence numbers.
    pub fn commit(&self, batch: StoreBatch) {
        self.shared.handoff.hand_over(batch);
    }

    /// The sequence number of the last batch known durable, 0 before any.
    pub fn durable(&self) -> u64 {
        self.shared.handoff.durable()
    }

    /// The store's size on disk after its last commit (for the SIGUSR1
    /// report, "store is current, N bytes"); `None` for a store in memory.
    pub fn size(&self) -> Option<u64> {
        Some(self.shared.size.load(Ordering::Relaxed)).filter(|&n| n != UNKNOWN_SIZE)
    }

    /// How many transactions were committed.
    pub fn commits(&self) -> u64 {
        self.shared.commits.load(Ordering::Relaxed)
    }

    /// Commits what is pending, stops the thread and returns whether every
    /// batch handed over is durable. A failing store is retried for
    /// [`CommitterOptions::shutdown_grace`], then given up on (logged).
    pub fn shutdown(mut self) -> bool {
        self.stop()
    }

    fn stop(&mut self) -> bool {
        let Some(thread) = self.thread.take() else { return true };
        self.shared.handoff.request_stop();
        thread.join().unwrap_or(false)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A commit that keeps failing: logged once when it starts and once when
/// it ends.
#[derive(Debug)]
struct Failing {
    since: Instant,
    attempts: u32,
    retry_in: Duration,
}

/// The thread: returns whether it stopped with nothing pending.
fn run(mut store: Box<dyn Store>, notify: &Notify, shared: &Shared, options: CommitterOptions) -> bool {
    let mut group: Vec<StoreBatch> = Vec::new();
    let mut failing: Option<Failing> = None;
    let mut stop_at: Option<Instant> = None;
    loop {
        if shared.handoff.take(&mut group) && stop_at.is_none() {
            stop_at = Some(Instant::now() + options.shutdown_grace);
        }
        let Some(last) = group.last().map(|b| b.seq) else {
            // Stopping with everything durable.
            if let Err(e) = store.close() {
                warn!("Closing the store failed; what it holds is durable and is read at the next start: {e}");
            }
            return true;
        };
        let result = panic::catch_unwind(AssertUnwindSafe(|| store.commit(&group)))
            .unwrap_or_else(|payload| Err(super::StoreError::Panic(panic_text(&*payload))));
        match result {
            Ok(()) => {
                if let Some(f) = failing.take() {
                    info!(
                        "The store accepts commits again after {} failed attempts over {:.1} s; batches up to {last} \
                         are durable.",
                        f.attempts,
                        f.since.elapsed().as_secs_f64()
                    );
                }
                shared.handoff.publish_durable(last);
                notify(last);
                // Acknowledgements first, then what may take longer.
                group.clear();
                shared.commits.fetch_add(1, Ordering::Relaxed);
                store.tidy();
                shared.size.store(store.size().unwrap_or(UNKNOWN_SIZE), Ordering::Relaxed);
            }
            Err(e) => {
                let f = failing.get_or_insert_with(|| {
                    error!(
                        "Cannot commit to the store: {e}. Nothing more is acknowledged as durable until a commit \
                         succeeds; retrying."
                    );
                    Failing { since: Instant::now(), attempts: 0, retry_in: options.first_retry }
                });
                f.attempts = f.attempts.saturating_add(1);
                let retry_at = Instant::now() + f.retry_in;
                f.retry_in = (f.retry_in * 2).min(options.max_retry);
                if let Some(stop_at) = stop_at
                    && retry_at > stop_at
                {
                    error!(
                        "Shutting down with {} batches not durable (up to {last}): the store still fails: {e}.",
                        group.len()
                    );
                    return false;
                }
                shared.handoff.sleep_until(retry_at, stop_at);
            }
        }
    }
}

#[cfg(all(test, culex_loom))]
mod loom_committer {
    //! The committer's own loop ([`run`]) on a [`Handoff`] model-checked by
    //! loom, with a store that records what it is asked to commit.
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex as Record;

    use culex_core::persistence::Restore;

    use super::*;
    use crate::persist::StoreError;
    use crate::sync::{Arc, Mutex};

    /// Every commit attempt (successful or not) and what was told, under
    /// plain std locks the model does not explore, and every batch
    /// committed, under a loom lock: the broker side may read it between
    /// any two steps of the thread, a durable published too early shows.
    #[derive(Debug, Default)]
    struct Log {
        attempts: Record<Vec<Vec<u64>>>,
        committed: Mutex<Vec<u64>>,
        told: Record<Vec<u64>>,
    }

    #[derive(Debug)]
    struct Recorder {
        log: Arc<Log>,
        fail_first: bool,
    }

    impl Store for Recorder {
        /// It holds nothing (it gives nothing to load either).
        fn replace(&mut self, _: &culex_core::persistence::StoredState) -> Result<(), StoreError> {
            Ok(())
        }

        fn load_into(&mut self, _: &mut dyn Restore) -> Result<(), StoreError> {
            Ok(())
        }

        fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
            self.log.attempts.lock().unwrap().push(batches.iter().map(|b| b.seq).collect());
            if std::mem::take(&mut self.fail_first) {
                return Err(StoreError::Decode { table: "test", detail: "the disk is full".into() });
            }
            self.log.committed.lock().unwrap().extend(batches.iter().map(|b| b.seq));
            Ok(())
        }

        fn size(&self) -> Option<u64> {
            None
        }
    }

    /// Starts [`run`] on a loom thread, the broker side hands batches
    /// 1..=`n` over, reading durable after each (never past what the store
    /// committed, never back), then stops it. Returns what `run` returned
    /// and the log.
    fn broker(n: u64, fail_first: bool, options: CommitterOptions) -> (bool, Arc<Log>, u64) {
        let shared = Arc::new(Shared::new(None));
        let log = Arc::new(Log::default());
        let thread = loom::thread::spawn({
            let (shared, log) = (shared.clone(), log.clone());
            move || {
                let store = Recorder { log: log.clone(), fail_first };
                run(
                    Box::new(store),
                    &(Box::new(move |seq| log.told.lock().unwrap().push(seq)) as Notify),
                    &shared,
                    options,
                )
            }
        });
        let mut seen = 0;
        for seq in 1..=n {
            shared.handoff.hand_over(StoreBatch { seq, ops: Vec::new() });
            let durable = shared.handoff.durable();
            let committed = log.committed.lock().unwrap().last().copied().unwrap_or(0);
            assert!(durable <= committed, "durable {durable} passes what was committed ({committed})");
            assert!(durable >= seen, "durable moved back from {seen} to {durable}");
            seen = durable;
        }
        shared.handoff.request_stop();
        let clean = thread.join().unwrap();
        let told = log.told.lock().unwrap().clone();
        assert!(told.windows(2).all(|w| w[0] < w[1]), "told out of order: {told:?}");
        assert_eq!(shared.commits.load(Ordering::Relaxed), told.len() as u64);
        (clean, log, shared.handoff.durable())
    }

    /// A store that never fails: every batch committed once, in order,
    /// before the thread ends, and durable (and the last notification)
    /// at the last one.
    #[test]
    fn commits_everything_before_stopping() {
        loom::model(|| {
            let (clean, log, durable) = broker(3, false, CommitterOptions::default());
            assert!(clean);
            assert_eq!(*log.committed.lock().unwrap(), [1, 2, 3]);
            assert_eq!(durable, 3);
            assert_eq!(log.told.lock().unwrap().last(), Some(&3));
        });
    }

    /// A store whose first commit fails, a retry an hour away (loom's
    /// timed waits never time out: only a hand-over or the stop wakes the
    /// thread) and no shutdown grace: when the thread saw the stop before
    /// the failure it gives up at once with nothing durable; otherwise the
    /// stop, whenever it comes, makes it retry at once and commit
    /// everything, each batch once, in order.
    #[test]
    fn a_failed_commit_is_retried_at_the_stop() {
        let options = CommitterOptions {
            first_retry: Duration::from_secs(3600),
            max_retry: Duration::from_secs(3600),
            shutdown_grace: Duration::ZERO,
        };
        loom::model(move || {
            let (clean, log, durable) = broker(2, true, options);
            if clean {
                assert_eq!(*log.committed.lock().unwrap(), [1, 2]);
                assert_eq!(durable, 2);
            } else {
                assert_eq!(*log.attempts.lock().unwrap(), [vec![1, 2]], "gave up after the first failure only");
                assert!(log.committed.lock().unwrap().is_empty());
                assert_eq!(durable, 0);
            }
        });
    }
}
