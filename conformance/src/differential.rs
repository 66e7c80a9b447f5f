//! Differential testing: the same operations run through the core (its
//! [`Simulation`]) and through the reference [`Model`]; after every
//! operation each connection must have observed exactly what the model
//! says, in the same order.
//!
//! Three clients (`a`, `b`, `c`) connect with keepalive 0 or
//! [`KEEP_ALIVE`] and never answer by themselves: acknowledgements are
//! operations of their own, and they send no PINGREQ, so time passing
//! closes a connection with a keepalive that stays silent.
//! They use topics and filters from a small alphabet, so that filters
//! overlap, wildcards meet `$` topics and retained messages are found
//! again. Every payload is unique (`m<n>`, wills `w<n>`) but the empty
//! ones, which delete retained messages; a message that expires carries
//! it as JSON, `{"expired_at":<unix time>,"m":"m<n>"}`.
//!
//! [`Op::decode`] reads operations from bytes for the fuzz target; the
//! quickcheck property builds them itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use culex_core::codec::{LastWill, Packet, Publish, Subscribe, SubscribeReturnCode, Unsubscribe};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Config, ConnId, PacketId, QoS, TopicFilter, TopicName};

use crate::model::{AckKind, Choices, Endpoint, Key, Message, Model, Seen, Will};

/// The client ids.
pub const CLIENTS: [&str; 3] = ["a", "b", "c"];
/// The topics messages and wills are published on.
pub const TOPICS: [&str; 4] = ["a", "a/b", "b/a", "$x/a"];
/// The filters clients subscribe to.
pub const FILTERS: [&str; 9] = ["a", "a/b", "a/+", "+/a", "#", "+/+", "a/#", "$x/#", "+"];
/// The in-flight window of the broker under test, small so that copies
/// queue behind it.
pub const WINDOW: u16 = 2;

/// The keepalive, in seconds, of a client connecting with one.
pub const KEEP_ALIVE: u8 = 2;

/// The broker's configuration: the defaults but a small window.
pub fn config() -> Config {
    Config { max_inflight_messages: WINDOW, ..Config::default() }
}

/// One thing a client does (or time passing). Indexes wrap around the
/// alphabets above, so every value is a valid operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// CONNECT, taking over a connection still open.
    Connect {
        /// Index into [`CLIENTS`].
        client: u8,
        /// Clean session.
        clean: bool,
        /// A will: index into [`TOPICS`], QoS, retain.
        will: Option<(u8, u8, bool)>,
        /// Keepalive in seconds (0 for none).
        keep_alive: u8,
    },
    /// SUBSCRIBE to one filter.
    Subscribe {
        /// Index into [`CLIENTS`].
        client: u8,
        /// Index into [`FILTERS`].
        filter: u8,
        /// Requested QoS (0 to 2).
        qos: u8,
    },
    /// UNSUBSCRIBE from one filter.
    Unsubscribe {
        /// Index into [`CLIENTS`].
        client: u8,
        /// Index into [`FILTERS`].
        filter: u8,
    },
    /// PUBLISH; for QoS 2, PUBREL at once or later ([`Op::Release`]).
    Publish {
        /// Index into [`CLIENTS`].
        client: u8,
        /// Index into [`TOPICS`].
        topic: u8,
        /// QoS (0 to 2).
        qos: u8,
        /// RETAIN.
        retain: bool,
        /// An empty payload (deletes a retained message).
        empty: bool,
        /// For QoS 2: PUBREL right after.
        release: bool,
        /// A payload saying it expires this many seconds from now (0:
        /// expired already).
        expires_in: Option<u8>,
    },
    /// The client sends PUBREL for its oldest QoS 2 message not released.
    Release {
        /// Index into [`CLIENTS`].
        client: u8,
    },
    /// The client sends the oldest acknowledgement it owes, or all.
    Ack {
        /// Index into [`CLIENTS`].
        client: u8,
        /// Every one it owes.
        all: bool,
    },
    /// DISCONNECT.
    Disconnect {
        /// Index into [`CLIENTS`].
        client: u8,
    },
    /// The network drops the connection.
    Drop {
        /// Index into [`CLIENTS`].
        client: u8,
    },
    /// Time passes.
    Advance {
        /// Seconds.
        secs: u8,
    },
}

impl Op {
    /// Reads one operation from the front of `bytes` (missing bytes read
    /// as zero); `None` once `bytes` is empty.
    pub fn decode(bytes: &mut &[u8]) -> Option<Self> {
        let (&first, rest) = bytes.split_first()?;
        *bytes = rest;
        let mut next = || {
            let (&b, rest) = bytes.split_first().unwrap_or((&0, &[]));
            *bytes = rest;
            b
        };
        let client = first >> 4;
        Some(match first % 8 {
            0 => {
                let flags = next();
                let will = (flags & 2 != 0).then_some((flags >> 2, (flags >> 4) % 3, flags & 0x40 != 0));
                let keep_alive = if first & 8 != 0 { KEEP_ALIVE } else { 0 };
                Self::Connect { client, clean: flags & 1 != 0, will, keep_alive }
            }
            1 => {
                let b = next();
                Self::Subscribe { client, filter: b >> 2, qos: (b & 3) % 3 }
            }
            2 => Self::Unsubscribe { client, filter: next() },
            3 => {
                let b = next();
                let expiry = next();
                Self::Publish {
                    client,
                    topic: b >> 4,
                    qos: (b & 3) % 3,
                    retain: b & 4 != 0,
                    empty: b & 8 != 0,
                    release: first & 8 == 0,
                    expires_in: (expiry & 1 != 0).then_some((expiry >> 1) % 8),
                }
            }
            4 if first & 8 != 0 => Self::Release { client },
            4 => Self::Ack { client, all: next() & 1 != 0 },
            5 => Self::Disconnect { client },
            6 => Self::Drop { client },
            _ => Self::Advance { secs: next() % 8 },
        })
    }
}

/// Reads a whole sequence of operations, at most `max`.
pub fn decode_all(mut bytes: &[u8], max: usize) -> Vec<Op> {
    std::iter::from_fn(|| Op::decode(&mut bytes)).take(max).collect()
}

fn qos(bits: u8) -> QoS {
    match bits % 3 {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn pick<'a>(list: &[&'a str], index: u8) -> &'a str {
    list[usize::from(index) % list.len()]
}

/// What the test knows of one connection from its client's side.
#[derive(Debug)]
struct ClientEnd {
    endpoint: Endpoint,
    /// Index into [`CLIENTS`].
    client: usize,
    /// Acknowledgements owed, oldest first.
    owed: Vec<(PacketId, AckKind)>,
}

/// What a client keeps across its connections (its side of the session).
#[derive(Debug, Default)]
struct ClientState {
    /// Copies received with a packet id, by id.
    copies: BTreeMap<PacketId, Key>,
    /// Its QoS 2 messages sent and not released, oldest first.
    unreleased: Vec<PacketId>,
    /// The last packet id it used (ids are never reused in a run).
    last_id: u16,
}

/// The core and the model side by side.
#[derive(Debug)]
pub struct Differential {
    sim: Simulation,
    model: Model,
    /// The open connection of each client.
    current: [Option<ConnId>; 3],
    /// Every connection not known to be closed.
    ends: BTreeMap<ConnId, ClientEnd>,
    /// Per client, its side of the session.
    clients: [ClientState; 3],
    generations: [u32; 3],
    messages: u64,
}

impl Default for Differential {
    fn default() -> Self {
        Self::new()
    }
}

impl Differential {
    /// A fresh broker ([`config`]) and a fresh model making Culex's
    /// choices.
    pub fn new() -> Self {
        Self::with_choices(Choices::CULEX)
    }

    /// A fresh broker and a fresh model making `choices`.
    pub fn with_choices(choices: Choices) -> Self {
        Self::with_shards(choices, 1)
    }

    /// `shards` brokers acting as one ([`Simulation::with_shards`]) and a
    /// fresh model making `choices`: the model is one broker, so every
    /// observation must be the same as with one shard.
    pub fn with_shards(choices: Choices, shards: u16) -> Self {
        Self::around(Simulation::with_shards(config(), shards), choices)
    }

    /// `nodes` cluster nodes acting as one ([`Simulation::with_nodes`]),
    /// connections going to them in turn, and a fresh model making
    /// `choices`: the model is one broker, so every observation must be
    /// the same as with one.
    pub fn with_nodes(choices: Choices, nodes: u16) -> Self {
        Self::around(Simulation::with_nodes(config(), nodes), choices)
    }

    /// `sim`, recording its transcript, beside a fresh model making
    /// `choices`.
    fn around(mut sim: Simulation, choices: Choices) -> Self {
        sim.record();
        Self {
            sim,
            model: Model::new(usize::from(WINDOW), choices),
            current: [None; 3],
            ends: BTreeMap::new(),
            clients: Default::default(),
            generations: [0; 3],
            messages: 0,
        }
    }

    /// The core's transcript so far.
    pub fn transcript(&self) -> &str {
        self.sim.transcript()
    }

    /// Runs `op` through both and compares what every connection observed.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        let expected = self.apply(op)?;
        let observed = self.observe()?;
        let expected = by_endpoint(expected);
        if observed != expected {
            let mut text = String::new();
            let _ = writeln!(text, "the core and the model disagree after {op:?}");
            let _ = writeln!(text, "core:  {observed:?}");
            let _ = writeln!(text, "model: {expected:?}");
            return Err(text);
        }
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<Vec<(Endpoint, Seen)>, String> {
        let client_of = |c: u8| usize::from(c) % CLIENTS.len();
        let live = |this: &Self, c: usize| this.current[c];
        Ok(match *op {
            Op::Connect { client, clean, will, keep_alive } => {
                let c = client_of(client);
                let id = CLIENTS[c];
                let will = will.map(|(topic, q, retain)| {
                    self.messages += 1;
                    Will {
                        topic: pick(&TOPICS, topic).to_owned(),
                        payload: format!("w{}", self.messages).into_bytes(),
                        qos: q % 3,
                        retain,
                    }
                });
                let mut options =
                    ClientOptions::new(id).clean_session(clean).keep_alive(u16::from(keep_alive)).auto_ack(false);
                if let Some(w) = &will {
                    let topic = TopicName::new(w.topic.as_str()).map_err(|e| e.to_string())?;
                    let payload = Bytes::from(w.payload.clone());
                    options = options.will(LastWill { topic, payload, qos: qos(w.qos), retain: w.retain });
                }
                let conn = self.sim.connect(options);
                let endpoint = Endpoint { client: id.to_owned(), generation: self.generations[c] };
                self.generations[c] += 1;
                if clean {
                    let last_id = self.clients[c].last_id;
                    self.clients[c] = ClientState { last_id, ..ClientState::default() };
                }
                self.ends.insert(conn, ClientEnd { endpoint, client: c, owed: Vec::new() });
                self.current[c] = Some(conn);
                self.model.connect(id, clean, will, u16::from(keep_alive))
            }
            Op::Subscribe { client, filter, qos: q } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                let filter = pick(&FILTERS, filter);
                let packet_id = self.packet_id(c);
                let parsed = TopicFilter::new(filter).map_err(|e| e.to_string())?;
                self.sim.send(conn, &Packet::Subscribe(Subscribe { packet_id, filters: vec![(parsed, qos(q))] }));
                self.model.subscribe(CLIENTS[c], filter, q % 3)
            }
            Op::Unsubscribe { client, filter } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                let filter = pick(&FILTERS, filter);
                let packet_id = self.packet_id(c);
                let parsed = TopicFilter::new(filter).map_err(|e| e.to_string())?;
                self.sim.send(conn, &Packet::Unsubscribe(Unsubscribe { packet_id, filters: vec![parsed] }));
                self.model.unsubscribe(CLIENTS[c], filter)
            }
            Op::Publish { client, topic, qos: q, retain, empty, release, expires_in } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                let topic = pick(&TOPICS, topic);
                self.messages += 1;
                let n = self.messages;
                let payload = match expires_in {
                    _ if empty => Vec::new(),
                    None => format!("m{n}").into_bytes(),
                    Some(secs) => {
                        let at = self.sim.now().unix.as_secs_f64() + f64::from(secs);
                        format!(r#"{{"expired_at":{at},"m":"m{n}"}}"#).into_bytes()
                    }
                };
                let expires_at = expires_in.filter(|_| !empty).map(|secs| self.model.now() + u64::from(secs) * 1000);
                let q = q % 3;
                let packet_id = (q != 0).then(|| self.packet_id(c));
                let publish = Publish {
                    dup: false,
                    qos: qos(q),
                    retain,
                    topic: TopicName::new(topic).map_err(|e| e.to_string())?,
                    packet_id,
                    payload: Bytes::from(payload.clone()),
                };
                self.sim.send(conn, &Packet::Publish(publish));
                let id = packet_id.map_or(0, PacketId::get);
                let message = Message { topic: topic.to_owned(), payload, qos: q, expires_at };
                let mut seen = self.model.publish(CLIENTS[c], id, message, retain);
                if let (2, Some(id)) = (q, packet_id) {
                    self.clients[c].unreleased.push(id);
                    if release {
                        seen.extend(self.release(c, conn));
                    }
                }
                seen
            }
            Op::Release { client } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                self.release(c, conn)
            }
            Op::Ack { client, all } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                let mut seen = Vec::new();
                // What it owes now: answers that bring more (a PUBREL, a
                // copy from the queue) are owed after the next observation.
                while let Some((id, kind)) =
                    self.ends.get_mut(&conn).and_then(|end| (!end.owed.is_empty()).then(|| end.owed.remove(0)))
                {
                    let copies = &mut self.clients[c].copies;
                    let key = copies.get(&id).cloned().ok_or_else(|| format!("no copy under id {id}"))?;
                    if kind != AckKind::PubRec {
                        copies.remove(&id);
                    }
                    let packet = match kind {
                        AckKind::PubAck => Packet::PubAck(id),
                        AckKind::PubRec => Packet::PubRec(id),
                        AckKind::PubComp => Packet::PubComp(id),
                    };
                    self.sim.send(conn, &packet);
                    seen.extend(self.model.ack(CLIENTS[c], &key, kind));
                    if !all {
                        break;
                    }
                }
                seen
            }
            Op::Disconnect { client } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                self.sim.disconnect(conn);
                self.current[c] = None;
                self.model.disconnect(CLIENTS[c])
            }
            Op::Drop { client } => {
                let c = client_of(client);
                let Some(conn) = live(self, c) else { return Ok(Vec::new()) };
                self.sim.drop_connection(conn);
                self.current[c] = None;
                self.ends.remove(&conn);
                self.model.drop_connection(CLIENTS[c])
            }
            Op::Advance { secs } => {
                self.sim.advance(Duration::from_secs(u64::from(secs)));
                self.model.advance(u64::from(secs) * 1000)
            }
        })
    }

    /// A packet id client `c` has not used yet.
    fn packet_id(&mut self, c: usize) -> PacketId {
        let state = &mut self.clients[c];
        state.last_id = state.last_id % u16::MAX + 1;
        PacketId::new(state.last_id).unwrap_or(PacketId::MIN)
    }

    /// Client `c` sends PUBREL on `conn` for its oldest QoS 2 message not
    /// released.
    fn release(&mut self, c: usize, conn: ConnId) -> Vec<(Endpoint, Seen)> {
        if self.clients[c].unreleased.is_empty() {
            return Vec::new();
        }
        let id = self.clients[c].unreleased.remove(0);
        self.sim.send(conn, &Packet::PubRel(id));
        self.model.release(CLIENTS[c], id.get())
    }

    /// What each connection received since the last call, as [`Seen`]s;
    /// a connection the broker closed is forgotten afterwards.
    fn observe(&mut self) -> Result<BTreeMap<Endpoint, Vec<Seen>>, String> {
        let mut observed: BTreeMap<Endpoint, Vec<Seen>> = BTreeMap::new();
        let conns: Vec<ConnId> = self.ends.keys().copied().collect();
        for conn in conns {
            let packets = self.sim.take_received(conn);
            let closed = self.sim.closed(conn).is_some();
            let Some(end) = self.ends.get_mut(&conn) else { continue };
            let endpoint = end.endpoint.clone();
            let mut seen = Vec::new();
            for packet in packets {
                seen.push(end.seen(packet, &mut self.clients[end.client].copies)?);
            }
            if closed {
                seen.push(Seen::Closed);
                self.ends.remove(&conn);
                for current in &mut self.current {
                    if *current == Some(conn) {
                        *current = None;
                    }
                }
            }
            if !seen.is_empty() {
                observed.entry(endpoint).or_default().extend(seen);
            }
        }
        Ok(observed)
    }
}

impl ClientEnd {
    /// One packet the client received, noting what it owes for it.
    fn seen(&mut self, packet: Packet, copies: &mut BTreeMap<PacketId, Key>) -> Result<Seen, String> {
        Ok(match packet {
            Packet::ConnAck(ack) if ack.code as u8 == 0 => Seen::ConnAck { session_present: ack.session_present },
            Packet::SubAck(ack) => Seen::SubAck(
                ack.return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReturnCode::Granted(q) => q.bits(),
                        SubscribeReturnCode::Failure => 0x80,
                    })
                    .collect(),
            ),
            Packet::UnsubAck(_) => Seen::UnsubAck,
            Packet::Publish(p) => {
                let key = Key {
                    topic: p.topic.as_str().to_owned(),
                    payload: p.payload.to_vec(),
                    qos: p.qos.bits(),
                    retain: p.retain,
                };
                if let Some(id) = p.packet_id {
                    let kind = if p.qos == QoS::ExactlyOnce { AckKind::PubRec } else { AckKind::PubAck };
                    self.owed.retain(|(owed, _)| *owed != id);
                    self.owed.push((id, kind));
                    copies.insert(id, key.clone());
                }
                Seen::Publish { key, dup: p.dup }
            }
            Packet::PubRel(id) => {
                let key = copies.get(&id).cloned().ok_or_else(|| format!("PUBREL for unknown id {id}"))?;
                self.owed.retain(|(owed, _)| *owed != id);
                self.owed.push((id, AckKind::PubComp));
                Seen::PubRel(key)
            }
            Packet::PubAck(_) => Seen::PubAck,
            Packet::PubRec(_) => Seen::PubRec,
            Packet::PubComp(_) => Seen::PubComp,
            other => return Err(format!("unexpected packet {other:?}")),
        })
    }
}

fn by_endpoint(seen: Vec<(Endpoint, Seen)>) -> BTreeMap<Endpoint, Vec<Seen>> {
    let mut map: BTreeMap<Endpoint, Vec<Seen>> = BTreeMap::new();
    for (endpoint, seen) in seen {
        map.entry(endpoint).or_default().push(seen);
    }
    map
}

/// Runs `ops` from a fresh start; the first disagreement, with the core's
/// transcript.
pub fn run(ops: &[Op]) -> Result<(), String> {
    run_sharded(ops, 1)
}

/// [`run`] against `shards` brokers acting as one.
pub fn run_sharded(ops: &[Op], shards: u16) -> Result<(), String> {
    run_with(Differential::with_shards(Choices::CULEX, shards), ops)
}

/// [`run`] against `nodes` cluster nodes acting as one
/// ([`Differential::with_nodes`]).
pub fn run_nodes(ops: &[Op], nodes: u16) -> Result<(), String> {
    run_with(Differential::with_nodes(Choices::CULEX, nodes), ops)
}

fn run_with(mut diff: Differential, ops: &[Op]) -> Result<(), String> {
    for (step, op) in ops.iter().enumerate() {
        if let Err(e) = diff.step(op) {
            return Err(format!("step {step}: {e}\ntranscript:\n{}", diff.transcript()));
        }
    }
    Ok(())
}
