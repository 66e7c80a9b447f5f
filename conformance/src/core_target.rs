//! The core target: scenarios replayed against `culex-core` through its
//! [`Simulation`], in virtual time, with the core's own transcript.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytestring::ByteString;
use culex_core::auth::ListenerPolicies;
use culex_core::codec::Packet;
use culex_core::policy::Refusal;
use culex_core::sim::{DEFAULT_START_UNIX, Simulation};
use culex_core::{Broker, ConnId, Identity, ListenerId, Peer};
use culex_spec::{BrokerConf, Env, Requirement, Scenario, SpecDir};

use crate::runner::{self, Driver, Event, Patience};
use crate::transcript::single_packet;
use crate::{Outcome, Run};

/// What `{p}` stands for in core runs: short, fixed, so transcripts are
/// stable.
pub const CORE_PREFIX: &str = "cx";

/// Why the core skips scenarios that need WebSocket: it has no transport.
pub const WEBSOCKET_SKIP: &str = "needs WebSocket (the core has no transport; run the TCP target with --websocket)";

/// A setting the core cannot take, as its own config parser says.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("broker settings: {0}")]
pub struct ConfigError(String);

/// Runs scenarios against a fresh core each time.
#[derive(Debug, Clone, Default)]
pub struct CoreTarget {
    /// mosquitto.conf lines every run starts from.
    base: Vec<(String, String)>,
}

impl CoreTarget {
    /// A target whose broker starts from the defaults; each scenario's
    /// `[config]` is applied on top.
    pub fn new() -> Self {
        Self::default()
    }

    /// A target whose broker starts from `conf`, as a broker started with
    /// that file would. Keys the core does not act on (`listener`, ...)
    /// are left to the runtimes.
    pub fn with_conf(conf: &BrokerConf) -> Result<Self, ConfigError> {
        let base: Vec<(String, String)> = conf
            .entries
            .iter()
            .filter(|(key, _)| !RUNTIME_KEYS.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        simulation(&config_for(&base, std::iter::empty())?)?;
        Ok(Self { base })
    }

    /// Replays `scenario`. Its `[config]` must name settings the core
    /// knows; otherwise the run fails at once.
    pub fn run(&self, scenario: &Scenario) -> Run {
        if scenario.requires.contains(&Requirement::WebSocket) {
            let why = WEBSOCKET_SKIP.to_owned();
            return Run { scenario: scenario.name.clone(), outcome: Outcome::Skip(why), transcript: String::new() };
        }
        let (mut sim, policies) = match config_for(&self.base, scenario.config.iter()).and_then(|c| simulation(&c)) {
            Ok(built) => built,
            Err(e) => {
                let outcome = Outcome::Fail { line: 0, step: "[config]".into(), message: e.to_string() };
                return Run { scenario: scenario.name.clone(), outcome, transcript: String::new() };
            }
        };
        sim.record();
        let env = Env { prefix: CORE_PREFIX.to_owned(), unix_now: DEFAULT_START_UNIX };
        let certificates = scenario.certificates.clone();
        let mut driver = CoreDriver { sim, policies, conns: BTreeMap::new(), inbox: BTreeMap::new(), certificates };
        let outcome = runner::run(&mut driver, scenario, &env);
        Run { scenario: scenario.name.clone(), outcome, transcript: driver.sim.transcript().to_owned() }
    }
}

/// Keys of a broker file that concern sockets and services, not the core.
const RUNTIME_KEYS: &[&str] = &["listener", "port", "bind_address", "redis_host", "redis_port", "redis_auth"];

/// A simulation of the broker `conf` describes, with its access policy:
/// password and ACL files are read relative to the repository root (where
/// `conformance/run-tcp.sh` starts a broker), and passwords are checked at
/// once, in the simulation's thread. The policy is returned too, for the
/// broker started again after a restart.
fn simulation(conf: &culex_core::conf::BrokerConf) -> Result<(Simulation, ListenerPolicies), ConfigError> {
    let root = SpecDir::default().root().join("..");
    let mut read = |path: &str| std::fs::read_to_string(root.join(path)).map_err(|e| e.to_string());
    let (policies, _) = ListenerPolicies::load(conf, &mut read).map_err(|e| ConfigError(e.to_string()))?;
    let checker = policies.clone();
    let broker = Broker::with_policy(conf.core.clone(), Box::new(policies.clone()));
    let mut sim = Simulation::with_broker(broker, DEFAULT_START_UNIX);
    sim.set_authenticator(Box::new(move |_, username, password| {
        let verifier = checker.verifier(ListenerId::default(), username.unwrap_or_default());
        if verifier.is_some_and(|v| v.verify(password.unwrap_or_default())) {
            Ok(())
        } else {
            Err(Refusal::NotAuthorized)
        }
    }));
    Ok((sim, policies))
}

/// The configuration for `base` lines then `overrides`, read by the core's
/// own mosquitto.conf parser.
fn config_for<'a>(
    base: &'a [(String, String)],
    overrides: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<culex_core::conf::BrokerConf, ConfigError> {
    let overrides: Vec<(&String, &String)> = overrides.collect();
    let mut text = String::new();
    // A scenario's setting replaces the base line of the same key (some
    // keys, such as password_file, may not be given twice).
    let kept = base.iter().filter(|(key, _)| !overrides.iter().any(|(k, _)| *k == key)).map(|(k, v)| (k, v));
    for (key, value) in kept.chain(overrides.iter().copied()) {
        text.push_str(&format!("{key} {value}\n"));
    }
    let conf = culex_core::conf::parse("scenario settings", &text).map_err(|e| ConfigError(e.to_string()))?;
    if let Some(warning) = conf.warnings.first() {
        return Err(ConfigError(warning.to_string()));
    }
    Ok(conf)
}

/// The runtime's part, played by the simulation.
struct CoreDriver {
    sim: Simulation,
    /// The access policy a broker started again takes.
    policies: ListenerPolicies,
    conns: BTreeMap<String, ConnId>,
    inbox: BTreeMap<String, VecDeque<Packet>>,
    /// Clients that come through a TLS listener taking the user name from
    /// their certificate, with the name it proves.
    certificates: BTreeMap<String, Option<String>>,
}

impl Driver for CoreDriver {
    fn open(&mut self, client: &str) -> Result<(), String> {
        let conn = match self.certificates.get(client) {
            Some(name) => {
                let identity = Identity::Certificate(name.as_deref().map(ByteString::from));
                self.sim.open_from(client, false, Peer { identity, ..Peer::default() })
            }
            None => self.sim.open(client, false),
        };
        self.conns.insert(client.to_owned(), conn);
        self.inbox.insert(client.to_owned(), VecDeque::new());
        Ok(())
    }

    fn send(&mut self, client: &str, bytes: &[u8]) {
        let Some(&conn) = self.conns.get(client) else { return };
        // A single well-formed packet goes in as a packet, so the
        // transcript shows it decoded; anything else goes in as bytes.
        match single_packet(bytes) {
            Some(packet) => self.sim.send(conn, &packet),
            None => self.sim.send_bytes(conn, bytes),
        }
    }

    fn send_text(&mut self, _client: &str, _text: &[u8]) -> Result<(), String> {
        Err(WEBSOCKET_SKIP.into())
    }

    fn drop_connection(&mut self, client: &str) {
        if let Some(conn) = self.conns.remove(client) {
            self.sim.drop_connection(conn);
        }
    }

    fn wait(&mut self, by: Duration) {
        self.sim.advance(by);
    }

    fn next_event(&mut self, client: &str, _: Patience) -> Option<Event> {
        // The core answers within the call that fed it: nothing to wait for.
        let conn = *self.conns.get(client)?;
        let inbox = self.inbox.entry(client.to_owned()).or_default();
        inbox.extend(self.sim.take_received(conn));
        if let Some(packet) = inbox.pop_front() {
            return Some(Event::Packet(packet));
        }
        self.sim.closed(conn).map(|_| Event::Closed)
    }

    fn check_presence(&mut self, client_id: &str, online: bool) -> Result<(), String> {
        match (self.sim.is_online(client_id), online) {
            (true, false) => Err(format!("{client_id} is still online")),
            (false, true) => Err(format!("{client_id} is not online")),
            _ => Ok(()),
        }
    }

    fn shutdown(&mut self) -> Result<(), String> {
        self.sim.shutdown();
        Ok(())
    }

    fn restart(&mut self, crash: bool) -> Result<(), String> {
        if crash {
            self.sim.crash_and_restart();
        } else {
            self.sim.restart();
        }
        // The simulation starts the new broker with the default policy of
        // its configuration; give it the files' policy, as the binaries
        // read them again at start.
        self.sim.replace_policy(Box::new(self.policies.clone()), &|_| true);
        self.conns.clear();
        self.inbox.clear();
        Ok(())
    }
}
