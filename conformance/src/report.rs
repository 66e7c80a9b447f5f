//! Results per target, their record in `spec/results/*.tsv`, and the
//! Markdown table of `spec/CONFORMANCE.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use culex_spec::{Catalogue, Deviation, Scenario, Side, SpecDir, Statement, Status, catalogue, load_scenarios};

use crate::{CoreTarget, Outcome, Run};

/// The name of the core target's column.
pub const CORE: &str = "core";

/// Columns come in this order; other targets follow, alphabetically.
const COLUMN_ORDER: [&str; 3] = [CORE, "culex", "culex-async-std"];

/// Why results could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A suite file could not be used.
    #[error(transparent)]
    Spec(#[from] culex_spec::SpecError),
    /// A results line is malformed.
    #[error("{path}:{line}: expected `scenario<TAB>pass|fail|skip<TAB>detail`")]
    Format {
        /// The file.
        path: PathBuf,
        /// The line, 1-based.
        line: usize,
    },
}

/// The three results a scenario can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// It passed.
    Pass,
    /// It failed.
    Fail,
    /// The target could not run it.
    Skip,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// One scenario's result, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// Pass, fail or skip.
    pub kind: Kind,
    /// Why it failed or was skipped (empty on a pass).
    pub detail: String,
}

impl From<&Outcome> for Recorded {
    fn from(outcome: &Outcome) -> Self {
        let kind = match outcome {
            Outcome::Pass => Kind::Pass,
            Outcome::Fail { .. } => Kind::Fail,
            Outcome::Skip(_) => Kind::Skip,
        };
        let detail = match outcome {
            Outcome::Pass => String::new(),
            Outcome::Skip(why) => why.clone(),
            fail => fail.to_string().trim_start_matches("FAIL ").to_owned(),
        };
        Self { kind, detail: one_line(&detail) }
    }
}

/// All results of one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Results {
    /// The target's name: `core`, `culex`, `mosquitto`, ...
    pub target: String,
    /// What was tested, e.g. `mosquitto 2.0.11 (Debian)`.
    pub broker: String,
    /// Scenario name → result.
    pub outcomes: BTreeMap<String, Recorded>,
}

impl Results {
    /// Results of a set of runs.
    pub fn from_runs(target: &str, broker: &str, runs: &[Run]) -> Self {
        let outcomes = runs.iter().map(|r| (r.scenario.clone(), Recorded::from(&r.outcome))).collect();
        Self { target: target.to_owned(), broker: one_line(broker), outcomes }
    }

    /// The record file's text: a `# broker:` line, then one line per
    /// scenario.
    pub fn to_tsv(&self) -> String {
        let mut out = format!("# broker: {}\n", self.broker);
        for (name, r) in &self.outcomes {
            let _ = writeln!(out, "{name}\t{}\t{}", r.kind.name(), r.detail);
        }
        out
    }

    /// Reads a record file; the target is named after the file.
    pub fn load(path: &Path) -> Result<Self, ReportError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReportError::Io { path: path.to_owned(), source })?;
        let target = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let mut results = Self { target, broker: String::new(), outcomes: BTreeMap::new() };
        for (i, line) in text.lines().enumerate() {
            if let Some(broker) = line.strip_prefix("# broker:") {
                results.broker = broker.trim().to_owned();
                continue;
            }
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut cols = line.splitn(3, '\t');
            let (Some(name), Some(kind)) = (cols.next(), cols.next()) else {
                return Err(ReportError::Format { path: path.to_owned(), line: i + 1 });
            };
            let kind = match kind {
                "pass" => Kind::Pass,
                "fail" => Kind::Fail,
                "skip" => Kind::Skip,
                _ => return Err(ReportError::Format { path: path.to_owned(), line: i + 1 }),
            };
            let detail = cols.next().unwrap_or_default().to_owned();
            results.outcomes.insert(name.to_owned(), Recorded { kind, detail });
        }
        Ok(results)
    }
}

/// Every `*.tsv` in `dir` (none if it does not exist), in column order.
pub fn load_recorded(dir: &Path) -> Result<Vec<Results>, ReportError> {
    let mut all = Vec::new();
    if !dir.is_dir() {
        return Ok(all);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| ReportError::Io { path: dir.to_owned(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| ReportError::Io { path: dir.to_owned(), source })?.path();
        if path.extension().is_some_and(|e| e == "tsv") {
            all.push(Results::load(&path)?);
        }
    }
    sort_columns(&mut all);
    Ok(all)
}

/// Core first, then Culex's binaries, then the rest by name.
pub fn sort_columns(columns: &mut [Results]) {
    columns.sort_by_key(|r| {
        let rank = COLUMN_ORDER.iter().position(|n| *n == r.target).unwrap_or(COLUMN_ORDER.len());
        (rank, r.target.clone())
    });
}

/// The table of the suite in `spec`: the core is run afresh, TCP targets
/// come from `results/`.
pub fn generate(spec: &SpecDir) -> Result<String, ReportError> {
    let catalogue = Catalogue::load(&spec.statements())?;
    let scenarios = load_scenarios(&spec.scenarios())?;
    let deviations = catalogue::load_deviations(&spec.deviations())?;
    let core = CoreTarget::new();
    let runs: Vec<Run> = scenarios.iter().map(|s| core.run(s)).collect();
    let mut columns = vec![Results::from_runs(CORE, "culex-core", &runs)];
    columns.extend(load_recorded(&spec.results())?);
    sort_columns(&mut columns);
    Ok(Suite { catalogue: &catalogue, scenarios: &scenarios, deviations: &deviations }.markdown(&columns))
}

/// What a report is made of.
#[derive(Debug, Clone, Copy)]
pub struct Suite<'a> {
    /// The catalogue.
    pub catalogue: &'a Catalogue,
    /// Every scenario.
    pub scenarios: &'a [Scenario],
    /// Known deviations.
    pub deviations: &'a [Deviation],
}

impl Suite<'_> {
    fn deviation(&self, target: &str, scenario: &str) -> Option<&Deviation> {
        self.deviations.iter().find(|d| d.target == target && d.scenario == scenario)
    }

    /// A scenario's cell in a target's column.
    fn cell(&self, results: &Results, scenario: &str) -> (Cell, String) {
        match results.outcomes.get(scenario) {
            None => (Cell::Missing, "not run".into()),
            Some(r) => match r.kind {
                Kind::Pass => (Cell::Pass, "pass".into()),
                Kind::Fail if self.deviation(&results.target, scenario).is_some() => {
                    (Cell::Deviation, "deviation".into())
                }
                Kind::Fail => (Cell::Fail, "**FAIL**".into()),
                Kind::Skip => (Cell::Skip, format!("skip: {}", short_reason(&r.detail))),
            },
        }
    }

    /// The Markdown table, with one column per result set.
    pub fn markdown(&self, columns: &[Results]) -> String {
        let mut out = String::new();
        out.push_str("# MQTT 3.1.1 conformance of Culex\n\n");
        out.push_str(
            "Generated by `cargo run -p culex-conformance -- report` from `statements.toml`, the scenarios in \
             `scenarios/`, a fresh run of every scenario against culex-core and the TCP runs recorded in `results/`. \
             Do not edit it by hand: `cargo test -p culex-conformance` fails while it is out of date.\n\n",
        );
        out.push_str("Targets:\n\n");
        for c in columns {
            let how = if c.target == CORE {
                "culex-core driven through its `Simulation` in virtual time (`culex-conformance core`)".to_owned()
            } else {
                // `--broker "NAME over WebSocket"` marks a `--websocket` run.
                let how = if c.broker.ends_with(" over WebSocket") {
                    "(`culex-conformance tcp --websocket`)"
                } else {
                    "over TCP (`culex-conformance tcp`)"
                };
                format!("{} {how}, recorded in `results/{}.tsv`", c.broker, c.target)
            };
            let _ = writeln!(out, "- **{}**: {how}", c.target);
        }
        out.push_str(
            "\nA cell says `pass`, `**FAIL**`, `deviation` (the target fails a scenario for a reason recorded in \
             `deviations.toml`, listed below) or `skip` (the target cannot run the scenario: presence needs \
             `--redis`, payload expiry is a Culex extension, `shutdown`, `restart` and `crash` need control of the \
             broker process (the TCP target is given its command), section 6 scenarios need WebSocket (`--websocket`; the core has no transport), and some scenarios need the \
             broker settings of `broker.conf`).\n\n",
        );
        self.summary(&mut out, columns);
        let (mqtt, culex): (Vec<&Statement>, Vec<&Statement>) =
            self.catalogue.statements.iter().partition(|s| s.is_mqtt());
        out.push_str("## MQTT 3.1.1 statements\n\n");
        self.statement_table(&mut out, &mqtt, columns);
        out.push_str(
            "\n## The Culex contract\n\nPresence in Redis, payload expiry and limits, with ids of our own.\n\n",
        );
        self.statement_table(&mut out, &culex, columns);
        out.push_str("\n## Scenarios\n\n");
        self.scenario_table(&mut out, columns);
        self.deviation_list(&mut out);
        self.failure_list(&mut out, columns);
        out
    }

    fn summary(&self, out: &mut String, columns: &[Results]) {
        out.push_str("## Summary\n\n| status | server | both | client | Culex | all |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
        for status in [Status::Tested, Status::NotApplicable, Status::Deferred] {
            let count = |f: &dyn Fn(&Statement) -> bool| {
                self.catalogue.statements.iter().filter(|s| s.status == status && f(s)).count()
            };
            let _ = writeln!(
                out,
                "| {status} | {} | {} | {} | {} | {} |",
                count(&|s| s.is_mqtt() && s.side == Side::Server),
                count(&|s| s.is_mqtt() && s.side == Side::Both),
                count(&|s| s.is_mqtt() && s.side == Side::Client),
                count(&|s| !s.is_mqtt()),
                count(&|_| true),
            );
        }
        let _ = writeln!(out, "\n{} scenarios.\n", self.scenarios.len());
        out.push_str("| target | pass | fail | deviation | skip |\n| --- | ---: | ---: | ---: | ---: |\n");
        for c in columns {
            let mut counts = BTreeMap::new();
            for s in self.scenarios {
                *counts.entry(self.cell(c, &s.name).0).or_insert(0) += 1;
            }
            let n = |cell| counts.get(&cell).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                c.target,
                n(Cell::Pass),
                n(Cell::Fail) + n(Cell::Missing),
                n(Cell::Deviation),
                n(Cell::Skip)
            );
        }
        out.push('\n');
    }

    fn statement_table(&self, out: &mut String, statements: &[&Statement], columns: &[Results]) {
        out.push_str("| id | binds | summary | status | scenarios |");
        for c in columns {
            let _ = write!(out, " {} |", c.target);
        }
        out.push_str("\n| --- | --- | --- | --- | --- |");
        out.push_str(&" --- |".repeat(columns.len()));
        out.push('\n');
        for s in statements {
            let status = match s.status {
                Status::Tested => "tested".to_owned(),
                Status::NotApplicable => format!("n/a: {}", s.reason.as_deref().unwrap_or_default()),
                Status::Deferred => format!(
                    "deferred ({}): {}",
                    s.issue.as_deref().unwrap_or_default(),
                    s.reason.as_deref().unwrap_or_default()
                ),
            };
            let names: Vec<String> = s
                .scenarios
                .iter()
                .map(|n| match n.strip_prefix(&format!("{}.", s.id)) {
                    Some(slug) => format!("`{slug}`"),
                    None => format!("`{n}`"),
                })
                .collect();
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} |",
                s.id,
                s.side,
                cell_text(&s.summary),
                cell_text(&status),
                names.join(", ")
            );
            for c in columns {
                let _ = write!(out, " {} |", self.statement_cell(c, s));
            }
            out.push('\n');
        }
    }

    fn statement_cell(&self, results: &Results, statement: &Statement) -> String {
        if statement.scenarios.is_empty() {
            return "—".into();
        }
        let mut counts: BTreeMap<Cell, usize> = BTreeMap::new();
        for name in &statement.scenarios {
            *counts.entry(self.cell(results, name).0).or_insert(0) += 1;
        }
        let n = |cell| counts.get(&cell).copied().unwrap_or(0);
        let total = statement.scenarios.len();
        let failed = n(Cell::Fail) + n(Cell::Missing);
        if failed > 0 {
            format!("**FAIL** {failed}/{total}")
        } else if n(Cell::Deviation) > 0 {
            format!("deviation {}/{total}", n(Cell::Deviation))
        } else if n(Cell::Skip) == total {
            "skip".into()
        } else if n(Cell::Skip) > 0 {
            format!("pass ({} skipped)", n(Cell::Skip))
        } else {
            "pass".into()
        }
    }

    fn scenario_table(&self, out: &mut String, columns: &[Results]) {
        out.push_str("| scenario | statements | what it checks |");
        for c in columns {
            let _ = write!(out, " {} |", c.target);
        }
        out.push_str("\n| --- | --- | --- |");
        out.push_str(&" --- |".repeat(columns.len()));
        out.push('\n');
        for s in self.scenarios {
            let _ =
                write!(out, "| `{}/{}` | {} | {} |", s.group, s.name, s.statements.join(", "), cell_text(&s.summary));
            for c in columns {
                let _ = write!(out, " {} |", self.cell(c, &s.name).1);
            }
            out.push('\n');
        }
    }

    fn deviation_list(&self, out: &mut String) {
        if self.deviations.is_empty() {
            return;
        }
        out.push_str("\n## Known deviations\n\n| target | scenario | statement | what the target does |\n| --- | --- | --- | --- |\n");
        for d in self.deviations {
            let _ = writeln!(out, "| {} | `{}` | {} | {} |", d.target, d.scenario, d.statement, cell_text(&d.note));
        }
    }

    fn failure_list(&self, out: &mut String, columns: &[Results]) {
        let names: BTreeSet<&str> = self.scenarios.iter().map(|s| s.name.as_str()).collect();
        let mut lines = Vec::new();
        for c in columns {
            for name in &names {
                if let (Cell::Fail | Cell::Deviation, _) = self.cell(c, name) {
                    let detail = c.outcomes.get(*name).map(|r| r.detail.as_str()).unwrap_or_default();
                    lines.push(format!("| {} | `{name}` | {} |", c.target, cell_text(detail)));
                }
            }
        }
        if !lines.is_empty() {
            out.push_str("\n## Failures in detail\n\n| target | scenario | what happened |\n| --- | --- | --- |\n");
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cell {
    Pass,
    Fail,
    Deviation,
    Skip,
    Missing,
}

/// A skip reason without its hints in parentheses.
fn short_reason(detail: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in detail.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            c if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ").replace(" ,", ",")
}

fn one_line(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Text safe inside a Markdown table cell.
fn cell_text(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}
