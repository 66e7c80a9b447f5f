//! Properties of the whole broker under random operation sequences:
//! the invariants a client and the presence store rely on hold whatever
//! clients do, in whatever order, and however the bytes are split.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quickcheck::{Arbitrary, Gen, QuickCheck};

use culex_core::codec::{Packet, Publish};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{
    Action, Broker, CloseReason, Config, ConnId, Input, Instant, Now, PacketId, Peer, QoS, TopicName, UnixTime,
};

const CLIENTS: [&str; 3] = ["a", "b", "c"];
const TOPICS: [&str; 3] = ["t/1", "t/2", "$s/x"];
const FILTERS: [&str; 6] = ["t/1", "t/+", "#", "t/#", "$s/#", "+/2"];

fn config() -> Config {
    Config { max_inflight_messages: 2, max_queued_messages: 3, ..Config::default() }
}

#[derive(Debug, Clone)]
enum Op {
    Connect { client: usize, clean: bool, keep_alive: u16, auto_ack: bool },
    Subscribe { client: usize, filter: usize, qos: QoS },
    Unsubscribe { client: usize, filter: usize },
    Publish { client: usize, topic: usize, qos: QoS, retain: bool, expiry: Expiry, twice: bool },
    Ack { client: usize },
    WrongAck { client: usize, pick: bool },
    Disconnect { client: usize },
    Drop { client: usize },
    Advance { secs: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    None,
    Past,
    Future,
}

fn qos(g: &mut Gen) -> QoS {
    *g.choose(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]).unwrap_or(&QoS::AtMostOnce)
}

fn index(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let client = index(g, CLIENTS.len());
        match u8::arbitrary(g) % 11 {
            0 | 1 => Self::Connect {
                client,
                clean: bool::arbitrary(g),
                keep_alive: *g.choose(&[0, 2, 5]).unwrap_or(&0),
                auto_ack: u8::arbitrary(g) % 3 != 0,
            },
            2 => Self::Subscribe { client, filter: index(g, FILTERS.len()), qos: qos(g) },
            3 => Self::Unsubscribe { client, filter: index(g, FILTERS.len()) },
            4 | 5 => Self::Publish {
                client,
                topic: index(g, TOPICS.len()),
                qos: qos(g),
                retain: u8::arbitrary(g) % 4 == 0,
                expiry: *g.choose(&[Expiry::None, Expiry::None, Expiry::Past, Expiry::Future]).unwrap_or(&Expiry::None),
                twice: bool::arbitrary(g),
            },
            6 => Self::Ack { client },
            7 => Self::Disconnect { client },
            8 => Self::Drop { client },
            9 => Self::Advance { secs: u64::arbitrary(g) % 4 },
            _ => Self::WrongAck { client, pick: bool::arbitrary(g) },
        }
    }
}

/// What the test knows of one connection from the client's side.
#[derive(Debug, Default)]
struct ClientView {
    connacks: usize,
    received_any: bool,
    accepted: bool,
    /// The client answers by itself: nothing it was sent stays in flight.
    auto_ack: bool,
    /// Ids of QoS 1/2 PUBLISHes received and not yet completed, with the
    /// packet the client still owes.
    owed: Vec<(PacketId, Packet)>,
}

struct World {
    sim: Simulation,
    conns: [Option<ConnId>; 3],
    views: HashMap<ConnId, ClientView>,
    next_message: u64,
    /// (subscriber client, payload) of first deliveries (DUP 0, RETAIN 0).
    firsts: BTreeSet<(usize, String)>,
    /// Last sequence seen per (subscriber, publisher, published QoS).
    order: BTreeMap<(usize, usize, u8), u64>,
    packet_ids: [u16; 3],
}

impl World {
    fn new() -> Self {
        Self {
            sim: Simulation::new(config()),
            conns: [None; 3],
            views: HashMap::new(),
            next_message: 0,
            firsts: BTreeSet::new(),
            order: BTreeMap::new(),
            packet_ids: [0; 3],
        }
    }

    fn live(&self, client: usize) -> Option<ConnId> {
        let conn = self.conns[client]?;
        (self.sim.closed(conn).is_none()).then_some(conn)
    }

    fn packet_id(&mut self, client: usize) -> PacketId {
        self.packet_ids[client] = self.packet_ids[client] % u16::MAX + 1;
        PacketId::new(self.packet_ids[client]).unwrap_or(PacketId::MIN)
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match *op {
            Op::Connect { client, clean, keep_alive, auto_ack } => {
                let options =
                    ClientOptions::new(CLIENTS[client]).clean_session(clean).keep_alive(keep_alive).auto_ack(auto_ack);
                let conn = self.sim.connect(options);
                self.views.insert(conn, ClientView { auto_ack, ..ClientView::default() });
                // A previous connection of this client, if open, is taken over.
                self.conns[client] = Some(conn);
            }
            Op::Subscribe { client, filter, qos } => {
                if let Some(conn) = self.live(client) {
                    self.sim.subscribe(conn, FILTERS[filter], qos);
                }
            }
            Op::Unsubscribe { client, filter } => {
                if let Some(conn) = self.live(client) {
                    self.sim.unsubscribe(conn, FILTERS[filter]);
                }
            }
            Op::Publish { client, topic, qos, retain, expiry, twice } => {
                let Some(conn) = self.live(client) else { return Ok(()) };
                self.next_message += 1;
                let now = self.sim.now().unix.as_secs_f64();
                let expires = match expiry {
                    Expiry::None => String::new(),
                    Expiry::Past => format!(",\"expired_at\":{}", now - 1.0),
                    Expiry::Future => format!(",\"expired_at\":{}", now + 1e6),
                };
                let kind = if expiry == Expiry::Past { "past" } else { "ok" };
                let payload = format!(
                    "{{\"seq\":{},\"from\":{client},\"qos\":{},\"k\":\"{kind}\"{expires}}}",
                    self.next_message,
                    qos.bits()
                );
                let packet_id = (qos != QoS::AtMostOnce).then(|| self.packet_id(client));
                let topic = TopicName::new(TOPICS[topic]).map_err(|e| e.to_string())?;
                let publish = Publish { dup: false, qos, retain, topic, packet_id, payload: Bytes::from(payload) };
                let mut bytes = BytesMut::new();
                Packet::Publish(publish.clone()).encode(&mut bytes);
                if twice && qos == QoS::ExactlyOnce {
                    // The same QoS 2 PUBLISH again before any PUBREL.
                    Packet::Publish(Publish { dup: true, ..publish }).encode(&mut bytes);
                }
                self.sim.send_bytes(conn, &bytes);
            }
            Op::Ack { client } => {
                let Some(conn) = self.live(client) else { return Ok(()) };
                let owed = self.views.get_mut(&conn).and_then(|v| (!v.owed.is_empty()).then(|| v.owed.remove(0)));
                if let Some((_, packet)) = owed {
                    self.sim.send(conn, &packet);
                }
            }
            Op::WrongAck { client, pick } => self.wrong_ack(client, pick)?,
            Op::Disconnect { client } => {
                if let Some(conn) = self.live(client) {
                    self.sim.disconnect(conn);
                }
            }
            Op::Drop { client } => {
                if let Some(conn) = self.live(client) {
                    self.sim.drop_connection(conn);
                    self.conns[client] = None;
                }
            }
            Op::Advance { secs } => self.sim.advance(Duration::from_secs(secs)),
        }
        self.check()
    }

    /// Answers the first message owed with an acknowledgement of another
    /// kind (never PUBREC where PUBCOMP is owed: that one is a repeat).
    /// A client answering by itself owes nothing any more, so the ack is
    /// for an id not in flight and is ignored; otherwise the flow is broken
    /// and the connection closed [MQTT-4.8.0-1].
    fn wrong_ack(&mut self, client: usize, pick: bool) -> Result<(), String> {
        let Some(conn) = self.live(client) else { return Ok(()) };
        let Some(view) = self.views.get(&conn) else { return Ok(()) };
        let Some(&(id, ref owed)) = view.owed.first() else { return Ok(()) };
        let wrong = match (owed, pick) {
            (Packet::PubAck(_), false) | (Packet::PubRec(_), true) => Packet::PubComp(id),
            (Packet::PubAck(_), true) => Packet::PubRec(id),
            _ => Packet::PubAck(id),
        };
        let in_flight = !view.auto_ack;
        self.sim.send(conn, &wrong);
        match self.sim.closed(conn) {
            Some(CloseReason::Violation(v)) if in_flight && v.statement() == "MQTT-4.8.0-1" => Ok(()),
            None if !in_flight => Ok(()),
            other => Err(format!("{conn}: {wrong:?} owing {owed:?} (in flight: {in_flight}) ended with {other:?}")),
        }
    }

    /// Reads what every client received and checks the invariants.
    fn check(&mut self) -> Result<(), String> {
        let window = usize::from(config().max_inflight_messages);
        let conns: Vec<(usize, ConnId)> =
            self.conns.iter().enumerate().filter_map(|(i, c)| c.map(|c| (i, c))).collect();
        let all: Vec<ConnId> = self.views.keys().copied().collect();
        for conn in all {
            let client = conns.iter().find(|(_, c)| *c == conn).map(|(i, _)| *i);
            for packet in self.sim.take_received(conn) {
                self.observe(client, conn, packet)?;
            }
        }
        // Inflight never exceeds the window.
        for name in CLIENTS {
            if let Some(session) = self.sim.broker().session(name)
                && session.inflight > window
            {
                return Err(format!("{name}: {} in flight, window {window}", session.inflight));
            }
        }
        // Presence equals the truth: clients with an accepted, open connection.
        let truth: BTreeSet<String> = self
            .conns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let conn = (*c)?;
                let open = self.sim.closed(conn).is_none() && self.views.get(&conn).is_some_and(|v| v.accepted);
                open.then(|| CLIENTS[i].to_owned())
            })
            .collect();
        if &truth != self.sim.online() {
            return Err(format!("presence {:?} but truth {truth:?}", self.sim.online()));
        }
        Ok(())
    }

    fn observe(&mut self, client: Option<usize>, conn: ConnId, packet: Packet) -> Result<(), String> {
        let view = self.views.entry(conn).or_default();
        let first = !view.received_any;
        view.received_any = true;
        match packet {
            Packet::ConnAck(ack) => {
                view.connacks += 1;
                if view.connacks > 1 || !first {
                    return Err(format!("{conn}: CONNACK not first or not alone"));
                }
                view.accepted = ack.code as u8 == 0;
            }
            _ if first => return Err(format!("{conn}: first packet is not CONNACK")),
            Packet::Publish(p) => {
                let payload = String::from_utf8_lossy(&p.payload).into_owned();
                if payload.contains("\"k\":\"past\"") {
                    return Err(format!("{conn}: received an expired message {payload}"));
                }
                if let Some(id) = p.packet_id {
                    let owe = match p.qos {
                        QoS::ExactlyOnce => Packet::PubRec(id),
                        _ => Packet::PubAck(id),
                    };
                    let in_use = view.owed.iter().any(|(i, _)| *i == id);
                    if in_use && !p.dup {
                        return Err(format!("{conn}: packet id {id} reused while in flight"));
                    }
                    if !in_use {
                        view.owed.push((id, owe));
                    }
                }
                let Some(subscriber) = client else { return Ok(()) };
                if !p.dup && !p.retain {
                    if !self.firsts.insert((subscriber, payload.clone())) {
                        return Err(format!("{conn}: {payload} delivered twice"));
                    }
                    if p.qos != QoS::AtMostOnce {
                        self.check_order(subscriber, &payload)?;
                    }
                }
            }
            Packet::PubRel(id) => {
                let view = self.views.entry(conn).or_default();
                view.owed.retain(|(i, _)| *i != id);
                view.owed.push((id, Packet::PubComp(id)));
            }
            _ => {}
        }
        Ok(())
    }

    /// First deliveries from one publisher at one QoS arrive in order.
    fn check_order(&mut self, subscriber: usize, payload: &str) -> Result<(), String> {
        let field = |name: &str| -> Option<u64> {
            let at = payload.find(&format!("\"{name}\":"))? + name.len() + 3;
            payload[at..].split([',', '}']).next()?.parse().ok()
        };
        let (Some(seq), Some(from), Some(qos)) = (field("seq"), field("from"), field("qos")) else {
            return Err(format!("unreadable payload {payload}"));
        };
        let key = (subscriber, from as usize, qos as u8);
        if let Some(last) = self.order.insert(key, seq)
            && last >= seq
        {
            return Err(format!("out of order: {seq} after {last} for {key:?}"));
        }
        Ok(())
    }
}

/// Clears acknowledgements owed for a connection that ended, so a later
/// connection's view starts clean (views are per connection anyway).
fn run(ops: &[Op]) -> Result<(), String> {
    let mut world = World::new();
    for (step, op) in ops.iter().enumerate() {
        world.apply(op).map_err(|e| format!("after step {step} {op:?}: {e}"))?;
        // What the limits count is what there is.
        let (broker, stats) = (world.sim.broker(), world.sim.broker().stats());
        let counted = (broker.occupancy().connections(), broker.occupancy().sessions());
        if counted != (stats.connections, stats.sessions) {
            return Err(format!("after step {step} {op:?}: counted {counted:?}, {stats:?}"));
        }
    }
    Ok(())
}

#[test]
fn random_operations_keep_the_invariants() {
    fn property(ops: Vec<Op>) -> Result<(), String> {
        run(&ops)
    }
    QuickCheck::new().quickcheck(property as fn(Vec<Op>) -> Result<(), String>);
}

// ---- chunking invariance ---------------------------------------------------

/// A fixed conversation of two clients, as raw bytes per client.
fn conversation() -> Vec<(usize, Vec<u8>)> {
    let mut sim_bytes = Vec::new();
    let encode = |p: Packet| {
        let mut b = BytesMut::new();
        p.encode(&mut b);
        b.to_vec()
    };
    let connect = |id: &str, clean: bool| encode(ClientOptions::new(id).clean_session(clean).connect_packet());
    let topic = |t: &str| TopicName::new(t).expect("valid topic");
    let filter = |f: &str| culex_core::TopicFilter::new(f).expect("valid filter");
    let id = |n: u16| PacketId::new(n).expect("non-zero");
    let publish = |t: &str, q: QoS, pid: Option<u16>, retain: bool, body: &str| {
        encode(Packet::Publish(Publish {
            dup: false,
            qos: q,
            retain,
            topic: topic(t),
            packet_id: pid.map(id),
            payload: Bytes::copy_from_slice(body.as_bytes()),
        }))
    };
    let mut sub = connect("sub", false);
    sub.extend(encode(Packet::Subscribe(culex_core::codec::Subscribe {
        packet_id: id(1),
        filters: vec![(filter("a/#"), QoS::ExactlyOnce), (filter("a/+"), QoS::AtLeastOnce)],
    })));
    sim_bytes.push((0, sub));
    let mut publ = connect("pub", true);
    publ.extend(publish("a/r", QoS::AtLeastOnce, Some(1), true, "retained"));
    publ.extend(publish("a/b", QoS::AtMostOnce, None, false, "zero"));
    publ.extend(publish("a/b", QoS::ExactlyOnce, Some(2), false, "two"));
    publ.extend(encode(Packet::PubRel(id(2))));
    publ.extend(publish("a/c", QoS::AtLeastOnce, Some(3), false, "{\"expired_at\": 1}"));
    publ.extend(encode(Packet::PingReq));
    sim_bytes.push((1, publ));
    let mut sub2 = encode(Packet::PubAck(id(1)));
    sub2.extend(encode(Packet::PubRec(id(2))));
    sub2.extend(encode(Packet::Unsubscribe(culex_core::codec::Unsubscribe {
        packet_id: id(2),
        filters: vec![filter("a/#")],
    })));
    sub2.extend(encode(Packet::Disconnect));
    sim_bytes.push((0, sub2));
    sim_bytes
}

/// Replays the conversation with each message split at `cuts`, and returns
/// per connection the bytes the broker sent plus every other action.
fn replay(cuts: &[usize]) -> (BTreeMap<u64, Vec<u8>>, Vec<String>) {
    let mut broker = Broker::new(Config::default());
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1000.0));
    let conns = [broker.accept(now, Peer::default()), broker.accept(now, Peer::default())];
    let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut others = Vec::new();
    let mut cut = cuts.iter().cycle();
    let mut drain = |broker: &mut Broker| {
        while let Some(action) = broker.poll_action() {
            match action {
                Action::Send { conn, data } => sent.entry(conn.0).or_default().extend_from_slice(&data),
                other => others.push(format!("{other:?}")),
            }
        }
    };
    for (client, bytes) in conversation() {
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = (cut.next().copied().unwrap_or(1) % rest.len()).max(1);
            let (chunk, tail) = rest.split_at(n);
            broker.handle_input(now, Input::Received { conn: conns[client], data: chunk });
            drain(&mut broker);
            rest = tail;
        }
    }
    (sent, others)
}

#[test]
fn any_split_of_the_input_gives_the_same_output() {
    let whole = replay(&[usize::MAX]);
    assert!(whole.0.len() == 2 && !whole.1.is_empty(), "the conversation produced output");
    fn property(cuts: Vec<u16>) -> bool {
        let cuts: Vec<usize> = cuts.into_iter().map(usize::from).filter(|c| *c > 0).collect();
        let cuts = if cuts.is_empty() { vec![1] } else { cuts };
        replay(&cuts) == replay(&[usize::MAX])
    }
    QuickCheck::new().quickcheck(property as fn(Vec<u16>) -> bool);
}

// ---- garbage ----------------------------------------------------------------

#[test]
fn garbage_never_panics_and_never_buffers_past_the_cap() {
    fn property(prefix_connect: bool, garbage: Vec<u8>, chunk: u8) -> bool {
        let config = Config { message_size_limit: 64, ..Config::default() };
        let cap = config.max_packet_size();
        let mut broker = Broker::new(config);
        let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1000.0));
        let conn = broker.accept(now, Peer::default());
        let mut input = Vec::new();
        if prefix_connect {
            let mut b = BytesMut::new();
            ClientOptions::new("g").connect_packet().encode(&mut b);
            input.extend_from_slice(&b);
        }
        input.extend(garbage);
        for piece in input.chunks(usize::from(chunk.max(1))) {
            broker.handle_input(now, Input::Received { conn, data: piece });
            while broker.poll_action().is_some() {}
            if broker.buffered_len(conn) > cap {
                return false;
            }
        }
        true
    }
    QuickCheck::new().quickcheck(property as fn(bool, Vec<u8>, u8) -> bool);
}
