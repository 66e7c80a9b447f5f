//! The committer: in order, grouped, never durable on failure.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use culex_core::persistence::{Restore, StoreBatch, StoreOp, StoredState};
use culex_core::{ClientId, QoS, TopicFilter};

use super::TempDir;
use super::sim_disk::SimDisk;
use crate::persist::{Committer, CommitterOptions, MemStore, Notify, RedbStore, Store, StoreError};

/// A store in memory that records its commits, can be slow, and fails
/// while told to.
#[derive(Debug, Clone, Default)]
struct Probe {
    state: Arc<Mutex<MemStore>>,
    groups: Arc<Mutex<Vec<Vec<u64>>>>,
    delay: Duration,
    failing: Arc<AtomicBool>,
}

impl Store for Probe {
    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.state.lock().unwrap().replace(state)
    }

    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.state.lock().unwrap().load_into(sink)
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        std::thread::sleep(self.delay);
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Decode { table: "test", detail: "the disk is full".into() });
        }
        self.groups.lock().unwrap().push(batches.iter().map(|b| b.seq).collect());
        self.state.lock().unwrap().commit(batches)
    }

    fn size(&self) -> Option<u64> {
        None
    }
}

fn batch(seq: u64) -> StoreBatch {
    let client = ClientId::new(format!("c{}", seq % 3));
    let ops = vec![
        StoreOp::Session { client: client.clone(), username: None, offline_since: Some(seq), epoch: 0 },
        StoreOp::Subscribe { client, filter: TopicFilter::new(format!("t/{seq}")).unwrap(), qos: QoS::AtLeastOnce },
    ];
    StoreBatch { seq, ops }
}

/// A notify callback and what it was told.
fn reports() -> (Arc<Mutex<Vec<u64>>>, Notify) {
    let told = Arc::new(Mutex::new(Vec::new()));
    let sink = told.clone();
    (told, Box::new(move |seq| sink.lock().unwrap().push(seq)))
}

/// Waits (bounded) until `done` holds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn fast() -> CommitterOptions {
    CommitterOptions {
        first_retry: Duration::from_millis(5),
        max_retry: Duration::from_millis(20),
        shutdown_grace: Duration::from_millis(100),
    }
}

#[test]
fn persist_committer_reports_in_order_and_groups() {
    let probe = Probe { delay: Duration::from_millis(10), ..Probe::default() };
    let (told, notify) = reports();
    let committer = Committer::spawn_with(Box::new(probe.clone()), notify, fast()).unwrap();
    for seq in 1..=60 {
        committer.commit(batch(seq));
        if seq % 20 == 0 {
            std::thread::sleep(Duration::from_millis(15));
        }
    }
    assert!(committer.shutdown(), "everything was committed");
    let groups = probe.groups.lock().unwrap().clone();
    let told = told.lock().unwrap().clone();
    // Every batch once, in order, and reported as the last of its group.
    assert_eq!(groups.concat(), (1..=60).collect::<Vec<_>>());
    assert_eq!(told, groups.iter().map(|g| *g.last().unwrap()).collect::<Vec<_>>());
    assert!(groups.len() < 20, "batches that pile up during a commit share the next: {groups:?}");
    let mut expected = StoredState::default();
    (1..=60).for_each(|seq| expected.apply_batch(&batch(seq)));
    assert_eq!(probe.state.lock().unwrap().state(), &expected);
}

#[test]
fn persist_committer_never_reports_a_failing_commit() {
    let probe = Probe::default();
    probe.failing.store(true, Ordering::SeqCst);
    let (told, notify) = reports();
    let committer = Committer::spawn_with(Box::new(probe.clone()), notify, fast()).unwrap();
    for seq in 1..=5 {
        committer.commit(batch(seq));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(told.lock().unwrap().is_empty());
    assert_eq!(committer.durable(), 0);
    // The disk recovers: everything pending, and what came meanwhile, is
    // committed and reported.
    committer.commit(batch(6));
    probe.failing.store(false, Ordering::SeqCst);
    wait_for("the retry", || committer.durable() == 6);
    // Batch 6 joins the retried group, or follows it if that group was
    // taken just before batch 6 came.
    let told = told.lock().unwrap().clone();
    assert!(told == [6] || told == [5, 6], "{told:?}");
    assert!(committer.shutdown());
}

#[test]
fn persist_committer_gives_up_at_shutdown_on_a_failing_store() {
    let probe = Probe::default();
    probe.failing.store(true, Ordering::SeqCst);
    let (told, notify) = reports();
    let committer = Committer::spawn_with(Box::new(probe), notify, fast()).unwrap();
    committer.commit(batch(1));
    let started = Instant::now();
    assert!(!committer.shutdown(), "a batch was not committed");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(told.lock().unwrap().is_empty());
}

/// A stop that comes while a failing commit runs (its wake-up finds the
/// thread busy, not waiting) is not missed by the wait before the retry:
/// the shutdown takes the grace, not the backoff.
#[test]
fn persist_committer_sees_a_stop_that_came_during_a_failing_commit() {
    let probe = Probe { delay: Duration::from_millis(200), ..Probe::default() };
    probe.failing.store(true, Ordering::SeqCst);
    let (told, notify) = reports();
    let options = CommitterOptions {
        first_retry: Duration::from_secs(30),
        max_retry: Duration::from_secs(30),
        shutdown_grace: Duration::from_millis(100),
    };
    let committer = Committer::spawn_with(Box::new(probe), notify, options).unwrap();
    committer.commit(batch(1));
    // The thread is now inside its first, failing, commit.
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    assert!(!committer.shutdown(), "a batch was not committed");
    assert!(started.elapsed() < Duration::from_secs(10), "waited {:?}", started.elapsed());
    assert!(told.lock().unwrap().is_empty());
}

/// The same on redb, with I/O errors injected by countdown on its disk.
#[test]
fn persist_committer_on_failing_redb_disk() {
    let disk = SimDisk::default();
    let store = RedbStore::with_backend(disk.clone()).unwrap();
    let (told, notify) = reports();
    let committer = Committer::spawn_with(Box::new(store), notify, fast()).unwrap();
    committer.commit(batch(1));
    wait_for("the first commit", || committer.durable() == 1);
    disk.fail_after(Some(3));
    committer.commit(batch(2));
    committer.commit(batch(3));
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(committer.durable(), 1, "nothing is durable while the disk fails");
    disk.fail_after(None);
    wait_for("recovery", || committer.durable() == 3);
    assert!(committer.shutdown());
    assert_eq!(told.lock().unwrap().first(), Some(&1));
    assert_eq!(told.lock().unwrap().last(), Some(&3));
    let mut expected = StoredState::default();
    (1..=3).for_each(|seq| expected.apply_batch(&batch(seq)));
    let mut reopened = RedbStore::with_backend(SimDisk::with_image(disk.live(), false)).unwrap();
    assert_eq!(reopened.load().unwrap(), expected);
}

#[test]
fn persist_committer_reports_the_size_of_a_file_store() {
    let dir = TempDir::new("size");
    let store = RedbStore::create(&dir.path().join("store.db")).unwrap();
    let (_, notify) = reports();
    let committer = Committer::spawn(Box::new(store), notify).unwrap();
    assert!(committer.size().is_some_and(|n| n > 0));
    committer.commit(batch(1));
    wait_for("the commit", || committer.durable() == 1);
    assert!(committer.size().is_some_and(|n| n > 0));
    assert_eq!(committer.commits(), 1);
    let (_, notify) = reports();
    assert_eq!(Committer::spawn(Box::new(MemStore::default()), notify).unwrap().size(), None);
}

/// Commit latency on this machine's disk: one batch of about ten ops,
/// fdatasync included. `cargo test --release -p culex-runtime --features
/// tokio persist_commit_latency -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement, not a test"]
fn persist_commit_latency() {
    let dir = TempDir::new("latency");
    let mut store = RedbStore::create(&dir.path().join("store.db")).unwrap();
    let mut times = Vec::new();
    for seq in 1..=500u64 {
        let mut b = batch(seq);
        for n in 0..4 {
            b.ops.extend(batch(seq * 10 + n).ops);
        }
        let started = Instant::now();
        store.commit(&[b]).unwrap();
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_micros();
    eprintln!("commit of one 10-op batch: p50 {} µs, p90 {} µs, p99 {} µs", at(0.5), at(0.9), at(0.99));
}
