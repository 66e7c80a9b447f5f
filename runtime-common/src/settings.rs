//! What a runtime needs to start: listeners, the core's limits, presence
//! and logging, resolved from the command line and the config file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use culex_core::auth::ListenerPolicies;
use culex_core::conf::{
    self, BrokerConf, CliCommand, IncludeSource, ListenerProtocol, LogConf, PersistenceConf, Secret,
};
use culex_core::presence::PresenceKeys;
use culex_core::{Config, ListenerId};

use crate::backlog::Backlog;
use crate::link::Transport;
use crate::reports::WriterReports;
use crate::tls::ListenerTls;

/// The Redis presence store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// ACL user (`redis_user`), if any.
    pub user: Option<String>,
    /// Password (`redis_auth`), if any.
    pub password: Option<Secret>,
    /// Database number (`redis_db`).
    pub db: i64,
    /// Keys: the hash (`redis_key`, default `mqtt`) and this broker's
    /// ownership records.
    pub keys: PresenceKeys,
}

/// A socket to listen on, and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its place in the configuration.
    pub id: ListenerId,
    /// The address.
    pub addr: SocketAddr,
    /// MQTT over WebSocket (`protocol websockets`) rather than plain MQTT.
    pub websockets: bool,
    /// TLS (`certfile`, `keyfile`, ...), loaded.
    pub tls: Option<ListenerTls>,
}

impl Listener {
    /// The first listener, plain MQTT on `addr`.
    pub fn mqtt(addr: SocketAddr) -> Self {
        Self { id: ListenerId::default(), addr, websockets: false, tls: None }
    }

    /// What its connections are allowed and speak under `core`; their
    /// writers post their progress to `reports`.
    pub fn limits(&self, core: &Config, reports: Arc<WriterReports>) -> Limits {
        let websocket = self.websockets.then(|| crate::ws::max_frame(core.max_packet_size()));
        Limits {
            listener: self.id,
            backlog: backlog_limit(core),
            budget: core.max_unwritten_bytes,
            reports,
            transport: Transport { tls: self.tls.clone(), websocket },
        }
    }
}

/// What a listener's connections are allowed and speak, as a runtime's
/// accept loop hands it to each connection task.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The listener its connections come in on.
    pub listener: ListenerId,
    /// Bytes queued for the writer before the client is dropped.
    pub backlog: usize,
    /// Bytes queued for the writer before it is behind (QoS 0 copies to
    /// it are dropped).
    pub budget: usize,
    /// Where its writer posts its progress for the broker task.
    pub reports: Arc<WriterReports>,
    /// TLS and WebSocket below MQTT, if any.
    pub transport: Transport,
}

impl Limits {
    /// A new connection's writer count.
    pub fn backlog(&self) -> Backlog {
        Backlog::new(self.backlog, self.budget)
    }
}

/// Everything a runtime needs to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sockets to listen on.
    pub listeners: Vec<Listener>,
    /// The core's limits.
    pub core: Config,
    /// Presence store; `None` sends presence only to the log.
    pub redis: Option<RedisSettings>,
    /// Logging: levels, destinations, timestamps.
    pub log: LogConf,
    /// Who may connect, publish and subscribe (`password_file`,
    /// `acl_file`, `allow_anonymous`; per listener with
    /// `per_listener_settings`).
    pub policy: ListenerPolicies,
    /// What a reload (SIGHUP) reads again.
    pub reload: crate::reload::ReloadSource,
    /// Lines to log once logging is up (config warnings, local only mode).
    pub notices: Vec<String>,
    /// Where retained messages and persistent sessions are kept, with
    /// `persistence true`.
    pub persistence: Option<PersistenceConf>,
}

impl Settings {
    /// Mosquitto 2 without a config file: one listener on 127.0.0.1:1883,
    /// anonymous clients allowed, presence only in the log.
    pub fn embedded_defaults() -> Self {
        Self {
            listeners: vec![Listener::mqtt(SocketAddr::from(([127, 0, 0, 1], 1883)))],
            core: Config::default(),
            redis: None,
            log: LogConf::default(),
            policy: ListenerPolicies::default(),
            reload: crate::reload::ReloadSource::default(),
            notices: Vec::new(),
            persistence: None,
        }
    }
}

/// A seed for assigned client ids that differs between runs.
pub fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default();
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Most bytes queued for a client that does not read: the largest packet
/// allowed plus 16 MiB. Past it the client is disconnected.
pub fn backlog_limit(core: &Config) -> usize {
    core.max_packet_size().saturating_add(16 << 20)
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Launch {
    /// Serve with these settings.
    Serve(Box<Settings>),
    /// Print this (help, version) and exit 0.
    Print(String),
}

/// Reads the command line and the config file it names, as Mosquitto
/// does. An error names the file, line and reason; start-up stops.
pub fn load(args: impl IntoIterator<Item = String>) -> Result<Launch, String> {
    let options = match conf::parse_args(args).map_err(|e| format!("Error: {e}"))? {
        CliCommand::Run(options) => options,
        CliCommand::Help(text) | CliCommand::Version(text) => return Ok(Launch::Print(text)),
    };
    let broker = read_conf(&options)?;
    let reload = crate::reload::ReloadSource::new(options, &broker);
    let settings = from_conf(broker)?;
    Ok(Launch::Serve(Box::new(Settings { reload, ..settings })))
}

/// The configuration file `options` name (the defaults without one), with
/// the command line applied on top. An error names the file, line and
/// reason.
pub(crate) fn read_conf(options: &conf::CliOptions) -> Result<BrokerConf, String> {
    let mut broker = match &options.config_file {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("Error: Unable to open config file {path}: {e}"))?;
            conf::parse_with(path, &text, &mut Files).map_err(|e| format!("Error: {e}"))?
        }
        None => BrokerConf::default(),
    };
    options.apply_to(&mut broker);
    Ok(broker)
}

/// Reads the password and ACL files of every listener; an error names
/// file, line and reason.
fn load_policy(conf: &BrokerConf) -> Result<(ListenerPolicies, Vec<String>), String> {
    let mut read = |path: &str| std::fs::read_to_string(path).map_err(|e| e.to_string());
    let (policies, warnings) = ListenerPolicies::load(conf, &mut read).map_err(|e| format!("Error: {e}"))?;
    Ok((policies, warnings.into_iter().map(|w| format!("Warning: {w}")).collect()))
}

/// `include_dir` served from the file system.
struct Files;

impl IncludeSource for Files {
    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
        let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
        entries
            .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()).map_err(|e| e.to_string()))
            .collect()
    }

    fn read_file(&mut self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }
}

/// Keys that protect a broker. Culex does not act on them, and serving
/// without the protection they ask for would be worse than not starting.
const SECURITY_KEYS: &[&str] = &["psk_file", "auth_plugin", "plugin"];

/// Turns a parsed configuration into what a runtime opens and runs (the
/// password and ACL files it names are read here), or says why it must
/// not start.
pub fn from_conf(conf: BrokerConf) -> Result<Settings, String> {
    let unprotected = conf
        .warnings
        .iter()
        .find(|w| SECURITY_KEYS.contains(&w.key.as_str()))
        .map(|w| format!("{}:{}", w.file, w.line))
        .or_else(|| {
            conf.listeners
                .iter()
                .find(|l| l.ignored_keys.iter().any(|k| SECURITY_KEYS.contains(&k.as_str())))
                .map(|l| format!("listener {}", l.port))
        });
    if let Some(place) = unprotected {
        return Err(format!(
            "Error: {place}: PSK and plugins are not supported by this version of Culex; \
             refusing to start without the protection the configuration asks for."
        ));
    }
    let (policy, acl_warnings) = load_policy(&conf)?;
    let mut notices: Vec<String> = conf.warnings.iter().map(|w| format!("Warning: {w}")).collect();
    notices.extend(acl_warnings);
    let mut listeners = Vec::new();
    for (index, listener) in conf.listeners.iter().enumerate() {
        let id = ListenerId::at(index);
        let websockets = listener.protocol == ListenerProtocol::WebSockets;
        let ip = match &listener.address {
            Some(address) => match address.parse::<IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    notices.push(format!("Warning: listener address {address} is not an IP address, ignored"));
                    continue;
                }
            },
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };
        let tls = ListenerTls::load(&listener.tls).map_err(|e| format!("Error: {e}"))?;
        listeners.push(Listener { id, addr: SocketAddr::new(ip, listener.port), websockets, tls });
    }
    if conf.local_only {
        notices.insert(
            0,
            "Starting in local only mode. Connections will only be possible from clients running on this machine."
                .to_owned(),
        );
    }
    let listener_client_ids = conf.listener_client_ids();
    let listener_rules = conf.listener_rules();
    let first_port = conf.listeners.first().map_or(1883, |l| l.port);
    let redis = conf.redis.map(|r| RedisSettings {
        keys: PresenceKeys::new(&r.key, &broker_id(first_port)),
        host: r.host,
        port: r.port,
        user: r.user,
        password: r.auth,
        db: i64::from(r.db),
    });
    let mut core = conf.core;
    core.connection_messages = conf.log.connection_messages;
    core.listener_client_ids = listener_client_ids;
    core.listener_rules = listener_rules;
    let reload = crate::reload::ReloadSource::default();
    let persistence = conf.persistence.enabled.then_some(conf.persistence);
    Ok(Settings { listeners, core, redis, log: conf.log, policy, reload, notices, persistence })
}

/// This broker's name among brokers sharing the presence hash: host name
/// and first port, stable across restarts so stale entries can be found.
fn broker_id(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "culex".to_owned());
    format!("{host}:{port}")
}

/// A listener that may fail without stopping start-up: IPv6 loopback on a
/// machine without IPv6 (Mosquitto's local only mode does the same).
pub fn may_skip(addr: &SocketAddr, error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    addr.ip() == IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        && matches!(error.kind(), ErrorKind::AddrNotAvailable | ErrorKind::Unsupported)
}

/// Why a broker could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not be opened (its directory, permissions, a full
    /// disk: never a damaged file, which is moved aside).
    #[error(transparent)]
    Store(#[from] crate::persist::OpenError),
    /// The store's thread could not be started.
    #[error("cannot start the store's thread: {source}")]
    StoreThread {
        /// The cause.
        source: std::io::Error,
    },
}

/// A listening socket of the runtime's type, and the listener it serves.
#[derive(Debug)]
pub struct Bound<L> {
    /// The socket.
    pub socket: L,
    /// What it serves.
    pub listener: Listener,
}

/// Opens every listener of `settings` as the runtime's listener type
/// (`wrap`), logging each as Mosquitto does. IPv6 loopback may be missing
/// (see [`may_skip`]); any other failure is the address that could not be
/// opened.
pub fn open_listeners<L>(
    settings: &Settings,
    wrap: impl Fn(std::net::TcpListener) -> std::io::Result<L>,
) -> Result<Vec<Bound<L>>, Error> {
    let mut listeners = Vec::new();
    for listener in &settings.listeners {
        let addr = &listener.addr;
        match listen(addr).and_then(&wrap) {
            Ok(socket) => {
                let kind = match (listener.websockets, listener.tls.is_some()) {
                    (false, false) => "",
                    (true, false) => " (websockets)",
                    (false, true) => " (tls)",
                    (true, true) => " (websockets, tls)",
                };
                tracing::info!("Opening listen socket on {addr}{kind}.");
                listeners.push(Bound { socket, listener: listener.clone() });
            }
            Err(source) if may_skip(addr, &source) => tracing::warn!("Warning: not listening on {addr}: {source}"),
            Err(source) => return Err(Error::Bind { addr: *addr, source }),
        }
    }
    Ok(listeners)
}

/// Connections the kernel queues for `accept` per listener. A burst of
/// devices (a fleet coming back after an outage) must not find it full:
/// dropped SYNs are retried only after a second.
pub const LISTEN_BACKLOG: i32 = 1024;

/// A listening socket on `addr`, non-blocking, with `SO_REUSEADDR` (a
/// restarted broker gets its port back at once) and [`LISTEN_BACKLOG`];
/// each runtime wraps it in its own listener type.
pub fn listen(addr: &SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&(*addr).into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tls_listeners_load_their_files_and_name_the_bad_one() {
        let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
        let text = format!(
            "allow_anonymous true\nlistener 1883\nlistener 8883\ncertfile {data}/server.crt\nkeyfile {data}/server.key\n"
        );
        let settings = from_conf(conf::parse("test.conf", &text).unwrap()).unwrap();
        assert!(settings.listeners[0].tls.is_none());
        assert!(settings.listeners[1].tls.is_some());
        let bad = text.replace("server.key", "missing.key");
        let error = from_conf(conf::parse("test.conf", &bad).unwrap()).unwrap_err();
        assert!(
            error.starts_with(&format!("Error: test.conf:5: Unable to load server key file \"{data}/missing.key\": ")),
            "{error}"
        );
    }

    #[test]
    fn psk_and_plugins_still_refuse_to_start() {
        let error = from_conf(conf::parse("test.conf", "listener 1883\npsk_file /p\n").unwrap()).unwrap_err();
        assert!(error.starts_with("Error: test.conf:2: PSK and plugins are not supported"), "{error}");
    }

    #[test]
    fn the_core_gets_each_listeners_rules() {
        let text = "listener 1883\nlistener 1884\nmount_point m/\nmax_qos 1\nlistener_auto_id_prefix edge-\n";
        let core = from_conf(conf::parse("test.conf", text).unwrap()).unwrap().core;
        assert_eq!(core.listener_rules(ListenerId(0)), &culex_core::ListenerRules::DEFAULT);
        assert_eq!(core.listener_rules(ListenerId(1)).mount_point.as_deref(), Some("m/"));
        assert_eq!(core.listener_rules(ListenerId(1)).max_qos, culex_core::QoS::AtLeastOnce);
        assert_eq!(core.client_ids(ListenerId(1)), (true, "edge-"));
        assert_eq!(core.client_ids(ListenerId(0)), (true, "auto-"));
    }

    #[test]
    fn listeners_carry_their_protocol() {
        let text = "allow_anonymous true\nlistener 1883\nlistener 9001 127.0.0.1\nprotocol websockets\n";
        let settings = from_conf(conf::parse("test.conf", text).unwrap()).unwrap();
        assert_eq!(
            settings.listeners,
            [
                Listener::mqtt(SocketAddr::from(([0, 0, 0, 0], 1883))),
                Listener {
                    id: ListenerId(1),
                    addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
                    websockets: true,
                    tls: None
                },
            ]
        );
    }
}
