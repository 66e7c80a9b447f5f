//! Limits and switches of the core, named after their `mosquitto.conf`
//! keys; [`conf`](crate::conf) reads them from the file's text.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::codec::MAX_REMAINING_LENGTH;
use crate::conf::ListenerProtocol;
use crate::peer::ListenerId;
use crate::types::{Protocol, QoS};

/// A listener, as `/api/v1/listeners` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSummary {
    /// Its id.
    pub id: ListenerId,
    /// Its port; 0 for a Unix socket.
    pub port: u16,
    /// Its Unix socket's path.
    pub path: Option<String>,
    /// What it speaks.
    pub protocol: ListenerProtocol,
    /// It speaks TLS.
    pub tls: bool,
    /// It asks clients for a certificate (`require_certificate`).
    pub mtls: bool,
    /// Clients without a user name may connect.
    pub allow_anonymous: bool,
}

/// What the broker allows and how much it keeps. The defaults are
/// Mosquitto 2's, except where a field says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// QoS 1 and 2 messages in flight to one client at a time; 0 means no
    /// limit. Mosquitto: `max_inflight_messages`, default 20.
    pub max_inflight_messages: u16,
    /// Payload bytes of outgoing QoS 1 and 2 messages in flight to one
    /// client past which the next waits; one message larger than it still
    /// goes when nothing else is in flight. 0 means no limit. Mosquitto:
    /// `max_inflight_bytes`, default 0.
    pub max_inflight_bytes: usize,
    /// A retained message goes to a new subscriber only while the client
    /// that published it may still publish on its topic (the access rules
    /// may have changed since). Mosquitto: `check_retain_source`, default
    /// true.
    pub check_retain_source: bool,
    /// Heap bytes the process may hold, read through the broker's
    /// [`MemoryGauge`](crate::memory::MemoryGauge): past it a PUBLISH is
    /// dropped unacknowledged and its client disconnected, and a copy for
    /// a clean session is dropped and its client disconnected, as
    /// Mosquitto does; copies for stored sessions are kept (acknowledged
    /// messages are never dropped). `None` means no limit. Mosquitto:
    /// `memory_limit`, default 0 (none).
    pub memory_limit: Option<usize>,
    /// Messages queued per client beyond the in-flight window (and while a
    /// persistent session is offline); 0 means no limit. Mosquitto:
    /// `max_queued_messages`, default 1000.
    pub max_queued_messages: usize,
    /// Payload bytes queued per client; 0 means no limit. Mosquitto:
    /// `max_queued_bytes`, default 0.
    pub max_queued_bytes: usize,
    /// Bytes a connection may have waiting to be written to its socket
    /// before QoS 0 messages to it are dropped (counted, logged once per
    /// episode) until it has caught up with half of them: a slow reader
    /// costs this much memory, not more, and stays connected. QoS 1 and 2
    /// messages are never dropped for it on this account. Culex addition
    /// (`max_unwritten_bytes`), default 2 MiB; 0 means no limit.
    pub max_unwritten_bytes: usize,
    /// How long a connected subscriber whose QoS 1/2 queue is full may
    /// hold up the publishers feeding it (their sockets are no longer
    /// read) while it acknowledges nothing, or, when they feed other
    /// subscribers too, at all. Past it, its overflow is dropped as
    /// Mosquitto drops it, until its queue drains. Culex addition
    /// (`slow_subscriber_timeout`), default 5 s.
    pub slow_subscriber_timeout: Duration,
    /// A connection with bytes waiting beyond `max_unwritten_bytes` that
    /// writes none of them for this long does not read: it is closed.
    /// Culex addition (`not_reading_timeout`), default 30 s.
    pub not_reading_timeout: Duration,
    /// Subscriptions one client may hold; 0 means no limit. A SUBSCRIBE
    /// filter past it (and not already held) gets 0x80 in SUBACK. Culex
    /// addition (`max_subscriptions`); Mosquitto has no such limit.
    pub max_subscriptions: usize,
    /// Read `expired_at` from JSON payloads and drop expired copies (the
    /// fork's expiry). Off, payloads are never parsed and nothing expires.
    /// Culex addition (`message_expiry`), default on.
    pub message_expiry: bool,
    /// Largest PUBLISH payload accepted; 0 means the protocol's maximum.
    /// Larger payloads are acknowledged and dropped, as Mosquitto does;
    /// packets too large to hold such a payload close the connection
    /// before their body is read. Mosquitto: `message_size_limit`.
    pub message_size_limit: usize,
    /// Connections served at once across all listeners; `None` means no
    /// limit. Mosquitto 2.1: `global_max_connections`, default -1.
    pub max_connections: Option<usize>,
    /// Connections each listener serves at once; a listener missing here
    /// has no limit. Mosquitto: `max_connections`, per listener.
    pub listener_max_connections: BTreeMap<ListenerId, usize>,
    /// Clients known at once: those connected and the stored sessions of
    /// those that are not. A new client past it is closed without CONNACK
    /// (3.1.1 has no code for it); one that has a session is never
    /// refused. `None` means no limit. Mosquitto 2.1: `global_max_clients`,
    /// default -1.
    pub max_clients: Option<usize>,
    /// Largest keepalive a client may ask for; more is refused with CONNACK
    /// 0x02, as Mosquitto does for 3.1/3.1.1. Mosquitto: `max_keepalive`.
    pub max_keepalive: u16,
    /// Queue QoS 0 messages for offline persistent sessions. Mosquitto:
    /// `queue_qos0_messages`, default false.
    pub queue_qos0_messages: bool,
    /// Keep retained messages and persistent sessions across restarts: the
    /// broker emits [`Action::Store`](crate::Action::Store) batches and
    /// holds the acknowledgements that promise them until they are
    /// durable (see [`persistence`](crate::persistence)). Mosquitto:
    /// `persistence` (or `retained_persistence`), default false.
    pub persistence: bool,
    /// Offline persistent sessions not seen for this long are removed,
    /// checked as Mosquitto does at most once a minute; `None` keeps them
    /// for ever. Mosquitto: `persistent_client_expiration`, default never.
    pub persistent_client_expiration: Option<Duration>,
    /// Accept clients without a user name. Mosquitto: `allow_anonymous`.
    /// The core's default is true (Mosquitto 2 without a listener also
    /// serves local anonymous clients); runtimes apply Mosquitto's rules.
    /// It is the policy of [`Broker::new`](crate::Broker::new); a broker
    /// built [`with_policy`](crate::Broker::with_policy) lets its policy
    /// decide (per listener, with `per_listener_settings`).
    pub allow_anonymous: bool,
    /// Accept an empty client id (with clean session) and assign one.
    /// Mosquitto: `allow_zero_length_clientid`, default true.
    pub allow_zero_length_clientid: bool,
    /// Prefix of assigned client ids. Mosquitto: `auto_id_prefix`,
    /// default `auto-`.
    pub auto_id_prefix: String,
    /// With `per_listener_settings true`: the client id rules of each
    /// listener, in place of the two fields above. A listener missing here
    /// follows those fields.
    pub listener_client_ids: BTreeMap<ListenerId, ClientIdRules>,
    /// What each listener changes in how its clients are admitted and
    /// which topics they see; a listener missing here changes nothing.
    pub listener_rules: BTreeMap<ListenerId, ListenerRules>,
    /// The listeners, as the HTTP API lists them; those whose protocol is
    /// [`ListenerProtocol::HttpApi`] are served by it.
    pub listeners: Vec<ListenerSummary>,
    /// Time a new connection has to send CONNECT before it is closed.
    /// Mosquitto has no key for it; default 10 s.
    pub connect_timeout: Duration,
    /// How often `$SYS/broker/...` statistics are published (only those
    /// that changed); zero turns them off. Mosquitto: `sys_interval`,
    /// default 10 s.
    pub sys_interval: Duration,
    /// Publish each client's connection state, retained, on
    /// `$SYS/broker/connection/client/<client id>/state`: `1` once its
    /// CONNECT is accepted, `0` when its connection ends, as Mosquitto
    /// 2.1's connection-state plugin does. Culex addition
    /// (`presence_topics`), default off: it keeps a retained message per
    /// client id.
    pub presence_topics: bool,
    /// Log connects and disconnects at information level. Mosquitto:
    /// `connection_messages`, default true.
    pub connection_messages: bool,
    /// Deliver every message at the QoS of the subscription it matched,
    /// above the QoS it was published with: against [MQTT-3.8.4-6], for
    /// those who ask. Mosquitto: `upgrade_outgoing_qos`, default false.
    pub upgrade_outgoing_qos: bool,
    /// Retained messages may be published. Off, a retained PUBLISH, or a
    /// CONNECT whose will is to be retained, closes the connection (what
    /// is retained already stays). Mosquitto: `retain_available`, default
    /// true.
    pub retain_available: bool,
    /// Largest packet accepted from a client, fixed header included; 0
    /// means no limit beyond the protocol's. Larger packets close the
    /// connection before their body is read. Mosquitto: `max_packet_size`
    /// (which counts remaining length plus one byte), default 0.
    pub packet_size_limit: usize,
    /// Only clients whose id (given or assigned) starts with this
    /// connect; others get CONNACK 5. Mosquitto: `clientid_prefixes`
    /// (deprecated there), default none.
    pub clientid_prefixes: Option<String>,
    /// Seed of the generator for assigned client ids: runtimes pass a
    /// random value, simulations a fixed one.
    pub id_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_inflight_messages: 20,
            max_inflight_bytes: 0,
            check_retain_source: true,
            memory_limit: None,
            max_queued_messages: 1000,
            max_queued_bytes: 0,
            max_unwritten_bytes: 2 * 1024 * 1024,
            slow_subscriber_timeout: Duration::from_secs(5),
            not_reading_timeout: Duration::from_secs(30),
            max_subscriptions: 0,
            message_expiry: true,
            message_size_limit: 0,
            max_connections: None,
            listener_max_connections: BTreeMap::new(),
            max_clients: None,
            max_keepalive: u16::MAX,
            queue_qos0_messages: false,
            persistence: false,
            persistent_client_expiration: None,
            allow_anonymous: true,
            allow_zero_length_clientid: true,
            auto_id_prefix: "auto-".to_owned(),
            listener_client_ids: BTreeMap::new(),
            listener_rules: BTreeMap::new(),
            listeners: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            sys_interval: Duration::from_secs(10),
            presence_topics: false,
            connection_messages: true,
            upgrade_outgoing_qos: false,
            retain_available: true,
            packet_size_limit: 0,
            clientid_prefixes: None,
            id_seed: 0x5eed_c0de,
        }
    }
}

/// How a listener treats a CONNECT without a client id, under
/// `per_listener_settings true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdRules {
    /// Mosquitto: `allow_zero_length_clientid`.
    pub allow_zero_length_clientid: bool,
    /// Mosquitto: `auto_id_prefix`.
    pub auto_id_prefix: String,
}

/// The Mosquitto listener keys that change how a listener's clients are
/// admitted and which topics they see. The default changes nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRules {
    /// The client id becomes the user name (the certificate's, with
    /// `use_identity_as_username`); a client without one is refused with
    /// CONNACK 0x05. Mosquitto: `use_username_as_clientid`.
    pub use_username_as_clientid: bool,
    /// Highest QoS of the listener: a PUBLISH above it closes the
    /// connection, a SUBSCRIBE above it is granted this QoS, and a CONNECT
    /// whose will is above it is closed without CONNACK. Mosquitto:
    /// `max_qos`.
    pub max_qos: QoS,
    /// Prefix of every topic of the listener's clients: added to what they
    /// publish, subscribe to and unsubscribe from (and to their will),
    /// removed from what they are sent. Mosquitto: `mount_point`.
    pub mount_point: Option<String>,
    /// MQTT 3.1 clients are served; others get CONNACK 0x01. Mosquitto
    /// 2.1: `accept_protocol_versions` with 3.
    pub accept_mqtt31: bool,
    /// MQTT 3.1.1 clients are served; others get CONNACK 0x01. Mosquitto
    /// 2.1: `accept_protocol_versions` with 4.
    pub accept_mqtt311: bool,
}

impl ListenerRules {
    /// The rules of a listener without these keys.
    pub const DEFAULT: Self = Self {
        use_username_as_clientid: false,
        max_qos: QoS::ExactlyOnce,
        mount_point: None,
        accept_mqtt31: true,
        accept_mqtt311: true,
    };

    /// Whether clients speaking `protocol` are served.
    pub fn accepts(&self, protocol: Protocol) -> bool {
        match protocol {
            Protocol::V31 => self.accept_mqtt31,
            Protocol::V311 => self.accept_mqtt311,
        }
    }
}

impl Default for ListenerRules {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Room in a PUBLISH frame beyond its payload: fixed header (5), topic
/// length and the longest topic (2 + 65,535), packet id (2).
const PUBLISH_OVERHEAD: usize = 5 + 2 + 65_535 + 2;

impl Config {
    /// The payload limit in force.
    pub fn payload_limit(&self) -> usize {
        match self.message_size_limit {
            0 => MAX_REMAINING_LENGTH,
            n => n.min(MAX_REMAINING_LENGTH),
        }
    }

    /// The cap on a whole packet, checked on the fixed header before the
    /// body is buffered: enough for the largest allowed payload, and no
    /// more than `packet_size_limit`.
    pub fn max_packet_size(&self) -> usize {
        let cap = (self.payload_limit() + PUBLISH_OVERHEAD).min(MAX_REMAINING_LENGTH + 5);
        match self.packet_size_limit {
            0 => cap,
            limit => cap.min(limit),
        }
    }

    /// Whether `listener` accepts an empty client id, and the prefix of
    /// the ids it assigns.
    pub fn client_ids(&self, listener: ListenerId) -> (bool, &str) {
        match self.listener_client_ids.get(&listener) {
            Some(rules) => (rules.allow_zero_length_clientid, &rules.auto_id_prefix),
            None => (self.allow_zero_length_clientid, &self.auto_id_prefix),
        }
    }

    /// Whether `listener` serves the HTTP API.
    pub fn is_http_api(&self, listener: ListenerId) -> bool {
        self.listeners.iter().any(|l| l.id == listener && l.protocol == ListenerProtocol::HttpApi)
    }

    /// The summary of `listener`, if the configuration has it.
    pub fn listener(&self, listener: ListenerId) -> Option<&ListenerSummary> {
        self.listeners.iter().find(|l| l.id == listener)
    }

    /// What `listener` changes for its clients.
    pub fn listener_rules(&self, listener: ListenerId) -> &ListenerRules {
        static UNCHANGED: ListenerRules = ListenerRules::DEFAULT;
        self.listener_rules.get(&listener).unwrap_or(&UNCHANGED)
    }

    /// The in-flight window (0 means 65,535, every packet id).
    pub(crate) fn inflight_window(&self) -> usize {
        match self.max_inflight_messages {
            0 => usize::from(u16::MAX),
            n => usize::from(n),
        }
    }
}
