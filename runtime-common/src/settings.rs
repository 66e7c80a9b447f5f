//! What a runtime needs to start: listeners, the core's limits, presence
//! and logging, resolved from the command line and the config file.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use culex_core::auth::ListenerPolicies;
use culex_core::conf::{
    self, BridgeConf, BrokerConf, CliCommand, IncludeSource, ListenerProtocol, LogConf, PersistenceConf, ProcessConf,
    Secret, WebSocketsConf,
};
use culex_core::presence::PresenceKeys;
use culex_core::shard::ShardId;
use culex_core::{Config, ListenerId};

use crate::http_dir::HttpDir;
use crate::link::{Transport, WebSocket};
use crate::listen_addresses;
use crate::outbox::Writers;
use crate::tls::{ClientConfigs, ListenerTls};
use crate::ws::{HandshakeRules, MAX_HEADERS};

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
    /// index and lease.
    pub keys: PresenceKeys,
    /// How long this broker's entries outlive its last renewal
    /// (`redis_lease`).
    pub lease: std::time::Duration,
    /// The cluster this broker is a node of (`cluster`), its name being
    /// the broker id; `None` alone.
    pub cluster: Option<String>,
    /// The Redis is a member of a Redis Cluster (`redis_cluster`).
    pub redis_cluster: bool,
}

impl RedisSettings {
    /// Shard `shard`'s settings among `shards`: each shard is a broker of
    /// its own for the presence protocol (its own index and lease, named
    /// by [`shard_broker_id`]).
    pub fn for_shard(&self, shard: ShardId, shards: u16) -> Self {
        let mut settings = self.clone();
        settings.keys = self.keys.for_broker(&shard_broker_id(&self.keys.broker_id, shard, shards));
        settings
    }
}

/// The presence name of shard `shard` of broker `broker_id` among `shards`:
/// `<broker id>/<shard>`, or the broker's own with one shard.
pub fn shard_broker_id(broker_id: &str, shard: ShardId, shards: u16) -> String {
    if shards > 1 { format!("{broker_id}/{}", shard.0) } else { broker_id.to_owned() }
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket's path (`listener 0 PATH`).
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(path) => path.display().fmt(f),
        }
    }
}

/// A socket to listen on, and what it speaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Its place in the configuration.
    pub id: ListenerId,
    /// The address.
    pub addr: Endpoint,
    /// MQTT over WebSocket (`protocol websockets`) rather than plain MQTT.
    pub websockets: bool,
    /// The HTTP API (`protocol http_api`): its connections are requests,
    /// not clients, and are not logged one by one.
    pub http_api: bool,
    /// TLS (`certfile`, `keyfile`, ...), loaded.
    pub tls: Option<ListenerTls>,
    /// What a WebSocket handshake accepts (`websockets_headers_size`,
    /// `websockets_origin`, `http_dir`).
    pub handshake: Arc<HandshakeRules>,
    /// The files served to plain HTTP requests (`http_dir`), resolved.
    pub http_dir: Option<Arc<HttpDir>>,
}

impl Listener {
    /// The first listener, plain MQTT on `addr`.
    pub fn mqtt(addr: SocketAddr) -> Self {
        Self {
            id: ListenerId::default(),
            addr: Endpoint::Tcp(addr),
            websockets: false,
            http_api: false,
            tls: None,
            handshake: Arc::default(),
            http_dir: None,
        }
    }

    /// Whether its new connections are logged (`connection_messages`).
    pub fn logs_connections(&self, connection_messages: bool) -> bool {
        connection_messages && !self.http_api
    }

    /// What its connections are allowed and speak under `settings`; their
    /// outboxes share `writers`.
    pub fn limits(&self, settings: &Settings, writers: Arc<Writers>) -> Limits {
        let core = &settings.core;
        let websocket = self.websockets.then(|| WebSocket {
            max_frame: crate::ws::max_frame(core.max_packet_size()),
            rules: self.handshake.clone(),
            http_dir: self.http_dir.clone(),
        });
        Limits {
            listener: self.id,
            writers,
            transport: Transport { tls: self.tls.clone(), websocket },
            nodelay: settings.process.set_tcp_nodelay,
            http_api: self.http_api,
            max_packet: core.max_packet_size(),
            use_username_as_clientid: core.listener_rules(self.id).use_username_as_clientid,
        }
    }
}

/// What a listener's connections are allowed and speak, as a runtime's
/// accept loop hands it to each connection task.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The listener its connections come in on.
    pub listener: ListenerId,
    /// What its connections' outboxes share with all others: the bytes
    /// queued for a writer before it is behind and before its client is
    /// dropped, and where writers post their progress.
    pub writers: Arc<Writers>,
    /// TLS and WebSocket below MQTT, if any.
    pub transport: Transport,
    /// Nagle's algorithm off on its TCP connections (`set_tcp_nodelay`).
    pub nodelay: bool,
    /// Its connections are HTTP API requests, answered by shard 0 (see
    /// [`shards`](crate::shards)).
    pub http_api: bool,
    /// The largest packet the broker takes: how much of a CONNECT a
    /// connection task reads before it knows the shard.
    pub max_packet: usize,
    /// Its client ids are user names: the home shard is the user name's.
    pub use_username_as_clientid: bool,
}

impl Settings {
    /// What a bridge's socket to its remote broker is allowed: what any
    /// connection's outbox is (`writers`), Nagle off (a bridge's
    /// acknowledgements hold its publishers' messages).
    pub fn bridge_limits(&self, writers: Arc<Writers>) -> Limits {
        Limits {
            listener: ListenerId::BRIDGES,
            writers,
            transport: Transport::default(),
            nodelay: true,
            http_api: false,
            max_packet: self.core.max_packet_size(),
            use_username_as_clientid: false,
        }
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
    /// The user to run as once listeners, log and store are open, and the
    /// pid file.
    pub process: ProcessConf,
    /// The bridges to run (`connection` sections), in file order.
    pub bridges: Vec<BridgeConf>,
    /// Their TLS configurations, read at start-up.
    pub bridge_tls: ClientConfigs,
}

impl Settings {
    /// Mosquitto 2 without a config file: one listener on 127.0.0.1:1883,
    /// anonymous clients allowed, presence only in the log; for a broker
    /// embedded in another program, whose user it leaves as it is.
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
            // A program embedding the broker keeps its own user.
            process: ProcessConf { user: None, ..ProcessConf::default() },
            bridges: Vec::new(),
            bridge_tls: ClientConfigs::default(),
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
    let bridge_tls = ClientConfigs::load(&conf.bridges).map_err(|e| format!("Error: {e}"))?;
    let (policy, acl_warnings) = load_policy(&conf)?;
    let mut notices: Vec<String> = conf.warnings.iter().map(|w| format!("Warning: {w}")).collect();
    notices.extend(acl_warnings);
    let mut listeners = Vec::new();
    for (index, listener) in conf.listeners.iter().enumerate() {
        let id = ListenerId::at(index);
        let websockets = listener.protocol == ListenerProtocol::WebSockets;
        let http_api = listener.protocol == ListenerProtocol::HttpApi;
        let endpoints = match listener.unix_socket() {
            Some(path) => vec![Endpoint::Unix(PathBuf::from(path))],
            None => {
                let resolved = listen_addresses::resolve(listener, listen_addresses::system_interfaces)?;
                notices.extend(resolved.warnings);
                resolved.addrs.into_iter().map(Endpoint::Tcp).collect()
            }
        };
        let tls = ListenerTls::load(&listener.tls).map_err(|e| format!("Error: {e}"))?;
        let (handshake, http_dir) = web_settings(listener, &conf.websockets, &mut notices)?;
        for addr in endpoints {
            let (tls, handshake, http_dir) = (tls.clone(), handshake.clone(), http_dir.clone());
            listeners.push(Listener { id, addr, websockets, http_api, tls, handshake, http_dir });
        }
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
    let listener_max_connections = conf.listener_max_connections();
    let listener_summaries = conf.listener_summaries();
    let first_port = conf.listeners.first().map_or(1883, |l| l.port);
    let redis = conf.redis.map(|r| RedisSettings {
        keys: if r.redis_cluster {
            PresenceKeys::in_hash_slot(&r.key, &broker_id(first_port))
        } else {
            PresenceKeys::new(&r.key, &broker_id(first_port))
        },
        redis_cluster: r.redis_cluster,
        host: r.host,
        port: r.port,
        user: r.user,
        password: r.auth,
        db: i64::from(r.db),
        lease: r.lease,
        cluster: r.cluster,
    });
    let mut core = conf.core;
    core.connection_messages = conf.log.connection_messages;
    core.listener_client_ids = listener_client_ids;
    core.listener_rules = listener_rules;
    core.listener_max_connections = listener_max_connections;
    core.listeners = listener_summaries;
    let reload = crate::reload::ReloadSource::default();
    let persistence = conf.persistence.enabled.then_some(conf.persistence);
    let (log, process, bridges) = (conf.log, conf.process, conf.bridges);
    Ok(Settings { listeners, core, redis, log, policy, reload, notices, persistence, process, bridges, bridge_tls })
}

/// A listener's WebSocket handshake rules and `http_dir`, resolved as
/// Mosquitto resolves it at start (a directory that cannot be opened
/// stops start-up). On a listener that does not speak WebSocket they
/// change nothing: a notice says so.
fn web_settings(
    listener: &conf::ListenerConf,
    websockets: &WebSocketsConf,
    notices: &mut Vec<String>,
) -> Result<(Arc<HandshakeRules>, Option<Arc<HttpDir>>), String> {
    if listener.protocol != ListenerProtocol::WebSockets {
        if listener.http_dir.is_some() || !listener.websockets_origins.is_empty() {
            notices.push(format!(
                "Warning: http_dir and websockets_origin have no effect on listener {}: it is not protocol websockets",
                listener.port
            ));
        }
        return Ok((Arc::default(), None));
    }
    let http_dir = match &listener.http_dir {
        Some(dir) => Some(Arc::new(HttpDir::open(&dir.value).map_err(|e| {
            format!("Error: {}", dir.error(format!("Unable to open http dir \"{}\": {e}.", dir.value)))
        })?)),
        None => None,
    };
    let max_head = match websockets.headers_size {
        0 => MAX_HEADERS,
        size => usize::from(size),
    };
    let rules = HandshakeRules { max_head, origins: listener.websockets_origins.clone(), http: http_dir.is_some() };
    Ok((Arc::new(rules), http_dir))
}

/// This broker's name among brokers sharing the presence hash: host name
/// and first port, stable across restarts so stale entries can be found.
fn broker_id(port: u16) -> String {
    format!("{}:{port}", hostname())
}

/// This machine's name: part of the broker's presence id and of the
/// bridges' default client ids (`<hostname>.<connection>`, as Mosquitto).
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "culex".to_owned())
}

/// A listener that may fail without stopping start-up: IPv6 loopback, or
/// every IPv6 address, on a machine without IPv6 (Mosquitto's local only
/// mode does the same).
pub fn may_skip(addr: &Endpoint, error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    use std::net::Ipv6Addr;
    matches!(addr, Endpoint::Tcp(addr) if [Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED].map(IpAddr::V6).contains(&addr.ip()))
        && matches!(error.kind(), ErrorKind::AddrNotAvailable | ErrorKind::Unsupported)
}

/// Why a broker could not start serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listener could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: Endpoint,
        /// The cause.
        source: std::io::Error,
    },
    /// The store could not be opened (its directory, permissions, a full
    /// disk: never a damaged file, which is moved aside).
    #[error(transparent)]
    Store(#[from] crate::persist::OpenError),
    /// The broker could not become its `user`.
    #[error("Error: {0}")]
    Privileges(#[from] crate::privileges::Error),
    /// A cluster node's store in Redis holds what this Culex cannot read,
    /// or the node's own store could not take it.
    #[error("cannot restore this node's store from Redis: {source}")]
    SharedStore {
        /// The cause.
        source: crate::persist::StoreError,
    },
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

/// A listening socket, before a runtime wraps it in its own type.
#[derive(Debug)]
pub enum Listening {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A Unix socket.
    Unix(UnixListener),
}

impl Listening {
    /// The port its connections are logged with: 0 for a Unix socket, as
    /// Mosquitto logs it.
    pub fn port(&self) -> u16 {
        match self {
            Self::Tcp(socket) => socket.local_addr().map(|a| a.port()).unwrap_or_default(),
            Self::Unix(_) => 0,
        }
    }
}

/// What the clients of a Unix socket listener are known by (they have no
/// address of their own): its path, as Mosquitto logs them.
pub fn unix_remote(socket: &UnixListener) -> culex_core::Remote {
    let path = socket.local_addr().ok().and_then(|a| a.as_pathname().map(|p| p.display().to_string()));
    culex_core::Remote::Unix(path.unwrap_or_else(|| "unix-socket".to_owned()).into())
}

/// Opens every listener of `settings`, logging each as Mosquitto does.
/// IPv6 loopback may be missing (see [`may_skip`]); any other failure is
/// the address that could not be opened.
pub fn open_listeners(settings: &Settings) -> Result<Vec<Bound<Listening>>, Error> {
    let mut listeners = Vec::new();
    for listener in &settings.listeners {
        let kind = match (listener.websockets, listener.tls.is_some()) {
            (false, false) => "",
            (true, false) => " (websockets)",
            (false, true) => " (tls)",
            (true, true) => " (websockets, tls)",
        };
        let opened = match &listener.addr {
            Endpoint::Tcp(addr) => listen(addr).map(|socket| {
                tracing::info!("Opening listen socket on {addr}{kind}.");
                Listening::Tcp(socket)
            }),
            Endpoint::Unix(path) => {
                tracing::info!("Opening unix listen socket on path {}{kind}.", path.display());
                listen_unix(path).map(Listening::Unix)
            }
        };
        match opened {
            Ok(socket) => listeners.push(Bound { socket, listener: listener.clone() }),
            Err(source) if may_skip(&listener.addr, &source) => {
                tracing::warn!("Warning: not listening on {}: {source}", listener.addr);
            }
            Err(source) => return Err(Error::Bind { addr: listener.addr.clone(), source }),
        }
    }
    Ok(listeners)
}

/// Removes the socket files of the Unix socket listeners and the pid
/// file, at exit, as Mosquitto does. After privileges were dropped that
/// may be refused: the next start replaces them anyway.
pub fn remove_run_files(settings: &Settings) {
    let sockets = settings.listeners.iter().filter_map(|listener| match &listener.addr {
        Endpoint::Unix(path) => Some(path.as_path()),
        Endpoint::Tcp(_) => None,
    });
    for path in sockets.chain(settings.process.pid_file.as_deref().map(Path::new)) {
        let _ = std::fs::remove_file(path);
    }
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

/// A non-blocking Unix socket listening at `path`. A file already there
/// (a socket left by a broker that did not stop cleanly) is removed first,
/// as Mosquitto does.
pub fn listen_unix(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
        _ => {}
    }
    let socket = UnixListener::bind(path)?;
    socket.set_nonblocking(true)?;
    Ok(socket)
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
        // Each listener binds 0.0.0.0 and ::.
        assert!(settings.listeners[2].tls.is_some());
        let bad = text.replace("server.key", "missing.key");
        let error = from_conf(conf::parse("test.conf", &bad).unwrap()).unwrap_err();
        assert!(
            error.starts_with(&format!("Error: test.conf:5: Unable to load server key file \"{data}/missing.key\": ")),
            "{error}"
        );
    }

    #[test]
    fn bridges_reach_the_settings_in_file_order() {
        let text = "listener 1883\nconnection a\naddress 10.0.0.1\ntopic # out 1\nconnection b\naddress h\ntopic x\n";
        let settings = from_conf(conf::parse("test.conf", text).unwrap()).unwrap();
        let names: Vec<_> = settings.bridges.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
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
    fn listeners_carry_their_protocol_and_bind_every_address_of_their_host() {
        let text = "allow_anonymous true\nlistener 1883\nlistener 9001 127.0.0.1\nprotocol websockets\n";
        let settings = from_conf(conf::parse("test.conf", text).unwrap()).unwrap();
        assert_eq!(
            settings.listeners,
            [
                // Without an address, as Mosquitto: both families.
                Listener::mqtt(SocketAddr::from(([0, 0, 0, 0], 1883))),
                Listener::mqtt(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 1883))),
                Listener {
                    id: ListenerId(1),
                    addr: Endpoint::Tcp(SocketAddr::from(([127, 0, 0, 1], 9001))),
                    websockets: true,
                    ..Listener::mqtt(SocketAddr::from(([127, 0, 0, 1], 9001)))
                },
            ]
        );
    }
}
