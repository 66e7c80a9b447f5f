//! The write-ahead log: its batches round-trip, the store in front of it
//! keeps the contract however often it checkpoints, and a power loss on
//! the log at any point keeps every commit that returned.

use std::sync::{Arc, Mutex};

use culex_core::persistence::{Restore, StoreBatch, StoredState};
use quickcheck::Gen;

use super::quickcheck;
use super::scenario::Scenario;
use super::sim_disk::{Crasher, Fate, SimDisk};
use crate::persist::{MemStore, OpenLog, Store, StoreError, WalStore, batch_codec};

/// Checkpoint sizes from "after every commit" to "never".
const CHECKPOINTS: [u64; 4] = [0, 200, 2_000, u64::MAX];

#[test]
fn persist_wal_batches_round_trip() {
    fn prop(scenario: Scenario) -> bool {
        let bytes = batch_codec::encode(&scenario.batches);
        batch_codec::decode(&bytes).unwrap() == scenario.batches
    }
    quickcheck(300).quickcheck(prop as fn(Scenario) -> bool);
}

#[test]
fn persist_wal_decoding_garbage_never_panics() {
    fn prop(scenario: Scenario, cut: usize, flip: usize) -> bool {
        let mut bytes = batch_codec::encode(&scenario.batches);
        let at = flip % bytes.len();
        bytes[at] ^= 0x5a;
        bytes.truncate(cut % (bytes.len() + 1));
        let _ = batch_codec::decode(&bytes);
        true
    }
    quickcheck(500).quickcheck(prop as fn(Scenario, usize, usize) -> bool);
}

/// A store in memory that keeps what it held after each commit, with the
/// number of calls the log's disk had seen by then: the store's part of
/// the picture at any crash point of the log.
#[derive(Debug, Clone)]
struct Snapshots {
    store: MemStore,
    disk: SimDisk,
    after: Arc<Mutex<Vec<(u64, StoredState)>>>,
}

impl Snapshots {
    fn new(disk: SimDisk) -> Self {
        Self { store: MemStore::default(), disk, after: Arc::default() }
    }

    /// What the store held when the log's disk had seen `calls` calls.
    fn at(&self, calls: usize) -> StoredState {
        let after = self.after.lock().unwrap();
        after.iter().rev().find(|(at, _)| *at as usize <= calls).map(|(_, s)| s.clone()).unwrap_or_default()
    }
}

impl Store for Snapshots {
    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.store.replace(state)
    }

    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.store.load_into(sink)
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        self.store.commit(batches)?;
        self.after.lock().unwrap().push((self.disk.ops(), self.store.state().clone()));
        Ok(())
    }

    fn size(&self) -> Option<u64> {
        None
    }
}

/// A commit as the committer makes it: the commit, then what it leaves
/// for after durability is reported (a checkpoint, when due).
fn commit(wal: &mut WalStore, group: &[StoreBatch]) {
    wal.commit(group).unwrap();
    wal.tidy();
}

/// A store on `state` behind the log image `image`, as a restart finds
/// them.
fn reopen(state: StoredState, image: Vec<u8>, checkpoint: u64) -> (WalStore, StoredState) {
    let log = OpenLog::open(Box::new(SimDisk::with_image(image, false))).expect("a crashed log opens");
    let mut wal = WalStore::new(Box::new(MemStore::new(state)), log, checkpoint);
    let state = wal.load().expect("a crashed store loads");
    (wal, state)
}

#[test]
fn persist_wal_contract_matches_apply() {
    fn prop(scenario: Scenario, pick: usize) -> bool {
        let checkpoint = CHECKPOINTS[pick % CHECKPOINTS.len()];
        let disk = SimDisk::default();
        let store = Snapshots::new(disk.clone());
        let log = OpenLog::open(Box::new(disk.clone())).unwrap();
        let mut wal = WalStore::new(Box::new(store.clone()), log, checkpoint);
        assert!(wal.load().unwrap().is_empty());
        for group in scenario.commits() {
            commit(&mut wal, group);
        }
        let expected = scenario.state_after(scenario.batches.len());
        assert_eq!(wal.load().unwrap(), expected, "before reopening");
        let (mut reopened, state) = reopen(store.at(usize::MAX), disk.live(), checkpoint);
        assert_eq!((&state, reopened.load().unwrap()), (&expected, expected.clone()), "after reopening");
        // Closing moves everything into the store and empties the log.
        wal.close().unwrap();
        store.at(usize::MAX) == expected && disk.live().len() == 16
    }
    quickcheck(300).quickcheck(prop as fn(Scenario, usize) -> bool);
}

/// Power loss at every call on the log's disk (the store behind it
/// commits atomically), with every fate of the calls since the last sync.
#[test]
fn persist_wal_power_loss_keeps_every_returned_commit() {
    let mut images = 0;
    for seed in 0..60 {
        let mut g = Gen::from_size_and_seed(30, seed);
        let scenario = Scenario::generate(&mut g, 10, 6);
        let checkpoint = CHECKPOINTS[seed as usize % CHECKPOINTS.len()];
        let disk = SimDisk::with_image(Vec::new(), true);
        let store = Snapshots::new(disk.clone());
        let log = OpenLog::open(Box::new(disk.clone())).unwrap();
        let opened = disk.ops() as usize;
        let mut wal = WalStore::new(Box::new(store.clone()), log, checkpoint);
        let mut returned = Vec::new();
        for group in scenario.commits() {
            commit(&mut wal, group);
            returned.push(disk.ops() as usize);
        }
        let calls = disk.log();
        let mut crasher = Crasher::new(&calls, Vec::new());
        let commits = scenario.groups.len();
        for point in opened..=calls.len() {
            crasher.advance_to(point);
            let done = returned.iter().filter(|&&r| r <= point).count();
            let before = scenario.batches_in(done);
            let with_next = scenario.batches_in((done + 1).min(commits));
            for fate in [Fate::AllLost, Fate::AllKept, Fate::Random, Fate::Random] {
                images += 1;
                let (mut wal, state) = reopen(store.at(point), crasher.image(fate, &mut g), checkpoint);
                assert!(
                    state == scenario.state_after(before) || state == scenario.state_after(with_next),
                    "seed {seed}: a crash at call {point} of {} ({fate:?}), with {done} of {commits} commits \
                     returned, left neither {before} nor {with_next} batches",
                    calls.len()
                );
                // What follows the crash is appended after what it left.
                let rest = &scenario.batches[before.min(scenario.batches.len())..];
                commit(&mut wal, rest);
                let all = scenario.state_after(scenario.batches.len());
                assert_eq!(wal.load().unwrap(), all, "seed {seed}: commits after a crash");
            }
        }
    }
    eprintln!("{images} crash images");
}

#[test]
fn persist_wal_io_errors_fail_the_commit_and_keep_the_rest() {
    fn prop(scenario: Scenario, fail_at: u8) -> bool {
        let disk = SimDisk::default();
        let log = OpenLog::open(Box::new(disk.clone())).unwrap();
        let mut wal = WalStore::new(Box::new(MemStore::default()), log, 300);
        let commits = scenario.commits();
        let fail_at = usize::from(fail_at) % commits.len();
        for (n, group) in commits.iter().enumerate() {
            if n == fail_at {
                disk.fail_after(Some(1));
                assert!(wal.commit(group).is_err(), "a failed write is not durable");
                disk.fail_after(None);
            }
            commit(&mut wal, group);
        }
        let expected = scenario.state_after(scenario.batches.len());
        wal.load().unwrap() == expected
    }
    quickcheck(200).quickcheck(prop as fn(Scenario, u8) -> bool);
}

#[test]
fn persist_wal_refuses_what_is_not_a_log() {
    let disk = SimDisk::with_image(b"not a log at all, not a log at all".to_vec(), false);
    assert!(matches!(OpenLog::open(Box::new(disk)), Err(StoreError::Decode { .. })));
    // A header cut short by a crash at creation: nothing was ever logged.
    let disk = SimDisk::with_image(b"CULEX".to_vec(), false);
    let log = OpenLog::open(Box::new(disk.clone())).unwrap();
    let mut wal = WalStore::new(Box::new(MemStore::default()), log, 0);
    assert!(wal.load().unwrap().is_empty());
    let batch = StoreBatch { seq: 1, ops: Vec::new() };
    wal.commit(std::slice::from_ref(&batch)).unwrap();
    assert_eq!(wal.load().unwrap().last_batch, 1);
}

/// A store whose commits fail (a full disk).
#[derive(Debug, Default)]
struct Full(MemStore);

impl Store for Full {
    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.0.replace(state)
    }

    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.0.load_into(sink)
    }

    fn commit(&mut self, _: &[StoreBatch]) -> Result<(), StoreError> {
        Err(StoreError::Decode { table: "test", detail: "the disk is full".into() })
    }

    fn size(&self) -> Option<u64> {
        None
    }
}

/// At start the log's batches go into the store before it is read, and
/// the log is emptied; if the store cannot take them, both are read.
#[test]
fn persist_wal_start_moves_the_log_into_the_store_or_reads_both() {
    fn prop(scenario: Scenario) -> bool {
        let disk = SimDisk::default();
        let log = OpenLog::open(Box::new(disk.clone())).unwrap();
        let mut wal = WalStore::new(Box::new(MemStore::default()), log, u64::MAX);
        for group in scenario.commits() {
            commit(&mut wal, group);
        }
        let expected = scenario.state_after(scenario.batches.len());
        let log = OpenLog::open(Box::new(SimDisk::with_image(disk.live(), false))).unwrap();
        let mut on_full_disk = WalStore::new(Box::new(Full::default()), log, u64::MAX);
        assert_eq!(on_full_disk.load().unwrap(), expected, "with a store that cannot commit");
        let restarted = SimDisk::with_image(disk.live(), false);
        let store = Snapshots::new(restarted.clone());
        let mut wal =
            WalStore::new(Box::new(store.clone()), OpenLog::open(Box::new(restarted.clone())).unwrap(), u64::MAX);
        wal.load().unwrap() == expected && store.at(usize::MAX) == expected && restarted.live().len() == 16
    }
    quickcheck(200).quickcheck(prop as fn(Scenario) -> bool);
}
