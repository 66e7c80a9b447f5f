//! Presence across brokers sharing one Redis, model-checked on the real
//! `PresenceSync` (see `spec/MODEL.md`). The CI bounds explore their
//! whole state space; the long run (`--ignored`, in release) a larger one.

use std::time::Instant;

use culex_model_check::presence::PresenceModel;
use stateright::{Checker, Model};

const NO_FOREIGN_DELETE: &str = "no entry is removed while a live broker holds it";
const NO_GHOST: &str = "once quiet, every entry is of a client online";
const NONE_MISSING: &str = "once quiet, every client online has its entry";
const REACHED: &str = "quiet with clients online";

fn explore(model: PresenceModel) -> impl Checker<PresenceModel> {
    let started = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    println!(
        "{model:?}: {} states, {} unique, depth {}, {:.1} s",
        checker.state_count(),
        checker.unique_state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    checker
}

/// Every property holds, and the goal is reached.
fn check(model: PresenceModel) {
    let checker = explore(model);
    checker.assert_no_discovery(NO_FOREIGN_DELETE);
    checker.assert_no_discovery(NO_GHOST);
    checker.assert_no_discovery(NONE_MISSING);
    checker.assert_any_discovery(REACHED);
}

#[test]
fn two_brokers_with_a_disaster_and_a_failure() {
    check(PresenceModel { brokers: 2, clients: 1, disasters: 1, failures: 1, flushes: true });
}

#[test]
fn three_brokers_without_faults() {
    check(PresenceModel { brokers: 3, clients: 1, disasters: 0, failures: 0, flushes: false });
}

#[test]
#[ignore = "long run: cargo test -p culex-model-check --release -- --ignored"]
fn long_run() {
    check(PresenceModel { brokers: 2, clients: 2, disasters: 0, failures: 0, flushes: false });
    check(PresenceModel { brokers: 2, clients: 1, disasters: 2, failures: 1, flushes: true });
    check(PresenceModel { brokers: 3, clients: 1, disasters: 1, failures: 0, flushes: false });
    check(PresenceModel { brokers: 3, clients: 1, disasters: 1, failures: 0, flushes: true });
}
