//! Power loss and I/O errors on a simulated disk.
//!
//! A scenario runs once on a disk that records every write, `set_len` and
//! sync; the image a power loss leaves after any number of those calls is
//! then rebuilt from the log (see [`sim_disk`](super::sim_disk)) and
//! opened. Every commit that returned before that point must be there;
//! the one under way may be there whole, or not at all.

use std::time::Instant;

use culex_core::persistence::StoredState;
use quickcheck::{Arbitrary, Gen};

use super::scenario::Scenario;
use super::sim_disk::{Crasher, DiskOp, Fate, SimDisk};
use crate::persist::{RedbStore, Store};

/// A scenario's commits on a recording disk.
#[derive(Debug)]
struct Run {
    /// The disk before the run.
    base: Vec<u8>,
    log: Vec<DiskOp>,
    /// For each commit, how many calls had been made when it returned.
    returned: Vec<usize>,
    /// Calls made when the store had been created (its format committed).
    opened: usize,
}

/// Opens a store on `base` and commits `scenario`'s groups from the
/// `first`-th on.
fn record(scenario: &Scenario, first: usize, base: Vec<u8>) -> Run {
    let disk = SimDisk::with_image(base.clone(), true);
    let mut store = RedbStore::with_backend(disk.clone()).expect("store opens on a crash image");
    let opened = disk.ops() as usize;
    let mut returned = Vec::new();
    for group in &scenario.commits()[first..] {
        store.commit(group).unwrap();
        returned.push(disk.ops() as usize);
    }
    // Closing may write too: crash points there count as well.
    drop(store);
    Run { base, log: disk.log(), returned, opened }
}

/// Opens a store on a crash image and loads it. A store must open
/// (redb's guarantees) once its creation returned; before that the
/// half-made file is never used (Culex makes it under another name).
fn reopen(image: Vec<u8>, created: bool) -> Option<(StoredState, Vec<u8>)> {
    let disk = SimDisk::with_image(image, false);
    let opened = RedbStore::with_backend(disk.clone()).and_then(|mut store| store.load());
    match opened {
        Ok(state) => Some((state, disk.live())),
        Err(e) if created => panic!("a store whose creation returned does not open after a crash: {e}"),
        Err(_) => None,
    }
}

/// Statistics of a crash run, to keep the test's cost visible.
#[derive(Debug, Default)]
struct Count {
    images: usize,
    points: usize,
}

/// Checks every crash point of one scenario: all pending calls lost, all
/// kept, and `random` random fates. With `nested`, a second power loss
/// strikes while the store recovers from the first and commits the rest.
fn check_scenario(seed: u64, scenario: &Scenario, g: &mut Gen, random: usize, nested: bool, count: &mut Count) {
    let run = record(scenario, 0, Vec::new());
    let mut crasher = Crasher::new(&run.log, run.base.clone());
    let commits = scenario.groups.len();
    for point in 0..=run.log.len() {
        crasher.advance_to(point);
        count.points += 1;
        let done = run.returned.iter().filter(|&&r| r <= point).count();
        let before = scenario.batches_in(done);
        let with_next = scenario.batches_in((done + 1).min(commits));
        let fates = [Fate::AllLost, Fate::AllKept].into_iter().chain(std::iter::repeat_n(Fate::Random, random));
        for fate in fates {
            count.images += 1;
            let image = crasher.image(fate, g);
            let Some((state, recovered)) = reopen(image, point >= run.opened) else { continue };
            let n = if state == scenario.state_after(before) {
                before
            } else if state == scenario.state_after(with_next) {
                with_next
            } else {
                panic!(
                    "seed {seed}: after a crash at call {point} of {} ({fate:?}), with {done} of {commits} commits \
                     returned, the store holds neither {before} nor {with_next} batches",
                    run.log.len()
                );
            };
            if nested && fate == Fate::Random {
                check_recovery_crash(seed, scenario, g, done, n, recovered, count);
            }
        }
    }
}

/// A second crash, during the recovery from a first one that left the
/// first `n` batches (`done` commits returned) and while the rest is
/// committed: what the recovery found must stay.
fn check_recovery_crash(
    seed: u64,
    scenario: &Scenario,
    g: &mut Gen,
    done: usize,
    n: usize,
    image: Vec<u8>,
    count: &mut Count,
) {
    // The group under way when the first crash came was not reported
    // durable: it is committed again (and skipped if it made it).
    let run = record(scenario, done, image);
    let point = usize::arbitrary(g) % (run.log.len() + 1);
    let mut crasher = Crasher::new(&run.log, run.base.clone());
    crasher.advance_to(point);
    let returned = run.returned.iter().filter(|&&r| r <= point).count();
    let commits = scenario.groups.len();
    let before = scenario.batches_in(done + returned).max(n);
    let with_next = scenario.batches_in((done + returned + 1).min(commits)).max(n);
    count.images += 1;
    let (state, _) = reopen(crasher.image(Fate::Random, g), true).expect("opens");
    assert!(
        state == scenario.state_after(before) || state == scenario.state_after(with_next),
        "seed {seed}: a crash during recovery lost what the recovery found ({n} batches) or a commit after it"
    );
}

/// Runs `seeds` seeds, each a scenario of up to `batches` batches of up
/// to `ops` ops checked at every crash point. Deterministic per seed.
fn crash_seeds(seeds: std::ops::Range<u64>, batches: usize, ops: usize, random: usize, nested: bool) -> Count {
    let started = Instant::now();
    let mut count = Count::default();
    for seed in seeds {
        let mut g = Gen::from_size_and_seed(30, seed);
        let scenario = Scenario::generate(&mut g, batches, ops);
        check_scenario(seed, &scenario, &mut g, random, nested, &mut count);
    }
    eprintln!("{count:?} in {:.1} s", started.elapsed().as_secs_f64());
    count
}

/// Power loss at every call of small scenarios (thousands of images, a
/// few seconds).
#[test]
fn persist_power_loss_keeps_every_returned_commit() {
    let count = crash_seeds(0..40, 8, 6, 2, false);
    assert!(count.images >= 4000, "{count:?}");
}

/// A second power loss while recovering from the first.
#[test]
fn persist_power_loss_during_recovery_keeps_what_was_recovered() {
    crash_seeds(1000..1020, 8, 6, 2, true);
}

/// Many more scenarios, larger, more fates: `cargo test --release -p
/// culex-runtime --features tokio persist_power_loss_many -- --ignored`.
#[test]
#[ignore = "long: hundreds of thousands of crash images"]
fn persist_power_loss_many() {
    crash_seeds(10_000..10_500, 16, 12, 6, true);
}

/// An I/O error at every call of a scenario's commits: the commit that
/// meets it fails (so nothing of it may be acknowledged), the file as it
/// is then holds the commits that returned (and perhaps the failed one),
/// and once the disk heals the same store commits the rest.
#[test]
fn persist_io_errors_fail_the_commit_and_leave_a_prefix() {
    let mut cases = 0;
    for seed in 0..6 {
        let scenario = Scenario::generate(&mut Gen::from_size_and_seed(30, seed), 8, 6);
        let commits = scenario.commits();
        let total = {
            let disk = SimDisk::default();
            let mut store = RedbStore::with_backend(disk.clone()).unwrap();
            let start = disk.ops();
            commits.iter().for_each(|group| store.commit(group).unwrap());
            disk.ops() - start
        };
        for fail_at in 1..=total {
            cases += 1;
            let disk = SimDisk::default();
            let mut store = RedbStore::with_backend(disk.clone()).unwrap();
            disk.fail_after(Some(fail_at));
            let failed = commits.iter().position(|group| store.commit(group).is_err());
            let Some(failed) = failed else {
                panic!("seed {seed}: no commit failed with an error at call {fail_at} of {total}")
            };
            let before = scenario.batches_in(failed);
            let with_failed = scenario.batches_in(failed + 1);
            // The file as the error left it, opened by a new process.
            let (state, _) = reopen(disk.live(), true).unwrap();
            assert!(
                state == scenario.state_after(before) || state == scenario.state_after(with_failed),
                "seed {seed}: after an I/O error at call {fail_at}, the file is not a prefix"
            );
            // The disk heals: the failed group is retried, then the rest.
            disk.fail_after(None);
            for group in &commits[failed..] {
                store.commit(group).unwrap();
            }
            let all = scenario.state_after(scenario.batches.len());
            assert_eq!(store.load().unwrap(), all);
            assert_eq!(reopen(disk.live(), true).unwrap().0, all);
        }
    }
    assert!(cases > 50, "{cases}");
}
