//! The statement catalogue (`statements.toml`), the standard's list it
//! follows (the normative TSV), the baseline of tested statements, known
//! deviations, and the checks that keep them consistent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::SpecError;
use crate::scenario::Scenario;

/// Who a statement binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The server.
    Server,
    /// The client.
    Client,
    /// Either, depending on who sends or receives.
    Both,
}

impl Side {
    /// Whether the statement binds a server.
    pub fn binds_server(self) -> bool {
        self != Self::Client
    }

    /// The name as the TSV writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Client => "client",
            Self::Both => "both",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a statement stands in the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Status {
    /// Scenarios test it.
    #[serde(rename = "tested")]
    Tested,
    /// It does not apply to Culex; `reason` says why.
    #[serde(rename = "n/a")]
    NotApplicable,
    /// It will be tested once `issue` lands.
    #[serde(rename = "deferred")]
    Deferred,
}

impl Status {
    /// The name as `statements.toml` writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tested => "tested",
            Self::NotApplicable => "n/a",
            Self::Deferred => "deferred",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// `MQTT-x.y.z-n`, or `CULEX-AREA-n` for the Culex contract.
    pub id: String,
    /// The section of the standard (or the Culex area).
    pub section: String,
    /// Who it binds.
    pub side: Side,
    /// What it says, in our own words, on one line.
    pub summary: String,
    /// Where it stands.
    pub status: Status,
    /// The scenarios that test it (status `tested`).
    #[serde(default)]
    pub scenarios: Vec<String>,
    /// Why it does not apply, or what it waits for.
    #[serde(default)]
    pub reason: Option<String>,
    /// The issue a deferred statement waits for.
    #[serde(default)]
    pub issue: Option<String>,
}

impl Statement {
    /// Whether this is one of the standard's statements (not Culex's own).
    pub fn is_mqtt(&self) -> bool {
        self.id.starts_with("MQTT-")
    }
}

/// Every statement the suite knows, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    /// The statements.
    pub statements: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    statement: Vec<Statement>,
}

impl Catalogue {
    /// Loads `statements.toml`.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
        let raw: RawCatalogue =
            toml::from_str(&text).map_err(|e| SpecError::Toml { path: path.to_owned(), message: e.to_string() })?;
        Ok(Self { statements: raw.statement })
    }

    /// The statement with this id.
    pub fn get(&self, id: &str) -> Option<&Statement> {
        self.statements.iter().find(|s| s.id == id)
    }

    /// Ids with status `tested`.
    pub fn tested(&self) -> BTreeSet<&str> {
        self.statements.iter().filter(|s| s.status == Status::Tested).map(|s| s.id.as_str()).collect()
    }

    /// Every inconsistency between the catalogue, the standard's list, the
    /// scenarios and the baseline; empty when all is well.
    pub fn problems(
        &self,
        normative: &[NormativeRow],
        scenarios: &[Scenario],
        baseline: &BTreeSet<String>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let mut seen = BTreeMap::new();
        for s in &self.statements {
            *seen.entry(s.id.as_str()).or_insert(0) += 1;
        }
        for (id, n) in &seen {
            if *n > 1 {
                problems.push(format!("{id} appears {n} times in statements.toml"));
            }
        }
        let by_id: BTreeMap<&str, &NormativeRow> = normative.iter().map(|r| (r.id.as_str(), r)).collect();
        for row in normative {
            match self.get(&row.id) {
                None => problems.push(format!("{} (from the standard) is missing from statements.toml", row.id)),
                Some(s) if s.side != row.side => {
                    problems.push(format!("{}: side is {} in the standard's list, {} here", row.id, row.side, s.side))
                }
                Some(s) if s.section != row.section => problems.push(format!(
                    "{}: section is `{}` in the standard's list, `{}` here",
                    row.id, row.section, s.section
                )),
                Some(_) => {}
            }
        }
        let cited = citations(scenarios);
        for s in &self.statements {
            if s.is_mqtt() && !by_id.contains_key(s.id.as_str()) {
                problems.push(format!("{} is not a statement of MQTT 3.1.1", s.id));
            }
            if !s.is_mqtt() && !s.id.starts_with("CULEX-") {
                problems.push(format!("{}: our own ids start with CULEX-", s.id));
            }
            if s.summary.trim().is_empty() || s.summary.contains('\n') {
                problems.push(format!("{}: the summary must be one non-empty line", s.id));
            }
            let citing: BTreeSet<&str> = cited.get(s.id.as_str()).cloned().unwrap_or_default();
            let listed: BTreeSet<&str> = s.scenarios.iter().map(String::as_str).collect();
            match s.status {
                Status::Tested => {
                    if listed.is_empty() {
                        problems.push(format!("{} is tested but lists no scenario", s.id));
                    }
                    for name in listed.difference(&citing) {
                        problems
                            .push(format!("{}: lists scenario {name}, which does not exist or does not cite it", s.id));
                    }
                    for name in citing.difference(&listed) {
                        problems.push(format!("{}: scenario {name} cites it; add it to its `scenarios`", s.id));
                    }
                }
                Status::NotApplicable | Status::Deferred => {
                    if s.reason.as_deref().is_none_or(|r| r.trim().is_empty()) {
                        problems.push(format!("{} is {} without a reason", s.id, s.status));
                    }
                    if !listed.is_empty() || !citing.is_empty() {
                        problems.push(format!("{} is {} but has scenarios: mark it tested", s.id, s.status));
                    }
                }
            }
            if s.status == Status::Deferred && s.issue.is_none() {
                problems.push(format!("{} is deferred without the issue it waits for", s.id));
            }
        }
        for scenario in scenarios {
            for id in &scenario.statements {
                if self.get(id).is_none() {
                    problems.push(format!("scenario {} cites {id}, which is not in statements.toml", scenario.name));
                }
            }
        }
        let tested = self.tested();
        for id in baseline {
            if !tested.contains(id.as_str()) {
                problems
                    .push(format!("{id} is in tested.baseline but no longer tested: the catalogue may not regress"));
            }
        }
        for id in &tested {
            if !baseline.contains(*id) {
                problems.push(format!("{id} is tested: add it to tested.baseline"));
            }
        }
        problems
    }
}

/// Statement id → names of the scenarios citing it.
pub fn citations(scenarios: &[Scenario]) -> BTreeMap<&str, BTreeSet<&str>> {
    let mut cited: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in scenarios {
        for id in &s.statements {
            cited.entry(id.as_str()).or_default().insert(s.name.as_str());
        }
    }
    cited
}

/// One row of the standard's list of normative statements (the TSV in
/// `shared/spec/`); the statement text itself is not kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormativeRow {
    /// `MQTT-x.y.z-n`.
    pub id: String,
    /// Second-level section, e.g. `3.1 CONNECT`.
    pub section: String,
    /// Who it binds.
    pub side: Side,
}

/// Reads the normative TSV: a header line, then `id section side statement`.
pub fn load_normative(path: &Path) -> Result<Vec<NormativeRow>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let mut cols = line.split('\t');
        let (Some(id), Some(section), Some(side)) = (cols.next(), cols.next(), cols.next()) else {
            return Err(SpecError::Script { path: path.to_owned(), line: i + 1, message: "expected 4 columns".into() });
        };
        let side = match side {
            "server" => Side::Server,
            "client" => Side::Client,
            "both" => Side::Both,
            other => {
                return Err(SpecError::Script {
                    path: path.to_owned(),
                    line: i + 1,
                    message: format!("side `{other}`"),
                });
            }
        };
        rows.push(NormativeRow { id: id.to_owned(), section: section.to_owned(), side });
    }
    Ok(rows)
}

/// Reads `tested.baseline`: one statement id per line, `#` comments.
pub fn load_baseline(path: &Path) -> Result<BTreeSet<String>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A scenario that a target is known to fail, and why that is the
/// target's fault, not the scenario's.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deviation {
    /// The target: `core`, `mosquitto`, or another result name.
    pub target: String,
    /// The scenario it fails.
    pub scenario: String,
    /// The statement it breaks.
    pub statement: String,
    /// What the target does instead.
    pub note: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeviations {
    #[serde(default)]
    deviation: Vec<Deviation>,
}

/// Reads `deviations.toml`.
pub fn load_deviations(path: &Path) -> Result<Vec<Deviation>, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
    let raw: RawDeviations =
        toml::from_str(&text).map_err(|e| SpecError::Toml { path: path.to_owned(), message: e.to_string() })?;
    Ok(raw.deviation)
}
