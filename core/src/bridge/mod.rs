//! Bridges to other brokers, Mosquitto's `connection` sections, sans I/O.
//!
//! A [`Bridge`] is two of the core's MQTT [`Client`]s back to back:
//!
//! - the *remote* side speaks to the other broker over a socket the
//!   runtime opens when asked ([`Dial`]) and hands over with
//!   [`Server::dialed`](crate::server::Server::dialed);
//! - the *local* side is an in-memory connection into this broker, under
//!   the bridge's own client id (`local.<remote id>`), on
//!   [`ListenerId::BRIDGES`](crate::ListenerId::BRIDGES) (trusted, as
//!   Mosquitto trusts its bridges) and with the bridge bit of its CONNECT
//!   set: the broker sends it nothing it published itself and keeps the
//!   retain flags of what it sends it.
//!
//! The local side is connected only while the remote side is up. While
//! the remote is away, the local session holds what the `out` topics
//! match, like any session: bounded by `max_queued_messages` and
//! `max_queued_bytes`, and kept on disk with `persistence true` unless
//! `local_cleansession` is set.
//!
//! Acknowledgements are chained: a QoS 1 or 2 message is acknowledged on
//! the side it came from only once the other side acknowledged it. What a
//! broker acknowledged to its publisher is therefore never lost on the
//! way; after a reconnect a QoS 1 message may cross twice, as QoS 1
//! allows.

mod figures;
mod remap;
mod restart;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use crate::action::Input;
use crate::broker::Broker;
use crate::client::{Client, ClientEvent, ClientOptions, LostReason};
use crate::codec::{ConnectReturnCode, LastWill, Publish};
use crate::conf::{BridgeAddress, BridgeConf, BridgeProtocol, BridgeTls, StartType};
use crate::peer::Peer;
use crate::time::{Instant, Now};
use crate::topic::{TopicFilter, TopicName};
use crate::types::{ClientId, ConnId, PacketId, Protocol, QoS};

pub(crate) use figures::figures;
use remap::{Mapping, Way, remap};
use restart::Restart;

/// How often a bridge on a secondary address checks whether the primary
/// takes connections again (Mosquitto: every 5 s).
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Names a bridge for as long as it runs; never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BridgeId(pub u64);

/// A socket the runtime opens for a bridge: answer with
/// [`Server::dialed`](crate::server::Server::dialed) or
/// [`Server::dial_failed`](crate::server::Server::dial_failed); for a
/// probe, with [`Server::probed`](crate::server::Server::probed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dial {
    /// The bridge asking.
    pub bridge: BridgeId,
    /// Where to connect.
    pub address: BridgeAddress,
    /// The local address to connect from (`bridge_bind_address`).
    pub bind_address: Option<String>,
    /// TLS to speak over the socket.
    pub tls: Option<BridgeTls>,
    /// Only find out whether the address takes connections (the primary,
    /// while the bridge is on another), then close.
    pub probe: bool,
}

/// What the bridge asks of its remote socket, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RemoteOp {
    /// Write these bytes.
    Send(ConnId, Bytes),
    /// Write what is queued, then close.
    Close(ConnId),
}

/// Where the remote side stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RemoteLink {
    /// Not connected. With a time: connects then. Without: until a lazy
    /// bridge has enough queued, or never (`start_type once`).
    Waiting(Option<Instant>),
    /// The runtime is opening the socket.
    Dialing,
    /// The socket is open (CONNECT sent, or CONNACK received).
    Open(ConnId),
}

/// A QoS 1/2 message sent to the remote for a delivery of the local
/// session: acknowledged locally once the remote acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Forwarded {
    local: PacketId,
    qos: QoS,
    /// The local connection it came on: a delivery of an earlier
    /// connection whose session ended is not acknowledged on a later one.
    generation: u64,
}

/// What a bridge has carried, for `$SYS/broker/bridge/<name>/` and for
/// programs embedding the core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Messages sent to the remote.
    pub messages_sent: u64,
    /// Their payload bytes.
    pub bytes_sent: u64,
    /// Messages received from the remote.
    pub messages_received: u64,
    /// Their payload bytes.
    pub bytes_received: u64,
    /// Connections the remote accepted.
    pub connects: u64,
    /// Messages the bridge itself dropped (too large for
    /// `bridge_max_packet_size`, or a remapped topic that is not valid);
    /// those its session dropped are counted by the broker.
    pub dropped: u64,
}

/// One bridge: see the [module](self).
#[derive(Debug)]
pub struct Bridge {
    id: BridgeId,
    conf: BridgeConf,
    local_id: ClientId,
    notification_topic: Option<TopicName>,
    mappings: Vec<Mapping>,
    remote: Client,
    local: Client,
    state: RemoteLink,
    /// The local side's connection, while it is open.
    local_conn: Option<ConnId>,
    /// The local side's first connection has not made its subscriptions
    /// yet: it stays until it has, whatever the remote does.
    priming: bool,
    /// Local connections opened so far: names the next one.
    connections: u64,
    /// Local sessions begun so far (CONNACK without a session present).
    generation: u64,
    /// QoS 1 deliveries the remote acknowledged while the local side was
    /// between connections: the session sends them again, and they are
    /// acknowledged then instead of crossing twice.
    settled: BTreeSet<PacketId>,
    /// Which of the configured addresses is in use.
    address: usize,
    restart: Restart,
    /// The next check of the primary address.
    probe_at: Option<Instant>,
    /// Out: remote packet id -> the local delivery it carries.
    forwarded: BTreeMap<PacketId, Forwarded>,
    /// In: local packet id -> the remote message it carries, with its QoS.
    received: BTreeMap<PacketId, (PacketId, QoS)>,
    /// The state the notification topic says: `Some(true)` after "1".
    announced: Option<bool>,
    /// When a message last crossed (a lazy bridge's idle timeout).
    last_message: Instant,
    dials: Vec<Dial>,
    ops: Vec<RemoteOp>,
    stats: BridgeStats,
}

impl Bridge {
    /// A bridge for `conf`, not started. `hostname` makes the default
    /// client ids (`<hostname>.<name>`); `seed` varies the restart jitter.
    pub fn new(id: BridgeId, conf: BridgeConf, hostname: &str, seed: u64) -> Self {
        let remote_id = conf.remote_client_id(hostname);
        let local_id = ClientId::new(conf.local_client_id(hostname));
        let notification_topic =
            conf.notifications.then(|| TopicName::new(conf.notification_topic(hostname)).ok()).flatten();
        let mut remote = ClientOptions::new(remote_id).keep_alive(conf.keepalive).clean_session(conf.clean_session);
        remote.protocol = match conf.protocol {
            BridgeProtocol::V31 => Protocol::V31,
            BridgeProtocol::V311 => Protocol::V311,
        };
        remote.bridge = conf.try_private;
        remote.manual_ack = true;
        remote.username = conf.remote_username.clone();
        remote.password = conf.remote_password.as_ref().map(|p| Bytes::copy_from_slice(p.as_bytes()));
        if let Some(topic) = notification_topic.as_ref().filter(|_| !conf.notifications_local_only) {
            remote.will = Some(LastWill {
                topic: topic.clone(),
                payload: Bytes::from_static(b"0"),
                qos: QoS::AtLeastOnce,
                retain: conf.outgoing_retain,
            });
        }
        let mut local = ClientOptions::new(local_id.as_str()).keep_alive(0).clean_session(conf.local_clean_session);
        local.bridge = true;
        local.manual_ack = true;
        local.pipeline = true;
        local.username = conf.local_username.clone();
        let mappings = conf.topics.iter().filter_map(Mapping::new).collect();
        Self {
            id,
            local_id,
            notification_topic,
            mappings,
            remote: Client::new(remote),
            local: Client::new(local),
            state: RemoteLink::Waiting(None),
            local_conn: None,
            priming: false,
            connections: 0,
            generation: 0,
            settled: BTreeSet::new(),
            address: 0,
            restart: Restart::new(conf.restart_timeout, seed ^ u64::from(fnv(conf.name.as_bytes()))),
            probe_at: None,
            forwarded: BTreeMap::new(),
            received: BTreeMap::new(),
            announced: None,
            last_message: Instant::ZERO,
            dials: Vec::new(),
            ops: Vec::new(),
            stats: BridgeStats::default(),
            conf,
        }
    }

    /// Its id.
    pub fn id(&self) -> BridgeId {
        self.id
    }

    /// Its configuration.
    pub fn conf(&self) -> &BridgeConf {
        &self.conf
    }

    /// Whether the remote broker accepted its connection.
    pub fn is_connected(&self) -> bool {
        self.remote.is_connected()
    }

    /// What it has carried.
    pub fn stats(&self) -> BridgeStats {
        self.stats
    }

    /// The client id of its local side (its session in this broker).
    pub fn local_id(&self) -> &ClientId {
        &self.local_id
    }

    /// The remote socket, while one is open.
    pub(crate) fn remote_conn(&self) -> Option<ConnId> {
        match self.state {
            RemoteLink::Open(conn) => Some(conn),
            RemoteLink::Waiting(_) | RemoteLink::Dialing => None,
        }
    }

    /// The local side's connection, while one is open.
    pub(crate) fn local_conn(&self) -> Option<ConnId> {
        self.local_conn
    }

    /// Starts: the notification topic says "0" here, the local side
    /// connects once to make its subscriptions (from then on its session
    /// queues what the `out` topics match, as Mosquitto's bridge context
    /// does from start), and the first connection is dialled (every start
    /// type connects once at start, as in Mosquitto).
    pub(crate) fn start(&mut self, now: Now, broker: &mut Broker) {
        self.announce(now, broker, false);
        self.priming = true;
        self.open_local(now, broker);
        self.dial(0);
    }

    /// Sockets to open.
    pub(crate) fn take_dials(&mut self) -> Vec<Dial> {
        std::mem::take(&mut self.dials)
    }

    /// What to do with the remote socket.
    pub(crate) fn take_ops(&mut self) -> Vec<RemoteOp> {
        if let RemoteLink::Open(conn) = self.state
            && let Some(data) = self.remote.poll_transmit()
        {
            self.ops.push(RemoteOp::Send(conn, data));
        }
        std::mem::take(&mut self.ops)
    }

    /// The runtime opened the socket: CONNECT goes out.
    pub(crate) fn dialed(&mut self, now: Now, conn: ConnId) {
        if self.state != RemoteLink::Dialing {
            // Stopped meanwhile (a reload): not wanted any more.
            self.ops.push(RemoteOp::Close(conn));
            return;
        }
        self.state = RemoteLink::Open(conn);
        debug!("Bridge {} sending CONNECT", self.remote.options().client_id);
        self.remote.connect(now.instant);
    }

    /// The socket could not be opened.
    pub(crate) fn dial_failed(&mut self, now: Now, broker: &mut Broker, error: &str) {
        if self.state == RemoteLink::Dialing {
            error!("Error creating bridge: {}.", error.trim_end_matches('.'));
            self.remote_down(now, broker);
        }
    }

    /// The answer to a probe of the primary address: reachable, the bridge
    /// leaves the secondary and connects to the primary after the restart
    /// delay, as Mosquitto does.
    pub(crate) fn probed(&mut self, now: Now, broker: &mut Broker, reachable: bool) {
        if !reachable || self.address == 0 || self.remote_conn().is_none() {
            return;
        }
        let primary = &self.conf.addresses[0];
        info!("Bridge {} can reach {}:{} again, moving back to it.", self.conf.name, primary.host, primary.port);
        self.remote.disconnect(now.instant);
        self.hang_up(now, broker);
        self.address = 0;
    }

    /// Bytes from the remote broker.
    pub(crate) fn remote_received(&mut self, now: Now, broker: &mut Broker, data: &[u8]) {
        self.remote.received(now.instant, data);
        self.remote_events(now, broker);
        self.feed_local(now, broker);
    }

    /// The remote socket ended.
    pub(crate) fn remote_closed(&mut self, now: Now, broker: &mut Broker, conn: ConnId) {
        if self.state == RemoteLink::Open(conn) {
            info!("Bridge {} lost its connection to the remote broker.", self.conf.name);
            self.remote_down(now, broker);
        }
    }

    /// The remote broker does not read what it is sent.
    pub(crate) fn remote_stalled(&mut self, now: Now, broker: &mut Broker) {
        warn!("Bridge {}: the remote broker is not reading, disconnecting.", self.conf.name);
        self.hang_up(now, broker);
    }

    /// Bytes this broker sent the local side.
    pub(crate) fn local_received(&mut self, now: Now, broker: &mut Broker, data: &[u8]) {
        self.local.received(now.instant, data);
        self.local_events(now, broker);
        self.feed_local(now, broker);
    }

    /// This broker closed the local side (another client took its id,
    /// shutdown): the remote side goes too, and both come back together.
    pub(crate) fn local_closed(&mut self, now: Now, broker: &mut Broker) {
        if self.local_conn.take().is_some() {
            self.local.connection_lost();
            if self.remote_conn().is_some() {
                warn!("Bridge {}: this broker closed its local side, disconnecting.", self.conf.name);
                self.hang_up(now, broker);
            }
        }
    }

    /// When [`timeout`](Self::timeout) is next due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let remote = match self.state {
            RemoteLink::Open(_) => self.remote.next_deadline(),
            RemoteLink::Waiting(at) => at,
            RemoteLink::Dialing => None,
        };
        [remote, self.probe_at, self.idle_deadline()].into_iter().flatten().min()
    }

    /// Time passed: pings, restarts, probes and the lazy idle timeout.
    pub(crate) fn timeout(&mut self, now: Now, broker: &mut Broker) {
        match self.state {
            RemoteLink::Open(_) => {
                self.remote.timeout(now.instant);
                self.remote_events(now, broker);
            }
            RemoteLink::Waiting(Some(at)) if now.instant >= at => self.dial(self.address),
            RemoteLink::Waiting(_) | RemoteLink::Dialing => {}
        }
        if self.probe_at.is_some_and(|at| now.instant >= at) {
            self.probe_at = Some(now.instant + PROBE_INTERVAL);
            self.dials.push(Dial { probe: true, ..self.dial_to(0) });
        }
        if self.idle_deadline().is_some_and(|at| now.instant >= at) {
            info!("Bridge connection {} has exceeded idle timeout, disconnecting.", self.conf.name);
            self.remote.disconnect(now.instant);
            self.hang_up(now, broker);
        }
    }

    /// A lazy bridge waiting: connects once its local session holds
    /// `threshold` messages.
    pub(crate) fn check_queue(&mut self, broker: &Broker) {
        let StartType::Lazy { threshold, .. } = self.conf.start_type else { return };
        if self.state == RemoteLink::Waiting(None) && broker.queued_len(&self.local_id) >= threshold as usize {
            self.dial(self.address);
        }
    }

    /// The broker stops: the remote is told "0" (a will is not published
    /// after DISCONNECT) and disconnected.
    pub(crate) fn shutdown(&mut self, now: Now, broker: &mut Broker) {
        if self.remote.is_connected() {
            self.announce_remote(now, false);
            self.remote.disconnect(now.instant);
        }
        if self.remote_conn().is_some() {
            self.hang_up(now, broker);
        }
        self.state = RemoteLink::Waiting(None);
    }

    fn dial(&mut self, address: usize) {
        self.address = address;
        let dial = self.dial_to(address);
        info!("Connecting bridge {} ({}:{})", self.conf.name, dial.address.host, dial.address.port);
        self.state = RemoteLink::Dialing;
        self.dials.push(dial);
    }

    fn dial_to(&self, address: usize) -> Dial {
        Dial {
            bridge: self.id,
            address: self.conf.addresses[address % self.conf.addresses.len()].clone(),
            bind_address: self.conf.bind_address.clone(),
            tls: self.conf.tls.clone(),
            probe: false,
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        let StartType::Lazy { idle_timeout, .. } = self.conf.start_type else { return None };
        self.remote.is_connected().then(|| self.last_message + Duration::from_secs(u64::from(idle_timeout)))
    }

    /// Closes the remote socket after what is queued for it.
    fn hang_up(&mut self, now: Now, broker: &mut Broker) {
        if let RemoteLink::Open(conn) = self.state {
            if let Some(data) = self.remote.poll_transmit() {
                self.ops.push(RemoteOp::Send(conn, data));
            }
            self.ops.push(RemoteOp::Close(conn));
        }
        self.remote_down(now, broker);
    }

    /// The remote side is gone: the local side goes too (its session
    /// queues from now on), the state becomes "0" and the next attempt is
    /// set, on the next address, as Mosquitto does.
    fn remote_down(&mut self, now: Now, broker: &mut Broker) {
        self.remote.connection_lost();
        self.probe_at = None;
        if !self.priming {
            self.close_local(now, broker);
        }
        self.announce(now, broker, false);
        self.address = (self.address + 1) % self.conf.addresses.len();
        let retry = match self.conf.start_type {
            StartType::Automatic => Some(now.instant + self.restart.next_delay()),
            StartType::Lazy { .. } | StartType::Once => None,
        };
        self.state = RemoteLink::Waiting(retry);
    }

    fn remote_events(&mut self, now: Now, broker: &mut Broker) {
        while let Some(event) = self.remote.poll_event() {
            match event {
                ClientEvent::Connected { session_present } => {
                    if !session_present {
                        // The remote forgot what it sent: ids it resends
                        // from now on are new messages.
                        self.received.clear();
                    }
                    self.remote_up(now, broker);
                }
                ClientEvent::Refused(code) => self.refused(now, broker, code),
                ClientEvent::Message(publish) => self.forward_in(now, publish),
                ClientEvent::Published(id) => self.remote_acknowledged(now, id),
                ClientEvent::Subscribed(_) | ClientEvent::Unsubscribed(_) => {}
                ClientEvent::Lost(reason) => self.lost(now, broker, &reason),
            }
        }
    }

    fn refused(&mut self, now: Now, broker: &mut Broker, code: ConnectReturnCode) {
        error!("Connection Refused: {}", refusal(code));
        if code == ConnectReturnCode::UnacceptableProtocolVersion && self.remote.options().bridge {
            // As Mosquitto: the remote does not know the bridge bit; the
            // next attempts go without it.
            info!("Bridge {}: the remote broker refused the bridge protocol, trying without it.", self.conf.name);
            self.remote.options_mut().bridge = false;
        }
        self.hang_up(now, broker);
    }

    fn lost(&mut self, now: Now, broker: &mut Broker, reason: &LostReason) {
        warn!("Bridge {} disconnecting: {reason}.", self.conf.name);
        self.hang_up(now, broker);
    }

    /// CONNACK from the remote: state "1", the remote subscriptions, and
    /// the local side, whose session then sends what it queued and the
    /// retained messages its subscriptions match.
    fn remote_up(&mut self, now: Now, broker: &mut Broker) {
        debug!("Received CONNACK on connection {}.", self.conf.name);
        self.stats.connects += 1;
        self.restart.reset();
        self.last_message = now.instant;
        self.announce(now, broker, true);
        let remote_id = self.remote.options().client_id.clone();
        for mapping in self.mappings.iter().filter(|m| m.goes(Way::In)) {
            let id = self.remote.subscribe(now.instant, vec![(mapping.remote.clone(), mapping.qos)]);
            if let Some(id) = id {
                let (topic, qos) = (mapping.remote.as_str(), mapping.qos.bits());
                debug!("Bridge {remote_id} sending SUBSCRIBE (Mid: {id}, Topic: {topic}, QoS: {qos}, Options: 0x00)");
            }
        }
        if self.conf.attempt_unsubscribe {
            for mapping in self.mappings.iter().filter(|m| !m.goes(Way::In)) {
                if let Some(id) = self.remote.unsubscribe(now.instant, vec![mapping.remote.clone()]) {
                    debug!("Bridge {remote_id} sending UNSUBSCRIBE (Mid: {id}, Topic: {})", mapping.remote.as_str());
                }
            }
        }
        // The local side opened at start may hold deliveries it could not
        // forward then: a new connection has the session send them again.
        self.priming = false;
        self.close_local(now, broker);
        self.open_local(now, broker);
        if self.address != 0 && !self.conf.round_robin {
            self.probe_at = Some(now.instant + PROBE_INTERVAL);
        }
    }

    fn open_local(&mut self, now: Now, broker: &mut Broker) {
        self.connections += 1;
        let conn = ConnId(ConnId::FIRST_BRIDGE + (self.id.0 << 32) + self.connections);
        broker.accept_as(now, conn, Peer::bridge());
        self.local_conn = Some(conn);
        self.local.connect(now.instant);
        // Subscribed in the same breath: from this moment the session
        // takes what the `out` topics match, even before its CONNACK is
        // on disk.
        self.subscribe_locally(now);
        self.unsubscribe_stale(now, broker);
        self.feed_local(now, broker);
    }

    /// A stored session keeps the subscriptions of the configuration that
    /// made it: those of `out` topics no longer configured (a reload, a
    /// restart with a changed file) are dropped, or their messages would
    /// still cross.
    fn unsubscribe_stale(&mut self, now: Now, broker: &Broker) {
        let Some(session) = broker.session(self.local_id.as_str()) else { return };
        let stale: Vec<TopicFilter> = session
            .subscriptions
            .iter()
            .filter(|(filter, _)| !self.mappings.iter().any(|m| m.goes(Way::Out) && m.local.as_str() == filter))
            .filter_map(|(filter, _)| TopicFilter::new(filter.as_str()).ok())
            .collect();
        for filter in &stale {
            debug!("Bridge {} doing local UNSUBSCRIBE on topic {}", self.local_id, filter.as_str());
        }
        let _ = self.local.unsubscribe(now.instant, stale);
    }

    /// Ends the local side with DISCONNECT: its session stays (unless
    /// `local_cleansession`) and queues.
    fn close_local(&mut self, now: Now, broker: &mut Broker) {
        if self.local_conn.is_some() {
            self.local.disconnect(now.instant);
            self.feed_local(now, broker);
        }
        if let Some(conn) = self.local_conn.take() {
            self.local.connection_lost();
            broker.handle_input(now, Input::Closed { conn });
        }
    }

    /// The notification topic's state, here and (unless local only) on
    /// the remote; each change once.
    fn announce(&mut self, now: Now, broker: &mut Broker, up: bool) {
        let Some(topic) = &self.notification_topic else { return };
        if self.announced == Some(up) {
            return;
        }
        self.announced = Some(up);
        let payload: &[u8] = if up { b"1" } else { b"0" };
        broker
            .handle_input(now, Input::Publish { topic: topic.as_str(), payload, qos: QoS::AtLeastOnce, retain: true });
        if up {
            self.announce_remote(now, true);
        }
    }

    fn announce_remote(&mut self, now: Now, up: bool) {
        let Some(topic) = self.notification_topic.clone().filter(|_| !self.conf.notifications_local_only) else {
            return;
        };
        let payload = Bytes::from_static(if up { b"1" } else { b"0" });
        let retain = self.conf.outgoing_retain;
        let _ = self.remote.publish(now.instant, topic, payload, QoS::AtLeastOnce, retain);
    }

    fn local_events(&mut self, now: Now, broker: &mut Broker) {
        while let Some(event) = self.local.poll_event() {
            match event {
                ClientEvent::Connected { session_present } => {
                    if !session_present {
                        // Deliveries of the session that ended are never
                        // acknowledged here; their ids are free again.
                        self.generation += 1;
                        self.settled.clear();
                    }
                }
                ClientEvent::Message(publish) => self.forward_out(now, publish),
                ClientEvent::Published(id) => {
                    if let Some((remote_id, qos)) = self.received.remove(&id) {
                        self.remote.acknowledge(now.instant, remote_id, qos);
                    }
                }
                ClientEvent::Subscribed(_) if std::mem::take(&mut self.priming) && !self.remote.is_connected() => {
                    // Subscribed at start with the remote not there yet:
                    // the session queues from now on.
                    self.close_local(now, broker);
                }
                ClientEvent::Subscribed(_) | ClientEvent::Unsubscribed(_) => {}
                ClientEvent::Refused(code) => {
                    error!("Bridge {}: this broker refused its local side: {code}.", self.conf.name);
                    self.close_local(now, broker);
                    self.hang_up(now, broker);
                }
                ClientEvent::Lost(reason) => {
                    error!("Bridge {}: its local side failed: {reason}.", self.conf.name);
                    self.close_local(now, broker);
                    self.hang_up(now, broker);
                }
            }
        }
    }

    /// The local subscriptions, made again on every connection as
    /// Mosquitto does: the retained messages they match go out each time.
    fn subscribe_locally(&mut self, now: Now) {
        let filters: Vec<_> =
            self.mappings.iter().filter(|m| m.goes(Way::Out)).map(|m| (m.local.clone(), m.qos)).collect();
        for (filter, _) in &filters {
            debug!("Bridge {} doing local SUBSCRIBE on topic {}", self.local_id, filter.as_str());
        }
        let _ = self.local.subscribe(now.instant, filters);
    }

    /// A delivery of the local session goes to the remote.
    fn forward_out(&mut self, now: Now, publish: Publish) {
        if !self.remote.is_connected() {
            // Sent while the local side makes its subscriptions at start:
            // left unacknowledged, the session sends it again once the
            // remote is there (QoS 0 is dropped, as for an absent client).
            return;
        }
        let generation = self.generation;
        if let Some(id) = publish.packet_id {
            if publish.qos == QoS::AtLeastOnce && self.settled.remove(&id) {
                self.local.acknowledge(now.instant, id, publish.qos);
                return;
            }
            let sent = Forwarded { local: id, qos: publish.qos, generation };
            if self.forwarded.values().any(|f| *f == sent) {
                // Sent again by the session after a reconnect: the remote
                // side has it already, and resends it itself.
                return;
            }
        }
        let Some(topic) = remap(&self.mappings, Way::Out, &publish.topic) else {
            self.drop_out(now, &publish, "its remapped topic is not valid");
            return;
        };
        let max = self.conf.max_packet_size as usize;
        if max != 0 && encoded_len(&topic, &publish) > max {
            self.drop_out(now, &publish, "larger than bridge_max_packet_size");
            return;
        }
        self.last_message = now.instant;
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += publish.payload.len() as u64;
        let retain = publish.retain && self.conf.outgoing_retain;
        let sent = self.remote.publish(now.instant, topic, publish.payload.clone(), publish.qos, retain);
        if let (Some(remote_id), Some(local)) = (sent, publish.packet_id) {
            self.forwarded.insert(remote_id, Forwarded { local, qos: publish.qos, generation });
        }
    }

    fn drop_out(&mut self, now: Now, publish: &Publish, why: &str) {
        self.stats.dropped += 1;
        warn!("Bridge {} dropped a message on '{}': {why}.", self.conf.name, publish.topic.as_str());
        if let Some(id) = publish.packet_id {
            self.local.acknowledge(now.instant, id, publish.qos);
        }
    }

    /// The remote acknowledged a forwarded message: so does the local side.
    fn remote_acknowledged(&mut self, now: Now, id: PacketId) {
        let Some(sent) = self.forwarded.remove(&id) else { return };
        if sent.generation != self.generation {
            return;
        }
        // QoS 2 is remembered by the local client until its PUBLISH comes
        // again; QoS 1 is remembered here.
        self.local.acknowledge(now.instant, sent.local, sent.qos);
        if !self.local.is_connected() && sent.qos == QoS::AtLeastOnce {
            self.settled.insert(sent.local);
        }
    }

    /// A message from the remote is published here.
    fn forward_in(&mut self, now: Now, publish: Publish) {
        if let Some(id) = publish.packet_id
            && self.received.values().any(|&(remote_id, _)| remote_id == id)
        {
            // QoS 1 sent again after a reconnect: published here already,
            // acknowledged once this broker has it.
            return;
        }
        let Some(topic) = remap(&self.mappings, Way::In, &publish.topic) else {
            self.stats.dropped += 1;
            warn!(
                "Bridge {} dropped a message on '{}': its remapped topic is not valid.",
                self.conf.name,
                publish.topic.as_str()
            );
            if let Some(id) = publish.packet_id {
                self.remote.acknowledge(now.instant, id, publish.qos);
            }
            return;
        };
        self.last_message = now.instant;
        self.stats.messages_received += 1;
        self.stats.bytes_received += publish.payload.len() as u64;
        let local = self.local.publish(now.instant, topic, publish.payload, publish.qos, publish.retain);
        if let (Some(local), Some(remote_id)) = (local, publish.packet_id) {
            self.received.insert(local, (remote_id, publish.qos));
        }
    }

    /// Hands what the local side wrote to the broker.
    fn feed_local(&mut self, now: Now, broker: &mut Broker) {
        let Some(conn) = self.local_conn else { return };
        while let Some(data) = self.local.poll_transmit() {
            broker.handle_input(now, Input::Received { conn, data: &data });
        }
    }
}

/// The size of `publish` sent on `topic`: what `bridge_max_packet_size`
/// is compared with.
fn encoded_len(topic: &TopicName, publish: &Publish) -> usize {
    let id = if publish.qos == QoS::AtMostOnce { 0 } else { 2 };
    let remaining = 2 + topic.as_str().len() + id + publish.payload.len();
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining
}

/// A CONNACK refusal in the words of Mosquitto's bridge log lines.
fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Accepted => "accepted",
        ConnectReturnCode::UnacceptableProtocolVersion => "unacceptable protocol version",
        ConnectReturnCode::IdentifierRejected => "identifier rejected",
        ConnectReturnCode::ServerUnavailable => "broker unavailable",
        // Mosquitto 2.0 logs "broker unavailable" here too, by mistake.
        ConnectReturnCode::BadUserNameOrPassword => "bad user name or password",
        ConnectReturnCode::NotAuthorized => "not authorised",
    }
}

/// FNV-1a: a bridge's name folded into its jitter seed.
fn fnv(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash, &b| (hash ^ u32::from(b)).wrapping_mul(0x0100_0193))
}
