//! `culex-conformance`: replays the scenarios of `spec/` against the core
//! or a running broker, and writes the conformance table.
//!
//! ```text
//! culex-conformance core   [--only TEXT] [--conf FILE] [--transcripts DIR]
//! culex-conformance tcp HOST:PORT [--name NAME] [--broker TEXT] [--broker-config FILE]
//!                          [--redis HOST:PORT] [--redis-key KEY] [--extensions expiry]
//!                          [--timeout-ms N] [--websocket] [--only TEXT] [--transcripts DIR] [--record | --save FILE]
//!                          [-- BROKER COMMAND...]
//! culex-conformance report [--check]
//! culex-conformance check
//! ```
//! Every command takes `--spec DIR` (default: the `spec/` of this source
//! tree). Exit status: 0 when every scenario run passed or failed only as
//! a known deviation, 1 otherwise, 2 on bad usage or unreadable files.
//!
//! After `--`, `tcp` takes the command that starts the broker under test
//! (`{port}` and `{conf}` in it become a port and a configuration file, the
//! `--broker-config` file moved to that port): the scenarios that stop the
//! broker (`shutdown`, `restart`, `crash`) then each run on a broker the
//! runner starts, stops and starts again itself; without it they are
//! skipped.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use culex_conformance::report::{self, CORE, Results};
use culex_conformance::{BrokerCommand, CoreTarget, Outcome, Run, TcpOptions, TcpTarget};
use culex_spec::catalogue::{self, Catalogue, Deviation};
use culex_spec::{BrokerConf, Scenario, SpecDir, load_scenarios};

const USAGE: &str = "usage:
  culex-conformance core   [--only TEXT] [--conf FILE] [--transcripts DIR]
  culex-conformance tcp HOST:PORT [--name NAME] [--broker TEXT] [--broker-config FILE]
                           [--redis HOST:PORT] [--redis-key KEY] [--extensions expiry]
                           [--timeout-ms N] [--websocket] [--only TEXT] [--transcripts DIR] [--record | --save FILE]
                           [-- BROKER COMMAND...]   (runs the scenarios that stop the broker, each on its own)
  culex-conformance report [--check]
  culex-conformance check
every command takes --spec DIR (default: the spec/ of this source tree)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("culex-conformance: {message}");
            ExitCode::from(2)
        }
    }
}

/// Parsed options: `--key value` pairs, switches and positional words.
struct Args {
    values: Vec<(String, String)>,
    switches: BTreeSet<String>,
    positional: Vec<String>,
    /// Everything after `--`.
    command: Vec<String>,
}

impl Args {
    fn parse(args: &[String]) -> Result<Self, String> {
        const SWITCHES: [&str; 3] = ["--check", "--record", "--websocket"];
        let mut parsed =
            Self { values: Vec::new(), switches: BTreeSet::new(), positional: Vec::new(), command: Vec::new() };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                parsed.command = it.cloned().collect();
                break;
            } else if SWITCHES.contains(&arg.as_str()) {
                parsed.switches.insert(arg.clone());
            } else if arg.starts_with("--") {
                let value = it.next().ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))?;
                parsed.values.push((arg.clone(), value.clone()));
            } else {
                parsed.positional.push(arg.clone());
            }
        }
        Ok(parsed)
    }

    fn value(&self, key: &str) -> Option<&str> {
        self.values.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn only_known(&self, known: &[&str]) -> Result<(), String> {
        for (k, _) in &self.values {
            if !known.contains(&k.as_str()) && k != "--spec" {
                return Err(format!("unknown option {k}\n{USAGE}"));
            }
        }
        Ok(())
    }
}

fn run(args: &[String]) -> Result<bool, String> {
    let Some((command, rest)) = args.split_first() else { return Err(USAGE.into()) };
    let args = Args::parse(rest)?;
    let spec = args.value("--spec").map_or_else(SpecDir::default, SpecDir::new);
    if command != "tcp" && !args.command.is_empty() {
        return Err(format!("only tcp takes a broker command after --\n{USAGE}"));
    }
    match command.as_str() {
        "core" => {
            args.only_known(&["--only", "--conf", "--transcripts"])?;
            core(&spec, &args)
        }
        "tcp" => {
            args.only_known(&[
                "--name",
                "--broker",
                "--broker-config",
                "--redis",
                "--redis-key",
                "--extensions",
                "--timeout-ms",
                "--only",
                "--transcripts",
                "--save",
            ])?;
            tcp(&spec, &args)
        }
        "report" => {
            args.only_known(&[])?;
            report(&spec, args.switches.contains("--check"))
        }
        "check" => check(&spec),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(true)
        }
        other => Err(format!("unknown command {other}\n{USAGE}")),
    }
}

fn scenarios(spec: &SpecDir, only: Option<&str>) -> Result<Vec<Scenario>, String> {
    let all = load_scenarios(&spec.scenarios()).map_err(|e| e.to_string())?;
    Ok(all.into_iter().filter(|s| only.is_none_or(|o| s.name.contains(o) || s.group.contains(o))).collect())
}

fn deviations(spec: &SpecDir) -> Result<Vec<Deviation>, String> {
    catalogue::load_deviations(&spec.deviations()).map_err(|e| e.to_string())
}

fn core(spec: &SpecDir, args: &Args) -> Result<bool, String> {
    let target = match args.value("--conf") {
        Some(path) => {
            let conf = BrokerConf::load(&PathBuf::from(path)).map_err(|e| e.to_string())?;
            CoreTarget::with_conf(&conf).map_err(|e| e.to_string())?
        }
        None => CoreTarget::new(),
    };
    let scenarios = scenarios(spec, args.value("--only"))?;
    let runs: Vec<Run> = scenarios.iter().map(|s| target.run(s)).collect();
    finish(spec, CORE, &runs, args.value("--transcripts"))
}

fn tcp(spec: &SpecDir, args: &Args) -> Result<bool, String> {
    let addr = args.positional.first().ok_or_else(|| format!("tcp needs HOST:PORT\n{USAGE}"))?;
    let addr = resolve(addr)?;
    let mut options = TcpOptions::default();
    if let Some(path) = args.value("--broker-config") {
        options.broker_conf = Some(BrokerConf::load(&PathBuf::from(path)).map_err(|e| e.to_string())?);
    }
    if let Some(redis) = args.value("--redis") {
        options.redis = Some(resolve(redis)?);
    }
    if let Some(key) = args.value("--redis-key") {
        options.redis_key = key.to_owned();
    }
    for ext in args.value("--extensions").unwrap_or_default().split(',').filter(|e| !e.is_empty()) {
        match ext {
            "expiry" => options.expiry = true,
            other => return Err(format!("unknown extension {other} (known: expiry)")),
        }
    }
    if let Some(ms) = args.value("--timeout-ms") {
        let ms: u64 = ms.parse().map_err(|_| format!("--timeout-ms {ms} is not a number"))?;
        options.timeout = Duration::from_millis(ms);
    }
    options.websocket = args.switches.contains("--websocket");
    if !args.command.is_empty() {
        let conf = match args.value("--broker-config") {
            Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?,
            None => String::new(),
        };
        options.broker_command = Some(BrokerCommand { argv: args.command.clone(), conf });
    }
    let name = args.value("--name").unwrap_or("tcp");
    let target = TcpTarget::new(addr, options);
    let scenarios = scenarios(spec, args.value("--only"))?;
    let mut runs = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        runs.push(target.run(s, i));
    }
    let save = match (args.value("--save"), args.switches.contains("--record")) {
        (Some(path), _) => Some(PathBuf::from(path)),
        (None, true) => Some(spec.results().join(format!("{name}.tsv"))),
        (None, false) => None,
    };
    if let Some(path) = save {
        let broker = args.value("--broker").unwrap_or(name);
        let results = Results::from_runs(name, broker, &runs);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::write(&path, results.to_tsv()).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("results written to {}", path.display());
    }
    finish(spec, name, &runs, args.value("--transcripts"))
}

fn resolve(addr: &str) -> Result<SocketAddr, String> {
    addr.to_socket_addrs().map_err(|e| format!("{addr}: {e}"))?.next().ok_or_else(|| format!("{addr}: no address"))
}

/// Prints one line per run and a summary; writes transcripts if asked.
/// True when nothing failed except known deviations.
fn finish(spec: &SpecDir, target: &str, runs: &[Run], transcripts: Option<&str>) -> Result<bool, String> {
    let deviations = deviations(spec)?;
    let (mut pass, mut fail, mut known, mut skip) = (0, 0, 0, 0);
    for run in runs {
        let known_deviation = deviations.iter().any(|d| d.target == target && d.scenario == run.scenario);
        match &run.outcome {
            Outcome::Pass => pass += 1,
            Outcome::Skip(_) => skip += 1,
            Outcome::Fail { .. } if known_deviation => known += 1,
            Outcome::Fail { .. } => fail += 1,
        }
        let tag = match (&run.outcome, known_deviation) {
            (Outcome::Pass, _) => "pass",
            (Outcome::Skip(_), _) => "skip",
            (Outcome::Fail { .. }, true) => "known",
            (Outcome::Fail { .. }, false) => "FAIL",
        };
        match &run.outcome {
            Outcome::Pass => println!("{tag:5} {}", run.scenario),
            Outcome::Skip(why) => println!("{tag:5} {}: {why}", run.scenario),
            other => println!("{tag:5} {}: {other}", run.scenario),
        }
        if let Some(dir) = transcripts {
            std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            let path = PathBuf::from(dir).join(format!("{}.txt", run.scenario));
            let text = format!("{}\n# {}: {}\n", run.transcript, target, run.outcome);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    println!("{target}: {pass} passed, {fail} failed, {known} known deviations, {skip} skipped");
    Ok(fail == 0)
}

fn report(spec: &SpecDir, check: bool) -> Result<bool, String> {
    let text = report::generate(spec).map_err(|e| e.to_string())?;
    let path = spec.table();
    if check {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current != text {
            eprintln!("{} is out of date: run `cargo run -p culex-conformance -- report`", path.display());
            return Ok(false);
        }
        println!("{} is up to date", path.display());
        return Ok(true);
    }
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(true)
}

fn check(spec: &SpecDir) -> Result<bool, String> {
    let catalogue = Catalogue::load(&spec.statements()).map_err(|e| e.to_string())?;
    let normative = catalogue::load_normative(&spec.normative()).map_err(|e| e.to_string())?;
    let baseline = catalogue::load_baseline(&spec.baseline()).map_err(|e| e.to_string())?;
    let scenarios = scenarios(spec, None)?;
    let problems = catalogue.problems(&normative, &scenarios, &baseline);
    for p in &problems {
        println!("{p}");
    }
    println!("{} problems", problems.len());
    Ok(problems.is_empty())
}
