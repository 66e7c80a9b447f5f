//! Scenario files: a few header keys and a script of steps.
//!
//! ```toml
//! statements = ["MQTT-3.1.2-24"]
//! summary = "A client silent for 1.5 times its keepalive is disconnected"
//! requires = []            # optional: "expiry" (Culex payload expiry), "websocket"; steps add
//!                          # "presence", "shutdown" and "restart" themselves
//! certificates = {}        # optional: client -> TLS certificate Common Name ("" = none)
//! steps = '''
//! a -> CONNECT id="{p}a" keepalive=2
//! a <- CONNACK sp=0 rc=0
//! wait 2.8s
//! a <- nothing
//! wait 400ms
//! a <- CLOSE
//! '''
//!
//! [config]                 # optional: mosquitto.conf keys the scenario relies on
//! max_inflight_messages = 2
//! ```
//!
//! The file name is `<first statement>.<slug>.toml`; the directory is the
//! section (`3.1-connect`, `culex-presence`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::SpecError;
use crate::script::{ScriptLine, Step, parse_script};

/// Something a scenario needs from the broker beyond plain MQTT 3.1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Requirement {
    /// The presence store can be read (`online` / `offline` steps).
    Presence,
    /// The broker implements Culex payload expiry (`expired_at`).
    Expiry,
    /// The runner can shut the broker down (`shutdown` step).
    Shutdown,
    /// The runner can stop the broker and start it again on its store, as
    /// on SIGTERM (`restart` step) or after kill -9 (`crash` step).
    Restart,
    /// The scenario runs over WebSocket (section 6): the TCP target's
    /// `--websocket` mode only; the core has no transport and skips it.
    WebSocket,
    /// Clients connect over TLS to a listener that takes the user name from
    /// the client certificate (`use_identity_as_username`); set by
    /// `certificates`. The core target plays that listener.
    Certificates,
}

impl Requirement {
    /// The name used in `requires = [..]` and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Presence => "presence",
            Self::Expiry => "expiry",
            Self::Shutdown => "shutdown",
            Self::Restart => "restart",
            Self::WebSocket => "websocket",
            Self::Certificates => "certificates",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Self::Presence, Self::Expiry, Self::Shutdown, Self::Restart, Self::WebSocket, Self::Certificates]
            .into_iter()
            .find(|r| r.name() == name)
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One scenario file.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file name without `.toml`, e.g. `MQTT-3.1.2-24.keepalive-1-5x`.
    pub name: String,
    /// The directory it sits in, e.g. `3.1-connect`.
    pub group: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// Statement ids it tests; the first one names the file.
    pub statements: Vec<String>,
    /// One line saying what it checks.
    pub summary: String,
    /// What it needs beyond plain MQTT.
    pub requires: BTreeSet<Requirement>,
    /// Broker settings (mosquitto.conf keys) it relies on, as text.
    pub config: BTreeMap<String, String>,
    /// The TLS client certificate each named client presents, by its Common
    /// Name; `None` for a client that presents none.
    pub certificates: BTreeMap<String, Option<String>>,
    /// The steps, in order.
    pub steps: Vec<ScriptLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    statements: Vec<String>,
    summary: String,
    #[serde(default)]
    requires: Vec<String>,
    steps: String,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    #[serde(default)]
    certificates: BTreeMap<String, String>,
}

impl Scenario {
    /// Loads and checks one scenario file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let source = std::fs::read_to_string(path).map_err(|e| SpecError::io(path, e))?;
        Self::parse(path, &source)
    }

    /// Parses a scenario from its text; `path` names it.
    pub fn parse(path: &Path, source: &str) -> Result<Self, SpecError> {
        let invalid = |message: String| SpecError::Invalid { path: path.to_owned(), message };
        let raw: RawScenario =
            toml::from_str(source).map_err(|e| SpecError::Toml { path: path.to_owned(), message: e.to_string() })?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".toml"))
            .ok_or_else(|| invalid("a scenario file name ends in .toml".into()))?
            .to_owned();
        let group = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let Some((first_id, slug)) = split_name(&name) else {
            return Err(invalid(format!(
                "file name `{name}` must be `<statement id>.<slug>`, e.g. MQTT-3.1.2-24.keepalive-1-5x"
            )));
        };
        if raw.statements.first().map(String::as_str) != Some(first_id) {
            return Err(invalid(format!("the first of `statements` must be {first_id}, the id that names the file")));
        }
        if let Some(dup) = raw.statements.iter().enumerate().find(|(i, s)| raw.statements[..*i].contains(s)) {
            return Err(invalid(format!("statement {} is cited twice", dup.1)));
        }
        if slug.is_empty() || !slug.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return Err(invalid(format!("slug `{slug}` must be lower-case letters, digits and dashes")));
        }
        if raw.summary.trim().is_empty() || raw.summary.contains('\n') {
            return Err(invalid("summary must be one non-empty line".into()));
        }
        let first_line = script_first_line(source);
        let steps = parse_script(&raw.steps, first_line).map_err(|(line, message)| SpecError::Script {
            path: path.to_owned(),
            line,
            message,
        })?;
        if steps.is_empty() {
            return Err(invalid("a scenario needs steps".into()));
        }
        let mut requires = BTreeSet::new();
        for name in &raw.requires {
            requires.insert(Requirement::from_name(name).ok_or_else(|| {
                invalid(format!(
                    "unknown requirement `{name}` (known: presence, expiry, shutdown, restart, websocket, certificates)"
                ))
            })?);
        }
        for line in &steps {
            match line.step {
                Step::Presence { .. } => requires.insert(Requirement::Presence),
                Step::Shutdown => requires.insert(Requirement::Shutdown),
                Step::Restart { .. } => requires.insert(Requirement::Restart),
                Step::SendText { .. } => requires.insert(Requirement::WebSocket),
                _ => false,
            };
        }
        check_variables(&steps).map_err(|(line, message)| SpecError::Script {
            path: path.to_owned(),
            line,
            message,
        })?;
        let clients: BTreeSet<&str> = steps.iter().filter_map(|l| l.step.client()).collect();
        if let Some(stranger) = raw.certificates.keys().find(|c| !clients.contains(c.as_str())) {
            return Err(invalid(format!("certificates: client `{stranger}` takes no step")));
        }
        if !raw.certificates.is_empty() {
            requires.insert(Requirement::Certificates);
        }
        let certificates =
            raw.certificates.into_iter().map(|(client, name)| (client, Some(name).filter(|n| !n.is_empty()))).collect();
        let mut config = BTreeMap::new();
        for (key, value) in raw.config {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(invalid(format!("config `{key}`: {other} is not a string, integer or boolean"))),
            };
            config.insert(key, text);
        }
        Ok(Self {
            statements: raw.statements,
            name,
            group,
            path: path.to_owned(),
            summary: raw.summary,
            requires,
            config,
            certificates,
            steps,
        })
    }

    /// The part of the name after the statement id, e.g. `keepalive-1-5x`.
    pub fn slug(&self) -> &str {
        split_name(&self.name).map_or(self.name.as_str(), |(_, slug)| slug)
    }

    /// The client names the steps use, in order of first use.
    pub fn clients(&self) -> Vec<&str> {
        let mut seen = Vec::new();
        for line in &self.steps {
            if let Some(c) = line.step.client()
                && !seen.contains(&c)
            {
                seen.push(c);
            }
        }
        seen
    }
}

/// `MQTT-3.1.2-24.keepalive-1-5x` → (`MQTT-3.1.2-24`, `keepalive-1-5x`):
/// the id ends at the first `-<digits>.` after an `MQTT-` or `CULEX-` start.
fn split_name(name: &str) -> Option<(&str, &str)> {
    let skip = ["MQTT-", "CULEX-"].into_iter().find(|p| name.starts_with(p))?.len();
    let bytes = name.as_bytes();
    bytes.iter().enumerate().skip(skip).filter(|(_, b)| **b == b'-').find_map(|(i, _)| {
        let digits = bytes[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        (digits > 0 && bytes.get(i + 1 + digits) == Some(&b'.'))
            .then(|| (&name[..i + 1 + digits], &name[i + 2 + digits..]))
    })
}

/// The file line on which the `steps` script starts.
fn script_first_line(source: &str) -> usize {
    for (i, line) in source.lines().enumerate() {
        if line.trim_start().starts_with("steps") {
            if let Some(at) = line.find("'''") {
                // TOML drops a newline right after the opening quotes.
                return if line[at + 3..].trim().is_empty() { i + 2 } else { i + 1 };
            }
            return i + 1;
        }
    }
    1
}

/// Every `$var` sent must have been bound by an earlier expectation.
fn check_variables(steps: &[ScriptLine]) -> Result<(), (usize, String)> {
    let mut bound = BTreeSet::new();
    for line in steps {
        match &line.step {
            Step::Send { packets, .. } => {
                for p in packets {
                    if let Some(v) = p.packet.variables().into_iter().find(|v| !bound.contains(*v)) {
                        return Err((line.line, format!("${v} is sent before an expectation binds it")));
                    }
                }
            }
            Step::Expect { packet, .. } => bound.extend(packet.variables().into_iter().map(str::to_owned)),
            Step::Distinct(vars) => {
                if let Some(v) = vars.iter().find(|v| !bound.contains(v.as_str())) {
                    return Err((line.line, format!("${v} is compared before an expectation binds it")));
                }
            }
            Step::ExpectAnyOrder { items, .. } => {
                for item in items {
                    bound.extend(item.packet.variables().into_iter().map(str::to_owned));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Loads every `*.toml` under `dir`, sorted by path.
pub fn load_scenarios(dir: &Path) -> Result<Vec<Scenario>, SpecError> {
    let mut paths = Vec::new();
    collect(dir, &mut paths)?;
    paths.sort();
    let scenarios = paths.iter().map(|p| Scenario::load(p)).collect::<Result<Vec<_>, _>>()?;
    let mut names = BTreeSet::new();
    for s in &scenarios {
        if !names.insert(s.name.as_str()) {
            return Err(SpecError::Invalid {
                path: s.path.clone(),
                message: format!("scenario name {} is used twice", s.name),
            });
        }
    }
    Ok(scenarios)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| SpecError::io(dir, e))?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_id_and_slug() {
        assert_eq!(split_name("MQTT-3.1.2-24.keepalive-1-5x"), Some(("MQTT-3.1.2-24", "keepalive-1-5x")));
        assert_eq!(split_name("CULEX-PRESENCE-3.network-drop"), Some(("CULEX-PRESENCE-3", "network-drop")));
        assert_eq!(split_name("MQTT-4.7.1-1.plus"), Some(("MQTT-4.7.1-1", "plus")));
        assert_eq!(split_name("keepalive"), None);
    }

    #[test]
    fn a_scenario_parses_with_lines_and_requirements() {
        let source = "statements = [\"MQTT-3.12.4-1\"]\nsummary = \"ping\"\nsteps = '''\na -> CONNECT id=\"{p}a\"\n\
                      a <- CONNACK sp=0 rc=0\nonline \"{p}a\"\n'''\n[config]\nmax_inflight_messages = 2\n";
        let s = Scenario::parse(Path::new("x/3.12-pingreq/MQTT-3.12.4-1.ping.toml"), source);
        let Ok(s) = s else { panic!("{s:?}") };
        assert_eq!((s.group.as_str(), s.slug()), ("3.12-pingreq", "ping"));
        assert_eq!(s.steps.iter().map(|l| l.line).collect::<Vec<_>>(), [4, 5, 6]);
        assert!(s.requires.contains(&Requirement::Presence));
        assert_eq!(s.config.get("max_inflight_messages").map(String::as_str), Some("2"));
    }

    #[test]
    fn restart_and_crash_need_control_of_the_broker() {
        let source = "statements = [\"MQTT-3.1.2-4\"]\nsummary = \"x\"\nsteps = '''\na -> CONNECT id=\"{p}a\" clean=0\n\
                      a <- CONNACK sp=0 rc=0\ncrash\na -> CONNECT id=\"{p}a\" clean=0\na <- CONNACK sp=1 rc=0\n'''\n\
                      [config]\npersistence = true\n";
        let s = Scenario::parse(Path::new("MQTT-3.1.2-4.x.toml"), source);
        let Ok(s) = s else { panic!("{s:?}") };
        assert_eq!(s.requires.iter().copied().collect::<Vec<_>>(), [Requirement::Restart]);
        assert_eq!(s.steps[2].step, Step::Restart { crash: true });
        assert_eq!(s.config.get("persistence").map(String::as_str), Some("true"));
    }

    #[test]
    fn certificates_name_clients_and_require_tls() {
        let head = "statements = [\"MQTT-3.2.2-4\"]\nsummary = \"x\"\n";
        let steps = "steps = '''\na -> CONNECT id=\"{p}a\"\nb -> CONNECT id=\"{p}b\"\n'''\n";
        let source = format!("{head}certificates = {{ a = \"dev1\", b = \"\" }}\n{steps}");
        let s = Scenario::parse(Path::new("MQTT-3.2.2-4.x.toml"), &source);
        let Ok(s) = s else { panic!("{s:?}") };
        assert!(s.requires.contains(&Requirement::Certificates));
        assert_eq!(s.certificates.get("a"), Some(&Some("dev1".to_owned())));
        assert_eq!(s.certificates.get("b"), Some(&None));
        let stranger = format!("{head}certificates = {{ c = \"dev1\" }}\n{steps}");
        assert!(Scenario::parse(Path::new("MQTT-3.2.2-4.x.toml"), &stranger).is_err());
    }

    #[test]
    fn file_name_must_match_first_statement() {
        let source = "statements = [\"MQTT-3.12.4-1\"]\nsummary = \"x\"\nsteps = 'a -> PINGREQ'\n";
        assert!(Scenario::parse(Path::new("MQTT-3.14.1-1.x.toml"), source).is_err());
    }

    #[test]
    fn unbound_variables_are_refused() {
        let source = "statements = [\"MQTT-3.12.4-1\"]\nsummary = \"x\"\nsteps = 'a -> PUBACK id=$m'\n";
        let err = Scenario::parse(Path::new("MQTT-3.12.4-1.x.toml"), source).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("$m")));
    }
}
