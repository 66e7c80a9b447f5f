//! The client side of MQTT 3.1 and 3.1.1, sans I/O: what a bridge joins to
//! its session, and what a simulator needs to play a device.
//!
//! A [`Client`] consumes bytes, time and the application's requests, and
//! produces bytes to write ([`Client::poll_transmit`]) and
//! [`ClientEvent`]s ([`Client::poll_event`]). The caller owns the socket:
//! it calls [`Client::connect`] on each new connection,
//! [`Client::received`] with what it reads, [`Client::connection_lost`]
//! when the connection ends, and [`Client::timeout`] at
//! [`Client::next_deadline`].
//!
//! What the client keeps across connections, as MQTT asks of a client
//! ([MQTT-4.4.0-1]): outgoing QoS 1 and 2 messages until they are
//! acknowledged (sent again, with DUP set, or their PUBREL sent again,
//! on the next connection), incoming QoS 2 packet ids until their PUBREL
//! (while the server keeps the session), and SUBSCRIBE and UNSUBSCRIBE
//! requests not yet answered. Packet ids count from 1 and skip those in
//! use. At most [`ClientOptions::max_inflight`] QoS 1/2 messages are in
//! flight; the rest wait in order.
//!
//! ```
//! use bytes::Bytes;
//! use culex_core::client::{Client, ClientEvent, ClientOptions};
//! use culex_core::{Instant, QoS, TopicName};
//!
//! let mut client = Client::new(ClientOptions::new("device-1").keep_alive(30));
//! client.connect(Instant::ZERO);
//! let connect = client.poll_transmit().expect("CONNECT to write");
//! assert_eq!(connect[0], 0x10);
//! // The server accepts: CONNACK, no session present.
//! client.received(Instant::ZERO, &[0x20, 0x02, 0x00, 0x00]);
//! assert_eq!(client.poll_event(), Some(ClientEvent::Connected { session_present: false }));
//! let topic = TopicName::new("sensors/t1").expect("a valid topic");
//! let id = client.publish(Instant::ZERO, topic, Bytes::from_static(b"21.5"), QoS::AtLeastOnce, false);
//! assert!(client.poll_transmit().is_some());
//! // PUBACK for packet id 1.
//! client.received(Instant::ZERO, &[0x40, 0x02, 0x00, 0x01]);
//! assert_eq!(client.poll_event(), Some(ClientEvent::Published(id.expect("a packet id"))));
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use crate::codec::{
    self, ConnAck, Connect, ConnectReturnCode, DecodeError, LastWill, Packet, Publish, SubAck, Subscribe, Unsubscribe,
};
use crate::time::Instant;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{PacketId, Protocol, QoS};

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The client identifier.
    pub client_id: String,
    /// MQTT 3.1 or 3.1.1.
    pub protocol: Protocol,
    /// Clean session.
    pub clean_session: bool,
    /// Keepalive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<Bytes>,
    /// Will.
    pub will: Option<LastWill>,
    /// QoS 1/2 messages in flight at most; 0 for no limit. Mosquitto's
    /// default, 20.
    pub max_inflight: usize,
    /// The largest packet accepted from the server, fixed header included.
    pub max_packet_size: usize,
    /// Marks the connection as a bridge's (`try_private`): the protocol
    /// level is sent with its high bit set, as Mosquitto's bridges do.
    pub bridge: bool,
    /// Incoming QoS 1 and 2 messages are acknowledged (PUBACK, PUBREC)
    /// only when the application calls [`Client::acknowledge`]: a bridge
    /// acknowledges a message once the other side has it.
    pub manual_ack: bool,
    /// SUBSCRIBE and UNSUBSCRIBE made while CONNACK is awaited go out at
    /// once, behind CONNECT, as MQTT allows ([MQTT-3.1.4], "Clients need
    /// not wait for a CONNACK"): a bridge's local side subscribes in the
    /// same breath as it connects.
    pub pipeline: bool,
}

impl ClientOptions {
    /// MQTT 3.1.1, clean session, keepalive 60 s, as `mosquitto_pub`.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self {
            client_id: client_id.into(),
            protocol: Protocol::V311,
            clean_session: true,
            keep_alive: 60,
            username: None,
            password: None,
            will: None,
            max_inflight: 20,
            max_packet_size: codec::MAX_REMAINING_LENGTH + 5,
            bridge: false,
            manual_ack: false,
            pipeline: false,
        }
    }

    /// With this keepalive, in seconds.
    #[must_use]
    pub fn keep_alive(mut self, seconds: u16) -> Self {
        self.keep_alive = seconds;
        self
    }

    /// With clean session set or not.
    #[must_use]
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    /// With a will.
    #[must_use]
    pub fn will(mut self, will: LastWill) -> Self {
        self.will = Some(will);
        self
    }

    /// With a user name and password.
    #[must_use]
    pub fn credentials(mut self, username: &str, password: &[u8]) -> Self {
        self.username = Some(username.to_owned());
        self.password = Some(Bytes::copy_from_slice(password));
        self
    }

    /// The CONNECT packet these options describe.
    pub fn connect_packet(&self) -> Packet {
        Packet::Connect(Box::new(Connect {
            protocol: self.protocol,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive,
            client_id: ByteString::from(self.client_id.as_str()),
            will: self.will.clone(),
            username: self.username.as_deref().map(ByteString::from),
            password: self.password.clone(),
            bridge: self.bridge,
        }))
    }
}

/// What happened, for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// CONNACK accepted the connection.
    Connected {
        /// The server kept the session.
        session_present: bool,
    },
    /// CONNACK refused it; the caller closes the connection.
    Refused(ConnectReturnCode),
    /// A message from the server, delivered once per QoS 2 message.
    Message(Publish),
    /// A QoS 1 or 2 message the application published is acknowledged
    /// (PUBACK, or PUBCOMP).
    Published(PacketId),
    /// A SUBSCRIBE was answered.
    Subscribed(SubAck),
    /// An UNSUBSCRIBE was answered.
    Unsubscribed(PacketId),
    /// The connection must be closed: the server broke the protocol or
    /// stopped answering pings. What the client keeps is sent again on
    /// the next connection.
    Lost(LostReason),
}

/// Why a [`Client`] gave up on a connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LostReason {
    /// What the server sent cannot be decoded.
    #[error("malformed packet from the server: {0}")]
    Malformed(DecodeError),
    /// A packet a server never sends, or one before CONNACK.
    #[error("unexpected {0} from the server")]
    Unexpected(&'static str),
    /// No PINGRESP within the keepalive after a PINGREQ.
    #[error("no answer to PINGREQ within the keepalive")]
    PingTimeout,
    /// No CONNACK within the keepalive after CONNECT.
    #[error("no CONNACK within the keepalive")]
    ConnAckTimeout,
}

/// Where the connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// No connection.
    Down,
    /// CONNECT sent, CONNACK awaited.
    Connecting,
    /// CONNACK accepted.
    Up,
}

/// An outgoing QoS 1/2 message not yet acknowledged.
#[derive(Debug, Clone)]
struct Outgoing {
    /// When the application made it (see `Client::made`).
    order: u64,
    publish: Publish,
    /// QoS 2: PUBREC received, PUBREL sent, PUBCOMP awaited.
    released: bool,
    /// Sent on some connection: a resend carries DUP.
    sent: bool,
}

/// A SUBSCRIBE or UNSUBSCRIBE not yet answered.
#[derive(Debug, Clone)]
enum Request {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
}

impl Request {
    fn packet_id(&self) -> PacketId {
        match self {
            Self::Subscribe(s) => s.packet_id,
            Self::Unsubscribe(u) => u.packet_id,
        }
    }
}

/// An MQTT client without I/O (see the [module](self)).
#[derive(Debug)]
pub struct Client {
    options: ClientOptions,
    link: Link,
    /// Bytes read and not yet decoded.
    input: BytesMut,
    /// Bytes to write.
    output: BytesMut,
    events: VecDeque<ClientEvent>,
    /// QoS 1/2 messages in flight, in the order they were first sent.
    inflight: VecDeque<Outgoing>,
    /// QoS 1/2 messages behind the window, with their packet ids and
    /// when they were made.
    waiting: VecDeque<(u64, Publish)>,
    /// QoS 0 messages published while CONNACK was awaited.
    unsent: VecDeque<(u64, Publish)>,
    /// With whether each went out on the current connection.
    requests: VecDeque<(u64, Request, bool)>,
    /// Requests made so far: what waits for a CONNACK goes out in the
    /// order the application made it, a SUBSCRIBE before the PUBLISH
    /// made after it.
    made: u64,
    /// Incoming QoS 2 messages delivered, PUBREL awaited, and whether the
    /// application acknowledged each (always, without `manual_ack`).
    incoming: BTreeMap<PacketId, bool>,
    next_id: PacketId,
    /// When the client last wrote: a PINGREQ goes a keepalive after it.
    last_sent: Instant,
    /// A PINGREQ unanswered since then.
    ping_sent: Option<Instant>,
}

impl Client {
    /// A client that has not connected yet.
    pub fn new(options: ClientOptions) -> Self {
        Self {
            options,
            link: Link::Down,
            input: BytesMut::new(),
            output: BytesMut::new(),
            events: VecDeque::new(),
            inflight: VecDeque::new(),
            waiting: VecDeque::new(),
            unsent: VecDeque::new(),
            requests: VecDeque::new(),
            made: 0,
            incoming: BTreeMap::new(),
            next_id: PacketId::MIN,
            last_sent: Instant::ZERO,
            ping_sent: None,
        }
    }

    /// The options it connects with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The options, to change: they apply from the next [`connect`](Self::connect).
    pub fn options_mut(&mut self) -> &mut ClientOptions {
        &mut self.options
    }

    /// Whether CONNACK accepted the current connection.
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// A new connection is open: CONNECT goes out.
    pub fn connect(&mut self, now: Instant) {
        self.input.clear();
        self.output.clear();
        self.link = Link::Connecting;
        self.ping_sent = None;
        let connect = self.options.connect_packet();
        self.send(now, &connect);
        // Every request not yet answered goes out on this connection: now
        // when pipelining, after CONNACK otherwise.
        let pipeline = self.options.pipeline;
        for (_, request, sent) in &mut self.requests {
            *sent = pipeline;
            if pipeline {
                request_packet(request).encode(&mut self.output);
            }
        }
    }

    /// The connection ended (closed by either side, or lost). What is in
    /// flight stays, to be sent again on the next connection.
    pub fn connection_lost(&mut self) {
        self.link = Link::Down;
        self.input.clear();
        self.output.clear();
        self.unsent.clear();
        self.ping_sent = None;
    }

    /// DISCONNECT goes out; the caller closes the connection once it is
    /// written. The will is not published.
    pub fn disconnect(&mut self, now: Instant) {
        if self.link != Link::Down {
            self.send(now, &Packet::Disconnect);
            self.link = Link::Down;
        }
    }

    /// Publishes a message. QoS 1 and 2 get a packet id, returned, and are
    /// kept until acknowledged, across connections. QoS 0 goes now, or
    /// after CONNACK if CONNECT is on its way; with no connection at all
    /// it is dropped, as at most once allows (kept, such messages would
    /// pile up for as long as the server is away). `None` for QoS 0, or
    /// when all 65,535 ids are in use (nothing is published then).
    pub fn publish(
        &mut self,
        now: Instant,
        topic: TopicName,
        payload: Bytes,
        qos: QoS,
        retain: bool,
    ) -> Option<PacketId> {
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(self.take_id()?),
        };
        let publish = Publish { dup: false, qos, retain, topic, packet_id, payload };
        let order = self.next_order();
        match qos {
            QoS::AtMostOnce => match self.link {
                Link::Up => self.send(now, &Packet::Publish(publish)),
                Link::Connecting => self.unsent.push_back((order, publish)),
                Link::Down => {}
            },
            _ => {
                self.waiting.push_back((order, publish));
                self.fill_window(now);
            }
        }
        packet_id
    }

    /// Subscribes to `filters`; the answer comes as
    /// [`ClientEvent::Subscribed`] with the returned packet id. `None`
    /// when `filters` is empty or all ids are in use.
    pub fn subscribe(&mut self, now: Instant, filters: Vec<(TopicFilter, QoS)>) -> Option<PacketId> {
        if filters.is_empty() {
            return None;
        }
        let packet_id = self.take_id()?;
        self.request(now, Request::Subscribe(Subscribe { packet_id, filters }));
        Some(packet_id)
    }

    /// Unsubscribes from `filters` (see [`subscribe`](Self::subscribe)).
    pub fn unsubscribe(&mut self, now: Instant, filters: Vec<TopicFilter>) -> Option<PacketId> {
        if filters.is_empty() {
            return None;
        }
        let packet_id = self.take_id()?;
        self.request(now, Request::Unsubscribe(Unsubscribe { packet_id, filters }));
        Some(packet_id)
    }

    /// Bytes read from the connection.
    pub fn received(&mut self, now: Instant, data: &[u8]) {
        if self.link == Link::Down {
            return;
        }
        self.input.extend_from_slice(data);
        loop {
            match codec::decode(&mut self.input, self.options.max_packet_size, self.options.protocol) {
                Ok(Some(packet)) => {
                    if let Err(reason) = self.handle(now, packet) {
                        self.lose(reason);
                        return;
                    }
                    if self.link == Link::Down {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    self.lose(LostReason::Malformed(e));
                    return;
                }
            }
        }
    }

    /// When [`timeout`](Self::timeout) is due: the next PINGREQ, the end
    /// of the wait for its PINGRESP, or that for CONNACK (CONNECT is the
    /// last packet written while it is awaited).
    pub fn next_deadline(&self) -> Option<Instant> {
        let keep_alive = self.keep_alive()?;
        match (self.link, self.ping_sent) {
            (Link::Down, _) => None,
            (_, Some(sent)) => Some(sent + keep_alive),
            (Link::Connecting | Link::Up, None) => Some(self.last_sent + keep_alive),
        }
    }

    /// Time passed: a PINGREQ goes out after a keepalive without writing,
    /// and the connection is given up a keepalive after an unanswered one,
    /// or after a CONNECT that no CONNACK answered.
    pub fn timeout(&mut self, now: Instant) {
        let Some(keep_alive) = self.keep_alive() else { return };
        let due = |since: Instant| now.saturating_duration_since(since) >= keep_alive;
        match (self.link, self.ping_sent) {
            (Link::Down, _) => {}
            (_, Some(sent)) if due(sent) => self.lose(LostReason::PingTimeout),
            (_, Some(_)) => {}
            (Link::Connecting, None) if due(self.last_sent) => self.lose(LostReason::ConnAckTimeout),
            (Link::Up, None) if due(self.last_sent) => {
                self.send(now, &Packet::PingReq);
                self.ping_sent = Some(now);
            }
            (Link::Connecting | Link::Up, None) => {}
        }
    }

    /// With [`ClientOptions::manual_ack`]: the application has the
    /// message `id` delivered at `qos`; its PUBACK or PUBREC goes out now,
    /// or, if the connection is down, when the server sends it again.
    pub fn acknowledge(&mut self, now: Instant, id: PacketId, qos: QoS) {
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                if self.link == Link::Up {
                    self.send(now, &Packet::PubAck(id));
                }
            }
            QoS::ExactlyOnce => {
                if let Some(acknowledged) = self.incoming.get_mut(&id) {
                    *acknowledged = true;
                    if self.link == Link::Up {
                        self.send(now, &Packet::PubRec(id));
                    }
                }
            }
        }
    }

    /// Bytes to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// QoS 1/2 messages not yet acknowledged: in flight and waiting.
    pub fn unacknowledged(&self) -> usize {
        self.inflight.len() + self.waiting.len()
    }

    fn next_order(&mut self) -> u64 {
        self.made += 1;
        self.made
    }

    fn keep_alive(&self) -> Option<Duration> {
        (self.options.keep_alive != 0).then(|| Duration::from_secs(u64::from(self.options.keep_alive)))
    }

    fn send(&mut self, now: Instant, packet: &Packet) {
        packet.encode(&mut self.output);
        self.last_sent = now;
    }

    fn lose(&mut self, reason: LostReason) {
        self.connection_lost();
        self.events.push_back(ClientEvent::Lost(reason));
    }

    fn request(&mut self, now: Instant, request: Request) {
        let send = match self.link {
            Link::Up => true,
            Link::Connecting => self.options.pipeline,
            Link::Down => false,
        };
        if send {
            self.send(now, &request_packet(&request));
        }
        let order = self.next_order();
        self.requests.push_back((order, request, send));
    }

    /// A packet id no message or request holds, counting from the last.
    fn take_id(&mut self) -> Option<PacketId> {
        let in_use = |id: PacketId| {
            self.inflight.iter().any(|o| o.publish.packet_id == Some(id))
                || self.waiting.iter().any(|(_, p)| p.packet_id == Some(id))
                || self.requests.iter().any(|(_, r, _)| r.packet_id() == id)
        };
        let mut id = self.next_id;
        for _ in 0..u16::MAX {
            if !in_use(id) {
                self.next_id = id.next();
                return Some(id);
            }
            id = id.next();
        }
        None
    }

    /// Moves waiting messages into the window and sends them.
    fn fill_window(&mut self, now: Instant) {
        let max = self.options.max_inflight;
        while (max == 0 || self.inflight.len() < max)
            && let Some((order, publish)) = self.waiting.pop_front()
        {
            let mut out = Outgoing { order, publish, released: false, sent: false };
            if self.link == Link::Up {
                self.send(now, &Packet::Publish(out.publish.clone()));
                out.sent = true;
            }
            self.inflight.push_back(out);
        }
    }

    fn handle(&mut self, now: Instant, packet: Packet) -> Result<(), LostReason> {
        if self.link == Link::Connecting {
            let Packet::ConnAck(connack) = packet else { return Err(LostReason::Unexpected(packet.name())) };
            self.connected(now, connack);
            return Ok(());
        }
        match packet {
            Packet::Publish(publish) => self.deliver(now, publish),
            Packet::PubAck(id) => self.acknowledged(now, id, QoS::AtLeastOnce),
            Packet::PubRec(id) => {
                if let Some(out) = self.inflight.iter_mut().find(|o| o.publish.packet_id == Some(id)) {
                    out.released = true;
                }
                // Answered even for an id not in flight, as MQTT asks of the
                // sender's side: the server may have kept it from before.
                self.send(now, &Packet::PubRel(id));
            }
            Packet::PubRel(id) => {
                self.incoming.remove(&id);
                self.send(now, &Packet::PubComp(id));
            }
            Packet::PubComp(id) => self.acknowledged(now, id, QoS::ExactlyOnce),
            Packet::SubAck(suback) => {
                if self.answered(suback.packet_id) {
                    self.events.push_back(ClientEvent::Subscribed(suback));
                }
            }
            Packet::UnsubAck(id) => {
                if self.answered(id) {
                    self.events.push_back(ClientEvent::Unsubscribed(id));
                }
            }
            Packet::PingResp => self.ping_sent = None,
            other => return Err(LostReason::Unexpected(other.name())),
        }
        Ok(())
    }

    fn connected(&mut self, now: Instant, connack: ConnAck) {
        if connack.code != ConnectReturnCode::Accepted {
            self.connection_lost();
            self.events.push_back(ClientEvent::Refused(connack.code));
            return;
        }
        self.link = Link::Up;
        if !connack.session_present {
            // The server holds no half-received QoS 2 message of ours.
            self.incoming.clear();
        }
        self.events.push_back(ClientEvent::Connected { session_present: connack.session_present });
        // What the last connection left and what waited for this one, in
        // the order it was made ([MQTT-4.4.0-1] for the messages).
        let mut pending: Vec<(u64, Packet)> = Vec::new();
        for out in &mut self.inflight {
            let packet = match out.publish.packet_id {
                Some(id) if out.released => Packet::PubRel(id),
                _ => Packet::Publish(Publish { dup: out.sent, ..out.publish.clone() }),
            };
            out.sent = true;
            pending.push((out.order, packet));
        }
        for (order, request, sent) in &mut self.requests {
            if !std::mem::replace(sent, true) {
                pending.push((*order, request_packet(request)));
            }
        }
        pending.extend(self.unsent.drain(..).map(|(order, publish)| (order, Packet::Publish(publish))));
        pending.sort_by_key(|(order, _)| *order);
        for (_, packet) in pending {
            self.send(now, &packet);
        }
        self.fill_window(now);
    }

    fn deliver(&mut self, now: Instant, publish: Publish) {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => {
                self.events.push_back(ClientEvent::Message(publish));
                if !self.options.manual_ack {
                    self.send(now, &Packet::PubAck(id));
                }
            }
            (QoS::ExactlyOnce, Some(id)) => {
                // Delivered once: a PUBLISH under an id awaiting its PUBREL
                // is the same message again ([MQTT-4.3.3-2]), answered once
                // the application has it.
                let acknowledged = match self.incoming.get(&id) {
                    Some(&acknowledged) => acknowledged,
                    None => {
                        self.incoming.insert(id, !self.options.manual_ack);
                        self.events.push_back(ClientEvent::Message(publish));
                        !self.options.manual_ack
                    }
                };
                if acknowledged {
                    self.send(now, &Packet::PubRec(id));
                }
            }
            _ => self.events.push_back(ClientEvent::Message(publish)),
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2) for `id`.
    fn acknowledged(&mut self, now: Instant, id: PacketId, qos: QoS) {
        let found = self.inflight.iter().position(|o| o.publish.packet_id == Some(id) && o.publish.qos == qos);
        if let Some(at) = found {
            self.inflight.remove(at);
            self.events.push_back(ClientEvent::Published(id));
            self.fill_window(now);
        }
    }

    /// Whether `id` answered a request still open (and closes it).
    fn answered(&mut self, id: PacketId) -> bool {
        let found = self.requests.iter().position(|(_, r, _)| r.packet_id() == id);
        found.and_then(|at| self.requests.remove(at)).is_some()
    }
}

fn request_packet(request: &Request) -> Packet {
    match request {
        Request::Subscribe(s) => Packet::Subscribe(s.clone()),
        Request::Unsubscribe(u) => Packet::Unsubscribe(u.clone()),
    }
}
