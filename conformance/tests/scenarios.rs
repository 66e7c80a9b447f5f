//! Every scenario of `spec/scenarios/` replayed against culex-core: each
//! must pass (or fail exactly as `deviations.toml` records for target
//! `core`), and its full transcript is kept as an insta snapshot under
//! `tests/snapshots/`, so a changed transcript fails until reviewed.

use std::collections::BTreeSet;
use std::path::Path;

use culex_conformance::core_target::WEBSOCKET_SKIP;
use culex_conformance::{CoreTarget, Outcome, Run};
use culex_spec::catalogue::load_deviations;
use culex_spec::{BrokerConf, Scenario, SpecDir};

/// Scenarios the core is known to fail (deviations of target `core`).
fn known_core_failures() -> BTreeSet<String> {
    let spec = SpecDir::default();
    match load_deviations(&spec.deviations()) {
        Ok(all) => all.into_iter().filter(|d| d.target == "core").map(|d| d.scenario).collect(),
        Err(e) => panic!("{e}"),
    }
}

fn load(path: &Path) -> Scenario {
    Scenario::load(path).unwrap_or_else(|e| panic!("{e}"))
}

/// Fails unless `run` passed, failed as a known core bug, or was skipped
/// because it needs WebSocket (which `catalogue.rs` keeps to section 6).
fn check(run: &Run, known: &BTreeSet<String>) {
    match (&run.outcome, known.contains(&run.scenario)) {
        (Outcome::Pass, false) => {}
        (Outcome::Skip(why), false) if why == WEBSOCKET_SKIP => {}
        (Outcome::Pass, true) => {
            panic!("{} passes now: remove its `core` entry from spec/deviations.toml", run.scenario)
        }
        (outcome, true) => println!("known core failure {}: {outcome}", run.scenario),
        (outcome, false) => panic!("{}: {outcome}\ntranscript:\n{}", run.scenario, run.transcript),
    }
}

#[test]
fn core_transcripts() {
    let known = known_core_failures();
    let target = CoreTarget::new();
    insta::glob!("../../spec/scenarios", "**/*.toml", |path| {
        let scenario = load(path);
        let run = target.run(&scenario);
        check(&run, &known);
        insta::with_settings!({
            description => scenario.summary.clone(),
            omit_expression => true,
            prepend_module_to_snapshot => false,
        }, {
            insta::assert_snapshot!(format!("{}# {}\n", run.transcript, run.outcome));
        });
    });
}

/// The scenarios also hold on a core configured as the broker under test
/// is (`spec/broker.conf`): those without `[config]` must not depend on
/// defaults that file changes.
#[test]
fn scenarios_pass_with_the_broker_conf() {
    let spec = SpecDir::default();
    let conf = BrokerConf::load(&spec.broker_conf()).unwrap_or_else(|e| panic!("{e}"));
    let target = CoreTarget::with_conf(&conf).unwrap_or_else(|e| panic!("{e}"));
    let known = known_core_failures();
    let scenarios = culex_spec::load_scenarios(&spec.scenarios()).unwrap_or_else(|e| panic!("{e}"));
    assert!(scenarios.len() > 100, "only {} scenarios found", scenarios.len());
    for scenario in &scenarios {
        check(&target.run(scenario), &known);
    }
}

/// A core run is a pure function of the scenario: two runs, one transcript.
#[test]
fn core_runs_are_deterministic() {
    let spec = SpecDir::default();
    let scenarios = culex_spec::load_scenarios(&spec.scenarios()).unwrap_or_else(|e| panic!("{e}"));
    let target = CoreTarget::new();
    for scenario in scenarios.iter().filter(|s| s.group.starts_with("culex") || s.group.starts_with("3.1")) {
        assert_eq!(target.run(scenario), target.run(scenario), "{}", scenario.name);
    }
}
