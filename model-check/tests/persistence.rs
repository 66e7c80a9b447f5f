//! Commit-then-acknowledge with crashes at any point, model-checked on
//! the real broker (see `spec/MODEL.md`). The CI bound explores every run
//! of up to its depth; the long run (`--ignored`, in release) deeper.

use std::time::Instant;

use culex_model_check::persistence::PersistenceModel;
use stateright::{Checker, Model};

fn check(model: PersistenceModel) {
    let started = Instant::now();
    let checker = model.checker().threads(2).spawn_bfs().join();
    println!(
        "{model:?}: {} states, depth {}, {:.1} s",
        checker.state_count(),
        checker.max_depth(),
        started.elapsed().as_secs_f64()
    );
    for (name, path) in checker.discoveries() {
        let steps = path.into_actions();
        println!("{name}: {steps:?}\n{}", model.transcript(&steps));
    }
    checker.assert_properties();
}

#[test]
fn publisher_and_persistent_subscriber_across_crashes() {
    check(PersistenceModel { depth: 9, crashes: 2 });
}

#[test]
#[ignore = "long run: cargo test -p culex-model-check --release -- --ignored"]
fn long_run() {
    check(PersistenceModel { depth: 14, crashes: 3 });
}
