//! The committer: a thread that owns the store and makes batches durable,
//! several at a time.
//!
//! Commits block on `fdatasync`, so they run on a plain thread, never on
//! the runtime's executor. The broker task hands batches over without
//! waiting ([`Committer::commit`]); the thread takes everything that has
//! piled up, commits it in one transaction and reports the last sequence
//! number through the callback. While one commit runs the next batches
//! gather: the busier the broker, the more batches share one sync.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use culex_core::persistence::StoreBatch;
use tracing::{error, info};

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

/// Batches handed over and not yet taken by the thread.
#[derive(Debug, Default)]
struct Queue {
    pending: Vec<StoreBatch>,
    stop: bool,
}

/// `u64::MAX` stands for "size unknown" (a store in memory).
const UNKNOWN_SIZE: u64 = u64::MAX;

#[derive(Debug)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    durable: AtomicU64,
    size: AtomicU64,
    commits: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The lock guards plain data, left consistent at every point.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
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
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            durable: AtomicU64::new(0),
            size: AtomicU64::new(store.size().unwrap_or(UNKNOWN_SIZE)),
            commits: AtomicU64::new(0),
        });
        let thread = std::thread::Builder::new().name("culex-store".into()).spawn({
            let shared = shared.clone();
            move || run(store, &notify, &shared, options)
        })?;
        Ok(Self { shared, thread: Some(thread) })
    }

    /// Hands a batch over, without waiting. Batches must come in the order
    /// of their sequence numbers.
    pub fn commit(&self, batch: StoreBatch) {
        let mut queue = self.shared.lock();
        queue.pending.push(batch);
        // Only the committer thread waits on it.
        self.shared.wake.notify_one();
    }

    /// The sequence number of the last batch known durable, 0 before any.
    pub fn durable(&self) -> u64 {
        self.shared.durable.load(Ordering::Acquire)
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
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
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
        {
            let mut queue = shared.lock();
            while queue.pending.is_empty() && group.is_empty() && !queue.stop {
                queue = shared.wake.wait(queue).unwrap_or_else(PoisonError::into_inner);
            }
            group.append(&mut queue.pending);
            if queue.stop && stop_at.is_none() {
                stop_at = Some(Instant::now() + options.shutdown_grace);
            }
        }
        let Some(last) = group.last().map(|b| b.seq) else { return true };
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
                group.clear();
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.durable.store(last, Ordering::Release);
                shared.size.store(store.size().unwrap_or(UNKNOWN_SIZE), Ordering::Relaxed);
                notify(last);
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
                wait_until(shared, retry_at, stop_at);
            }
        }
    }
}

/// Sleeps until `at`, or until a shutdown is requested (then until
/// `at` or `stop_at`, whichever comes first, when that is known). New
/// batches do not cut it short: they join the group being retried.
fn wait_until(shared: &Shared, at: Instant, stop_at: Option<Instant>) {
    let mut queue = shared.lock();
    loop {
        let deadline = if queue.stop { stop_at.map_or(at, |s| s.min(at)) } else { at };
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        queue = shared.wake.wait_timeout(queue, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        if queue.stop && stop_at.is_none() {
            // A shutdown arrived during the wait: retry now, the loop sets
            // its deadline.
            return;
        }
    }
}
