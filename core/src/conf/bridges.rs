//! The bridge sections: `connection NAME` and the keys that follow it,
//! each section one outgoing bridge to another broker.
//!
//! Mosquitto's names, defaults and checks (`src/conf.c`,
//! `src/bridge_topic.c` 2.0.11, with `restart_timeout` as 2.0.15 fixed
//! it): every bridge key belongs to the `connection` line above it in the
//! same file, and is an error before any (`Invalid bridge
//! configuration.`); as with listeners, a file read through `include_dir`
//! starts outside any bridge and the main file's bridge goes on after the
//! `include_dir` line. A bridge needs an address and a topic; its `topic`
//! lines read `pattern [[[out|in|both] qos] local-prefix remote-prefix]`,
//! the prefixes joined to the pattern by plain concatenation.
//!
//! Only the configuration is read here: the runtime connects the bridges.
//!
//! # Divergences, on purpose
//! - `bridge_protocol_version mqttv50` is an error: Culex speaks MQTT 3.1
//!   and 3.1.1 only.
//! - `bridge_identity`, `bridge_psk` (TLS-PSK) and `bridge_require_ocsp
//!   true` are errors: Culex's TLS has neither.
//! - `bridge_tls_version tlsv1.1` is an error, as `tls_version tlsv1.1`.
//! - A TLS key without `bridge_cafile` or `bridge_capath`, one of
//!   `bridge_certfile` and `bridge_keyfile` without the other, and a
//!   `remote_password` without `remote_username` are errors at start
//!   (Mosquitto connects without TLS, or fails each connection attempt).
//! - A topic pattern is checked as a subscription filter even without
//!   prefixes, a `notification_topic` must be a topic name, an address
//!   needs a host before its `:port`, and the direction position may
//!   hold a `#` comment as the QoS and prefix positions may (Mosquitto
//!   checks these when it connects, or not at all).
//! - Numbers must be whole numbers, and extra words after a `topic` line's
//!   remote prefix are an error unless they start a `#` comment.

use std::fmt;

use super::file::{INT_MAX, INT_MIN, Line, Loc};
use super::tls::TlsVersion;
use super::{ConfError, Warning};
use crate::topic::{TopicFilter, TopicName};
use crate::types::QoS;

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "address",
    "addresses",
    "bridge_alpn",
    "bridge_attempt_unsubscribe",
    "bridge_bind_address",
    "bridge_cafile",
    "bridge_capath",
    "bridge_certfile",
    "bridge_identity",
    "bridge_insecure",
    "bridge_keyfile",
    "bridge_max_packet_size",
    "bridge_outgoing_retain",
    "bridge_protocol_version",
    "bridge_psk",
    "bridge_require_ocsp",
    "bridge_tls_version",
    "cleansession",
    "clientid",
    "connection",
    "idle_timeout",
    "keepalive_interval",
    "local_cleansession",
    "local_clientid",
    "local_password",
    "local_username",
    "notification_topic",
    "notifications",
    "notifications_local_only",
    "password",
    "remote_clientid",
    "remote_password",
    "remote_username",
    "restart_timeout",
    "round_robin",
    "start_type",
    "threshold",
    "topic",
    "try_private",
    "username",
];

/// The remote port of an address written without one.
const DEFAULT_BRIDGE_PORT: u16 = 1883;

/// One outgoing bridge: a `connection` section.
#[derive(Clone, PartialEq, Eq)]
pub struct BridgeConf {
    /// `connection NAME`: unique among the bridges.
    pub name: String,
    /// `address` (or `addresses`): the remote brokers, tried in order;
    /// never empty.
    pub addresses: Vec<BridgeAddress>,
    /// `round_robin` (default false): stay on whichever address works
    /// rather than go back to the first.
    pub round_robin: bool,
    /// The `topic` lines, in file order; never empty.
    pub topics: Vec<BridgeTopic>,
    /// `bridge_protocol_version`, default MQTT 3.1.1.
    pub protocol: BridgeProtocol,
    /// `cleansession` (default false): the clean session flag of the
    /// CONNECT sent to the remote broker.
    pub clean_session: bool,
    /// `local_cleansession`, default [`clean_session`](Self::clean_session):
    /// when false, messages for the remote broker are queued while it
    /// cannot be reached.
    pub local_clean_session: bool,
    /// `remote_clientid` (or `clientid`); see
    /// [`remote_client_id`](Self::remote_client_id()).
    pub remote_client_id: Option<String>,
    /// `local_clientid`; see [`local_client_id`](Self::local_client_id()).
    pub local_client_id: Option<String>,
    /// `remote_username` (or `username`), sent in the CONNECT.
    pub remote_username: Option<String>,
    /// `remote_password` (or `password`), sent in the CONNECT; never
    /// without [`remote_username`](Self::remote_username).
    pub remote_password: Option<String>,
    /// `local_username`: the bridge's user name inside this broker.
    pub local_username: Option<String>,
    /// `local_password`: read and kept (Mosquitto 2.0 uses it nowhere).
    pub local_password: Option<String>,
    /// `notifications` (default true): publish the bridge's state, `1` or
    /// `0`, retained.
    pub notifications: bool,
    /// `notification_topic`; see
    /// [`notification_topic`](Self::notification_topic()).
    pub notification_topic: Option<String>,
    /// `notifications_local_only` (default false): publish the state on
    /// this broker only.
    pub notifications_local_only: bool,
    /// `try_private` (default true): tell the remote broker it is a bridge
    /// (the protocol version byte with 0x80 set).
    pub try_private: bool,
    /// `keepalive_interval` in seconds, 5 to 65535 (default 60).
    pub keepalive: u16,
    /// `start_type`, with `threshold` and `idle_timeout` for a lazy start.
    pub start_type: StartType,
    /// `restart_timeout`: the wait before an automatic reconnection.
    pub restart_timeout: RestartTimeout,
    /// `bridge_attempt_unsubscribe` (default true): on connecting, send
    /// UNSUBSCRIBE for the remote filter of each `out` topic.
    pub attempt_unsubscribe: bool,
    /// `bridge_outgoing_retain` (default true): false clears the retain
    /// flag of what is sent to the remote broker.
    pub outgoing_retain: bool,
    /// `bridge_max_packet_size` in bytes; 0 (the default) is no limit.
    pub max_packet_size: u32,
    /// `bridge_bind_address`: the local address of the outgoing socket.
    pub bind_address: Option<String>,
    /// TLS to the remote broker: `Some` with `bridge_cafile` or
    /// `bridge_capath`.
    pub tls: Option<BridgeTls>,
    /// The line of the `connection` key.
    pub line: usize,
    /// The file of the `connection` key.
    pub file: String,
}

impl BridgeConf {
    /// A bridge named `name` with Mosquitto's defaults, no address and no
    /// topic yet (as a `connection` line starts one).
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            addresses: Vec::new(),
            round_robin: false,
            topics: Vec::new(),
            protocol: BridgeProtocol::V311,
            clean_session: false,
            local_clean_session: false,
            remote_client_id: None,
            local_client_id: None,
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            notifications: true,
            notification_topic: None,
            notifications_local_only: false,
            try_private: true,
            keepalive: 60,
            start_type: StartType::Automatic,
            restart_timeout: RestartTimeout::default(),
            attempt_unsubscribe: true,
            outgoing_retain: true,
            max_packet_size: 0,
            bind_address: None,
            tls: None,
            line: 0,
            file: String::new(),
        }
    }

    /// The client id sent to the remote broker: `remote_clientid`, or
    /// `HOSTNAME.NAME` as Mosquitto builds it.
    pub fn remote_client_id(&self, hostname: &str) -> String {
        match &self.remote_client_id {
            Some(id) => id.clone(),
            None => format!("{hostname}.{}", self.name),
        }
    }

    /// The client id of the bridge inside this broker: `local_clientid`,
    /// or `local.` and the remote client id.
    pub fn local_client_id(&self, hostname: &str) -> String {
        match &self.local_client_id {
            Some(id) => id.clone(),
            None => format!("local.{}", self.remote_client_id(hostname)),
        }
    }

    /// Where the bridge's state is published: `notification_topic`, or
    /// `$SYS/broker/connection/REMOTE-CLIENT-ID/state`.
    pub fn notification_topic(&self, hostname: &str) -> String {
        match &self.notification_topic {
            Some(topic) => topic.clone(),
            None => format!("$SYS/broker/connection/{}/state", self.remote_client_id(hostname)),
        }
    }

    /// The local client id when the configuration alone decides it (it
    /// does not depend on the host name).
    fn known_local_client_id(&self) -> Option<String> {
        match (&self.local_client_id, &self.remote_client_id) {
            (Some(local), _) => Some(local.clone()),
            (None, Some(remote)) => Some(format!("local.{remote}")),
            (None, None) => None,
        }
    }
}

/// Prints `<redacted>` for the passwords.
impl fmt::Debug for BridgeConf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |password: &Option<String>| password.as_ref().map(|_| Redacted);
        f.debug_struct("BridgeConf")
            .field("name", &self.name)
            .field("addresses", &self.addresses)
            .field("round_robin", &self.round_robin)
            .field("topics", &self.topics)
            .field("protocol", &self.protocol)
            .field("clean_session", &self.clean_session)
            .field("local_clean_session", &self.local_clean_session)
            .field("remote_client_id", &self.remote_client_id)
            .field("local_client_id", &self.local_client_id)
            .field("remote_username", &self.remote_username)
            .field("remote_password", &redacted(&self.remote_password))
            .field("local_username", &self.local_username)
            .field("local_password", &redacted(&self.local_password))
            .field("notifications", &self.notifications)
            .field("notification_topic", &self.notification_topic)
            .field("notifications_local_only", &self.notifications_local_only)
            .field("try_private", &self.try_private)
            .field("keepalive", &self.keepalive)
            .field("start_type", &self.start_type)
            .field("restart_timeout", &self.restart_timeout)
            .field("attempt_unsubscribe", &self.attempt_unsubscribe)
            .field("outgoing_retain", &self.outgoing_retain)
            .field("max_packet_size", &self.max_packet_size)
            .field("bind_address", &self.bind_address)
            .field("tls", &self.tls)
            .field("line", &self.line)
            .field("file", &self.file)
            .finish()
    }
}

/// A password in [`BridgeConf`]'s `Debug`.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// One remote broker of a bridge: `host[:port]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeAddress {
    /// Host name or address, as written (resolved when connecting).
    pub host: String,
    /// Port, default 1883.
    pub port: u16,
}

/// The MQTT version a bridge speaks to the remote broker. Mosquitto:
/// `bridge_protocol_version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BridgeProtocol {
    /// `mqttv31`: MQTT 3.1.
    V31,
    /// `mqttv311`: MQTT 3.1.1 (the default).
    #[default]
    V311,
}

/// When a bridge connects. Mosquitto: `start_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartType {
    /// `automatic` (the default): at start, and again after each
    /// disconnection once [`RestartTimeout`] has passed.
    #[default]
    Automatic,
    /// `lazy`: when `threshold` messages wait for the remote broker;
    /// disconnects after `idle_timeout` seconds without traffic.
    Lazy {
        /// `threshold` (default 10, at least 1): queued messages that
        /// start a connection.
        threshold: u32,
        /// `idle_timeout` in seconds (default 60, at least 1).
        idle_timeout: u32,
    },
    /// `once`: at start only, never again.
    Once,
}

/// The wait before a bridge reconnects. Mosquitto: `restart_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartTimeout {
    /// `restart_timeout SECONDS`: always that long.
    Constant(u32),
    /// `restart_timeout BASE CAP` (default 5 and 30): a random wait,
    /// growing from `base` up to `cap` seconds with each failed attempt
    /// (Mosquitto's decorrelated jitter); back to `base` after a success.
    Backoff {
        /// Shortest wait in seconds, at least 1.
        base: u32,
        /// Longest wait in seconds, at least `base`.
        cap: u32,
    },
}

impl Default for RestartTimeout {
    fn default() -> Self {
        Self::Backoff { base: 5, cap: 30 }
    }
}

/// One `topic` line of a bridge: which messages cross, which way, and how
/// their topics change on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeTopic {
    /// The pattern, a subscription filter or part of one; empty when the
    /// line gives `""` (the prefixes are then the whole topics).
    pub pattern: String,
    /// Which way messages go.
    pub direction: Direction,
    /// The QoS of the subscriptions on both sides (default 0): messages
    /// cross at most at this QoS.
    pub qos: QoS,
    /// Put before the pattern on this broker; empty for none.
    pub local_prefix: String,
    /// Put before the pattern on the remote broker; empty for none.
    pub remote_prefix: String,
}

impl BridgeTopic {
    /// The filter on this broker: the local prefix followed by the
    /// pattern, joined as they are (no `/` added).
    pub fn local_filter(&self) -> String {
        format!("{}{}", self.local_prefix, self.pattern)
    }

    /// The filter on the remote broker: the remote prefix followed by the
    /// pattern.
    pub fn remote_filter(&self) -> String {
        format!("{}{}", self.remote_prefix, self.pattern)
    }

    /// Whether messages published here go to the remote broker (`out`,
    /// `both`).
    pub fn sends_out(&self) -> bool {
        matches!(self.direction, Direction::Out | Direction::Both)
    }

    /// Whether messages published on the remote broker come here (`in`,
    /// `both`).
    pub fn takes_in(&self) -> bool {
        matches!(self.direction, Direction::In | Direction::Both)
    }
}

/// Which way a bridge topic carries messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// `out` (the default): from this broker to the remote one.
    #[default]
    Out,
    /// `in`: from the remote broker to this one.
    In,
    /// `both`: either way.
    Both,
}

/// A bridge's TLS settings. The remote broker's certificate is always
/// checked against `cafile` or `capath` (one of them is set).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeTls {
    /// `bridge_cafile`: CA certificates, PEM.
    pub cafile: Option<String>,
    /// `bridge_capath`: a directory of CA certificates.
    pub capath: Option<String>,
    /// `bridge_certfile`: the bridge's client certificate, PEM (with
    /// [`keyfile`](Self::keyfile)).
    pub certfile: Option<String>,
    /// `bridge_keyfile`: the client certificate's private key, PEM.
    pub keyfile: Option<String>,
    /// `bridge_insecure` (default false): do not check the remote
    /// broker's host name against its certificate.
    pub insecure: bool,
    /// `bridge_tls_version`: the oldest version accepted; `None` accepts
    /// TLS 1.2 and 1.3.
    pub version: Option<TlsVersion>,
    /// `bridge_alpn`: the ALPN protocol offered.
    pub alpn: Option<String>,
}

/// The bridge the bridge keys of a file apply to: the last `connection`
/// line of that file, if any.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct CurrentBridge(Option<usize>);

/// The bridge sections as written, checked at the end.
#[derive(Debug, Default)]
pub(super) struct BridgesDraft {
    bridges: Vec<BridgeDraft>,
}

impl BridgesDraft {
    /// Reads one line of this section; `connection` starts a new bridge
    /// and makes it `current`.
    pub(super) fn handle(
        &mut self,
        line: &Line<'_>,
        current: &mut CurrentBridge,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), ConfError> {
        if line.key == "connection" {
            let name = line.word()?;
            if self.bridges.iter().any(|bridge| bridge.conf.name == name) {
                return Err(line.error(format!("Duplicate bridge name \"{name}\".")));
            }
            *current = CurrentBridge(Some(self.bridges.len()));
            self.bridges.push(BridgeDraft::new(name, line.loc()));
            return Ok(());
        }
        match current.0.and_then(|index| self.bridges.get_mut(index)) {
            Some(bridge) => bridge.handle(line, warnings),
            None => Err(line.error(format!(
                "Invalid bridge configuration. {} must follow a connection line in the same file.",
                line.key
            ))),
        }
    }

    /// The bridges in file order, once each is complete and their local
    /// client ids are unique.
    pub(super) fn finish(self) -> Result<Vec<BridgeConf>, ConfError> {
        let mut bridges: Vec<BridgeConf> = Vec::with_capacity(self.bridges.len());
        for draft in self.bridges {
            let at = draft.local_client_id_at.clone().unwrap_or_else(|| draft.at.clone());
            let bridge = draft.finish()?;
            if let Some(id) = bridge.known_local_client_id()
                && bridges.iter().any(|other| other.known_local_client_id().as_ref() == Some(&id))
            {
                return Err(at.error(format!(
                    "Bridge local_clientid '{id}' is not unique. Try changing or setting the local_clientid \
                     value for one of the bridges."
                )));
            }
            bridges.push(bridge);
        }
        Ok(bridges)
    }
}

/// One bridge as its lines come: what can only be decided at the end
/// (defaults that follow other keys, checks across keys) waits here.
#[derive(Debug)]
struct BridgeDraft {
    /// Every key read so far; `local_clean_session`, `start_type` and
    /// `tls` are set at the end.
    conf: BridgeConf,
    /// The `connection` line.
    at: Loc,
    local_clean_session: Option<bool>,
    lazy: bool,
    threshold: u32,
    idle_timeout: u32,
    tls: BridgeTls,
    /// The first TLS key and its line.
    first_tls_key: Option<(Loc, String)>,
    certfile_at: Option<Loc>,
    keyfile_at: Option<Loc>,
    /// The `remote_password` (or `password`) line and its key.
    password_at: Option<(Loc, String)>,
    local_client_id_at: Option<Loc>,
}

impl BridgeDraft {
    /// A bridge named `name` with Mosquitto's defaults.
    fn new(name: &str, at: Loc) -> Self {
        let conf = BridgeConf { line: at.line, file: at.file.clone(), ..BridgeConf::new(name) };
        Self {
            conf,
            at,
            local_clean_session: None,
            lazy: false,
            threshold: 10,
            idle_timeout: 60,
            tls: BridgeTls::default(),
            first_tls_key: None,
            certfile_at: None,
            keyfile_at: None,
            password_at: None,
            local_client_id_at: None,
        }
    }

    /// Reads one line of this bridge (any key but `connection`).
    fn handle(&mut self, line: &Line<'_>, warnings: &mut Vec<Warning>) -> Result<(), ConfError> {
        let conf = &mut self.conf;
        match line.key {
            "address" | "addresses" => {
                if !conf.addresses.is_empty() {
                    return Err(line.error(format!(
                        "Invalid bridge configuration. Bridge \"{}\" has an address line already: give all its \
                         addresses on one line.",
                        conf.name
                    )));
                }
                conf.addresses = addresses(line)?;
            }
            "round_robin" => conf.round_robin = line.boolean()?,
            "topic" => conf.topics.push(topic(line)?),
            "bridge_protocol_version" => conf.protocol = protocol(line)?,
            "cleansession" => conf.clean_session = line.boolean()?,
            "local_cleansession" => self.local_clean_session = Some(line.boolean()?),
            "remote_clientid" | "clientid" => set_once(&mut conf.remote_client_id, line.text()?, line)?,
            "local_clientid" => {
                set_once(&mut conf.local_client_id, line.text()?, line)?;
                self.local_client_id_at = Some(line.loc());
            }
            "remote_username" | "username" => set_once(&mut conf.remote_username, line.text()?, line)?,
            "remote_password" | "password" => {
                // Never echo the value: every error here names the key only.
                set_once(&mut conf.remote_password, line.text()?, line)?;
                self.password_at = Some((line.loc(), line.key.to_owned()));
            }
            "local_username" => set_once(&mut conf.local_username, line.text()?, line)?,
            "local_password" => set_once(&mut conf.local_password, line.text()?, line)?,
            "notifications" => conf.notifications = line.boolean()?,
            "notification_topic" => {
                let topic = line.text()?;
                if TopicName::new(topic).is_err() {
                    return Err(line.error(format!(
                        "Invalid notification_topic value ({topic}): a notification topic is a topic name (no + \
                         or #, at most 65535 bytes)."
                    )));
                }
                set_once(&mut conf.notification_topic, topic, line)?;
            }
            "notifications_local_only" => conf.notifications_local_only = line.boolean()?,
            "try_private" => conf.try_private = line.boolean()?,
            "keepalive_interval" => conf.keepalive = keepalive(line, warnings)?,
            "start_type" => match line.word()? {
                "automatic" => (self.lazy, conf.start_type) = (false, StartType::Automatic),
                "lazy" => self.lazy = true,
                "once" => (self.lazy, conf.start_type) = (false, StartType::Once),
                "manual" => return Err(line.error("Manual start_type not supported.")),
                other => {
                    return Err(
                        line.error(format!("Invalid start_type value ({other}): expected automatic, lazy or once."))
                    );
                }
            },
            "threshold" => self.threshold = at_least_one(line, line.word()?, warnings)?,
            "idle_timeout" => self.idle_timeout = at_least_one(line, line.word()?, warnings)?,
            "restart_timeout" => conf.restart_timeout = restart_timeout(line, warnings)?,
            "bridge_attempt_unsubscribe" => conf.attempt_unsubscribe = line.boolean()?,
            "bridge_outgoing_retain" => conf.outgoing_retain = line.boolean()?,
            "bridge_max_packet_size" => {
                conf.max_packet_size = u32::try_from(line.int_negative_is_zero(INT_MAX)?).unwrap_or(0);
            }
            "bridge_bind_address" => set_once(&mut conf.bind_address, line.word()?, line)?,
            "bridge_identity" | "bridge_psk" => {
                return Err(line.error(format!(
                    "{}: TLS-PSK for bridges is not supported by Culex (its TLS, rustls, has no pre-shared key \
                     suites); use bridge_cafile and, for a client certificate, bridge_certfile and bridge_keyfile.",
                    line.key
                )));
            }
            "bridge_require_ocsp" => {
                if line.boolean()? {
                    return Err(line.error("bridge_require_ocsp: OCSP for bridges is not supported by Culex."));
                }
            }
            _ => return self.tls_key(line, warnings),
        }
        Ok(())
    }

    /// Reads a `bridge_*` TLS key.
    fn tls_key(&mut self, line: &Line<'_>, warnings: &mut Vec<Warning>) -> Result<(), ConfError> {
        let tls = &mut self.tls;
        match line.key {
            "bridge_cafile" => set_once(&mut tls.cafile, line.text()?, line)?,
            "bridge_capath" => set_once(&mut tls.capath, line.text()?, line)?,
            "bridge_certfile" => {
                set_once(&mut tls.certfile, line.text()?, line)?;
                self.certfile_at = Some(line.loc());
            }
            "bridge_keyfile" => {
                set_once(&mut tls.keyfile, line.text()?, line)?;
                self.keyfile_at = Some(line.loc());
            }
            "bridge_alpn" => set_once(&mut tls.alpn, line.text()?, line)?,
            "bridge_insecure" => {
                tls.insecure = line.boolean()?;
                if tls.insecure {
                    warnings.push(line.warning(format!(
                        "Bridge {} using insecure mode: the remote broker's certificate is not checked against \
                         its host name",
                        self.conf.name
                    )));
                }
            }
            "bridge_tls_version" => {
                let version = match line.word()? {
                    "tlsv1.3" => TlsVersion::Tls13,
                    "tlsv1.2" => TlsVersion::Tls12,
                    "tlsv1.1" => {
                        return Err(line.error(
                            "bridge_tls_version tlsv1.1 is not supported: Culex speaks TLS 1.2 and 1.3 only; use \
                             tlsv1.2.",
                        ));
                    }
                    other => {
                        return Err(line.error(format!(
                            "Unsupported bridge_tls_version \"{other}\": expected tlsv1.3 or tlsv1.2."
                        )));
                    }
                };
                if tls.version.replace(version).is_some() {
                    return Err(line.duplicate());
                }
            }
            _ => return Err(line.unknown()),
        }
        if self.first_tls_key.is_none() {
            self.first_tls_key = Some((line.loc(), line.key.to_owned()));
        }
        Ok(())
    }

    /// The bridge, once it has what it needs.
    fn finish(self) -> Result<BridgeConf, ConfError> {
        let mut conf = self.conf;
        if conf.addresses.is_empty() {
            return Err(self.at.error("Invalid bridge configuration: no remote addresses defined."));
        }
        if conf.topics.is_empty() {
            return Err(self.at.error("Invalid bridge configuration: no topics defined."));
        }
        if let Some((at, key)) = &self.password_at
            && conf.remote_username.is_none()
        {
            return Err(at.error(format!(
                "{key} is set without remote_username: MQTT 3.1 and 3.1.1 cannot send a password without a user \
                 name."
            )));
        }
        conf.local_clean_session = self.local_clean_session.unwrap_or(conf.clean_session);
        if self.lazy {
            conf.start_type = StartType::Lazy { threshold: self.threshold, idle_timeout: self.idle_timeout };
        }
        if let Some((at, key)) = self.first_tls_key {
            if self.tls.cafile.is_none() && self.tls.capath.is_none() {
                return Err(at.error(format!(
                    "{key} is set but neither bridge_cafile nor bridge_capath is: a bridge's TLS needs a CA to \
                     check the remote broker's certificate."
                )));
            }
            match (self.certfile_at, self.keyfile_at) {
                (Some(at), None) | (None, Some(at)) => {
                    return Err(
                        at.error("Both bridge_certfile and bridge_keyfile must be provided if one of them is set.")
                    );
                }
                _ => {}
            }
            conf.tls = Some(self.tls);
        }
        Ok(conf)
    }
}

/// Stores a string value; given twice is an error, as in Mosquitto.
fn set_once(slot: &mut Option<String>, value: &str, line: &Line<'_>) -> Result<(), ConfError> {
    if slot.is_some() {
        return Err(line.duplicate());
    }
    *slot = Some(value.to_owned());
    Ok(())
}

/// `address host[:port] [host[:port] ...]`: the port after the last `:`,
/// so an IPv6 address needs one (`::1:1883`).
fn addresses(line: &Line<'_>) -> Result<Vec<BridgeAddress>, ConfError> {
    let words = line.words();
    if words.is_empty() {
        return Err(line.empty());
    }
    let address = |word: &str| {
        let (host, port) = match word.rsplit_once(':') {
            Some((host, port)) => (host, line.port_from(port)?),
            None => (word, DEFAULT_BRIDGE_PORT),
        };
        if host.is_empty() {
            return Err(line.error(format!("Invalid {} value ({word}): no host before the port.", line.key)));
        }
        Ok(BridgeAddress { host: host.to_owned(), port })
    };
    words.into_iter().map(address).collect()
}

/// `topic pattern [[[out|in|both] qos] local-prefix remote-prefix]`, with
/// `""` for an empty pattern or prefix.
fn topic(line: &Line<'_>) -> Result<BridgeTopic, ConfError> {
    let mut words = line.rest.split_ascii_whitespace();
    let pattern = unquote(words.next().ok_or_else(|| line.empty())?);
    // After the pattern (which may be `#`), a word starting with `#`
    // begins a comment.
    let mut options = words.take_while(|word| !word.starts_with('#'));
    let direction = match options.next() {
        None => Direction::Out,
        Some(word) if word.eq_ignore_ascii_case("out") => Direction::Out,
        Some(word) if word.eq_ignore_ascii_case("in") => Direction::In,
        Some(word) if word.eq_ignore_ascii_case("both") => Direction::Both,
        Some(word) => return Err(line.error(format!("Invalid bridge topic direction '{word}'."))),
    };
    let qos = match options.next() {
        None => QoS::AtMostOnce,
        Some(word) => word
            .parse::<u8>()
            .ok()
            .and_then(QoS::from_bits)
            .ok_or_else(|| line.error(format!("Invalid bridge QoS level '{word}'.")))?,
    };
    let local_prefix = options.next().map_or("", unquote);
    let remote_prefix = options.next().map_or("", unquote);
    if let Some(extra) = options.next() {
        return Err(line.error(format!("Unexpected \"{extra}\" after the topic value.")));
    }
    for (side, prefix) in [("local", local_prefix), ("remote", remote_prefix)] {
        if !prefix.is_empty() && TopicName::new(prefix).is_err() {
            return Err(line.error(format!("Invalid bridge topic {side} prefix '{prefix}'.")));
        }
    }
    if pattern.is_empty() && (local_prefix.is_empty() || remote_prefix.is_empty()) {
        return Err(line.error("Invalid bridge remapping."));
    }
    let topic = BridgeTopic {
        pattern: pattern.to_owned(),
        direction,
        qos,
        local_prefix: local_prefix.to_owned(),
        remote_prefix: remote_prefix.to_owned(),
    };
    for (side, prefix, filter) in
        [("local", local_prefix, topic.local_filter()), ("remote", remote_prefix, topic.remote_filter())]
    {
        if TopicFilter::new(filter.as_str()).is_ok() {
            continue;
        }
        return Err(line.error(if prefix.is_empty() {
            format!("Invalid bridge topic pattern '{pattern}'.")
        } else {
            format!("Invalid bridge topic {side} prefix and pattern combination '{filter}'.")
        }));
    }
    Ok(topic)
}

/// A `topic` word, `""` standing for the empty string.
fn unquote(word: &str) -> &str {
    if word == "\"\"" { "" } else { word }
}

/// `bridge_protocol_version`.
fn protocol(line: &Line<'_>) -> Result<BridgeProtocol, ConfError> {
    match line.word()? {
        "mqttv31" => Ok(BridgeProtocol::V31),
        "mqttv311" => Ok(BridgeProtocol::V311),
        "mqttv50" => Err(line.error(
            "bridge_protocol_version mqttv50 is not supported: MQTT 5 bridges are not supported by Culex, which \
             speaks MQTT 3.1 and 3.1.1; use mqttv311.",
        )),
        other => {
            Err(line.error(format!("Invalid bridge_protocol_version value ({other}): expected mqttv311 or mqttv31.")))
        }
    }
}

/// `keepalive_interval`: up to 65535 seconds; below 5 is raised to 5, as
/// Mosquitto raises it.
fn keepalive(line: &Line<'_>, warnings: &mut Vec<Warning>) -> Result<u16, ConfError> {
    let seconds = line.int_described(INT_MIN, i64::from(u16::MAX), "an integer up to 65535")?;
    if seconds < 5 {
        warnings.push(line.warning("keepalive interval too low, using 5 seconds, as Mosquitto does"));
    }
    Ok(u16::try_from(seconds.max(5)).unwrap_or(u16::MAX))
}

/// An integer of a key whose values below 1 mean 1 (`threshold`,
/// `idle_timeout`, `restart_timeout`), with a warning, as Mosquitto
/// notes it.
fn at_least_one(line: &Line<'_>, word: &str, warnings: &mut Vec<Warning>) -> Result<u32, ConfError> {
    let n = integer(line, word)?;
    if n < 1 {
        warnings.push(line.warning(format!("{} too low, using 1, as Mosquitto does", line.key)));
    }
    Ok(u32::try_from(n.max(1)).unwrap_or(1))
}

/// `word` as an integer of Mosquitto's range (a C `int`).
fn integer(line: &Line<'_>, word: &str) -> Result<i64, ConfError> {
    match word.parse::<i64>() {
        Ok(n) if (INT_MIN..=INT_MAX).contains(&n) => Ok(n),
        _ => Err(line.error(format!("Invalid {} value ({word}): expected an integer from 1 to {INT_MAX}.", line.key))),
    }
}

/// `restart_timeout SECONDS` or `restart_timeout BASE CAP`.
fn restart_timeout(line: &Line<'_>, warnings: &mut Vec<Warning>) -> Result<RestartTimeout, ConfError> {
    match line.words()[..] {
        [] => Err(line.empty()),
        [seconds] => Ok(RestartTimeout::Constant(at_least_one(line, seconds, warnings)?)),
        [base, cap] => {
            let base = at_least_one(line, base, warnings)?;
            // The cap is not raised: below the base it is an error.
            let cap = integer(line, cap)?;
            match u32::try_from(cap) {
                Ok(cap) if cap >= base => Ok(RestartTimeout::Backoff { base, cap }),
                _ => Err(line.error(format!(
                    "Invalid restart_timeout value: the backoff cap ({cap}) is lower than the base ({base})."
                ))),
            }
        }
        [_, _, extra, ..] => Err(line.error(format!("Unexpected \"{extra}\" after the restart_timeout value."))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;
    use crate::conf::testing::{assert_error, conf, error, warnings};
    use crate::conf::{IncludeSource, parse, parse_with};

    /// A bridge section with its address and a topic, then `extra`.
    fn bridge_with(extra: &str) -> BridgeConf {
        let mut conf = conf(&format!("connection b\naddress remote\ntopic #\n{extra}"));
        assert_eq!(conf.bridges.len(), 1);
        conf.bridges.remove(0)
    }

    /// The topic of `topic REST` in a bridge.
    fn topic_line(rest: &str) -> BridgeTopic {
        bridge_with(&format!("topic {rest}\n")).topics.remove(1)
    }

    /// The error of `text` after a valid bridge section of three lines.
    fn assert_bridge_error(text: &str, line: usize, reason: &str) {
        assert_error(&format!("connection b\naddress remote\ntopic #\n{text}"), line + 3, reason);
    }

    fn topic(pattern: &str, direction: Direction, qos: QoS, local: &str, remote: &str) -> BridgeTopic {
        BridgeTopic {
            pattern: pattern.to_owned(),
            direction,
            qos,
            local_prefix: local.to_owned(),
            remote_prefix: remote.to_owned(),
        }
    }

    // --- defaults --------------------------------------------------------

    #[test]
    fn defaults_are_mosquittos() {
        let conf = conf("listener 1883\nconnection upstream\naddress broker.example\ntopic sensors/#\n");
        assert!(conf.warnings.is_empty());
        let expected = BridgeConf {
            name: "upstream".to_owned(),
            addresses: vec![BridgeAddress { host: "broker.example".to_owned(), port: 1883 }],
            round_robin: false,
            topics: vec![topic("sensors/#", Direction::Out, QoS::AtMostOnce, "", "")],
            protocol: BridgeProtocol::V311,
            clean_session: false,
            local_clean_session: false,
            remote_client_id: None,
            local_client_id: None,
            remote_username: None,
            remote_password: None,
            local_username: None,
            local_password: None,
            notifications: true,
            notification_topic: None,
            notifications_local_only: false,
            try_private: true,
            keepalive: 60,
            start_type: StartType::Automatic,
            restart_timeout: RestartTimeout::Backoff { base: 5, cap: 30 },
            attempt_unsubscribe: true,
            outgoing_retain: true,
            max_packet_size: 0,
            bind_address: None,
            tls: None,
            line: 2,
            file: "test.conf".to_owned(),
        };
        assert_eq!(conf.bridges, vec![expected]);
        assert!(crate::conf::BrokerConf::default().bridges.is_empty());
    }

    #[test]
    fn default_ids_and_notification_topic_follow_the_host_name() {
        let bridge = bridge_with("");
        assert_eq!(bridge.remote_client_id("edge"), "edge.b");
        assert_eq!(bridge.local_client_id("edge"), "local.edge.b");
        assert_eq!(bridge.notification_topic("edge"), "$SYS/broker/connection/edge.b/state");
        let remote = bridge_with("remote_clientid up-1\n");
        assert_eq!(remote.local_client_id("edge"), "local.up-1");
        assert_eq!(remote.notification_topic("edge"), "$SYS/broker/connection/up-1/state");
        let all = bridge_with("clientid r\nlocal_clientid l\nnotification_topic bridges/b/state\n");
        assert_eq!(
            (all.remote_client_id("edge"), all.local_client_id("edge"), all.notification_topic("edge")),
            ("r".to_owned(), "l".to_owned(), "bridges/b/state".to_owned())
        );
    }

    // --- every key -------------------------------------------------------

    #[test]
    fn every_key_is_read() {
        let conf = conf(
            "connection main\naddresses a.example:8883 [::1]:1884 b.example # two brokers\nround_robin true\n\
             topic a/# both 2 local/ remote/\nbridge_protocol_version mqttv31\ncleansession true\n\
             local_cleansession false\nremote_clientid r-id\nlocal_clientid l-id\nremote_username ru\n\
             remote_password rp with spaces\nlocal_username lu\nlocal_password lp\nnotifications false\n\
             notification_topic state/main\nnotifications_local_only true\ntry_private false\n\
             keepalive_interval 30\nstart_type lazy\nthreshold 20\nidle_timeout 120\nrestart_timeout 7\n\
             bridge_attempt_unsubscribe false\nbridge_outgoing_retain false\nbridge_max_packet_size 4096\n\
             bridge_bind_address 10.0.0.2\nbridge_cafile /etc/ca.pem\nbridge_capath /etc/certs\n\
             bridge_certfile /etc/c.pem\nbridge_keyfile /etc/k.pem\nbridge_insecure false\n\
             bridge_tls_version tlsv1.3\nbridge_alpn x-amzn-mqtt-ca\nbridge_require_ocsp false\n",
        );
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        let expected = BridgeConf {
            name: "main".to_owned(),
            addresses: vec![
                BridgeAddress { host: "a.example".to_owned(), port: 8883 },
                BridgeAddress { host: "[::1]".to_owned(), port: 1884 },
                BridgeAddress { host: "b.example".to_owned(), port: 1883 },
            ],
            round_robin: true,
            topics: vec![topic("a/#", Direction::Both, QoS::ExactlyOnce, "local/", "remote/")],
            protocol: BridgeProtocol::V31,
            clean_session: true,
            local_clean_session: false,
            remote_client_id: Some("r-id".to_owned()),
            local_client_id: Some("l-id".to_owned()),
            remote_username: Some("ru".to_owned()),
            remote_password: Some("rp with spaces".to_owned()),
            local_username: Some("lu".to_owned()),
            local_password: Some("lp".to_owned()),
            notifications: false,
            notification_topic: Some("state/main".to_owned()),
            notifications_local_only: true,
            try_private: false,
            keepalive: 30,
            start_type: StartType::Lazy { threshold: 20, idle_timeout: 120 },
            restart_timeout: RestartTimeout::Constant(7),
            attempt_unsubscribe: false,
            outgoing_retain: false,
            max_packet_size: 4096,
            bind_address: Some("10.0.0.2".to_owned()),
            tls: Some(BridgeTls {
                cafile: Some("/etc/ca.pem".to_owned()),
                capath: Some("/etc/certs".to_owned()),
                certfile: Some("/etc/c.pem".to_owned()),
                keyfile: Some("/etc/k.pem".to_owned()),
                insecure: false,
                version: Some(TlsVersion::Tls13),
                alpn: Some("x-amzn-mqtt-ca".to_owned()),
            }),
            line: 1,
            file: "test.conf".to_owned(),
        };
        assert_eq!(conf.bridges, vec![expected]);
    }

    #[test]
    fn aliases_set_the_remote_settings() {
        let bridge = bridge_with("clientid c\nusername u\npassword p\n");
        assert_eq!(bridge.remote_client_id.as_deref(), Some("c"));
        assert_eq!(bridge.remote_username.as_deref(), Some("u"));
        assert_eq!(bridge.remote_password.as_deref(), Some("p"));
        assert_bridge_error("clientid a\nremote_clientid b\n", 2, "Duplicate remote_clientid value in configuration.");
        assert_bridge_error("remote_username a\nusername b\n", 2, "Duplicate username value in configuration.");
        assert_bridge_error(
            "username u\npassword a\nremote_password b\n",
            3,
            "Duplicate remote_password value in configuration.",
        );
    }

    #[test]
    fn several_bridges_keep_file_order_and_their_own_keys() {
        let conf = conf(
            "connection one\naddress a\ntopic x in\nkeepalive_interval 10\nlistener 1883\n\
             connection two\naddress b:1\ntopic y both 1\n",
        );
        let names: Vec<_> = conf.bridges.iter().map(|b| (b.name.as_str(), b.keepalive, b.line)).collect();
        assert_eq!(names, [("one", 10, 1), ("two", 60, 6)]);
        assert_eq!(conf.listeners[0].port, 1883);
    }

    #[test]
    fn booleans_take_one_and_zero() {
        let bridge = bridge_with("round_robin 1\ncleansession 1\nnotifications 0\ntry_private 0\n");
        assert!(bridge.round_robin && bridge.clean_session && !bridge.notifications && !bridge.try_private);
        assert_bridge_error("round_robin yes\n", 1, "Invalid round_robin value (yes): expected true or false.");
    }

    #[test]
    fn passwords_never_show_in_debug_output() {
        let bridge = bridge_with("username u\npassword hunter2\nlocal_password swordfish\n");
        let debug = format!("{bridge:?}");
        assert!(!debug.contains("hunter2") && !debug.contains("swordfish"), "{debug}");
        assert!(debug.contains("remote_password: Some(<redacted>)"), "{debug}");
    }

    // --- addresses -------------------------------------------------------

    #[test]
    fn address_port_is_split_at_the_last_colon() {
        let hosts = |value: &str| {
            let bridge = conf(&format!("connection b\naddress {value}\ntopic #\n")).bridges.remove(0);
            bridge.addresses.into_iter().map(|a| (a.host, a.port)).collect::<Vec<_>>()
        };
        assert_eq!(hosts("h"), [("h".to_owned(), 1883)]);
        assert_eq!(hosts("h:65535"), [("h".to_owned(), 65535)]);
        assert_eq!(hosts("::1:1884"), [("::1".to_owned(), 1884)]);
        assert_eq!(hosts("a:1\tb:2"), [("a".to_owned(), 1), ("b".to_owned(), 2)]);
    }

    #[test]
    fn address_errors_name_line_and_reason() {
        for value in ["h:0", "h:65536", "h:", "h:x"] {
            let port = value.rsplit_once(':').unwrap().1;
            assert_error(
                &format!("connection b\naddress {value}\n"),
                2,
                &format!("Invalid port value ({port}): expected an integer from 1 to 65535."),
            );
        }
        assert_error("connection b\naddress :1883\n", 2, "Invalid address value (:1883): no host before the port.");
        assert_error("connection b\naddresses # none\n", 2, "Empty addresses value in configuration.");
        assert_error(
            "connection b\naddress a\ntopic #\naddresses b\n",
            4,
            "Invalid bridge configuration. Bridge \"b\" has an address line already: give all its addresses on \
             one line.",
        );
    }

    #[test]
    fn missing_address_or_topic_names_the_connection_line() {
        assert_error(
            "listener 1\nconnection b\ntopic #\n",
            2,
            "Invalid bridge configuration: no remote addresses defined.",
        );
        assert_error(
            "connection a\naddress h\ntopic #\nconnection b\naddress h\n",
            4,
            "Invalid bridge configuration: no topics defined.",
        );
        assert_eq!(
            error("connection b\naddress h\n").to_string(),
            "test.conf:1: Invalid bridge configuration: no topics defined."
        );
    }

    // --- topics ----------------------------------------------------------

    #[test]
    fn topic_remapping_cases_of_the_manual() {
        let cases = [
            ("pattern both 0 L/ R/", "L/pattern", "R/pattern"),
            ("pattern both 0 L/ \"\"", "L/pattern", "pattern"),
            ("pattern both 0 \"\" R/", "pattern", "R/pattern"),
            ("pattern both 0 \"\" \"\"", "pattern", "pattern"),
            ("\"\" in 0 L R", "L", "R"),
            ("# out 1 a/b/ c/", "a/b/#", "c/#"),
        ];
        for (rest, local, remote) in cases {
            let topic = topic_line(rest);
            assert_eq!((topic.local_filter().as_str(), topic.remote_filter().as_str()), (local, remote), "{rest}");
        }
        assert_eq!(topic_line("\"\" in 0 L R"), topic("", Direction::In, QoS::AtMostOnce, "L", "R"));
    }

    #[test]
    fn topic_direction_and_qos_default_to_out_and_0() {
        assert_eq!(topic_line("a"), topic("a", Direction::Out, QoS::AtMostOnce, "", ""));
        assert_eq!(topic_line("a IN"), topic("a", Direction::In, QoS::AtMostOnce, "", ""));
        assert_eq!(topic_line("a Both 1"), topic("a", Direction::Both, QoS::AtLeastOnce, "", ""));
        assert_eq!(topic_line("a oUt 2 l/"), topic("a", Direction::Out, QoS::ExactlyOnce, "l/", ""));
        let (out, into, both) = (topic_line("a out"), topic_line("a in"), topic_line("a both"));
        assert_eq!((out.sends_out(), out.takes_in()), (true, false));
        assert_eq!((into.sends_out(), into.takes_in()), (false, true));
        assert_eq!((both.sends_out(), both.takes_in()), (true, true));
    }

    #[test]
    fn a_word_starting_with_a_hash_after_the_pattern_begins_a_comment() {
        assert_eq!(topic_line("# # everything out"), topic("#", Direction::Out, QoS::AtMostOnce, "", ""));
        assert_eq!(topic_line("a in #comment"), topic("a", Direction::In, QoS::AtMostOnce, "", ""));
        assert_eq!(topic_line("a in 1 # no prefix"), topic("a", Direction::In, QoS::AtLeastOnce, "", ""));
        assert_eq!(topic_line("a in 1 l/ #x r/"), topic("a", Direction::In, QoS::AtLeastOnce, "l/", ""));
        assert_eq!(topic_line("a in 1 l/ r/ # both"), topic("a", Direction::In, QoS::AtLeastOnce, "l/", "r/"));
        assert_eq!(topic_line("a\tboth\t2"), topic("a", Direction::Both, QoS::ExactlyOnce, "", ""));
    }

    #[test]
    fn topic_errors_name_line_and_reason() {
        for (rest, reason) in [
            ("", "Empty topic value in configuration."),
            ("a sideways", "Invalid bridge topic direction 'sideways'."),
            ("a out 3", "Invalid bridge QoS level '3'."),
            ("a out -1", "Invalid bridge QoS level '-1'."),
            ("a out x", "Invalid bridge QoS level 'x'."),
            ("a out 0 l/+/ r/", "Invalid bridge topic local prefix 'l/+/'."),
            ("a out 0 l/ r/#", "Invalid bridge topic remote prefix 'r/#'."),
            ("a out 0 l/ r/ extra", "Unexpected \"extra\" after the topic value."),
            ("+ out 0 l", "Invalid bridge topic local prefix and pattern combination 'l+'."),
            ("+/b out 0 \"\" r/x", "Invalid bridge topic remote prefix and pattern combination 'r/x+/b'."),
            ("#/a out 0 l/", "Invalid bridge topic local prefix and pattern combination 'l/#/a'."),
            ("a/#/b", "Invalid bridge topic pattern 'a/#/b'."),
            ("\"\"", "Invalid bridge remapping."),
            ("\"\" in 0", "Invalid bridge remapping."),
            ("\"\" in 0 L", "Invalid bridge remapping."),
            ("\"\" in 0 \"\" R", "Invalid bridge remapping."),
            ("\"\" both 1 \"\" \"\"", "Invalid bridge remapping."),
        ] {
            assert_bridge_error(&format!("topic {rest}\n"), 1, reason);
        }
    }

    // --- numbers and start types -----------------------------------------

    #[test]
    fn keepalive_below_5_is_raised_with_a_warning() {
        for value in ["4", "0", "-3"] {
            let conf = conf(&format!("connection b\naddress h\ntopic #\nkeepalive_interval {value}\n"));
            assert_eq!(conf.bridges[0].keepalive, 5);
            assert_eq!(
                warnings(&conf),
                [(4, "keepalive_interval", "keepalive interval too low, using 5 seconds, as Mosquitto does")]
            );
        }
        assert_eq!(bridge_with("keepalive_interval 65535\n").keepalive, 65535);
        assert_eq!(bridge_with("keepalive_interval 5\n").keepalive, 5);
        assert_bridge_error(
            "keepalive_interval 65536\n",
            1,
            "Invalid keepalive_interval value (65536): expected an integer up to 65535.",
        );
    }

    #[test]
    fn start_types_and_their_numbers_in_any_order() {
        assert_eq!(bridge_with("start_type once\n").start_type, StartType::Once);
        assert_eq!(bridge_with("start_type automatic\nthreshold 3\n").start_type, StartType::Automatic);
        assert_eq!(
            bridge_with("threshold 3\nidle_timeout 9\nstart_type lazy\n").start_type,
            StartType::Lazy { threshold: 3, idle_timeout: 9 }
        );
        assert_eq!(bridge_with("start_type lazy\n").start_type, StartType::Lazy { threshold: 10, idle_timeout: 60 });
        assert_eq!(bridge_with("start_type lazy\nstart_type once\n").start_type, StartType::Once);
        let low = conf("connection b\naddress h\ntopic #\nstart_type lazy\nthreshold 0\nidle_timeout -5\n");
        assert_eq!(low.bridges[0].start_type, StartType::Lazy { threshold: 1, idle_timeout: 1 });
        assert_eq!(
            warnings(&low),
            [
                (5, "threshold", "threshold too low, using 1, as Mosquitto does"),
                (6, "idle_timeout", "idle_timeout too low, using 1, as Mosquitto does")
            ]
        );
    }

    #[test]
    fn start_type_errors() {
        assert_bridge_error("start_type manual\n", 1, "Manual start_type not supported.");
        assert_bridge_error(
            "start_type later\n",
            1,
            "Invalid start_type value (later): expected automatic, lazy or once.",
        );
        assert_bridge_error(
            "threshold 1.5\n",
            1,
            "Invalid threshold value (1.5): expected an integer from 1 to 2147483647.",
        );
    }

    #[test]
    fn restart_timeout_one_value_is_constant_two_are_backoff() {
        assert_eq!(bridge_with("restart_timeout 10\n").restart_timeout, RestartTimeout::Constant(10));
        assert_eq!(bridge_with("restart_timeout 2 60\n").restart_timeout, RestartTimeout::Backoff { base: 2, cap: 60 });
        assert_eq!(
            bridge_with("restart_timeout 3 3 # s\n").restart_timeout,
            RestartTimeout::Backoff { base: 3, cap: 3 }
        );
        let low = conf("connection b\naddress h\ntopic #\nrestart_timeout 0\n");
        assert_eq!(low.bridges[0].restart_timeout, RestartTimeout::Constant(1));
        assert_eq!(warnings(&low), [(4, "restart_timeout", "restart_timeout too low, using 1, as Mosquitto does")]);
        assert_eq!(bridge_with("restart_timeout -1 4\n").restart_timeout, RestartTimeout::Backoff { base: 1, cap: 4 });
    }

    #[test]
    fn restart_timeout_errors() {
        assert_bridge_error(
            "restart_timeout 10 5\n",
            1,
            "Invalid restart_timeout value: the backoff cap (5) is lower than the base (10).",
        );
        assert_bridge_error(
            "restart_timeout 0 0\n",
            1,
            "Invalid restart_timeout value: the backoff cap (0) is lower than the base (1).",
        );
        assert_bridge_error("restart_timeout\n", 1, "Empty restart_timeout value in configuration.");
        assert_bridge_error("restart_timeout 1 2 3\n", 1, "Unexpected \"3\" after the restart_timeout value.");
        assert_bridge_error(
            "restart_timeout 5s\n",
            1,
            "Invalid restart_timeout value (5s): expected an integer from 1 to 2147483647.",
        );
    }

    #[test]
    fn max_packet_size_below_zero_is_unlimited() {
        assert_eq!(bridge_with("bridge_max_packet_size -1\n").max_packet_size, 0);
        assert_eq!(bridge_with("bridge_max_packet_size 2147483647\n").max_packet_size, 2_147_483_647);
    }

    // --- clean sessions and ids ------------------------------------------

    #[test]
    fn local_cleansession_follows_cleansession_in_either_order() {
        let clean = |extra: &str| {
            let bridge = bridge_with(extra);
            (bridge.clean_session, bridge.local_clean_session)
        };
        assert_eq!(clean(""), (false, false));
        assert_eq!(clean("cleansession true\n"), (true, true));
        assert_eq!(clean("local_cleansession false\ncleansession true\n"), (true, false));
        assert_eq!(clean("cleansession true\nlocal_cleansession false\n"), (true, false));
        assert_eq!(clean("local_cleansession true\n"), (false, true));
    }

    #[test]
    fn duplicate_bridge_names_are_an_error() {
        assert_error(
            "connection b\naddress h\ntopic #\nconnection c\naddress h\ntopic #\nconnection b\n",
            7,
            "Duplicate bridge name \"b\".",
        );
        assert_error("connection\n", 1, "Empty connection value in configuration.");
        assert_error("connection a b\n", 1, "Unexpected \"b\" after the connection value.");
    }

    #[test]
    fn local_client_ids_must_be_unique() {
        let two = "connection a\naddress h\ntopic #\nlocal_clientid same\nconnection b\naddress h\ntopic #\n";
        assert_error(
            &format!("{two}local_clientid same\n"),
            8,
            "Bridge local_clientid 'same' is not unique. Try changing or setting the local_clientid value for one \
             of the bridges.",
        );
        // The same default local id: from the same remote id.
        let e = error("connection a\naddress h\ntopic #\nclientid r\nconnection b\naddress h\ntopic #\nclientid r\n");
        assert_eq!((e.line, e.reason.contains("'local.r' is not unique")), (5, true));
        assert!(parse("t", &format!("{two}local_clientid other\n")).is_ok());
        assert!(parse("t", "connection a\naddress h\ntopic #\nconnection b\naddress h\ntopic #\n").is_ok());
    }

    #[test]
    fn a_password_needs_a_user_name() {
        assert_bridge_error(
            "password secret\n",
            1,
            "password is set without remote_username: MQTT 3.1 and 3.1.1 cannot send a password without a user \
             name.",
        );
        assert!(!error("connection b\naddress h\ntopic #\nremote_password hunter2\n").to_string().contains("hunter2"));
        assert_eq!(bridge_with("remote_password p\nusername u\n").remote_username.as_deref(), Some("u"));
    }

    #[test]
    fn notification_topic_is_a_topic_name() {
        assert_bridge_error(
            "notification_topic a/#\n",
            1,
            "Invalid notification_topic value (a/#): a notification topic is a topic name (no + or #, at most \
             65535 bytes).",
        );
        assert_bridge_error(
            "notification_topic a\nnotification_topic b\n",
            2,
            "Duplicate notification_topic value in configuration.",
        );
    }

    // --- protocol and TLS ------------------------------------------------

    #[test]
    fn protocol_versions() {
        assert_eq!(bridge_with("bridge_protocol_version mqttv311\n").protocol, BridgeProtocol::V311);
        assert_bridge_error(
            "bridge_protocol_version mqttv50\n",
            1,
            "bridge_protocol_version mqttv50 is not supported: MQTT 5 bridges are not supported by Culex, which \
             speaks MQTT 3.1 and 3.1.1; use mqttv311.",
        );
        assert_bridge_error(
            "bridge_protocol_version 4\n",
            1,
            "Invalid bridge_protocol_version value (4): expected mqttv311 or mqttv31.",
        );
    }

    #[test]
    fn tls_needs_a_ca() {
        let tls = bridge_with("bridge_capath /etc/ssl/certs\n").tls.unwrap();
        assert_eq!(tls, BridgeTls { capath: Some("/etc/ssl/certs".to_owned()), ..BridgeTls::default() });
        for key in [
            "bridge_certfile /c",
            "bridge_keyfile /k",
            "bridge_insecure false",
            "bridge_tls_version tlsv1.2",
            "bridge_alpn mqtt",
        ] {
            let name = key.split_once(' ').unwrap().0;
            assert_bridge_error(
                &format!("keepalive_interval 60\n{key}\ntry_private true\n"),
                2,
                &format!(
                    "{name} is set but neither bridge_cafile nor bridge_capath is: a bridge's TLS needs a CA to \
                     check the remote broker's certificate."
                ),
            );
        }
        let reason = "Both bridge_certfile and bridge_keyfile must be provided if one of them is set.";
        assert_bridge_error("bridge_cafile /ca\nbridge_certfile /c\n", 2, reason);
        assert_bridge_error("bridge_keyfile /k\nbridge_cafile /ca\n", 1, reason);
        assert_bridge_error(
            "bridge_cafile /a\nbridge_cafile /b\n",
            2,
            "Duplicate bridge_cafile value in configuration.",
        );
    }

    #[test]
    fn insecure_mode_warns_as_mosquitto_does() {
        let conf = conf("connection b\naddress h\ntopic #\nbridge_cafile /ca\nbridge_insecure true\n");
        assert!(conf.bridges[0].tls.as_ref().unwrap().insecure);
        assert_eq!(
            warnings(&conf),
            [(
                5,
                "bridge_insecure",
                "Bridge b using insecure mode: the remote broker's certificate is not checked against its host name"
            )]
        );
    }

    #[test]
    fn tls_versions_refuse_1_1_as_listeners_do() {
        let version =
            |v: &str| bridge_with(&format!("bridge_cafile /ca\nbridge_tls_version {v}\n")).tls.unwrap().version;
        assert_eq!(version("tlsv1.2"), Some(TlsVersion::Tls12));
        assert_eq!(version("tlsv1.3"), Some(TlsVersion::Tls13));
        assert_bridge_error(
            "bridge_tls_version tlsv1.1\n",
            1,
            "bridge_tls_version tlsv1.1 is not supported: Culex speaks TLS 1.2 and 1.3 only; use tlsv1.2.",
        );
        assert_bridge_error(
            "bridge_tls_version sslv3\n",
            1,
            "Unsupported bridge_tls_version \"sslv3\": expected tlsv1.3 or tlsv1.2.",
        );
    }

    #[test]
    fn psk_and_ocsp_stop_start_up() {
        for key in ["bridge_identity id", "bridge_psk 0123abcd"] {
            let e = error(&format!("connection b\n{key}\n"));
            assert_eq!(e.line, 2);
            assert!(e.reason.contains("TLS-PSK for bridges is not supported by Culex"), "{e}");
            assert!(!e.reason.contains("0123abcd"), "{e}");
        }
        assert_error(
            "connection b\nbridge_require_ocsp true\n",
            2,
            "bridge_require_ocsp: OCSP for bridges is not supported by Culex.",
        );
        assert!(bridge_with("bridge_require_ocsp false\n").tls.is_none());
    }

    #[test]
    fn development_keys_are_warned_about_and_ignored() {
        let conf = conf("connection b\naddress h\ntopic #\nbridge_receive_maximum 10\nbridge_tls_use_os_certs true\n");
        let keys: Vec<_> = conf.warnings.iter().map(|w| (w.line, w.key.as_str())).collect();
        assert_eq!(keys, [(4, "bridge_receive_maximum"), (5, "bridge_tls_use_os_certs")]);
    }

    // --- where bridge keys may stand -------------------------------------

    #[test]
    fn bridge_keys_before_any_connection_are_an_error() {
        for key in KEYS.iter().filter(|key| **key != "connection") {
            assert_error(
                &format!("listener 1883\n{key} x\n"),
                2,
                &format!("Invalid bridge configuration. {key} must follow a connection line in the same file."),
            );
        }
    }

    /// Files in memory: path → text.
    struct Files(BTreeMap<&'static str, &'static str>);

    impl IncludeSource for Files {
        fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
            let prefix = format!("{dir}/");
            Ok(self.0.keys().filter_map(|path| path.strip_prefix(&prefix)).map(str::to_owned).collect())
        }

        fn read_file(&mut self, path: &str) -> Result<String, String> {
            self.0.get(path).map(|text| (*text).to_owned()).ok_or_else(|| "No such file".to_owned())
        }
    }

    #[test]
    fn an_included_file_starts_outside_any_bridge_and_the_main_files_goes_on() {
        let mut files = Files(BTreeMap::from([("/d/a.conf", "connection inner\naddress i\ntopic in/#\n")]));
        let main = "connection outer\naddress o\ninclude_dir /d\ntopic out/#\n";
        let conf = parse_with("main.conf", main, &mut files).unwrap();
        let bridges: Vec<_> = conf.bridges.iter().map(|b| (b.name.as_str(), b.file.as_str(), b.topics.len())).collect();
        assert_eq!(bridges, [("outer", "main.conf", 1), ("inner", "/d/a.conf", 1)]);
        assert_eq!(conf.bridges[0].topics[0].pattern, "out/#");

        let mut files = Files(BTreeMap::from([("/d/a.conf", "# more for outer\ntopic x\n")]));
        let e = parse_with("main.conf", "connection outer\naddress o\ninclude_dir /d\n", &mut files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/d/a.conf:2: Invalid bridge configuration. topic must follow a connection line in the same file."
        );
    }

    // --- properties ------------------------------------------------------

    /// A `topic` line made of pieces that are often valid.
    #[derive(Debug, Clone)]
    struct TopicWords {
        pattern: &'static str,
        local: &'static str,
        remote: &'static str,
    }

    impl Arbitrary for TopicWords {
        fn arbitrary(g: &mut Gen) -> Self {
            let patterns = ["#", "+", "a", "a/#", "+/b", "a/+/c", "/", "\"\"", "a+", "#/a", "$SYS/#"];
            let prefixes = ["\"\"", "l/", "r/", "x", "a/b/", "/", "p+", "q#", "$x/"];
            let pick = |g: &mut Gen, words: &[&'static str]| *g.choose(words).unwrap_or(&"\"\"");
            Self { pattern: pick(g, &patterns), local: pick(g, &prefixes), remote: pick(g, &prefixes) }
        }
    }

    #[test]
    fn every_accepted_topic_line_gives_filters_the_broker_can_subscribe_to() {
        fn prop(words: TopicWords) -> bool {
            let text =
                format!("connection b\naddress h\ntopic {} both 1 {} {}\n", words.pattern, words.local, words.remote);
            let Ok(mut conf) = parse("p.conf", &text) else { return true };
            let topic = conf.bridges.remove(0).topics.remove(0);
            let prefix_ok = |prefix: &str| prefix.is_empty() || TopicName::new(prefix).is_ok();
            topic.local_filter() == format!("{}{}", topic.local_prefix, topic.pattern)
                && topic.remote_filter() == format!("{}{}", topic.remote_prefix, topic.pattern)
                && TopicFilter::new(topic.local_filter()).is_ok()
                && TopicFilter::new(topic.remote_filter()).is_ok()
                && prefix_ok(&topic.local_prefix)
                && prefix_ok(&topic.remote_prefix)
                && (!topic.pattern.is_empty() || !(topic.local_prefix.is_empty() || topic.remote_prefix.is_empty()))
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(TopicWords) -> bool);
    }
}
