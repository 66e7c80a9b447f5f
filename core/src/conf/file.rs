//! The `mosquitto.conf` format, read the way Mosquitto 2 reads it.
//!
//! One setting per line: a key, white space, a value. Blank lines and
//! lines whose first non-blank character is `#` are skipped. Values that
//! are one word (numbers, booleans, host names) may be followed by a
//! `# comment`; values that run to the end of the line (`redis_auth`,
//! `auto_id_prefix`, `include_dir`, `log_dest file PATH`) are taken whole,
//! `#` included, with the surrounding blanks trimmed, as Mosquitto takes
//! its string values. Keys are case-sensitive.
//!
//! A key Culex implements is checked (range, syntax) and applied. A key
//! Mosquitto knows but Culex does not implement (bridges, `psk_file`,
//! persistence, ...) yields a [`Warning`] and is ignored. The TLS keys
//! (`certfile`, `keyfile`, `cafile`, ...) are checked and kept per
//! listener ([`ListenerConf::tls`], see [`super::tls`]).
//! Any other key stops start-up with a [`ConfError`], as Mosquitto does.
//!
//! # Defaults (Mosquitto 2)
//!
//! Taken from Mosquitto 2.0's `src/conf.c` (`config__read`,
//! `config__parse_args`) and `listeners__start_local_only`, and from
//! mosquitto.conf(5):
//! - **Local only mode.** A configuration without `listener`, `port` and
//!   `bind_address` listens on port 1883 of 127.0.0.1 and ::1 only, and
//!   `allow_anonymous` defaults to true ([`BrokerConf::local_only`]).
//! - Once the configuration opens a listener (`listener`, `port` or
//!   `bind_address`), `allow_anonymous` defaults to **false**.
//! - `port N` and `bind_address A` configure the *default listener*,
//!   wherever they appear; it is opened when either is given (port 1883
//!   without `port`, all addresses without `bind_address`). As in
//!   Mosquitto, `protocol`, `max_connections` or `socket_domain` written
//!   before the first `listener` line also belong to the default listener
//!   and open it on port 1883: Culex does so too, with a warning.
//! - `log_type` and `log_dest` lines replace the defaults (error, warning,
//!   notice, information to stderr) as soon as one is given; `none`
//!   clears what came before.
//! - The other limits start at Mosquitto's defaults, see [`Config`].
//!
//! # Divergences, on purpose
//! - Booleans are `true`/`false` (and `1`/`0`, which Mosquitto's parser also
//!   takes); integers must be whole decimal numbers (Mosquitto's `atoi`
//!   reads `12abc` as 12, Culex refuses it).
//! - Extra words after a one-word value are an error unless they start a
//!   `#` comment (Mosquitto ignores them silently).
//! - In local only mode `protocol`, `max_connections` and `socket_domain`
//!   apply to the loopback listeners instead of opening port 1883 on all
//!   addresses, and an explicit `allow_anonymous false` is honoured.
//! - A TLS key on a listener without `certfile` and `keyfile` is an error
//!   (Mosquitto serves such a listener without TLS), and `tls_version
//!   tlsv1.1` is an error (no TLS 1.1 here).
//!
//! # `per_listener_settings`
//! With `per_listener_settings true`, `password_file`, `acl_file`,
//! `allow_anonymous`, `allow_zero_length_clientid` and `auto_id_prefix`
//! belong to the listener they follow ([`ListenerConf::security`]); those
//! written before the first `listener` line belong to the default listener
//! (`port`, or the local only listeners) and, as in Mosquitto, open it.
//! As in Mosquitto the key must come before every security setting, and a
//! listener without `allow_anonymous` refuses anonymous clients unless the
//! broker is in local only mode.

use std::fmt;

use super::keys;
use super::tls::{CertUsername, Located, TlsConf, TlsVersion};
use crate::Config;
use crate::codec::MAX_REMAINING_LENGTH;

/// Port of the default listener and of the local only listeners.
pub const DEFAULT_PORT: u16 = 1883;
/// Redis port when `redis_port` is not given.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// Name of the presence hash when `redis_key` is not given (the fork's).
pub const DEFAULT_REDIS_KEY: &str = "mqtt";

/// Largest value of Mosquitto's integer keys (a C `int`).
const INT_MAX: i64 = i32::MAX as i64;
/// The loopback addresses of local only mode, as Mosquitto 2 opens them.
const LOOPBACK_V4: &str = "127.0.0.1";
const LOOPBACK_V6: &str = "::1";

/// A configuration that cannot be used: start-up stops here. Displayed as
/// `file:line: reason`, the way Mosquitto reports `Error found at
/// file:line.` after its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ConfError {
    /// The file the line is in (as given to [`parse`], or the included
    /// file's path).
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong, in Mosquitto's wording where it has one. Never
    /// contains a password.
    pub reason: String,
}

/// A line Culex accepted without acting on it as Mosquitto would: a key
/// Culex does not implement, or a setting whose effect is surprising.
/// Displayed as `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file the line is in, or `command line` for options.
    pub file: String,
    /// The 1-based line number; 0 for the command line.
    pub line: usize,
    /// The key (or option) the warning is about.
    pub key: String,
    /// What Culex did with it, e.g. `not supported by Culex, ignored`.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.file, self.line, self.key, self.message)
        }
    }
}

/// The message of a warning about a key Mosquitto knows and Culex ignores.
pub(super) const NOT_SUPPORTED: &str = "not supported by Culex, ignored";

/// A password. Its `Debug` and `Display` print `<redacted>`, so it can sit
/// in structures that are logged; [`Secret::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The password itself, for the one place that sends it (Redis AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// What a listener speaks. Mosquitto: `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerProtocol {
    /// MQTT over TCP (`protocol mqtt`, the default).
    #[default]
    Mqtt,
    /// MQTT over WebSocket (`protocol websockets`).
    WebSockets,
}

/// Which address family a listener without an address binds. Mosquitto:
/// `socket_domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDomain {
    /// `socket_domain ipv4`.
    Ipv4,
    /// `socket_domain ipv6`.
    Ipv6,
}

/// One socket to listen on, with the settings Mosquitto scopes to a
/// listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConf {
    /// TCP port, 1 to 65535.
    pub port: u16,
    /// Address or host name to bind; `None` binds every address.
    pub address: Option<String>,
    /// MQTT or WebSocket.
    pub protocol: ListenerProtocol,
    /// Connections this listener serves at once; `None` means no limit
    /// (Mosquitto: -1). The runtime enforces it per listener.
    pub max_connections: Option<usize>,
    /// Address family, when `socket_domain` is given.
    pub socket_domain: Option<SocketDomain>,
    /// Its own security settings, under `per_listener_settings true`
    /// (empty otherwise: the global settings apply).
    pub security: ListenerSecurity,
    /// Mosquitto keys given for this listener that Culex ignored (each also
    /// has a [`Warning`]).
    pub ignored_keys: Vec<String>,
    /// TLS: certificate, key, client certificate checks.
    pub tls: TlsConf,
}

impl ListenerConf {
    /// A plain MQTT listener on every address of `port`, without limits.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            address: None,
            protocol: ListenerProtocol::Mqtt,
            max_connections: None,
            socket_domain: None,
            security: ListenerSecurity::default(),
            ignored_keys: Vec::new(),
            tls: TlsConf::default(),
        }
    }
}

/// The security settings of one listener, as written under
/// `per_listener_settings true`; `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// `allow_anonymous`: default true in local only mode, else false.
    pub allow_anonymous: Option<bool>,
    /// `password_file`.
    pub password_file: Option<String>,
    /// `acl_file`.
    pub acl_file: Option<String>,
    /// `allow_zero_length_clientid`: default true.
    pub allow_zero_length_clientid: Option<bool>,
    /// `auto_id_prefix`: default `auto-`.
    pub auto_id_prefix: Option<String>,
}

/// Who may connect to a listener and what they may do, resolved from the
/// global or per-listener settings: what an access policy is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAuth {
    /// Clients without a user name are accepted.
    pub allow_anonymous: bool,
    /// The `mosquitto_passwd` file, if any.
    pub password_file: Option<String>,
    /// The ACL file, if any.
    pub acl_file: Option<String>,
}

/// Which kinds of log lines are written. Mosquitto: `log_type`, one kind
/// per line; the default is error, warning, notice and information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct LogTypes {
    /// `log_type error`.
    pub error: bool,
    /// `log_type warning`.
    pub warning: bool,
    /// `log_type notice`.
    pub notice: bool,
    /// `log_type information`.
    pub information: bool,
    /// `log_type debug`.
    pub debug: bool,
    /// `log_type subscribe`: one line per subscription.
    pub subscribe: bool,
    /// `log_type unsubscribe`: one line per unsubscription.
    pub unsubscribe: bool,
    /// `log_type websockets`: WebSocket transport details.
    pub websockets: bool,
}

impl LogTypes {
    /// No log lines (`log_type none`).
    pub const fn none() -> Self {
        Self {
            error: false,
            warning: false,
            notice: false,
            information: false,
            debug: false,
            subscribe: false,
            unsubscribe: false,
            websockets: false,
        }
    }

    /// Every kind (`log_type all`, or `-v` on the command line).
    pub const fn all() -> Self {
        Self {
            error: true,
            warning: true,
            notice: true,
            information: true,
            debug: true,
            subscribe: true,
            unsubscribe: true,
            websockets: true,
        }
    }
}

impl Default for LogTypes {
    fn default() -> Self {
        Self { error: true, warning: true, notice: true, information: true, ..Self::none() }
    }
}

/// Where log lines go. Mosquitto: `log_dest`, one per line. `syslog`,
/// `topic` and `dlt` are accepted with a warning and ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// `log_dest stdout`.
    Stdout,
    /// `log_dest stderr` (the default).
    Stderr,
    /// `log_dest file PATH`: appended to PATH.
    File(String),
}

/// How the broker logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConf {
    /// The kinds of lines written.
    pub types: LogTypes,
    /// Where they go; empty after `log_dest none`.
    pub dests: Vec<LogDest>,
    /// Prefix lines with a timestamp. Mosquitto: `log_timestamp`, default
    /// true.
    pub timestamp: bool,
    /// Log each connection and disconnection. Mosquitto:
    /// `connection_messages`, default true.
    pub connection_messages: bool,
}

impl Default for LogConf {
    fn default() -> Self {
        Self { types: LogTypes::default(), dests: vec![LogDest::Stderr], timestamp: true, connection_messages: true }
    }
}

/// Where presence goes: present when `redis_host` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConf {
    /// `redis_host`: host name or address of the Redis server.
    pub host: String,
    /// `redis_port`, default 6379.
    pub port: u16,
    /// `redis_auth`: the password sent with AUTH; never logged.
    pub auth: Option<Secret>,
    /// `redis_user`: ACL user name sent with AUTH (Redis 6+); without it
    /// AUTH carries the password alone.
    pub user: Option<String>,
    /// `redis_db`: database selected after connecting, default 0.
    pub db: u32,
    /// `redis_key`: name of the presence hash, default `mqtt`.
    pub key: String,
}

/// Everything a configuration file says, ready for a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConf {
    /// The core's limits and switches. `max_connections` is the sum of
    /// the listeners' limits when every listener has one (so with one
    /// listener it is exactly that listener's limit), otherwise `None`.
    pub core: Config,
    /// The sockets to open, in file order; the default listener (`port`,
    /// `bind_address`) comes last, as in Mosquitto. Never empty.
    pub listeners: Vec<ListenerConf>,
    /// Logging.
    pub log: LogConf,
    /// Presence in Redis; `None` without `redis_host`.
    pub redis: Option<RedisConf>,
    /// Where retained messages and persistent sessions are kept.
    pub persistence: super::PersistenceConf,
    /// `password_file`: the path of a `mosquitto_passwd` file; the
    /// runtime reads it.
    pub password_file: Option<String>,
    /// `acl_file`: the path of a Mosquitto ACL file; the runtime reads it.
    pub acl_file: Option<String>,
    /// `per_listener_settings true`: each listener has its own security
    /// settings ([`ListenerConf::security`]) and the global ones above are
    /// not used.
    pub per_listener_settings: bool,
    /// No listener was configured: the broker serves 127.0.0.1 and ::1
    /// only. A runtime says so at start, as Mosquitto 2 does ("Starting in
    /// local only mode").
    pub local_only: bool,
    /// What was accepted but not acted on; the runtime logs each once.
    pub warnings: Vec<Warning>,
}

impl Default for BrokerConf {
    /// The configuration of a broker started without a file: local only
    /// mode on port 1883, anonymous clients allowed.
    fn default() -> Self {
        Parser::default().assemble()
    }
}

impl BrokerConf {
    /// The access settings of the listener at `index` of
    /// [`listeners`](Self::listeners): its own under
    /// `per_listener_settings`, the global ones otherwise.
    pub fn auth(&self, index: usize) -> ListenerAuth {
        if !self.per_listener_settings {
            return ListenerAuth {
                allow_anonymous: self.core.allow_anonymous,
                password_file: self.password_file.clone(),
                acl_file: self.acl_file.clone(),
            };
        }
        let security = self.listeners.get(index).map(|l| l.security.clone()).unwrap_or_default();
        ListenerAuth {
            allow_anonymous: security.allow_anonymous.unwrap_or(self.local_only),
            password_file: security.password_file,
            acl_file: security.acl_file,
        }
    }

    /// The client id rules of each listener (by its index) under
    /// `per_listener_settings`, for [`Config::listener_client_ids`]; empty
    /// otherwise.
    pub fn listener_client_ids(&self) -> std::collections::BTreeMap<crate::ListenerId, crate::ClientIdRules> {
        if !self.per_listener_settings {
            return std::collections::BTreeMap::new();
        }
        let defaults = Config::default();
        self.listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                let security = &listener.security;
                let rules = crate::ClientIdRules {
                    allow_zero_length_clientid: security
                        .allow_zero_length_clientid
                        .unwrap_or(defaults.allow_zero_length_clientid),
                    auto_id_prefix: security.auto_id_prefix.clone().unwrap_or_else(|| defaults.auto_id_prefix.clone()),
                };
                (crate::ListenerId(u16::try_from(index).unwrap_or(u16::MAX)), rules)
            })
            .collect()
    }

    /// Recomputes `core.max_connections` from the listeners' limits.
    pub(super) fn recompute_max_connections(&mut self) {
        self.core.max_connections = if self.listeners.is_empty() {
            None
        } else {
            self.listeners.iter().try_fold(0usize, |sum, l| l.max_connections.map(|n| sum.saturating_add(n)))
        };
    }
}

/// Access to the files of `include_dir`, provided by the runtime; the core
/// never touches the file system.
pub trait IncludeSource {
    /// The names (not paths) of the entries of directory `dir`. Culex
    /// keeps those ending in `.conf` and reads them in byte order (capital
    /// letters first), as Mosquitto 2 does.
    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String>;

    /// The text of the file at `path`.
    fn read_file(&mut self, path: &str) -> Result<String, String>;
}

/// An [`IncludeSource`] without files: `include_dir` is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIncludes;

impl IncludeSource for NoIncludes {
    fn list_dir(&mut self, _dir: &str) -> Result<Vec<String>, String> {
        Err("no file access here (the runtime reads include_dir)".to_owned())
    }

    fn read_file(&mut self, _path: &str) -> Result<String, String> {
        Err("no file access here (the runtime reads include_dir)".to_owned())
    }
}

/// Parses one configuration text; `include_dir` is refused (see
/// [`parse_with`]). `path_for_messages` names the file in errors and
/// warnings.
pub fn parse(path_for_messages: &str, text: &str) -> Result<BrokerConf, ConfError> {
    parse_with(path_for_messages, text, &mut NoIncludes)
}

/// Parses a configuration text, reading the files of its `include_dir`
/// lines through `includes`. As in Mosquitto, each included file is read
/// where its `include_dir` line stands, starts outside any listener
/// section, and may not include further files.
pub fn parse_with(
    path_for_messages: &str,
    text: &str,
    includes: &mut dyn IncludeSource,
) -> Result<BrokerConf, ConfError> {
    let mut parser = Parser::default();
    parser.parse_text(path_for_messages, text, 0, includes)?;
    parser.finish()
}

/// Where a line is: file and 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Loc {
    file: String,
    line: usize,
}

impl Loc {
    fn error(&self, reason: impl Into<String>) -> ConfError {
        ConfError { file: self.file.clone(), line: self.line, reason: reason.into() }
    }

    fn warning(&self, key: &str, message: impl Into<String>) -> Warning {
        Warning { file: self.file.clone(), line: self.line, key: key.to_owned(), message: message.into() }
    }
}

/// One setting line, split into its key and the rest (blanks trimmed).
struct Line<'a> {
    file: &'a str,
    number: usize,
    key: &'a str,
    rest: &'a str,
}

impl<'a> Line<'a> {
    fn loc(&self) -> Loc {
        Loc { file: self.file.to_owned(), line: self.number }
    }

    fn error(&self, reason: impl Into<String>) -> ConfError {
        ConfError { file: self.file.to_owned(), line: self.number, reason: reason.into() }
    }

    fn warning(&self, message: impl Into<String>) -> Warning {
        Warning { file: self.file.to_owned(), line: self.number, key: self.key.to_owned(), message: message.into() }
    }

    fn empty(&self) -> ConfError {
        self.error(format!("Empty {} value in configuration.", self.key))
    }

    /// The rest of the line as one value, spaces and `#` included.
    fn text(&self) -> Result<&'a str, ConfError> {
        if self.rest.is_empty() { Err(self.empty()) } else { Ok(self.rest) }
    }

    /// The words of the value, up to a `#` comment.
    fn words(&self) -> Vec<&'a str> {
        self.rest.split_ascii_whitespace().take_while(|word| !word.starts_with('#')).collect()
    }

    /// The value as a single word.
    fn word(&self) -> Result<&'a str, ConfError> {
        match self.words()[..] {
            [] => Err(self.empty()),
            [word] => Ok(word),
            [_, extra, ..] => Err(self.error(format!("Unexpected \"{extra}\" after the {} value.", self.key))),
        }
    }

    /// An integer in `min..=max`.
    fn int(&self, min: i64, max: i64) -> Result<i64, ConfError> {
        self.int_described(min, max, &format!("an integer from {min} to {max}"))
    }

    /// An integer in `min..=max`, the range described as `expected`.
    fn int_described(&self, min: i64, max: i64, expected: &str) -> Result<i64, ConfError> {
        let word = self.word()?;
        match word.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(format!("Invalid {} value ({word}): expected {expected}.", self.key))),
        }
    }

    /// An integer up to `max` where a negative value means 0, as Mosquitto
    /// reads `max_queued_messages -1`.
    fn int_negative_is_zero(&self, max: i64) -> Result<i64, ConfError> {
        Ok(self.int_described(i64::MIN, max, &format!("an integer from 0 to {max}"))?.max(0))
    }

    /// A port, 1 to 65535.
    fn port(&self) -> Result<u16, ConfError> {
        self.port_from(self.word()?)
    }

    fn port_from(&self, word: &str) -> Result<u16, ConfError> {
        match word.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(self.error(format!("Invalid port value ({word}): expected an integer from 1 to 65535."))),
        }
    }

    /// `true`/`false` (or `1`/`0`, as Mosquitto's parser also takes).
    fn boolean(&self) -> Result<bool, ConfError> {
        match self.word()? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.error(format!("Invalid {} value ({other}): expected true or false.", self.key))),
        }
    }
}

/// Converts a range-checked integer; the ranges used fit every target.
fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Which listener the listener-scoped keys of a line apply to.
#[derive(Debug, Clone, Copy)]
enum Section {
    /// Before any `listener` line of this file: the default listener.
    Default,
    /// After `listener`: that listener, by index.
    Listener(usize),
    /// After a listener Culex does not open (a Unix socket): its keys are
    /// checked and dropped.
    Discarded,
}

/// The Redis keys as written, checked at the end.
#[derive(Debug, Default)]
struct RedisDraft {
    host: Option<String>,
    port: Option<u16>,
    auth: Option<Secret>,
    user: Option<String>,
    db: Option<u32>,
    key: Option<String>,
    /// First `redis_*` line other than `redis_host`.
    first_other: Option<(Loc, String)>,
}

/// The state of a parse across the main file and its includes.
#[derive(Debug)]
struct Parser {
    core: Config,
    listeners: Vec<ListenerConf>,
    /// Settings of the default listener (`port`, `bind_address`, and the
    /// listener keys before any `listener` line).
    default_listener: ListenerConf,
    /// `port` or `bind_address` was given.
    default_requested: bool,
    /// `port` was given.
    port_set: bool,
    /// First listener key (other than port/bind_address) given for the
    /// default listener: it opens that listener, as in Mosquitto.
    default_touched: Option<(Loc, String)>,
    /// Scratch target for the keys of a discarded listener.
    discarded: ListenerConf,
    first_discarded: Option<Loc>,
    /// Some `listener`, `port` or `bind_address` line was seen.
    opens_listener: bool,
    allow_anonymous: Option<bool>,
    allow_zero_length_clientid: Option<bool>,
    auto_id_prefix: Option<String>,
    per_listener_settings: bool,
    /// The first security setting seen: `per_listener_settings true` may
    /// not follow it.
    first_security: Option<Loc>,
    log: LogConf,
    log_types_set: bool,
    log_dests_set: bool,
    log_dest_none: bool,
    log_file_set: bool,
    redis: RedisDraft,
    password_file: Option<String>,
    acl_file: Option<String>,
    warnings: Vec<Warning>,
}

impl Default for Parser {
    fn default() -> Self {
        Self {
            core: Config::default(),
            listeners: Vec::new(),
            default_listener: ListenerConf::new(DEFAULT_PORT),
            default_requested: false,
            port_set: false,
            default_touched: None,
            discarded: ListenerConf::new(DEFAULT_PORT),
            first_discarded: None,
            opens_listener: false,
            allow_anonymous: None,
            allow_zero_length_clientid: None,
            auto_id_prefix: None,
            per_listener_settings: false,
            first_security: None,
            password_file: None,
            acl_file: None,
            log: LogConf::default(),
            log_types_set: false,
            log_dests_set: false,
            log_dest_none: false,
            log_file_set: false,
            redis: RedisDraft::default(),
            warnings: Vec::new(),
        }
    }
}

impl Parser {
    fn parse_text(
        &mut self,
        file: &str,
        text: &str,
        level: usize,
        includes: &mut dyn IncludeSource,
    ) -> Result<(), ConfError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut section = Section::Default;
        for (index, raw) in text.lines().enumerate() {
            let trimmed = raw.trim_matches(|c: char| c.is_ascii_whitespace());
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, rest) = match trimmed.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((key, rest)) => (key, rest.trim_matches(|c: char| c.is_ascii_whitespace())),
                None => (trimmed, ""),
            };
            let line = Line { file, number: index + 1, key, rest };
            self.handle(&line, &mut section, level, includes)?;
        }
        Ok(())
    }

    fn listener_mut(&mut self, section: Section) -> &mut ListenerConf {
        match section {
            Section::Default => &mut self.default_listener,
            Section::Listener(index) => match self.listeners.get_mut(index) {
                Some(listener) => listener,
                None => &mut self.discarded,
            },
            Section::Discarded => &mut self.discarded,
        }
    }

    /// Notes a listener key given before any `listener` line.
    fn touch_default(&mut self, line: &Line<'_>, section: Section) {
        if matches!(section, Section::Default) && self.default_touched.is_none() {
            self.default_touched = Some((line.loc(), line.key.to_owned()));
        }
    }

    fn handle(
        &mut self,
        line: &Line<'_>,
        section: &mut Section,
        level: usize,
        includes: &mut dyn IncludeSource,
    ) -> Result<(), ConfError> {
        match line.key {
            "listener" => self.listener(line, section)?,
            "port" => {
                let port = line.port()?;
                if self.port_set {
                    self.warnings.push(
                        line.warning("Default listener port specified multiple times. Only the latest will be used."),
                    );
                }
                self.port_set = true;
                self.default_listener.port = port;
                self.default_requested = true;
                self.opens_listener = true;
            }
            "bind_address" => {
                let address = line.word()?;
                if self.default_listener.address.is_some() {
                    return Err(line.error("Duplicate default listener bind_address value in configuration."));
                }
                if !matches!(section, Section::Default) {
                    self.warnings.push(line.warning(
                        "bind_address sets the address of the default listener (see port), not of the listener \
                         above; write `listener PORT ADDRESS` to bind that one",
                    ));
                }
                self.default_listener.address = Some(address.to_owned());
                self.default_requested = true;
                self.opens_listener = true;
            }
            "protocol" => {
                let protocol = match line.word()? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::WebSockets,
                    other => {
                        return Err(
                            line.error(format!("Invalid protocol value ({other}): expected mqtt or websockets."))
                        );
                    }
                };
                self.touch_default(line, *section);
                self.listener_mut(*section).protocol = protocol;
            }
            "max_connections" => {
                let n = line.int_described(i64::MIN, INT_MAX, "-1 (no limit) or an integer from 0 to 2147483647")?;
                self.touch_default(line, *section);
                self.listener_mut(*section).max_connections = if n < 0 { None } else { Some(to_usize(n)) };
            }
            "socket_domain" => {
                let domain = match line.word()? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    other => {
                        return Err(line.error(format!(
                            "Invalid socket_domain value \"{other}\" in configuration: expected ipv4 or ipv6."
                        )));
                    }
                };
                self.touch_default(line, *section);
                self.listener_mut(*section).socket_domain = Some(domain);
            }
            "allow_anonymous" | "allow_zero_length_clientid" | "auto_id_prefix" | "password_file" | "acl_file"
                if self.per_listener_settings =>
            {
                self.listener_security(line, *section)?;
            }
            "allow_anonymous" => {
                let value = line.boolean()?;
                self.note_security(line);
                self.allow_anonymous = Some(value);
            }
            "allow_zero_length_clientid" => {
                let value = line.boolean()?;
                self.note_security(line);
                self.allow_zero_length_clientid = Some(value);
            }
            "auto_id_prefix" => {
                let value = line.text()?;
                if self.auto_id_prefix.is_some() {
                    return Err(line.error("Duplicate auto_id_prefix value in configuration."));
                }
                self.note_security(line);
                self.auto_id_prefix = Some(value.to_owned());
            }
            "password_file" => {
                if self.password_file.is_some() {
                    return Err(line.error("Duplicate password_file value in configuration."));
                }
                self.note_security(line);
                self.password_file = Some(line.text()?.to_owned());
            }
            "acl_file" => {
                if self.acl_file.is_some() {
                    return Err(line.error("Duplicate acl_file value in configuration."));
                }
                self.note_security(line);
                self.acl_file = Some(line.text()?.to_owned());
            }
            "per_listener_settings" => {
                if line.boolean()? {
                    if self.first_security.is_some() {
                        return Err(line.error("per_listener_settings must be set before any other security settings."));
                    }
                    self.per_listener_settings = true;
                }
            }
            "max_inflight_messages" => {
                self.core.max_inflight_messages =
                    u16::try_from(line.int_negative_is_zero(i64::from(u16::MAX))?).unwrap_or(u16::MAX);
            }
            "max_queued_messages" => {
                self.core.max_queued_messages = to_usize(line.int_negative_is_zero(INT_MAX)?);
            }
            "max_queued_bytes" => {
                self.core.max_queued_bytes = to_usize(line.int_negative_is_zero(INT_MAX)?);
            }
            "message_expiry" => self.core.message_expiry = line.boolean()?,
            "max_subscriptions" => {
                self.core.max_subscriptions = to_usize(line.int(0, INT_MAX)?);
            }
            "max_unwritten_bytes" => {
                self.core.max_unwritten_bytes = to_usize(line.int(0, INT_MAX)?);
            }
            "slow_subscriber_timeout" => {
                self.core.slow_subscriber_timeout = std::time::Duration::from_secs(line.int(1, 3600)?.unsigned_abs());
            }
            "not_reading_timeout" => {
                self.core.not_reading_timeout = std::time::Duration::from_secs(line.int(1, 3600)?.unsigned_abs());
            }
            "message_size_limit" => {
                self.core.message_size_limit = to_usize(line.int(0, MAX_REMAINING_LENGTH as i64)?);
            }
            "max_keepalive" => {
                self.core.max_keepalive = u16::try_from(line.int(0, i64::from(u16::MAX))?).unwrap_or(u16::MAX);
            }
            "queue_qos0_messages" => self.core.queue_qos0_messages = line.boolean()?,
            "sys_interval" => {
                self.core.sys_interval = std::time::Duration::from_secs(line.int(0, 65_535)?.unsigned_abs());
            }
            "connection_messages" => self.log.connection_messages = line.boolean()?,
            "log_timestamp" => self.log.timestamp = line.boolean()?,
            "log_type" => self.log_type(line)?,
            "log_dest" => self.log_dest(line)?,
            "include_dir" => self.include_dir(line, level, includes)?,
            "redis_host" => {
                let host = line.word()?;
                if self.redis.host.is_some() {
                    return Err(line.error("Duplicate redis_host value in configuration."));
                }
                self.redis.host = Some(host.to_owned());
            }
            "redis_port" => {
                self.redis.port = Some(line.port()?);
                self.note_redis(line);
            }
            "redis_auth" => {
                // Never echo the value: every error here names the key only.
                let password = line.text()?;
                if self.redis.auth.is_some() {
                    return Err(line.error("Duplicate redis_auth value in configuration."));
                }
                self.redis.auth = Some(Secret::new(password));
                self.note_redis(line);
            }
            "redis_user" => {
                let user = line.word()?;
                if self.redis.user.is_some() {
                    return Err(line.error("Duplicate redis_user value in configuration."));
                }
                self.redis.user = Some(user.to_owned());
                self.note_redis(line);
            }
            "redis_db" => {
                self.redis.db = Some(u32::try_from(line.int(0, INT_MAX)?).unwrap_or(0));
                self.note_redis(line);
            }
            "redis_key" => {
                let key = line.word()?;
                if self.redis.key.is_some() {
                    return Err(line.error("Duplicate redis_key value in configuration."));
                }
                self.redis.key = Some(key.to_owned());
                self.note_redis(line);
            }
            "certfile" | "keyfile" | "cafile" | "capath" | "crlfile" | "ciphers" | "ciphers_tls1.3" => {
                self.tls_text(line, *section)?;
            }
            "require_certificate" | "use_identity_as_username" | "use_subject_as_username" => {
                let on = line.boolean()?;
                let tls = self.tls_mut(line, *section);
                match (line.key, on) {
                    ("require_certificate", _) => tls.require_certificate = on,
                    // Mosquitto checks use_identity_as_username first: it wins.
                    ("use_identity_as_username", true) => tls.username = CertUsername::CommonName,
                    ("use_subject_as_username", true) if tls.username != CertUsername::CommonName => {
                        tls.username = CertUsername::Subject;
                    }
                    ("use_identity_as_username", false) if tls.username == CertUsername::CommonName => {
                        tls.username = CertUsername::Connect;
                    }
                    ("use_subject_as_username", false) if tls.username == CertUsername::Subject => {
                        tls.username = CertUsername::Connect;
                    }
                    _ => {}
                }
            }
            "tls_version" => {
                let version = match line.word()? {
                    "tlsv1.3" => TlsVersion::Tls13,
                    "tlsv1.2" => TlsVersion::Tls12,
                    "tlsv1.1" => {
                        return Err(line.error(
                            "tls_version tlsv1.1 is not supported: Culex speaks TLS 1.2 and 1.3 only; use tlsv1.2.",
                        ));
                    }
                    other => {
                        return Err(
                            line.error(format!("Unsupported tls_version \"{other}\": expected tlsv1.3 or tlsv1.2."))
                        );
                    }
                };
                self.tls_mut(line, *section).version = Some(version);
            }
            key if keys::is_ignored_mosquitto_key(key) => {
                if keys::is_security_key(key) {
                    self.note_security(line);
                }
                if keys::is_listener_scoped(key) {
                    self.listener_mut(*section).ignored_keys.push(key.to_owned());
                }
                self.warnings.push(line.warning(NOT_SUPPORTED));
            }
            key => return Err(line.error(unknown_key(key))),
        }
        Ok(())
    }

    /// The TLS settings of the listener `line` applies to, noting the
    /// first TLS key given for it.
    fn tls_mut(&mut self, line: &Line<'_>, section: Section) -> &mut TlsConf {
        self.touch_default(line, section);
        let tls = &mut self.listener_mut(section).tls;
        if tls.first.is_none() {
            tls.first = Some(located(line, line.key));
        }
        tls
    }

    /// A TLS key whose value is the rest of the line (a path, a cipher
    /// list); given twice for one listener is an error, as in Mosquitto.
    fn tls_text(&mut self, line: &Line<'_>, section: Section) -> Result<(), ConfError> {
        let value = Some(located(line, line.text()?));
        let tls = self.tls_mut(line, section);
        let slot = match line.key {
            "certfile" => &mut tls.certfile,
            "keyfile" => &mut tls.keyfile,
            "cafile" => &mut tls.cafile,
            "capath" => &mut tls.capath,
            "crlfile" => &mut tls.crlfile,
            "ciphers" => &mut tls.ciphers,
            _ => &mut tls.ciphers_tls13,
        };
        if slot.is_some() {
            return Err(line.error(format!("Duplicate {} value in configuration.", line.key)));
        }
        *slot = value;
        Ok(())
    }

    /// Remembers that a security setting was seen.
    fn note_security(&mut self, line: &Line<'_>) {
        self.first_security.get_or_insert_with(|| line.loc());
    }

    /// A security setting under `per_listener_settings`: it belongs to the
    /// listener of `section`.
    fn listener_security(&mut self, line: &Line<'_>, section: Section) -> Result<(), ConfError> {
        self.note_security(line);
        // Before any listener line it configures the default listener and
        // so opens it, as in Mosquitto.
        self.touch_default(line, section);
        let duplicate = || line.error(format!("Duplicate {} value in configuration.", line.key));
        let security = &mut self.listener_mut(section).security;
        match line.key {
            "allow_anonymous" => security.allow_anonymous = Some(line.boolean()?),
            "allow_zero_length_clientid" => security.allow_zero_length_clientid = Some(line.boolean()?),
            "auto_id_prefix" => {
                let value = line.text()?;
                if security.auto_id_prefix.replace(value.to_owned()).is_some() {
                    return Err(duplicate());
                }
            }
            "password_file" => {
                let value = line.text()?;
                if security.password_file.replace(value.to_owned()).is_some() {
                    return Err(duplicate());
                }
            }
            "acl_file" => {
                let value = line.text()?;
                if security.acl_file.replace(value.to_owned()).is_some() {
                    return Err(duplicate());
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn listener(&mut self, line: &Line<'_>, section: &mut Section) -> Result<(), ConfError> {
        self.opens_listener = true;
        let (port, address) = match line.words()[..] {
            [] => return Err(line.error("Empty listener value in configuration.")),
            [port] => (port, None),
            [port, address] => (port, Some(address)),
            [_, _, extra, ..] => {
                return Err(line.error(format!("Unexpected \"{extra}\" after the listener address.")));
            }
        };
        if port == "0" {
            if address.is_none() {
                return Err(line.error("A listener with port 0 must provide a Unix socket path."));
            }
            self.warnings.push(line.warning(format!(
                "Unix socket listeners are {NOT_SUPPORTED} (with the listener settings that follow)"
            )));
            self.discarded = ListenerConf::new(DEFAULT_PORT);
            self.first_discarded.get_or_insert_with(|| line.loc());
            *section = Section::Discarded;
            return Ok(());
        }
        let port = line.port_from(port)?;
        let address = address.map(str::to_owned);
        if self.listeners.iter().any(|l| l.port == port && l.address == address) {
            let at = address.as_deref().map(|a| format!(" on {a}")).unwrap_or_default();
            return Err(line.error(format!("Duplicate listener for port {port}{at}.")));
        }
        self.listeners.push(ListenerConf { address, ..ListenerConf::new(port) });
        *section = Section::Listener(self.listeners.len() - 1);
        Ok(())
    }

    fn log_type(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        let words = line.words();
        if words.is_empty() {
            return Err(line.empty());
        }
        if !self.log_types_set {
            self.log_types_set = true;
            self.log.types = LogTypes::none();
        }
        // Mosquitto reads one word per line; Culex takes them all.
        for word in words {
            let types = &mut self.log.types;
            match word {
                "none" => *types = LogTypes::none(),
                "all" => *types = LogTypes::all(),
                "error" => types.error = true,
                "warning" => types.warning = true,
                "notice" => types.notice = true,
                "information" => types.information = true,
                "debug" => types.debug = true,
                "subscribe" => types.subscribe = true,
                "unsubscribe" => types.unsubscribe = true,
                "websockets" => types.websockets = true,
                other => {
                    return Err(line.error(format!(
                        "Invalid log_type value ({other}): expected error, warning, notice, information, debug, \
                         subscribe, unsubscribe, websockets, none or all."
                    )));
                }
            }
        }
        Ok(())
    }

    fn log_dest(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        let Some(kind) = line.words().first().copied() else {
            return Err(line.empty());
        };
        if !self.log_dests_set {
            self.log_dests_set = true;
            self.log.dests.clear();
        }
        let dest = match kind {
            "file" => {
                let path = line.rest["file".len()..].trim_matches(|c: char| c.is_ascii_whitespace());
                if path.is_empty() {
                    return Err(line.error("Empty \"log_dest file\" value in configuration."));
                }
                if self.log_file_set {
                    return Err(line.error("Duplicate \"log_dest file\" value."));
                }
                self.log_file_set = true;
                LogDest::File(path.to_owned())
            }
            _ => {
                let _ = line.word()?;
                match kind {
                    "none" => {
                        self.log_dest_none = true;
                        self.log.dests.clear();
                        return Ok(());
                    }
                    "stdout" => LogDest::Stdout,
                    "stderr" => LogDest::Stderr,
                    "syslog" | "topic" | "dlt" => {
                        self.warnings.push(line.warning(format!("log_dest {kind} is {NOT_SUPPORTED}")));
                        return Ok(());
                    }
                    other => {
                        return Err(line.error(format!(
                            "Invalid log_dest value ({other}): expected stdout, stderr, file PATH, syslog, topic, \
                             dlt or none."
                        )));
                    }
                }
            }
        };
        if !self.log.dests.contains(&dest) {
            self.log.dests.push(dest);
        }
        Ok(())
    }

    fn include_dir(
        &mut self,
        line: &Line<'_>,
        level: usize,
        includes: &mut dyn IncludeSource,
    ) -> Result<(), ConfError> {
        let dir = line.text()?;
        if level > 0 {
            self.warnings.push(
                line.warning(
                    "include_dir is only read from the main configuration file; ignored here, as Mosquitto does",
                ),
            );
            return Ok(());
        }
        let mut names =
            includes.list_dir(dir).map_err(|e| line.error(format!("Unable to open include_dir {dir}: {e}.")))?;
        names.retain(|name| name.len() > ".conf".len() && name.ends_with(".conf"));
        names.sort();
        for name in names {
            let path = if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") };
            let text = includes
                .read_file(&path)
                .map_err(|e| line.error(format!("Unable to open config file {path}: {e}.")))?;
            self.parse_text(&path, &text, level + 1, includes)?;
        }
        Ok(())
    }

    /// Remembers the first `redis_*` key other than `redis_host`.
    fn note_redis(&mut self, line: &Line<'_>) {
        if self.redis.first_other.is_none() {
            self.redis.first_other = Some((line.loc(), line.key.to_owned()));
        }
    }

    fn finish(self) -> Result<BrokerConf, ConfError> {
        let nothing_to_open = self.listeners.is_empty() && !self.default_requested && self.default_touched.is_none();
        if let (true, Some(loc)) = (self.opens_listener && nothing_to_open, &self.first_discarded) {
            return Err(loc.error("No listener left to open: Culex does not serve Unix sockets."));
        }
        let conf = self.assemble();
        for listener in &conf.listeners {
            listener.tls.validate()?;
        }
        Ok(conf)
    }

    fn assemble(mut self) -> BrokerConf {
        let local_only = !self.opens_listener;
        let mut listeners = std::mem::take(&mut self.listeners);
        let template = self.default_listener;
        if local_only {
            let addresses: &[&str] = match template.socket_domain {
                Some(SocketDomain::Ipv4) => &[LOOPBACK_V4],
                Some(SocketDomain::Ipv6) => &[LOOPBACK_V6],
                None => &[LOOPBACK_V4, LOOPBACK_V6],
            };
            for address in addresses {
                listeners.push(ListenerConf { address: Some((*address).to_owned()), ..template.clone() });
            }
        } else if self.default_requested || self.default_touched.is_some() {
            if let (false, Some((loc, key))) = (self.default_requested, &self.default_touched) {
                self.warnings.push(loc.warning(
                    key,
                    "before any listener line this configures the default listener, so port 1883 is opened on all \
                     addresses, as Mosquitto does; move it below a listener line to apply it there",
                ));
            }
            listeners.push(template);
        }

        let mut core = self.core;
        core.allow_anonymous = self.allow_anonymous.unwrap_or(local_only);
        if let Some(allowed) = self.allow_zero_length_clientid {
            core.allow_zero_length_clientid = allowed;
        }
        if let Some(prefix) = self.auto_id_prefix {
            core.auto_id_prefix = prefix;
        }

        let mut log = self.log;
        if self.log_dests_set && log.dests.is_empty() && !self.log_dest_none {
            // Only unsupported destinations were given: keep stderr rather
            // than log nowhere.
            log.dests.push(LogDest::Stderr);
        }

        let draft = self.redis;
        let redis = match draft.host {
            Some(host) => Some(RedisConf {
                host,
                port: draft.port.unwrap_or(DEFAULT_REDIS_PORT),
                auth: draft.auth,
                user: draft.user,
                db: draft.db.unwrap_or(0),
                key: draft.key.unwrap_or_else(|| DEFAULT_REDIS_KEY.to_owned()),
            }),
            None => {
                if let Some((loc, key)) = &draft.first_other {
                    self.warnings
                        .push(loc.warning(key, "has no effect without redis_host: presence is not sent to Redis"));
                }
                None
            }
        };

        let mut conf = BrokerConf {
            core,
            listeners,
            log,
            redis,
            persistence: super::PersistenceConf::default(),
            password_file: self.password_file,
            acl_file: self.acl_file,
            per_listener_settings: self.per_listener_settings,
            local_only,
            warnings: self.warnings,
        };
        conf.recompute_max_connections();
        conf
    }
}

/// `value`, remembered with the line that gave it.
fn located(line: &Line<'_>, value: &str) -> Located<String> {
    Located { value: value.to_owned(), file: line.file.to_owned(), line: line.number }
}

/// Mosquitto's message for an unknown key, with a hint when only the case
/// is wrong.
fn unknown_key(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    if lower != key && (keys::is_ignored_mosquitto_key(&lower) || CULEX_KEYS.contains(&lower.as_str())) {
        format!("Unknown configuration variable \"{key}\" (keys are lower case: \"{lower}\").")
    } else {
        format!("Unknown configuration variable \"{key}\".")
    }
}

/// The keys Culex acts on.
const CULEX_KEYS: &[&str] = &[
    "acl_file",
    "allow_anonymous",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "bind_address",
    "cafile",
    "capath",
    "certfile",
    "ciphers",
    "ciphers_tls1.3",
    "connection_messages",
    "crlfile",
    "include_dir",
    "keyfile",
    "listener",
    "log_dest",
    "log_timestamp",
    "log_type",
    "max_connections",
    "max_inflight_messages",
    "max_keepalive",
    "max_queued_bytes",
    "max_queued_messages",
    "max_subscriptions",
    "max_unwritten_bytes",
    "message_expiry",
    "message_size_limit",
    "not_reading_timeout",
    "password_file",
    "per_listener_settings",
    "port",
    "protocol",
    "queue_qos0_messages",
    "redis_auth",
    "redis_db",
    "redis_host",
    "redis_key",
    "redis_port",
    "redis_user",
    "require_certificate",
    "slow_subscriber_timeout",
    "socket_domain",
    "sys_interval",
    "tls_version",
    "use_identity_as_username",
    "use_subject_as_username",
];

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;

    fn conf(text: &str) -> BrokerConf {
        match parse("test.conf", text) {
            Ok(conf) => conf,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn error(text: &str) -> ConfError {
        match parse("test.conf", text) {
            Ok(conf) => panic!("expected an error, got {conf:?}"),
            Err(e) => e,
        }
    }

    /// Asserts the error is at `line` of test.conf with `reason`.
    fn assert_error(text: &str, line: usize, reason: &str) {
        let e = error(text);
        assert_eq!((e.file.as_str(), e.line, e.reason.as_str()), ("test.conf", line, reason), "{text:?}");
    }

    fn listener(port: u16, address: Option<&str>) -> ListenerConf {
        ListenerConf { address: address.map(str::to_owned), ..ListenerConf::new(port) }
    }

    fn warnings(conf: &BrokerConf) -> Vec<(usize, &str, &str)> {
        conf.warnings.iter().map(|w| (w.line, w.key.as_str(), w.message.as_str())).collect()
    }

    // --- the seed and the defaults -------------------------------------

    #[test]
    fn seed_example_config_parses_into_redis_presence() {
        let conf = conf("redis_host 127.0.0.1\nredis_port 6379\nredis_auth doordu\n");
        let redis = conf.redis.unwrap();
        assert_eq!(redis.host, "127.0.0.1");
        assert_eq!(redis.port, 6379);
        assert_eq!(redis.auth.as_ref().map(Secret::expose), Some("doordu"));
        assert_eq!(redis.user, None);
        assert_eq!(redis.db, 0);
        assert_eq!(redis.key, "mqtt");
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn empty_config_is_local_only_with_anonymous_allowed() {
        let conf = conf("");
        assert!(conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1883, Some("127.0.0.1")), listener(1883, Some("::1"))]);
        assert!(conf.core.allow_anonymous);
        assert_eq!(conf, BrokerConf::default());
        assert_eq!(conf.log, LogConf::default());
        assert_eq!(conf.redis, None);
        assert_eq!(conf.core.max_connections, None);
    }

    #[test]
    fn defaults_are_mosquitto_defaults() {
        let conf = conf("# nothing\n");
        let core = &conf.core;
        assert_eq!(core.max_inflight_messages, 20);
        assert_eq!(core.max_queued_messages, 1000);
        assert_eq!(core.max_queued_bytes, 0);
        assert_eq!(core.message_size_limit, 0);
        assert_eq!(core.max_keepalive, 65535);
        assert!(!core.queue_qos0_messages);
        assert!(core.allow_zero_length_clientid);
        assert_eq!(core.auto_id_prefix, "auto-");
        assert_eq!(conf.log.types, LogTypes::default());
        assert_eq!(conf.log.dests, vec![LogDest::Stderr]);
        assert!(conf.log.timestamp);
        assert!(conf.log.connection_messages);
    }

    #[test]
    fn listener_leaves_local_only_and_defaults_anonymous_to_false() {
        let conf = conf("listener 1883\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1883, None)]);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn listener_with_allow_anonymous_true_allows_anonymous() {
        let conf = conf("listener 1883\nallow_anonymous true\n");
        assert!(conf.core.allow_anonymous);
    }

    #[test]
    fn allow_anonymous_false_is_honoured_in_local_only_mode() {
        let conf = conf("allow_anonymous false\n");
        assert!(conf.local_only);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn allow_anonymous_last_value_wins() {
        assert!(conf("listener 1\nallow_anonymous false\nallow_anonymous true\n").core.allow_anonymous);
    }

    #[test]
    fn port_opens_default_listener_on_all_addresses() {
        let conf = conf("port 1884\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1884, None)]);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn bind_address_opens_default_listener_on_1883_at_that_address() {
        let conf = conf("bind_address 10.0.0.1\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1883, Some("10.0.0.1"))]);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn default_listener_comes_after_configured_listeners() {
        let conf = conf("port 1883\nbind_address 0.0.0.0\nlistener 8080 127.0.0.1\nprotocol websockets\n");
        assert_eq!(
            conf.listeners,
            vec![
                ListenerConf { protocol: ListenerProtocol::WebSockets, ..listener(8080, Some("127.0.0.1")) },
                listener(1883, Some("0.0.0.0")),
            ]
        );
    }

    #[test]
    fn port_twice_warns_and_the_latest_wins() {
        let conf = conf("port 1884\nport 1885\n");
        assert_eq!(conf.listeners, vec![listener(1885, None)]);
        assert_eq!(
            warnings(&conf),
            vec![(2, "port", "Default listener port specified multiple times. Only the latest will be used.")]
        );
    }

    #[test]
    fn port_out_of_range_is_an_error() {
        assert_error("port 0", 1, "Invalid port value (0): expected an integer from 1 to 65535.");
        assert_error("port 65536", 1, "Invalid port value (65536): expected an integer from 1 to 65535.");
        assert_error("port x", 1, "Invalid port value (x): expected an integer from 1 to 65535.");
        assert_error("port", 1, "Empty port value in configuration.");
    }

    #[test]
    fn bind_address_twice_is_an_error() {
        assert_error(
            "bind_address a\nbind_address b\n",
            2,
            "Duplicate default listener bind_address value in configuration.",
        );
    }

    #[test]
    fn bind_address_after_listener_warns_that_it_binds_the_default_listener() {
        let conf = conf("listener 1884\nbind_address 10.0.0.1\n");
        assert_eq!(conf.listeners, vec![listener(1884, None), listener(1883, Some("10.0.0.1"))]);
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!((conf.warnings[0].line, conf.warnings[0].key.as_str()), (2, "bind_address"));
    }

    // --- listeners -----------------------------------------------------

    #[test]
    fn several_listeners_keep_file_order_and_addresses() {
        let conf = conf("listener 1883\nlistener 8883 192.168.1.2\nlistener 1883 ::1 # loopback\n");
        assert_eq!(
            conf.listeners,
            vec![listener(1883, None), listener(8883, Some("192.168.1.2")), listener(1883, Some("::1"))]
        );
    }

    #[test]
    fn listener_errors_name_line_and_reason() {
        assert_error("\nlistener\n", 2, "Empty listener value in configuration.");
        assert_error("listener 70000", 1, "Invalid port value (70000): expected an integer from 1 to 65535.");
        assert_error("listener -1", 1, "Invalid port value (-1): expected an integer from 1 to 65535.");
        assert_error("listener 1883 a b", 1, "Unexpected \"b\" after the listener address.");
        assert_error("listener 0", 1, "A listener with port 0 must provide a Unix socket path.");
        assert_error("listener 1883\nlistener 1883\n", 2, "Duplicate listener for port 1883.");
        assert_error("listener 1883 ::1\nlistener 1883 ::1\n", 2, "Duplicate listener for port 1883 on ::1.");
    }

    #[test]
    fn unix_socket_listener_warns_and_drops_its_settings() {
        let conf = conf("listener 1883\nlistener 0 /run/mqtt.sock\nprotocol websockets\nmax_connections 3\n");
        assert_eq!(conf.listeners, vec![listener(1883, None)]);
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!((conf.warnings[0].line, conf.warnings[0].key.as_str()), (2, "listener"));
        assert!(conf.warnings[0].message.contains(NOT_SUPPORTED));
    }

    #[test]
    fn unix_socket_as_only_listener_is_an_error() {
        assert_error("listener 0 /run/mqtt.sock\n", 1, "No listener left to open: Culex does not serve Unix sockets.");
    }

    #[test]
    fn protocol_applies_to_the_current_listener() {
        let conf = conf("listener 1883\nlistener 9001\nprotocol websockets\nlistener 1884\nprotocol mqtt\n");
        let protocols: Vec<_> = conf.listeners.iter().map(|l| l.protocol).collect();
        assert_eq!(protocols, [ListenerProtocol::Mqtt, ListenerProtocol::WebSockets, ListenerProtocol::Mqtt]);
        assert_error(
            "listener 1\nprotocol mqttsn\n",
            2,
            "Invalid protocol value (mqttsn): expected mqtt or websockets.",
        );
        assert_error("listener 1\nprotocol\n", 2, "Empty protocol value in configuration.");
    }

    #[test]
    fn max_connections_applies_per_listener_and_sums_into_the_core() {
        let conf = conf("listener 1883\nmax_connections 10\nlistener 1884\nmax_connections 5\n");
        let limits: Vec<_> = conf.listeners.iter().map(|l| l.max_connections).collect();
        assert_eq!(limits, [Some(10), Some(5)]);
        assert_eq!(conf.core.max_connections, Some(15));
    }

    #[test]
    fn max_connections_minus_one_means_no_limit() {
        let conf = conf("listener 1883\nmax_connections 10\nlistener 1884\nmax_connections -1\n");
        assert_eq!(conf.listeners[1].max_connections, None);
        assert_eq!(conf.core.max_connections, None);
        assert_error(
            "listener 1\nmax_connections 2147483648\n",
            2,
            "Invalid max_connections value (2147483648): expected -1 (no limit) or an integer from 0 to 2147483647.",
        );
    }

    #[test]
    fn socket_domain_applies_to_the_current_listener() {
        let conf = conf("listener 1883\nsocket_domain ipv6\nlistener 1884\nsocket_domain ipv4\n");
        let domains: Vec<_> = conf.listeners.iter().map(|l| l.socket_domain).collect();
        assert_eq!(domains, [Some(SocketDomain::Ipv6), Some(SocketDomain::Ipv4)]);
        assert_error(
            "listener 1\nsocket_domain ipx\n",
            2,
            "Invalid socket_domain value \"ipx\" in configuration: expected ipv4 or ipv6.",
        );
    }

    #[test]
    fn listener_key_before_any_listener_opens_default_listener_with_a_warning() {
        let conf = conf("max_connections 100\nlistener 1884\n");
        assert_eq!(
            conf.listeners,
            vec![listener(1884, None), ListenerConf { max_connections: Some(100), ..listener(1883, None) }]
        );
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!((conf.warnings[0].line, conf.warnings[0].key.as_str()), (1, "max_connections"));
        assert!(conf.warnings[0].message.contains("port 1883 is opened on all addresses"));
    }

    #[test]
    fn listener_keys_before_port_configure_the_default_listener_silently() {
        let conf = conf("port 1884\nmax_connections 7\nprotocol websockets\n");
        assert_eq!(
            conf.listeners,
            vec![ListenerConf {
                protocol: ListenerProtocol::WebSockets,
                max_connections: Some(7),
                ..listener(1884, None)
            }]
        );
        assert_eq!(conf.core.max_connections, Some(7));
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn local_only_listeners_carry_default_listener_settings() {
        let conf = conf("max_connections 5\nsocket_domain ipv4\n");
        assert!(conf.local_only);
        assert_eq!(
            conf.listeners,
            vec![ListenerConf {
                max_connections: Some(5),
                socket_domain: Some(SocketDomain::Ipv4),
                ..listener(1883, Some("127.0.0.1"))
            }]
        );
        let v6 = self::conf("socket_domain ipv6\n");
        assert_eq!(v6.listeners.iter().map(|l| l.address.as_deref()).collect::<Vec<_>>(), [Some("::1")]);
    }

    // --- security ------------------------------------------------------

    #[test]
    fn allow_anonymous_and_zero_length_clientid_take_booleans() {
        let conf = conf("listener 1\nallow_anonymous true\nallow_zero_length_clientid false\n");
        assert!(conf.core.allow_anonymous);
        assert!(!conf.core.allow_zero_length_clientid);
        assert_error("allow_anonymous yes", 1, "Invalid allow_anonymous value (yes): expected true or false.");
        assert_error("allow_anonymous", 1, "Empty allow_anonymous value in configuration.");
        assert_error(
            "allow_zero_length_clientid TRUE",
            1,
            "Invalid allow_zero_length_clientid value (TRUE): expected true or false.",
        );
    }

    #[test]
    fn booleans_accept_one_and_zero_as_mosquitto_does() {
        let conf = conf("listener 1\nallow_anonymous 1\nqueue_qos0_messages 1\nlog_timestamp 0\n");
        assert!(conf.core.allow_anonymous);
        assert!(conf.core.queue_qos0_messages);
        assert!(!conf.log.timestamp);
    }

    #[test]
    fn auto_id_prefix_takes_the_rest_of_the_line() {
        assert_eq!(conf("auto_id_prefix  dev # x \n").core.auto_id_prefix, "dev # x");
        assert_error("auto_id_prefix", 1, "Empty auto_id_prefix value in configuration.");
        assert_error("auto_id_prefix a\nauto_id_prefix b\n", 2, "Duplicate auto_id_prefix value in configuration.");
    }

    #[test]
    fn per_listener_settings_gives_each_listener_its_security() {
        let conf = conf(
            "per_listener_settings true\n\
             listener 1883 127.0.0.1\nallow_anonymous true\n\
             listener 8884\npassword_file /etc/pw\nacl_file /etc/acl\nallow_anonymous false\n\
             auto_id_prefix dev-\nallow_zero_length_clientid false\n\
             listener 8885\n",
        );
        assert!(conf.per_listener_settings);
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        let open = ListenerAuth { allow_anonymous: true, password_file: None, acl_file: None };
        assert_eq!(conf.auth(0), open);
        let closed = ListenerAuth {
            allow_anonymous: false,
            password_file: Some("/etc/pw".to_owned()),
            acl_file: Some("/etc/acl".to_owned()),
        };
        assert_eq!(conf.auth(1), closed);
        // A listener without allow_anonymous refuses anonymous clients.
        assert_eq!(conf.auth(2), ListenerAuth { allow_anonymous: false, ..open.clone() });
        let ids = conf.listener_client_ids();
        let rules = |prefix: &str, allow| crate::ClientIdRules {
            allow_zero_length_clientid: allow,
            auto_id_prefix: prefix.to_owned(),
        };
        assert_eq!(ids.get(&crate::ListenerId(0)), Some(&rules("auto-", true)));
        assert_eq!(ids.get(&crate::ListenerId(1)), Some(&rules("dev-", false)));
        assert_eq!(ids.get(&crate::ListenerId(2)), Some(&rules("auto-", true)));
    }

    #[test]
    fn without_per_listener_settings_every_listener_has_the_global_security() {
        let conf = conf("listener 1\npassword_file /pw\nlistener 2\nallow_anonymous true\n");
        let global = ListenerAuth { allow_anonymous: true, password_file: Some("/pw".to_owned()), acl_file: None };
        assert_eq!((conf.auth(0), conf.auth(1)), (global.clone(), global));
        assert!(conf.listener_client_ids().is_empty());
        assert_error(
            "listener 1\npassword_file /a\nlistener 2\npassword_file /b\n",
            4,
            "Duplicate password_file value in configuration.",
        );
    }

    #[test]
    fn per_listener_settings_before_the_first_listener_configure_the_default_one() {
        // Local only mode: the loopback listeners take them.
        let local = conf("per_listener_settings true\nallow_anonymous false\npassword_file /pw\n");
        assert!(local.local_only);
        for index in 0..local.listeners.len() {
            assert!(!local.auth(index).allow_anonymous);
            assert_eq!(local.auth(index).password_file.as_deref(), Some("/pw"));
        }
        // Unset, allow_anonymous is true in local only mode.
        assert!(conf("per_listener_settings true\n").auth(0).allow_anonymous);
        // With listeners, they open the default listener, as in Mosquitto.
        let with = conf("per_listener_settings true\npassword_file /pw\nlistener 1884\n");
        let ports: Vec<u16> = with.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [1884, 1883]);
        assert_eq!(with.auth(1).password_file.as_deref(), Some("/pw"));
        assert_eq!(with.auth(0).password_file, None);
        assert_eq!((with.warnings.len(), with.warnings[0].key.as_str()), (1, "password_file"));
    }

    #[test]
    fn per_listener_settings_must_come_before_security_settings() {
        let reason = "per_listener_settings must be set before any other security settings.";
        assert_error("listener 1\nallow_anonymous true\nper_listener_settings true\n", 3, reason);
        assert_error("acl_file /acl\nper_listener_settings true\n", 2, reason);
        // Other keys may come first; false may come anywhere.
        assert!(conf("listener 1\nmax_keepalive 10\nper_listener_settings true\n").per_listener_settings);
        assert!(!conf("allow_anonymous true\nper_listener_settings false\n").per_listener_settings);
    }

    #[test]
    fn per_listener_duplicates_are_errors_within_one_listener_only() {
        let conf = conf("per_listener_settings true\nlistener 1\nacl_file /a\nlistener 2\nacl_file /b\n");
        assert_eq!(conf.auth(1).acl_file.as_deref(), Some("/b"));
        assert_error(
            "per_listener_settings true\nlistener 1\npassword_file /a\npassword_file /b\n",
            4,
            "Duplicate password_file value in configuration.",
        );
    }

    // --- limits --------------------------------------------------------

    #[test]
    fn max_inflight_messages_is_checked_and_applied() {
        assert_eq!(conf("max_inflight_messages 1").core.max_inflight_messages, 1);
        assert_eq!(conf("max_inflight_messages 0").core.max_inflight_messages, 0);
        assert_eq!(conf("max_inflight_messages 65535").core.max_inflight_messages, 65535);
        assert_eq!(conf("max_inflight_messages -1").core.max_inflight_messages, 0);
        assert_eq!(conf("max_inflight_messages 5 # five").core.max_inflight_messages, 5);
        assert_error(
            "max_inflight_messages 65536",
            1,
            "Invalid max_inflight_messages value (65536): expected an integer from 0 to 65535.",
        );
        assert_error(
            "max_inflight_messages 20abc",
            1,
            "Invalid max_inflight_messages value (20abc): expected an integer from 0 to 65535.",
        );
        assert_error("max_inflight_messages 20 30", 1, "Unexpected \"30\" after the max_inflight_messages value.");
        assert_error("max_inflight_messages", 1, "Empty max_inflight_messages value in configuration.");
    }

    #[test]
    fn max_queued_messages_and_bytes_are_checked_and_applied() {
        assert_eq!(conf("max_subscriptions 10000\n").core.max_subscriptions, 10_000);
        let flow = conf("max_unwritten_bytes 65536\nslow_subscriber_timeout 2\nnot_reading_timeout 9\n");
        assert_eq!(flow.core.max_unwritten_bytes, 65_536);
        assert_eq!(flow.core.slow_subscriber_timeout, std::time::Duration::from_secs(2));
        assert_eq!(flow.core.not_reading_timeout, std::time::Duration::from_secs(9));
        assert!(!conf("message_expiry false\n").core.message_expiry);
        let conf = conf("max_queued_messages 5000\nmax_queued_bytes 1048576\n");
        assert_eq!((conf.core.max_queued_messages, conf.core.max_queued_bytes), (5000, 1_048_576));
        let negative = self::conf("max_queued_messages -5\nmax_queued_bytes -1\n");
        assert_eq!((negative.core.max_queued_messages, negative.core.max_queued_bytes), (0, 0));
        assert_error(
            "max_queued_messages 2147483648",
            1,
            "Invalid max_queued_messages value (2147483648): expected an integer from 0 to 2147483647.",
        );
        assert_error(
            "max_queued_bytes 1.5",
            1,
            "Invalid max_queued_bytes value (1.5): expected an integer from 0 to 2147483647.",
        );
    }

    #[test]
    fn message_size_limit_is_checked_and_applied() {
        assert_eq!(conf("message_size_limit 1024").core.message_size_limit, 1024);
        assert_eq!(conf("message_size_limit 268435455").core.message_size_limit, 268_435_455);
        assert_error(
            "message_size_limit 268435456",
            1,
            "Invalid message_size_limit value (268435456): expected an integer from 0 to 268435455.",
        );
        assert_error(
            "message_size_limit -1",
            1,
            "Invalid message_size_limit value (-1): expected an integer from 0 to 268435455.",
        );
    }

    #[test]
    fn max_keepalive_is_checked_and_applied() {
        assert_eq!(conf("max_keepalive 300").core.max_keepalive, 300);
        assert_eq!(conf("max_keepalive 0").core.max_keepalive, 0);
        assert_error(
            "max_keepalive 65536",
            1,
            "Invalid max_keepalive value (65536): expected an integer from 0 to 65535.",
        );
        assert_error("max_keepalive -1", 1, "Invalid max_keepalive value (-1): expected an integer from 0 to 65535.");
    }

    #[test]
    fn queue_qos0_messages_is_applied() {
        assert!(conf("queue_qos0_messages true").core.queue_qos0_messages);
        assert!(!conf("queue_qos0_messages false").core.queue_qos0_messages);
    }

    // --- logging -------------------------------------------------------

    #[test]
    fn log_type_lines_replace_the_default_and_accumulate() {
        let conf = conf("log_type error\nlog_type subscribe\n");
        assert_eq!(conf.log.types, LogTypes { error: true, subscribe: true, ..LogTypes::none() });
    }

    #[test]
    fn log_type_covers_every_kind_none_and_all() {
        let every = conf(
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type debug\n\
             log_type subscribe\nlog_type unsubscribe\nlog_type websockets\n",
        );
        assert_eq!(every.log.types, LogTypes::all());
        assert_eq!(conf("log_type all").log.types, LogTypes::all());
        assert_eq!(conf("log_type all\nlog_type none\n").log.types, LogTypes::none());
        assert_eq!(conf("log_type none\nlog_type debug\n").log.types, LogTypes { debug: true, ..LogTypes::none() });
        assert_eq!(conf("log_type error debug").log.types, LogTypes { error: true, debug: true, ..LogTypes::none() });
    }

    #[test]
    fn log_type_errors_name_the_value() {
        assert_error(
            "log_type verbose",
            1,
            "Invalid log_type value (verbose): expected error, warning, notice, information, debug, subscribe, \
             unsubscribe, websockets, none or all.",
        );
        assert_error("log_type", 1, "Empty log_type value in configuration.");
    }

    #[test]
    fn log_dest_lines_replace_the_default() {
        assert_eq!(conf("log_dest stdout").log.dests, vec![LogDest::Stdout]);
        assert_eq!(
            conf("log_dest stdout\nlog_dest stderr\nlog_dest stdout\n").log.dests,
            vec![LogDest::Stdout, LogDest::Stderr]
        );
        assert_eq!(conf("log_dest none").log.dests, vec![]);
        assert_eq!(conf("log_dest stdout\nlog_dest none\nlog_dest stderr\n").log.dests, vec![LogDest::Stderr]);
    }

    #[test]
    fn log_dest_file_takes_the_rest_of_the_line() {
        let conf = conf("log_dest file /var/log/my broker/culex.log \n");
        assert_eq!(conf.log.dests, vec![LogDest::File("/var/log/my broker/culex.log".to_owned())]);
        assert_error("log_dest file", 1, "Empty \"log_dest file\" value in configuration.");
        assert_error("log_dest file a\nlog_dest file b\n", 2, "Duplicate \"log_dest file\" value.");
    }

    #[test]
    fn log_dest_unsupported_destinations_warn_and_fall_back_to_stderr() {
        let conf = conf("log_dest syslog\nlog_dest topic\nlog_dest dlt\n");
        assert_eq!(conf.log.dests, vec![LogDest::Stderr]);
        assert_eq!(
            warnings(&conf),
            vec![
                (1, "log_dest", "log_dest syslog is not supported by Culex, ignored"),
                (2, "log_dest", "log_dest topic is not supported by Culex, ignored"),
                (3, "log_dest", "log_dest dlt is not supported by Culex, ignored"),
            ]
        );
        assert_eq!(self::conf("log_dest syslog\nlog_dest stdout\n").log.dests, vec![LogDest::Stdout]);
        assert_eq!(self::conf("log_dest none\nlog_dest syslog\n").log.dests, vec![]);
    }

    #[test]
    fn log_dest_errors_name_the_value() {
        assert_error(
            "log_dest printer",
            1,
            "Invalid log_dest value (printer): expected stdout, stderr, file PATH, syslog, topic, dlt or none.",
        );
        assert_error("log_dest", 1, "Empty log_dest value in configuration.");
        assert_error("log_dest stdout stderr", 1, "Unexpected \"stderr\" after the log_dest value.");
    }

    #[test]
    fn log_timestamp_and_connection_messages_are_applied() {
        let conf = conf("log_timestamp false\nconnection_messages false\n");
        assert!(!conf.log.timestamp);
        assert!(!conf.log.connection_messages);
        assert_error(
            "connection_messages maybe",
            1,
            "Invalid connection_messages value (maybe): expected true or false.",
        );
    }

    // --- redis ---------------------------------------------------------

    #[test]
    fn every_redis_key_is_applied() {
        let conf = conf(
            "redis_host redis.local\nredis_port 6380\nredis_auth s3cret pass\nredis_user broker\nredis_db 3\n\
             redis_key online\n",
        );
        assert_eq!(
            conf.redis,
            Some(RedisConf {
                host: "redis.local".to_owned(),
                port: 6380,
                auth: Some(Secret::new("s3cret pass")),
                user: Some("broker".to_owned()),
                db: 3,
                key: "online".to_owned(),
            })
        );
    }

    #[test]
    fn redis_auth_takes_the_whole_line_hash_included() {
        let conf = conf("redis_host h\nredis_auth   p#ss word  \n");
        assert_eq!(conf.redis.unwrap().auth.unwrap().expose(), "p#ss word");
    }

    #[test]
    fn redis_keys_without_redis_host_warn() {
        let conf = conf("redis_port 6379\nredis_auth doordu\n");
        assert_eq!(conf.redis, None);
        assert_eq!(
            warnings(&conf),
            vec![(1, "redis_port", "has no effect without redis_host: presence is not sent to Redis")]
        );
    }

    #[test]
    fn redis_errors_name_line_and_reason() {
        assert_error("redis_host", 1, "Empty redis_host value in configuration.");
        assert_error("redis_host a b", 1, "Unexpected \"b\" after the redis_host value.");
        assert_error("redis_host a\nredis_host b\n", 2, "Duplicate redis_host value in configuration.");
        assert_error("redis_port 0", 1, "Invalid port value (0): expected an integer from 1 to 65535.");
        assert_error("redis_db -1", 1, "Invalid redis_db value (-1): expected an integer from 0 to 2147483647.");
        assert_error("redis_user a\nredis_user b\n", 2, "Duplicate redis_user value in configuration.");
        assert_error("redis_key a\nredis_key b\n", 2, "Duplicate redis_key value in configuration.");
        assert_error("redis_key", 1, "Empty redis_key value in configuration.");
        assert_error("redis_auth", 1, "Empty redis_auth value in configuration.");
    }

    #[test]
    fn password_never_appears_in_debug_display_or_errors() {
        let text = "redis_host h\nredis_auth doordu\n";
        let conf = conf(text);
        assert!(!format!("{conf:?}").contains("doordu"));
        assert!(!format!("{:?}", conf.redis).contains("doordu"));
        let secret = Secret::new("doordu");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let e = error("redis_auth doordu\nredis_auth doordu\n");
        assert!(!e.to_string().contains("doordu"), "{e}");
        assert!(!format!("{e:?}").contains("doordu"));
        for warning in &self::conf("redis_auth doordu\n").warnings {
            assert!(!warning.to_string().contains("doordu"));
        }
    }

    // --- unknown and ignored keys ----------------------------------------

    #[test]
    fn unknown_key_stops_with_mosquittos_message_at_its_line() {
        assert_error("# comment\n\nlistener 1883\n  foo bar\n", 4, "Unknown configuration variable \"foo\".");
        assert_eq!(error("foo bar").to_string(), "test.conf:1: Unknown configuration variable \"foo\".");
    }

    #[test]
    fn unknown_key_in_another_case_gets_a_hint() {
        assert_error("Port 1883", 1, "Unknown configuration variable \"Port\" (keys are lower case: \"port\").");
    }

    #[test]
    fn every_mosquitto_key_culex_ignores_is_a_warning_not_an_error() {
        for key in keys::IGNORED {
            let conf = conf(&format!("listener 1883\n{key} value\n"));
            assert_eq!(warnings(&conf), vec![(2, *key, NOT_SUPPORTED)], "{key}");
        }
    }

    #[test]
    fn examples_from_the_brief_warn() {
        let conf = conf(
            "autosave_interval 1800\npsk_file /etc/p\nauth_plugin /etc/a\npersistence true\n\
             persistence_location /var/lib\nretry_interval 10\nuser mosquitto\npid_file /run/m.pid\n\
             retain_available true\nmax_qos 2\nset_tcp_nodelay true\nwebsockets_log_level 0\nhttp_dir /www\n\
             connection bridge1\naddress 10.0.0.1:1883\ntopic # both 0\nauth_opt_db x\nplugin_opt_x y\n",
        );
        assert_eq!(conf.warnings.len(), 18);
        assert!(conf.warnings.iter().all(|w| w.message == NOT_SUPPORTED));
        assert_eq!(conf.warnings[1].to_string(), "test.conf:2: psk_file: not supported by Culex, ignored");
    }

    // --- TLS -------------------------------------------------------------

    fn at(value: &str, line: usize) -> Option<Located<String>> {
        Some(Located { value: value.to_owned(), file: "test.conf".to_owned(), line })
    }

    #[test]
    fn tls_keys_apply_to_their_listener() {
        let conf = conf(
            "listener 1883\nlistener 8883\ncafile /c a.pem\ncertfile /s.crt\nkeyfile /s.key\n\
             require_certificate true\nuse_identity_as_username true\ntls_version tlsv1.2\ncrlfile /crl\n\
             ciphers ECDHE-RSA-AES128-GCM-SHA256\nciphers_tls1.3 TLS_AES_128_GCM_SHA256\ncapath /ca\n",
        );
        assert_eq!(conf.listeners[0].tls, TlsConf::default());
        let tls = &conf.listeners[1].tls;
        assert!(tls.is_enabled());
        assert_eq!(tls.cafile, at("/c a.pem", 3));
        assert_eq!(tls.certfile, at("/s.crt", 4));
        assert_eq!(tls.keyfile, at("/s.key", 5));
        assert!(tls.require_certificate);
        assert_eq!(tls.username, CertUsername::CommonName);
        assert_eq!(tls.version, Some(TlsVersion::Tls12));
        assert_eq!(tls.crlfile, at("/crl", 9));
        assert_eq!(tls.ciphers, at("ECDHE-RSA-AES128-GCM-SHA256", 10));
        assert_eq!(tls.ciphers_tls13, at("TLS_AES_128_GCM_SHA256", 11));
        assert_eq!(tls.capath, at("/ca", 12));
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn tls_keys_before_any_listener_configure_the_default_listener() {
        let both = conf("certfile /s.crt\nkeyfile /s.key\nlistener 1884\n");
        assert_eq!(both.listeners.len(), 2);
        assert!(!both.listeners[0].tls.is_enabled());
        assert_eq!(both.listeners[1].port, DEFAULT_PORT);
        assert_eq!(both.listeners[1].tls.certfile, at("/s.crt", 1));
        let port = conf("port 8883\ncertfile /s.crt\nkeyfile /s.key\n");
        assert_eq!((port.listeners[0].port, port.listeners[0].tls.is_enabled()), (8883, true));
    }

    #[test]
    fn tls_in_local_only_mode_applies_to_the_loopback_listeners() {
        let conf = conf("certfile /s.crt\nkeyfile /s.key\n");
        assert!(conf.local_only);
        assert!(conf.listeners.iter().all(|l| l.tls.is_enabled()));
    }

    #[test]
    fn tls_version_values() {
        assert_eq!(
            conf("listener 1\ncertfile c\nkeyfile k\ntls_version tlsv1.3\n").listeners[0].tls.version,
            Some(TlsVersion::Tls13)
        );
        assert_error(
            "listener 1\ncertfile c\nkeyfile k\ntls_version tlsv1.1\n",
            4,
            "tls_version tlsv1.1 is not supported: Culex speaks TLS 1.2 and 1.3 only; use tlsv1.2.",
        );
        assert_error(
            "listener 1\ntls_version sslv3\n",
            2,
            "Unsupported tls_version \"sslv3\": expected tlsv1.3 or tlsv1.2.",
        );
    }

    #[test]
    fn certfile_and_keyfile_go_together() {
        let reason = "Both certfile and keyfile must be provided if one of them is set.";
        assert_error("listener 8883\ncertfile /s.crt\n", 2, reason);
        assert_error("listener 8883\nkeyfile /s.key\n", 2, reason);
    }

    #[test]
    fn tls_keys_without_a_certificate_are_an_error() {
        assert_error(
            "listener 8883\nrequire_certificate true\ncafile /c\n",
            2,
            "require_certificate is set for a listener without certfile and keyfile: TLS needs both (Culex \
             refuses to serve this listener without TLS).",
        );
    }

    #[test]
    fn client_certificate_checks_need_a_ca() {
        let tls = "listener 8883\ncertfile /s\nkeyfile /k\n";
        assert_error(
            &format!("{tls}require_certificate true\n"),
            2,
            "require_certificate is set but neither cafile nor capath is: client certificates cannot be checked.",
        );
        assert_error(
            &format!("{tls}use_identity_as_username true\n"),
            2,
            "use_identity_as_username is set but neither cafile nor capath is: client certificates cannot be \
             checked.",
        );
        assert_error(&format!("{tls}crlfile /crl\n"), 4, "crlfile is set but neither cafile nor capath is.");
        assert!(parse("t", &format!("{tls}require_certificate true\ncapath /ca\n")).is_ok());
    }

    #[test]
    fn identity_wins_over_subject_and_false_turns_each_off() {
        let base = "listener 8883\ncertfile /s\nkeyfile /k\ncafile /c\n";
        let mode = |extra: &str| conf(&format!("{base}{extra}")).listeners[0].tls.username;
        assert_eq!(mode("use_subject_as_username true\n"), CertUsername::Subject);
        assert_eq!(mode("use_subject_as_username true\nuse_identity_as_username true\n"), CertUsername::CommonName);
        assert_eq!(mode("use_identity_as_username true\nuse_subject_as_username true\n"), CertUsername::CommonName);
        assert_eq!(mode("use_identity_as_username true\nuse_identity_as_username false\n"), CertUsername::Connect);
        assert_eq!(mode("use_subject_as_username false\n"), CertUsername::Connect);
    }

    #[test]
    fn tls_files_given_twice_are_an_error() {
        assert_error("listener 8883\ncertfile /a\ncertfile /b\n", 3, "Duplicate certfile value in configuration.");
        assert_error("listener 8883\ncertfile\n", 2, "Empty certfile value in configuration.");
    }

    // --- file format ---------------------------------------------------

    #[test]
    fn comments_blanks_tabs_crlf_and_bom_are_handled() {
        let conf = conf("\u{feff}# first\r\n\r\n   # indented\r\nlistener\t1884\r\n\tmax_connections  \t 3 \r\n");
        assert_eq!(conf.listeners, vec![ListenerConf { max_connections: Some(3), ..listener(1884, None) }]);
    }

    #[test]
    fn conf_error_and_warning_display_file_line_and_text() {
        let e = ConfError { file: "/etc/culex.conf".to_owned(), line: 7, reason: "bad".to_owned() };
        assert_eq!(e.to_string(), "/etc/culex.conf:7: bad");
        let w = Warning { file: "f".to_owned(), line: 2, key: "k".to_owned(), message: "m".to_owned() };
        assert_eq!(w.to_string(), "f:2: k: m");
        let cli = Warning { file: "command line".to_owned(), line: 0, key: "-p".to_owned(), message: "m".to_owned() };
        assert_eq!(cli.to_string(), "command line: -p: m");
    }

    // --- include_dir -----------------------------------------------------

    /// Files in memory: path → text.
    #[derive(Default)]
    struct Files(BTreeMap<String, String>);

    impl Files {
        fn with(entries: &[(&str, &str)]) -> Self {
            Self(entries.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect())
        }
    }

    impl IncludeSource for Files {
        fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            let names: Vec<String> =
                self.0.keys().filter_map(|path| path.strip_prefix(&prefix)).map(str::to_owned).rev().collect();
            if names.is_empty() { Err("No such file or directory".to_owned()) } else { Ok(names) }
        }

        fn read_file(&mut self, path: &str) -> Result<String, String> {
            self.0.get(path).cloned().ok_or_else(|| "No such file or directory".to_owned())
        }
    }

    #[test]
    fn include_dir_reads_conf_files_in_byte_order_where_it_stands() {
        let mut files = Files::with(&[
            ("/etc/c/b.conf", "listener 1885\n"),
            ("/etc/c/a.conf", "listener 1884\nmax_connections 4\n"),
            ("/etc/c/Z.conf", "listener 1886\n"),
            ("/etc/c/notes.txt", "garbage\n"),
            ("/etc/c/.conf", "garbage\n"),
        ]);
        let main = "listener 1883\ninclude_dir /etc/c\nmax_connections 2\n";
        let conf = parse_with("main.conf", main, &mut files).unwrap();
        let ports: Vec<_> = conf.listeners.iter().map(|l| (l.port, l.max_connections)).collect();
        // The main file's section continues after the include: max_connections 2 is 1883's.
        assert_eq!(ports, [(1883, Some(2)), (1886, None), (1884, Some(4)), (1885, None)]);
    }

    #[test]
    fn included_file_starts_outside_any_listener() {
        let mut files = Files::with(&[("/d/x.conf", "max_connections 9\n")]);
        let conf = parse_with("main.conf", "listener 1883\ninclude_dir /d/\n", &mut files).unwrap();
        // As in Mosquitto, the included max_connections is the default listener's.
        assert_eq!(conf.listeners[0].max_connections, None);
        assert_eq!(conf.listeners[1], ListenerConf { max_connections: Some(9), ..listener(1883, None) });
        assert_eq!((conf.warnings[0].file.as_str(), conf.warnings[0].line), ("/d/x.conf", 1));
    }

    #[test]
    fn errors_in_included_files_name_that_file_and_line() {
        let mut files = Files::with(&[("/d/x.conf", "# x\nmax_keepalive -5\n")]);
        let e = parse_with("main.conf", "include_dir /d\n", &mut files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/d/x.conf:2: Invalid max_keepalive value (-5): expected an integer from 0 to 65535."
        );
    }

    #[test]
    fn include_dir_in_an_included_file_is_ignored_with_a_warning() {
        let mut files = Files::with(&[("/d/x.conf", "include_dir /e\n"), ("/e/y.conf", "listener 1\n")]);
        let conf = parse_with("main.conf", "include_dir /d\n", &mut files).unwrap();
        assert!(conf.local_only);
        assert_eq!((conf.warnings[0].file.as_str(), conf.warnings[0].key.as_str()), ("/d/x.conf", "include_dir"));
    }

    #[test]
    fn include_dir_that_cannot_be_read_is_an_error_at_its_line() {
        let mut files = Files::default();
        let e = parse_with("main.conf", "\ninclude_dir /missing\n", &mut files).unwrap_err();
        assert_eq!(e.to_string(), "main.conf:2: Unable to open include_dir /missing: No such file or directory.");
        assert_error(
            "include_dir /etc/culex.d",
            1,
            "Unable to open include_dir /etc/culex.d: no file access here (the runtime reads include_dir).",
        );
        assert_error("include_dir", 1, "Empty include_dir value in configuration.");
    }

    // --- properties ------------------------------------------------------

    fn quickcheck(tests: u64) -> QuickCheck {
        QuickCheck::new().tests(tests).rng(Gen::new(64))
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser() {
        fn prop(text: String) -> bool {
            let _ = parse("arbitrary.conf", &text);
            true
        }
        quickcheck(3000).quickcheck(prop as fn(String) -> bool);
    }

    /// Lines made of real keys and awkward values.
    #[derive(Debug, Clone)]
    struct ConfLines(String);

    impl Arbitrary for ConfLines {
        fn arbitrary(g: &mut Gen) -> Self {
            let keys: Vec<&str> = CULEX_KEYS.iter().chain(keys::IGNORED).copied().collect();
            let values = [
                "",
                "0",
                "-1",
                "1",
                "65535",
                "65536",
                "true",
                "false",
                "1883 ::1",
                "# c",
                "file",
                "file x",
                "none",
                "all",
                "0 /sock",
                "a b c",
                "\t",
                "999999999999999999999",
                "websockets",
                "ipv6",
                "syslog",
            ];
            let mut text = String::new();
            for _ in 0..usize::arbitrary(g) % 12 {
                let key = g.choose(&keys).copied().unwrap_or("port");
                let value = if bool::arbitrary(g) {
                    (*g.choose(&values).unwrap_or(&"")).to_owned()
                } else {
                    String::arbitrary(g)
                };
                text.push_str(key);
                text.push(' ');
                text.push_str(&value);
                text.push('\n');
            }
            Self(text)
        }
    }

    #[test]
    fn arbitrary_key_value_lines_never_panic_and_keep_a_listener() {
        fn prop(lines: ConfLines) -> bool {
            match parse("arbitrary.conf", &lines.0) {
                Ok(conf) => !conf.listeners.is_empty(),
                Err(e) => e.line > 0,
            }
        }
        quickcheck(3000).quickcheck(prop as fn(ConfLines) -> bool);
    }
}
