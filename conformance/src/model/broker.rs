//! The model's state (sessions, connections, retained messages, the time)
//! and its operations. Each `pub fn` is one thing a client does, or time
//! passing; it returns what every connection observes because of it.

use std::collections::{BTreeMap, VecDeque};

use super::topic::matches;

/// One connection of a client: its id and how many times it connected
/// before (a takeover leaves the old connection and makes a new one).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    /// The client id.
    pub client: String,
    /// 0 for its first connection, then 1, 2, ...
    pub generation: u32,
}

/// What identifies a copy in a session, for acknowledgements: the
/// message (topic, payload), and how the copy was sent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    /// The topic name.
    pub topic: String,
    /// The payload (the tests make each one unique, but for deletions).
    pub payload: Vec<u8>,
    /// The QoS of the copy.
    pub qos: u8,
    /// The RETAIN flag of the copy.
    pub retain: bool,
}

/// A packet, or the end of the connection, as its client observes it.
/// Packet identifiers are left out: the comparison maps them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// CONNACK with return code 0 and this Session Present.
    ConnAck {
        /// Session Present.
        session_present: bool,
    },
    /// SUBACK with these return codes.
    SubAck(Vec<u8>),
    /// UNSUBACK.
    UnsubAck,
    /// A copy of a message.
    Publish {
        /// Topic, payload, QoS and RETAIN.
        key: Key,
        /// DUP.
        dup: bool,
    },
    /// PUBREL for the QoS 2 copy `key`.
    PubRel(Key),
    /// PUBACK for the client's own QoS 1 PUBLISH.
    PubAck,
    /// PUBREC for the client's own QoS 2 PUBLISH.
    PubRec,
    /// PUBCOMP for the client's own PUBREL.
    PubComp,
    /// The broker closed the connection.
    Closed,
}

/// The acknowledgement a client sends for a copy it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// PUBACK for a QoS 1 copy.
    PubAck,
    /// PUBREC for a QoS 2 copy.
    PubRec,
    /// PUBCOMP after the broker's PUBREL.
    PubComp,
}

/// A will, as CONNECT carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: u8,
    /// Its retain flag.
    pub retain: bool,
}

/// A message as the broker takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its QoS.
    pub qos: u8,
    /// When its payload's `expired_at` says it expires, in milliseconds of
    /// the model's time (`None`: it does not).
    pub expires_at: Option<u64>,
}

/// Where a copy in flight stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Sent, PUBACK (QoS 1) or PUBREC (QoS 2) awaited.
    Sent,
    /// PUBREC received, PUBREL sent, PUBCOMP awaited.
    Released,
}

#[derive(Debug, Clone)]
struct Copy {
    key: Key,
    stage: Stage,
    expires_at: Option<u64>,
}

/// A copy waiting for room in the window.
#[derive(Debug, Clone)]
struct Queued {
    key: Key,
    expires_at: Option<u64>,
}

#[derive(Debug, Default)]
struct Session {
    clean: bool,
    /// Filter → granted QoS.
    subscriptions: BTreeMap<String, u8>,
    /// QoS 1 and 2 copies sent and not completed, in send order.
    inflight: Vec<Copy>,
    /// QoS 1 and 2 copies waiting for room in the window, in order.
    queue: VecDeque<Queued>,
    /// The client's own QoS 2 messages by packet id: PUBREC sent, PUBREL
    /// awaited; the message itself while not routed yet.
    unreleased: BTreeMap<u16, Option<(Message, bool)>>,
}

#[derive(Debug)]
struct Connection {
    generation: u32,
    will: Option<Will>,
    /// Its keepalive in seconds, 0 for none.
    keep_alive: u16,
    /// When its client last sent a packet.
    last_heard: u64,
    /// Its place among every connection made, oldest first.
    seq: u64,
}

impl Connection {
    /// [MQTT-3.1.2-24]: when the broker must close it if nothing comes,
    /// one and a half keepalive periods after the last packet.
    fn silence_deadline(&self) -> Option<u64> {
        (self.keep_alive > 0).then(|| self.last_heard + u64::from(self.keep_alive) * 1500)
    }
}

/// How a broker may deliver a message matching several subscriptions of
/// one session ([MQTT-3.3.5-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// One copy, at the highest QoS of the matching subscriptions.
    HighestQos,
    /// One copy per matching subscription, each at its own QoS (in filter
    /// order).
    PerSubscription,
}

/// When a broker may route an incoming QoS 2 message ([MQTT-4.3.3-2]:
/// either method of figure 4.3 is allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos2Routing {
    /// When its PUBLISH arrives (the id then only guards against a
    /// duplicate until PUBREL).
    OnPublish,
    /// When its PUBREL arrives.
    OnPubRel,
}

/// The outcomes the standard leaves open, as settings: the brokers the
/// standard allows (on these points) are the models over every
/// `Choices`; [`Choices::CULEX`] is the one the core documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choices {
    /// Overlapping subscriptions.
    pub overlap: Overlap,
    /// Incoming QoS 2 messages.
    pub qos2_routing: Qos2Routing,
}

impl Choices {
    /// Culex's (and Mosquitto's): one copy at the highest QoS, QoS 2
    /// routed on PUBREL.
    pub const CULEX: Self = Self { overlap: Overlap::HighestQos, qos2_routing: Qos2Routing::OnPubRel };
}

/// The model broker. See the [module docs](super).
#[derive(Debug)]
pub struct Model {
    /// The in-flight window (`max_inflight_messages`).
    window: usize,
    choices: Choices,
    sessions: BTreeMap<String, Session>,
    connections: BTreeMap<String, Connection>,
    /// Connections each client id has had.
    generations: BTreeMap<String, u32>,
    retained: BTreeMap<String, Message>,
    /// Milliseconds since the model started.
    now: u64,
    /// Connections made so far.
    connections_made: u64,
    seen: Vec<(Endpoint, Seen)>,
}

impl Model {
    /// An empty broker whose sessions have `window` copies in flight at
    /// most, deciding as `choices` say where the standard leaves it open.
    pub fn new(window: usize, choices: Choices) -> Self {
        Self {
            window: window.max(1),
            choices,
            sessions: BTreeMap::new(),
            connections: BTreeMap::new(),
            generations: BTreeMap::new(),
            retained: BTreeMap::new(),
            now: 0,
            connections_made: 0,
            seen: Vec::new(),
        }
    }

    /// Milliseconds since the model started.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Whether `client` has a connection open.
    pub fn is_connected(&self, client: &str) -> bool {
        self.connections.contains_key(client)
    }

    /// `client` connects, with a clean session or not, maybe a will, and a
    /// keepalive in seconds (0 for none).
    pub fn connect(&mut self, client: &str, clean: bool, will: Option<Will>, keep_alive: u16) -> Vec<(Endpoint, Seen)> {
        if self.connections.contains_key(client) {
            // [MQTT-3.1.4-2]: the connection already open is closed. It
            // ended without DISCONNECT, so its will is published
            // ([MQTT-3.1.2-8]). Choice: before the new session is set up.
            self.close(client, true);
        }
        // [MQTT-3.1.2-6]: a clean session discards the stored one.
        // [MQTT-3.1.2-4]: otherwise the stored session is resumed.
        if clean {
            self.sessions.remove(client);
        }
        let generation = {
            let next = self.generations.entry(client.to_owned()).or_insert(0);
            *next += 1;
            *next - 1
        };
        self.connections_made += 1;
        let connection = Connection { generation, will, keep_alive, last_heard: self.now, seq: self.connections_made };
        self.connections.insert(client.to_owned(), connection);
        let resumed = self.sessions.contains_key(client);
        let session = self.sessions.entry(client.to_owned()).or_default();
        session.clean = clean;
        // [MQTT-3.1.4-4], [MQTT-3.2.2-1], [MQTT-3.2.2-2], [MQTT-3.2.2-3].
        self.observe(client, Seen::ConnAck { session_present: !clean && resumed });
        // [MQTT-4.4.0-1]: copies in flight are sent again, in their
        // order ([MQTT-4.6.0-1]): a PUBLISH not acknowledged with DUP 1
        // ([MQTT-3.3.1-1]), a PUBREL for one whose PUBREC came.
        // Payload expiry (DESIGN.md): a PUBLISH whose message expired
        // meanwhile is dropped instead; a PUBREL carries no message and
        // goes.
        let now = self.now;
        let Some(session) = self.sessions.get_mut(client) else { return self.take() };
        session.inflight.retain(|copy| copy.stage == Stage::Released || !is_expired(copy.expires_at, now));
        let resend: Vec<Seen> = session
            .inflight
            .iter()
            .map(|copy| match copy.stage {
                Stage::Sent => Seen::Publish { key: copy.key.clone(), dup: true },
                Stage::Released => Seen::PubRel(copy.key.clone()),
            })
            .collect();
        for seen in resend {
            self.observe(client, seen);
        }
        // [MQTT-3.1.2-5]: then what was kept while it was away.
        self.pump(client);
        self.take()
    }

    /// `client` subscribes to `filter` with `qos`.
    pub fn subscribe(&mut self, client: &str, filter: &str, qos: u8) -> Vec<(Endpoint, Seen)> {
        self.heard(client);
        let Some(session) = self.sessions.get_mut(client) else { return self.take() };
        // [MQTT-3.8.4-3]: subscribing to the same filter again replaces
        // the subscription. The full QoS asked for is granted
        // ([MQTT-3.8.4-5]: Culex has no lower maximum by default).
        session.subscriptions.insert(filter.to_owned(), qos);
        // [MQTT-3.8.4-1], [MQTT-3.9.3-1].
        self.observe(client, Seen::SubAck(vec![qos]));
        // [MQTT-3.3.1-6], [MQTT-3.8.4-3]: every retained message matching
        // the filter, at the lower of its QoS and the granted one
        // ([MQTT-3.8.4-6]), with RETAIN 1 ([MQTT-3.3.1-8]). Choice: after
        // the SUBACK, in topic-name order (a BTreeMap's). One that expired
        // is dropped like any expired copy (see `deliver`).
        let found: Vec<Message> = self.retained.values().filter(|m| matches(filter, &m.topic)).cloned().collect();
        for message in found {
            let key = Key { qos: message.qos.min(qos), retain: true, topic: message.topic, payload: message.payload };
            self.deliver(client, key, message.expires_at);
        }
        self.take()
    }

    /// `client` unsubscribes from `filter`.
    pub fn unsubscribe(&mut self, client: &str, filter: &str) -> Vec<(Endpoint, Seen)> {
        // [MQTT-3.10.4-1]: only the identical filter is removed;
        // [MQTT-3.10.4-2]: no new copy comes through it; copies already in
        // flight or queued stay (choice within [MQTT-3.10.4-3]).
        self.heard(client);
        if let Some(session) = self.sessions.get_mut(client) {
            session.subscriptions.remove(filter);
        }
        // [MQTT-3.10.4-4], [MQTT-3.10.4-5]: UNSUBACK in every case.
        self.observe(client, Seen::UnsubAck);
        self.take()
    }

    /// `client` publishes `message`. For QoS 2 the message waits for
    /// [`release`](Self::release) under its packet id `id` (the only
    /// packet id the model knows: the client chose it).
    pub fn publish(&mut self, client: &str, id: u16, message: Message, retain: bool) -> Vec<(Endpoint, Seen)> {
        self.heard(client);
        let qos = message.qos;
        match qos {
            0 => self.route(message, retain),
            1 => {
                // [MQTT-4.3.2-2]. Choice: PUBACK after routing.
                self.route(message, retain);
                self.observe(client, Seen::PubAck);
            }
            _ => {
                // [MQTT-4.3.3-2]: PUBREC for the PUBLISH; the message is
                // routed now or on PUBREL, as the choice says; its id is
                // held until PUBREL either way.
                let waiting = match self.choices.qos2_routing {
                    Qos2Routing::OnPublish => {
                        self.route(message, retain);
                        None
                    }
                    Qos2Routing::OnPubRel => Some((message, retain)),
                };
                if let Some(session) = self.sessions.get_mut(client) {
                    session.unreleased.insert(id, waiting);
                }
                self.observe(client, Seen::PubRec);
            }
        }
        self.take()
    }

    /// `client` sends PUBREL for its QoS 2 message `id` (perhaps on a
    /// later connection, [MQTT-4.4.0-1]): the message is routed once
    /// ([MQTT-4.3.3-2]), then PUBCOMP is sent, also for a message the
    /// session no longer holds (a clean session ended).
    pub fn release(&mut self, client: &str, id: u16) -> Vec<(Endpoint, Seen)> {
        self.heard(client);
        let held = self.sessions.get_mut(client).and_then(|session| session.unreleased.remove(&id)).flatten();
        if let Some((message, retain)) = held {
            self.route(message, retain);
        }
        self.observe(client, Seen::PubComp);
        self.take()
    }

    /// `client` acknowledges the copy `key` it received.
    pub fn ack(&mut self, client: &str, key: &Key, kind: AckKind) -> Vec<(Endpoint, Seen)> {
        self.heard(client);
        let Some(session) = self.sessions.get_mut(client) else { return self.take() };
        let wanted = match kind {
            AckKind::PubAck | AckKind::PubRec => Stage::Sent,
            AckKind::PubComp => Stage::Released,
        };
        let Some(at) = session.inflight.iter().position(|c| &c.key == key && c.stage == wanted) else {
            // An acknowledgement for nothing in flight is ignored (Culex's
            // choice; the standard says nothing).
            return self.take();
        };
        match kind {
            // [MQTT-4.3.2-1], [MQTT-4.3.3-1]: the delivery is complete.
            AckKind::PubAck | AckKind::PubComp => {
                session.inflight.remove(at);
                self.pump(client);
            }
            // [MQTT-4.3.3-1]: PUBREC is answered with PUBREL.
            AckKind::PubRec => {
                session.inflight[at].stage = Stage::Released;
                self.observe(client, Seen::PubRel(key.clone()));
            }
        }
        self.take()
    }

    /// `client` sends DISCONNECT: the broker closes the connection and
    /// publishes no will ([MQTT-3.1.2-10]).
    pub fn disconnect(&mut self, client: &str) -> Vec<(Endpoint, Seen)> {
        if self.connections.contains_key(client) {
            self.close(client, false);
        }
        self.take()
    }

    /// The network drops `client`'s connection: its will is published
    /// ([MQTT-3.1.2-8]). Nothing is observed on the connection itself.
    pub fn drop_connection(&mut self, client: &str) -> Vec<(Endpoint, Seen)> {
        if let Some(connection) = self.connections.remove(client) {
            self.end_session(client);
            if let Some(will) = connection.will {
                self.publish_will(will);
            }
        }
        self.take()
    }

    /// Time passes: `millis` milliseconds. [MQTT-3.1.2-24]: every
    /// connection silent for one and a half keepalive periods is closed by
    /// the broker at that moment, as if the network had failed, so its will
    /// is published ([MQTT-3.1.2-8]). Choice: connections due at the same
    /// moment close in the order they were made.
    pub fn advance(&mut self, millis: u64) -> Vec<(Endpoint, Seen)> {
        let target = self.now + millis;
        loop {
            let due = self
                .connections
                .iter()
                .filter_map(|(client, c)| Some((c.silence_deadline()?, c.seq, client.clone())))
                .min();
            match due {
                Some((at, _, client)) if at <= target => {
                    self.now = self.now.max(at);
                    self.close(&client, true);
                }
                _ => break,
            }
        }
        self.now = target;
        self.take()
    }

    /// A packet from `client` arrived now.
    fn heard(&mut self, client: &str) {
        if let Some(connection) = self.connections.get_mut(client) {
            connection.last_heard = self.now;
        }
    }

    /// The broker closes `client`'s connection (after DISCONNECT, on
    /// takeover, or when its keepalive ran out); with `will`, its will is
    /// published.
    fn close(&mut self, client: &str, will: bool) {
        self.observe(client, Seen::Closed);
        let Some(connection) = self.connections.remove(client) else { return };
        self.end_session(client);
        if let Some(w) = connection.will.filter(|_| will) {
            self.publish_will(w);
        }
    }

    /// [MQTT-3.1.2-6]: a clean session ends with its connection;
    /// [MQTT-3.1.2-4]: another is kept.
    fn end_session(&mut self, client: &str) {
        if self.sessions.get(client).is_some_and(|s| s.clean) {
            self.sessions.remove(client);
        }
    }

    /// [MQTT-3.1.2-16], [MQTT-3.1.2-17]: a will is published with its own
    /// QoS and retain flag.
    fn publish_will(&mut self, will: Will) {
        let message = Message { topic: will.topic, payload: will.payload, qos: will.qos, expires_at: None };
        self.route(message, will.retain);
    }

    /// A message the broker takes: retained if asked, then a copy for
    /// every session with a matching subscription ([MQTT-4.5.0-1]).
    fn route(&mut self, message: Message, retain: bool) {
        if retain {
            if message.payload.is_empty() {
                // [MQTT-3.3.1-10], [MQTT-3.3.1-11]: an empty payload
                // deletes and is not kept.
                self.retained.remove(&message.topic);
            } else {
                // [MQTT-3.3.1-5], [MQTT-3.3.1-7]: kept with its QoS,
                // replacing the one before. One that expires stays, but no
                // copy of it goes out once expired (see `deliver`): the
                // same, for every client, as deleted then.
                self.retained.insert(message.topic.clone(), message.clone());
            }
        }
        // [MQTT-3.3.1-12]: RETAIN 0 leaves the retained messages alone.
        let clients: Vec<String> = self.sessions.keys().cloned().collect();
        for client in clients {
            let matching: Vec<u8> = self.sessions[&client]
                .subscriptions
                .iter()
                .filter(|(filter, _)| matches(filter, &message.topic))
                .map(|(_, qos)| *qos)
                .collect();
            // [MQTT-3.3.5-1]: one copy at the highest QoS, or one per
            // subscription, as the choice says.
            let granted: Vec<u8> = match self.choices.overlap {
                Overlap::HighestQos => matching.into_iter().max().into_iter().collect(),
                Overlap::PerSubscription => matching,
            };
            for granted in granted {
                // [MQTT-3.8.4-6]: at the lower of the message's QoS and the
                // granted one; [MQTT-3.3.1-9]: RETAIN 0 on copies for
                // existing subscriptions.
                let key = Key {
                    topic: message.topic.clone(),
                    payload: message.payload.clone(),
                    qos: message.qos.min(granted),
                    retain: false,
                };
                self.deliver(&client, key, message.expires_at);
            }
        }
    }

    /// Gives the copy `key` to `client`'s session. Payload expiry
    /// (DESIGN.md): a copy whose message expired is dropped when it would
    /// be sent for the first time, now or once out of the queue.
    fn deliver(&mut self, client: &str, key: Key, expires_at: Option<u64>) {
        let connected = self.connections.contains_key(client);
        let expired = is_expired(expires_at, self.now);
        let window = self.window;
        let Some(session) = self.sessions.get_mut(client) else { return };
        if key.qos == 0 {
            // Choice: QoS 0 goes out at once, DUP 0 ([MQTT-3.3.1-2]), and
            // is not kept for a disconnected session.
            if connected && !expired {
                self.observe(client, Seen::Publish { key, dup: false });
            }
            return;
        }
        // [MQTT-4.6.0-6]: nothing overtakes a queued copy; [MQTT-3.1.2-5]:
        // a disconnected session keeps it.
        if connected && session.queue.is_empty() && session.inflight.len() < window {
            if expired {
                return;
            }
            session.inflight.push(Copy { key: key.clone(), stage: Stage::Sent, expires_at });
            // [MQTT-4.3.2-1], [MQTT-4.3.3-1]: first sent with DUP 0.
            self.observe(client, Seen::Publish { key, dup: false });
        } else {
            session.queue.push_back(Queued { key, expires_at });
        }
    }

    /// Sends queued copies while the window has room and the client is
    /// connected, in order ([MQTT-4.6.0-6]), dropping those that expired.
    fn pump(&mut self, client: &str) {
        if !self.connections.contains_key(client) {
            return;
        }
        let window = self.window;
        let now = self.now;
        let mut sent = Vec::new();
        if let Some(session) = self.sessions.get_mut(client) {
            while session.inflight.len() < window {
                let Some(Queued { key, expires_at }) = session.queue.pop_front() else { break };
                if is_expired(expires_at, now) {
                    continue;
                }
                session.inflight.push(Copy { key: key.clone(), stage: Stage::Sent, expires_at });
                sent.push(key);
            }
        }
        for key in sent {
            self.observe(client, Seen::Publish { key, dup: false });
        }
    }

    fn observe(&mut self, client: &str, seen: Seen) {
        let generation = self.connections.get(client).map_or(0, |c| c.generation);
        self.seen.push((Endpoint { client: client.to_owned(), generation }, seen));
    }

    fn take(&mut self) -> Vec<(Endpoint, Seen)> {
        std::mem::take(&mut self.seen)
    }
}

/// Payload expiry (DESIGN.md): a message whose `expired_at` has come
/// (at or before now) is expired.
fn is_expired(expires_at: Option<u64>, now: u64) -> bool {
    expires_at.is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use super::{Choices, Endpoint, Key, Message, Model, Overlap, Qos2Routing, Seen, Will};

    fn at(client: &str, generation: u32, seen: Seen) -> (Endpoint, Seen) {
        (Endpoint { client: client.to_owned(), generation }, seen)
    }

    fn copy(topic: &str, payload: &str, qos: u8, retain: bool, dup: bool) -> Seen {
        Seen::Publish { key: Key { topic: topic.to_owned(), payload: payload.into(), qos, retain }, dup }
    }

    fn message(topic: &str, payload: &str, qos: u8, expires_at: Option<u64>) -> Message {
        Message { topic: topic.to_owned(), payload: payload.into(), qos, expires_at }
    }

    fn will(topic: &str, payload: &str, qos: u8) -> Option<Will> {
        Some(Will { topic: topic.to_owned(), payload: payload.into(), qos, retain: false })
    }

    #[test]
    fn a_takeover_closes_the_old_connection_and_publishes_its_will() {
        let mut model = Model::new(2, Choices::CULEX);
        model.connect("s", true, None, 0);
        model.subscribe("s", "w/#", 1);
        model.connect("a", true, will("w/a", "gone", 1), 0);
        assert_eq!(
            model.connect("a", true, None, 0),
            vec![
                at("a", 0, Seen::Closed),
                at("s", 0, copy("w/a", "gone", 1, false, false)),
                at("a", 1, Seen::ConnAck { session_present: false }),
            ]
        );
    }

    #[test]
    fn disconnect_discards_the_will_and_a_drop_publishes_it() {
        let mut model = Model::new(2, Choices::CULEX);
        model.connect("s", true, None, 0);
        model.subscribe("s", "#", 0);
        model.connect("a", true, will("w", "1", 0), 0);
        assert_eq!(model.disconnect("a"), vec![at("a", 0, Seen::Closed)]);
        model.connect("a", true, will("w", "2", 0), 0);
        assert_eq!(model.drop_connection("a"), vec![at("s", 0, copy("w", "2", 0, false, false))]);
    }

    #[test]
    fn a_stored_session_keeps_qos_1_copies_and_resends_the_unacknowledged_one() {
        let mut model = Model::new(1, Choices::CULEX);
        model.connect("s", false, None, 0);
        model.subscribe("s", "t", 2);
        model.connect("p", true, None, 0);
        model.publish("p", 1, message("t", "1", 1, None), false);
        model.drop_connection("s");
        model.publish("p", 0, message("t", "2", 0, None), false);
        model.publish("p", 2, message("t", "3", 1, None), false);
        assert_eq!(
            model.connect("s", false, None, 0),
            vec![at("s", 1, Seen::ConnAck { session_present: true }), at("s", 1, copy("t", "1", 1, false, true)),]
        );
        let first = Key { topic: "t".into(), payload: b"1".to_vec(), qos: 1, retain: false };
        assert_eq!(model.ack("s", &first, super::AckKind::PubAck), vec![at("s", 1, copy("t", "3", 1, false, false))]);
    }

    #[test]
    fn the_other_choices_give_a_copy_per_subscription_and_route_qos_2_on_publish() {
        let choices = Choices { overlap: Overlap::PerSubscription, qos2_routing: Qos2Routing::OnPublish };
        let mut model = Model::new(2, choices);
        model.connect("s", true, None, 0);
        model.subscribe("s", "t", 0);
        model.subscribe("s", "#", 2);
        model.connect("p", true, None, 0);
        assert_eq!(
            model.publish("p", 1, message("t", "1", 2, None), false),
            vec![
                at("s", 0, copy("t", "1", 2, false, false)),
                at("s", 0, copy("t", "1", 0, false, false)),
                at("p", 0, Seen::PubRec),
            ]
        );
        assert_eq!(model.release("p", 1), vec![at("p", 0, Seen::PubComp)]);
    }

    #[test]
    fn a_silent_connection_is_closed_after_one_and_a_half_keepalives_and_its_will_published() {
        let mut model = Model::new(2, Choices::CULEX);
        model.connect("s", true, None, 0);
        model.subscribe("s", "w", 0);
        model.connect("a", true, will("w", "gone", 0), 2);
        assert_eq!(model.advance(2_999), vec![]);
        model.subscribe("a", "x", 0);
        assert_eq!(model.advance(2_999), vec![], "the SUBSCRIBE was heard: 3 s from then");
        assert_eq!(model.advance(1), vec![at("a", 0, Seen::Closed), at("s", 0, copy("w", "gone", 0, false, false))]);
        assert!(!model.is_connected("a"));
    }

    #[test]
    fn an_expired_message_is_not_sent_first_nor_again_and_not_kept_retained() {
        let mut model = Model::new(1, Choices::CULEX);
        model.connect("s", false, None, 0);
        model.subscribe("s", "t", 1);
        model.connect("p", true, None, 0);
        model.publish("p", 1, message("t", "1", 1, Some(5_000)), false);
        model.publish("p", 2, message("t", "2", 1, Some(5_000)), false);
        model.publish("p", 3, message("t", "3", 1, None), false);
        model.drop_connection("s");
        model.advance(5_000);
        assert_eq!(
            model.connect("s", false, None, 0),
            vec![at("s", 1, Seen::ConnAck { session_present: true }), at("s", 1, copy("t", "3", 1, false, false))],
            "1 in flight and 2 queued expired; 3 goes"
        );
        model.publish("p", 4, message("r", "4", 1, Some(5_000)), true);
        model.publish("p", 5, message("q", "5", 1, Some(6_000)), true);
        model.advance(1_000);
        assert_eq!(model.subscribe("s", "#", 0), vec![at("s", 1, Seen::SubAck(vec![0]))]);
    }
}
