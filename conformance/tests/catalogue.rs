//! The catalogue cannot regress: every statement of the standard is
//! catalogued once and in our own words, every server-binding statement is
//! tested or justified, scenarios cite real statements, the baseline of
//! tested statements only grows, and the committed table is current.

use std::collections::BTreeSet;

use culex_conformance::report;
use culex_spec::catalogue::{self, Catalogue, load_baseline, load_deviations, load_normative};
use culex_spec::{BrokerConf, Requirement, Scenario, SpecDir, Status, load_scenarios};

/// Server-binding statements still deferred, and what they wait for. This
/// list may only shrink.
const DEFERRED_SERVER_STATEMENTS: [&str; 0] = [];

/// The section whose statements only a WebSocket run can test.
const WEBSOCKET_SECTION: &str = "6 Using WebSocket as a network transport";

struct Suite {
    spec: SpecDir,
    catalogue: Catalogue,
    scenarios: Vec<Scenario>,
}

fn suite() -> Suite {
    let spec = SpecDir::default();
    let catalogue = Catalogue::load(&spec.statements()).unwrap_or_else(|e| panic!("{e}"));
    let scenarios = load_scenarios(&spec.scenarios()).unwrap_or_else(|e| panic!("{e}"));
    Suite { spec, catalogue, scenarios }
}

#[test]
fn catalogue_scenarios_and_baseline_agree() {
    let Suite { spec, catalogue, scenarios } = suite();
    let normative = load_normative(&spec.normative())
        .unwrap_or_else(|e| panic!("{e} (the standard's list lives in shared/spec/ beside the repository)"));
    assert_eq!(normative.len(), 141, "the standard has 141 numbered statements");
    let baseline = load_baseline(&spec.baseline()).unwrap_or_else(|e| panic!("{e}"));
    let problems = catalogue.problems(&normative, &scenarios, &baseline);
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn server_statements_are_tested_or_justified() {
    let Suite { catalogue, .. } = suite();
    let deferred: BTreeSet<&str> = catalogue
        .statements
        .iter()
        .filter(|s| s.is_mqtt() && s.side.binds_server() && s.status == Status::Deferred)
        .map(|s| s.id.as_str())
        .collect();
    let allowed: BTreeSet<&str> = DEFERRED_SERVER_STATEMENTS.into_iter().collect();
    let new: Vec<&&str> = deferred.difference(&allowed).collect();
    assert!(new.is_empty(), "server-binding statements must be tested or n/a, not deferred: {new:?}");
    let server = catalogue.statements.iter().filter(|s| s.is_mqtt() && s.side.binds_server()).count();
    assert_eq!(server, 106, "the standard binds servers in 106 statements");
}

/// The core skips scenarios that need WebSocket (it has no transport), so
/// such scenarios may cite only section 6 statements, and only those may be
/// tested by WebSocket scenarios alone; every other tested statement keeps
/// a scenario the core runs.
#[test]
fn only_websocket_statements_rest_on_websocket_scenarios() {
    let Suite { catalogue, scenarios, .. } = suite();
    let needs_ws =
        |name: &str| scenarios.iter().any(|s| s.name == name && s.requires.contains(&Requirement::WebSocket));
    for s in scenarios.iter().filter(|s| s.requires.contains(&Requirement::WebSocket)) {
        for id in &s.statements {
            let statement = catalogue.get(id).unwrap_or_else(|| panic!("{}: unknown {id}", s.name));
            assert_eq!(
                statement.section, WEBSOCKET_SECTION,
                "{}: a WebSocket scenario may cite only section 6",
                s.name
            );
        }
    }
    for s in catalogue.statements.iter().filter(|s| s.status == Status::Tested) {
        if s.scenarios.iter().all(|name| needs_ws(name)) {
            assert_eq!(s.section, WEBSOCKET_SECTION, "{}: tested only by WebSocket scenarios the core skips", s.id);
        }
    }
}

#[test]
fn summaries_are_in_our_own_words() {
    let spec = SpecDir::default();
    let Suite { catalogue, .. } = suite();
    let tsv = std::fs::read_to_string(spec.normative()).unwrap_or_else(|e| panic!("{e}"));
    let words = |s: &str| -> Vec<String> {
        s.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
    };
    for line in tsv.lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(id), Some(text)) = (cols.first(), cols.get(3)) else { continue };
        let Some(statement) = catalogue.get(id) else { continue };
        let ours = words(&statement.summary);
        let theirs = words(text).join(" ");
        // Seven words in a row taken from the standard is copying.
        for window in ours.windows(7) {
            let run = window.join(" ");
            assert!(!theirs.contains(&run), "{id}: the summary repeats the standard's words `{run}`");
        }
    }
}

/// Settings a scenario may ask for although `spec/broker.conf` does not
/// give them: the brokers of `run-tcp.sh` let anonymous clients in, which
/// nearly every scenario needs, so the scenarios about refusing them run on
/// the core, and over TCP only against a broker configured that way (they
/// are reported as skipped otherwise). `persistence true` is asked for by
/// the scenarios that restart the broker, which over TCP run on a broker
/// the runner starts for them with their settings and a store of their own
/// (see `restart_scenarios_keep_state_on_purpose`).
const NOT_IN_BROKER_CONF: &[&str] = &["allow_anonymous=false", "persistence=true"];

#[test]
fn scenario_settings_agree_with_broker_conf() {
    let Suite { spec, scenarios, .. } = suite();
    let conf = BrokerConf::load(&spec.broker_conf()).unwrap_or_else(|e| panic!("{e}"));
    for s in &scenarios {
        let mut missing = conf.missing(&s.config);
        missing.retain(|setting| !NOT_IN_BROKER_CONF.contains(&setting.as_str()));
        assert!(missing.is_empty(), "{} needs {missing:?}, which spec/broker.conf does not set", s.name);
    }
}

/// `persistence true` is only for scenarios that stop the broker (the TCP
/// target runs those on brokers of their own, configured for them), and a
/// scenario that restarts the broker asks for it: without a store there is
/// nothing a restart could keep.
#[test]
fn restart_scenarios_keep_state_on_purpose() {
    let Suite { scenarios, .. } = suite();
    for s in &scenarios {
        let restarts = s.requires.contains(&Requirement::Restart);
        let persistent = s.config.get("persistence").is_some_and(|v| v == "true");
        assert_eq!(restarts, persistent, "{}: `persistence = true` goes with `restart`/`crash` steps", s.name);
    }
}

#[test]
fn deviations_name_real_scenarios() {
    let Suite { spec, catalogue, scenarios } = suite();
    let deviations = load_deviations(&spec.deviations()).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = BTreeSet::new();
    for d in &deviations {
        let scenario = scenarios.iter().find(|s| s.name == d.scenario);
        let Some(scenario) = scenario else { panic!("deviation for unknown scenario {}", d.scenario) };
        assert!(scenario.statements.contains(&d.statement), "{}: does not cite {}", d.scenario, d.statement);
        assert!(catalogue.get(&d.statement).is_some(), "{}: unknown statement", d.statement);
        assert!(seen.insert((&d.target, &d.scenario)), "{} / {} listed twice", d.target, d.scenario);
        assert!(!d.note.trim().is_empty(), "{}: say what the target does", d.scenario);
    }
}

#[test]
fn every_scenario_is_catalogued_by_its_first_statement() {
    let Suite { catalogue, scenarios, .. } = suite();
    let cited = catalogue::citations(&scenarios);
    for s in &scenarios {
        let first = &s.statements[0];
        assert!(cited.get(first.as_str()).is_some_and(|c| c.contains(s.name.as_str())));
        let statement = catalogue.get(first).unwrap_or_else(|| panic!("{}: unknown {first}", s.name));
        assert_eq!(statement.status, Status::Tested, "{}: {first} should be tested", s.name);
    }
}

#[test]
fn conformance_table_is_up_to_date() {
    let spec = SpecDir::default();
    let fresh = report::generate(&spec).unwrap_or_else(|e| panic!("{e}"));
    let committed = std::fs::read_to_string(spec.table()).unwrap_or_default();
    assert!(
        fresh == committed,
        "spec/CONFORMANCE.md is out of date: run `cargo run -p culex-conformance -- report` and commit it"
    );
}
