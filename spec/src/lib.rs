//! culex-spec: the MQTT 3.1.1 conformance suite of Culex, as data.
//!
//! The suite lives in this crate's directory:
//!
//! | file | what it holds |
//! | --- | --- |
//! | `statements.toml` | every normative statement of MQTT 3.1.1 (and Culex's own, `CULEX-*`), summarised in our words, with who it binds and its status: tested (by which scenarios), n/a (why) or deferred (waiting for which issue) |
//! | `scenarios/<section>/<id>.<slug>.toml` | one scenario per file: the statements it tests, broker settings it relies on, and its steps ([`script`]) |
//! | `tested.baseline` | statements once tested; the catalogue test refuses to let one fall back |
//! | `deviations.toml` | scenarios a target is known to fail, with the statement it breaks |
//! | `broker.conf` | the settings a broker under test runs with, so that every scenario can run against it |
//! | `results/<target>.tsv` | the last recorded TCP run per target (`culex-conformance tcp --save`) |
//! | `CONFORMANCE.md` | the generated table (`culex-conformance report`) |
//!
//! This crate parses and checks those files and encodes what clients
//! send; `culex-conformance` runs the scenarios.
#![warn(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub mod catalogue;
pub mod packet;
pub mod scenario;
pub mod script;
pub mod text;

pub use catalogue::{Catalogue, Deviation, NormativeRow, Side, Statement, Status};
pub use packet::{ConnectSpec, IdSpec, PacketSpec, PublishSpec, SendSpec};
pub use scenario::{Requirement, Scenario, load_scenarios};
pub use script::{Expected, ScriptLine, Step};
pub use text::{Env, Text};

/// Why a suite file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for its kind.
    #[error("{path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// What the TOML reader said.
        message: String,
    },
    /// A line of a script (or of a line-based file) is wrong.
    #[error("{path}:{line}: {message}")]
    Script {
        /// The file.
        path: PathBuf,
        /// The line, 1-based.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The file breaks a rule of the suite.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl SpecError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_owned(), source }
    }
}

/// The files of a suite, found from its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecDir {
    root: PathBuf,
}

impl Default for SpecDir {
    /// The suite of this source tree (this crate's own directory).
    fn default() -> Self {
        Self::new(env!("CARGO_MANIFEST_DIR"))
    }
}

impl SpecDir {
    /// The suite in `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `statements.toml`.
    pub fn statements(&self) -> PathBuf {
        self.root.join("statements.toml")
    }

    /// `scenarios/`.
    pub fn scenarios(&self) -> PathBuf {
        self.root.join("scenarios")
    }

    /// `tested.baseline`.
    pub fn baseline(&self) -> PathBuf {
        self.root.join("tested.baseline")
    }

    /// `deviations.toml`.
    pub fn deviations(&self) -> PathBuf {
        self.root.join("deviations.toml")
    }

    /// `broker.conf`.
    pub fn broker_conf(&self) -> PathBuf {
        self.root.join("broker.conf")
    }

    /// `results/`.
    pub fn results(&self) -> PathBuf {
        self.root.join("results")
    }

    /// `CONFORMANCE.md`.
    pub fn table(&self) -> PathBuf {
        self.root.join("CONFORMANCE.md")
    }

    /// The standard's list of statements, in `shared/spec/` beside the
    /// repository.
    pub fn normative(&self) -> PathBuf {
        self.root.join("../../shared/spec/mqtt-v3.1.1-normative.tsv")
    }
}

/// Broker settings in `mosquitto.conf` syntax: `key value` lines, `#`
/// comments. Later lines win; only single-valued keys matter here.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerConf {
    /// Key → value, as written.
    pub entries: BTreeMap<String, String>,
}

impl BrokerConf {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
        Ok(Self::parse(&text))
    }

    /// Parses configuration text.
    pub fn parse(text: &str) -> Self {
        let entries = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| match l.split_once(char::is_whitespace) {
                Some((k, v)) => (k.to_owned(), v.trim().to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        Self { entries }
    }

    /// The settings of `scenario` this configuration does not provide, as
    /// `key=value` (empty: the scenario can run against it).
    pub fn missing(&self, required: &BTreeMap<String, String>) -> Vec<String> {
        required.iter().filter(|(k, v)| self.entries.get(*k) != Some(*v)).map(|(k, v)| format!("{k}={v}")).collect()
    }
}
