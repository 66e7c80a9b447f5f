//! Damaged files at rest: whatever is at the path, opening never panics
//! and never refuses to start; what cannot be read is moved aside under a
//! name that says so, and an empty store takes its place.

use std::fs;
use std::path::Path;

use culex_core::persistence::StoredState;
use quickcheck::{Arbitrary, Gen};

use super::scenario::Scenario;
use super::{NOW, TempDir, now};
use crate::persist::{OpenError, Opened, OpenedStore, Outcome, RedbStore, Store, open};

const FILE: &str = "store.db";

fn open_store(path: &Path) -> OpenedStore {
    match open(path, now(), &mut StoredState::default).unwrap() {
        Opened::Store(opened) => *opened,
        Opened::Mosquitto { .. } => panic!("taken for a Mosquitto file"),
    }
}

/// Writes `bytes` at the path and opens it: it must be moved aside,
/// byte for byte, and a new empty store made.
fn assert_damaged(bytes: &[u8], what: &str) {
    let dir = TempDir::new("damaged");
    let path = dir.path().join(FILE);
    fs::write(&path, bytes).unwrap();
    let mut opened = open_store(&path);
    let aside = dir.path().join(format!("{FILE}.corrupt-{}", NOW as u64));
    match &opened.outcome {
        Outcome::Damaged { kept_at, reason } => {
            assert_eq!(kept_at, &aside, "{what}: {reason}");
        }
        other => panic!("{what}: {other:?}"),
    }
    assert!(opened.restored.is_empty(), "{what}");
    assert!(opened.store.load().unwrap().is_empty(), "{what}");
    assert_eq!(fs::read(&aside).unwrap(), bytes, "{what}: the damaged file is kept as it was");
    let names = [FILE.to_owned(), format!("{FILE}.corrupt-{}", NOW as u64), format!("{FILE}.wal")];
    assert_eq!(dir.names(), names, "{what}");
    // The new store is a store.
    drop(opened);
    assert_eq!(open_store(&path).outcome, Outcome::Opened, "{what}");
}

#[test]
fn persist_empty_file_is_moved_aside() {
    assert_damaged(&[], "empty");
}

#[test]
fn persist_zeros_and_garbage_are_moved_aside() {
    assert_damaged(&[0; 4096], "4 KiB of zeros");
    assert_damaged(&vec![0; 100_000], "100 kB of zeros");
    assert_damaged(b"listener 1883\nallow_anonymous true\n", "text");
    let mut g = Gen::from_size_and_seed(5000, 1);
    for size in [1, 15, 512, 5000] {
        let bytes: Vec<u8> = (0..size).map(|_| u8::arbitrary(&mut g)).collect();
        assert_damaged(&bytes, &format!("{size} random bytes"));
    }
}

/// A store holding a scenario's state (not empty), as bytes.
fn store_bytes() -> (Vec<u8>, StoredState) {
    let dir = TempDir::new("source");
    let path = dir.path().join(FILE);
    let mut store = RedbStore::create(&path).unwrap();
    for seed in 0..20 {
        let scenario = Scenario::generate(&mut Gen::from_size_and_seed(30, seed), 10, 10);
        store.commit(&scenario.batches).unwrap();
        let state = store.load().unwrap();
        if !state.is_empty() {
            drop(store);
            return (fs::read(&path).unwrap(), state);
        }
    }
    panic!("twenty scenarios left nothing")
}

/// A changed store either still opens with everything in it (a change
/// where nothing is kept) or is moved aside; it never opens with less.
/// Returns whether it was moved aside.
fn assert_damaged_or_whole(bytes: &[u8], whole: &StoredState, what: &str) -> bool {
    let dir = TempDir::new("changed");
    let path = dir.path().join(FILE);
    fs::write(&path, bytes).unwrap();
    let opened = open_store(&path);
    match &opened.outcome {
        Outcome::Damaged { .. } => {
            assert!(opened.restored.is_empty());
            true
        }
        Outcome::Opened => {
            assert_eq!(&opened.restored, whole, "{what}: opened with something else");
            false
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn persist_truncated_store_is_moved_aside() {
    let (bytes, _) = store_bytes();
    let len = bytes.len();
    for cut in [1, 8, 100, 512, 4096, 4097, len / 2, len - 4096, len - 1] {
        let what = format!("cut to {cut} of {len} bytes");
        let dir = TempDir::new("cut");
        let path = dir.path().join(FILE);
        fs::write(&path, &bytes[..cut]).unwrap();
        let opened = open_store(&path);
        assert!(matches!(opened.outcome, Outcome::Damaged { .. }), "{what}: {:?}", opened.outcome);
    }
}

#[test]
fn persist_bit_flips_are_detected_or_harmless() {
    let mut g = Gen::from_size_and_seed(30, 7);
    let (bytes, state) = store_bytes();
    let mut damaged = 0;
    // Every page's first bytes, its middle, and random places.
    let mut offsets: Vec<usize> = (0..bytes.len()).step_by(4096).flat_map(|p| [p, p + 1, p + 100, p + 2048]).collect();
    offsets.extend((0..40).map(|_| usize::arbitrary(&mut g) % bytes.len()));
    for offset in offsets.into_iter().filter(|&o| o < bytes.len()) {
        let mut flipped = bytes.clone();
        flipped[offset] ^= 1 << (offset % 8);
        let what = format!("bit flipped at {offset}");
        if assert_damaged_or_whole(&flipped, &state, &what) {
            damaged += 1;
        }
    }
    assert!(damaged > 0, "no flip was detected");
}

#[test]
fn persist_redb_file_of_another_program_is_moved_aside() {
    let dir = TempDir::new("foreign");
    let path = dir.path().join(FILE);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(redb::TableDefinition::<u64, u64>::new("messages")).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let opened = open_store(&path);
    assert!(matches!(opened.outcome, Outcome::Damaged { .. }), "{:?}", opened.outcome);
}

#[test]
fn persist_names_aside_do_not_collide() {
    let dir = TempDir::new("twice");
    let path = dir.path().join(FILE);
    for _ in 0..3 {
        fs::write(&path, b"garbage").unwrap();
        open_store(&path);
    }
    let secs = NOW as u64;
    assert_eq!(
        dir.names(),
        [
            FILE.to_owned(),
            format!("{FILE}.corrupt-{secs}"),
            format!("{FILE}.corrupt-{secs}-2"),
            format!("{FILE}.corrupt-{secs}-3"),
            format!("{FILE}.wal")
        ]
    );
}

#[test]
fn persist_missing_file_is_created_and_problems_around_it_are_errors() {
    let dir = TempDir::new("around");
    let path = dir.path().join(FILE);
    assert_eq!(open_store(&path).outcome, Outcome::Created);
    assert_eq!(dir.names(), [FILE.to_owned(), format!("{FILE}.wal")]);
    // A directory where the file should be is not damage: it is left alone.
    let taken = dir.path().join("dir.db");
    fs::create_dir(&taken).unwrap();
    assert!(matches!(open(&taken, now(), &mut StoredState::default), Err(OpenError::Io { .. })));
    assert!(taken.is_dir());
    // Nor is a missing directory.
    assert!(open(&dir.path().join("missing/store.db"), now(), &mut StoredState::default).is_err());
}

#[test]
fn persist_store_in_use_is_not_moved_aside() {
    let dir = TempDir::new("in-use");
    let path = dir.path().join(FILE);
    let first = open_store(&path);
    // redb locks the file: a second broker on the same store must stop.
    let second = open(&path, now(), &mut StoredState::default);
    assert!(matches!(second, Err(OpenError::Store { .. })), "{second:?}");
    drop(first);
    assert_eq!(dir.names(), [FILE.to_owned(), format!("{FILE}.wal")]);
}
