//! Several shards acting as one broker ([`culex_core::shard`]), in the
//! simulation: what crosses shards, and the `$SYS` figures shard 0
//! publishes for all of them. The differential check
//! (`conformance/tests/prop_model.rs`) holds the shards to the one-broker
//! model for random operation sequences; these are the named cases.

mod recorder;

use std::time::Duration;

use bytes::BytesMut;
use culex_core::codec::{self, Packet, Publish, Subscribe};
use culex_core::persistence::{StoreBatch, StoredState};
use culex_core::server::Server;
use culex_core::shard::{ShardId, home_shard};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{
    Broker, Config, ConnId, Instant, Now, PacketId, Peer, Protocol, QoS, TopicFilter, TopicName, UnixTime,
};
use recorder::Recorder;

/// Two shards: `a` and `c` live on shard 0, `b` on shard 1.
fn two_shards(config: Config) -> Simulation {
    assert_eq!(home_shard("a", 2), ShardId(0));
    assert_eq!(home_shard("c", 2), ShardId(0));
    assert_eq!(home_shard("b", 2), ShardId(1));
    Simulation::with_shards(config, 2)
}

fn payloads(publishes: &[Publish], topic: &str) -> Vec<String> {
    publishes
        .iter()
        .filter(|p| p.topic.as_str() == topic)
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

#[test]
fn messages_cross_shards_in_order_and_retained_ones_reach_later_subscribers() {
    let mut sim = two_shards(Config::default());
    let b = sim.connect(ClientOptions::new("b"));
    sim.subscribe(b, "t/#", QoS::AtLeastOnce);
    let a = sim.connect(ClientOptions::new("a"));
    for n in 0..5 {
        sim.publish(a, "t/x", format!("m{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    sim.publish(a, "r/x", b"kept", QoS::AtMostOnce, true);
    let got = sim.take_publishes(b);
    assert_eq!(payloads(&got, "t/x"), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(payloads(&got, "r/x").is_empty(), "b does not subscribe to r/#");
    // The retained message is on shard 1 too: b's SUBSCRIBE finds it there.
    sim.subscribe(b, "r/#", QoS::AtMostOnce);
    let got = sim.take_publishes(b);
    assert_eq!(payloads(&got, "r/x"), ["kept"]);
    assert!(got[0].retain);
    // Unsubscribed: shard 0 is told, and its messages stop.
    sim.unsubscribe(b, "t/#");
    sim.publish(a, "t/x", b"after", QoS::AtLeastOnce, false);
    assert!(sim.take_publishes(b).is_empty());
}

#[test]
fn a_will_crosses_shards() {
    let mut sim = two_shards(Config::default());
    let b = sim.connect(ClientOptions::new("b"));
    sim.subscribe(b, "wills/#", QoS::AtMostOnce);
    let will = codec::LastWill {
        topic: TopicName::new("wills/a").expect("a topic"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let a = sim.connect(ClientOptions::new("a").will(will));
    sim.drop_connection(a);
    assert_eq!(payloads(&sim.take_publishes(b), "wills/a"), ["gone"]);
}

/// Shard 0 publishes `$SYS` for every shard, from the figures the others
/// send it at each `sys_interval` (at most one interval old); the other
/// shards publish none of their own, and hold shard 0's as retained.
#[test]
fn shard_0_publishes_the_figures_of_all_shards() {
    let config = Config { sys_interval: Duration::from_secs(10), ..Config::default() };
    let mut sim = two_shards(config);
    let b = sim.connect(ClientOptions::new("b"));
    sim.subscribe(b, "$SYS/broker/clients/#", QoS::AtMostOnce);
    let a = sim.connect(ClientOptions::new("a"));
    let c = sim.connect(ClientOptions::new("c"));
    sim.subscribe(c, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    sim.advance(Duration::from_secs(25));
    let at_b = sim.take_publishes(b);
    assert_eq!(payloads(&at_b, "$SYS/broker/clients/connected").last().map(String::as_str), Some("3"));
    assert_eq!(payloads(&at_b, "$SYS/broker/clients/total").last().map(String::as_str), Some("3"));
    assert_eq!(payloads(&at_b, "$SYS/broker/clients/maximum").last().map(String::as_str), Some("3"));
    // One publisher of figures: each update reaches b once.
    let connected = payloads(&at_b, "$SYS/broker/clients/connected");
    assert!(connected.len() <= 3, "{connected:?}");
    assert_eq!(payloads(&sim.take_publishes(c), "$SYS/broker/clients/connected").last().map(String::as_str), Some("3"));
    sim.disconnect(a);
    sim.advance(Duration::from_secs(20));
    assert_eq!(payloads(&sim.take_publishes(b), "$SYS/broker/clients/connected").last().map(String::as_str), Some("2"));
    // A late subscriber on shard 1 finds the retained figure there.
    let b2 = sim.connect(ClientOptions::new("b").clean_session(true));
    sim.subscribe(b2, "$SYS/broker/clients/maximum", QoS::AtMostOnce);
    assert_eq!(payloads(&sim.take_publishes(b2), "$SYS/broker/clients/maximum"), ["3"]);
}

fn at_start() -> Now {
    Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_700_000_000.0))
}

/// Servers joined as shards, each with its own broker.
fn joined_servers(count: u16) -> Vec<Server<Recorder>> {
    joined_servers_with(&Config::default(), count)
}

/// Servers joined as shards, each with its own broker on `config`.
fn joined_servers_with(config: &Config, count: u16) -> Vec<Server<Recorder>> {
    (0..count)
        .map(|i| {
            let mut broker = Broker::new(config.clone());
            broker.join_shards(ShardId(i), count);
            Server::new(broker, None)
        })
        .collect()
}

/// Carries what the servers tell each other, as a runtime would, until
/// they have nothing more to say.
fn carry(servers: &mut [Server<Recorder>]) {
    for _ in 0..4 {
        for from in 0..servers.len() {
            for (to, message) in servers[from].poll_shard_messages() {
                let from = ShardId(u16::try_from(from).expect("few shards"));
                servers[usize::from(to.0)].shard_messages(at_start(), [(from, message)]);
            }
        }
    }
}

/// Hands `packet` to `server` as read from `conn`.
fn send(server: &mut Server<Recorder>, conn: ConnId, packet: Packet) {
    let mut bytes = BytesMut::new();
    packet.encode(&mut bytes);
    server.received(at_start(), conn, &bytes);
}

/// Connects `client` to `server` as `conn`; its outbox.
fn connect(server: &mut Server<Recorder>, conn: ConnId, client: &str) -> Recorder {
    let out = Recorder::default();
    server.accept_as(at_start(), conn, Peer::default(), out.clone());
    send(server, conn, ClientOptions::new(client).connect_packet());
    out
}

/// The PUBLISHes `out` was sent and not yet read.
fn publishes_to(out: &Recorder) -> Vec<Publish> {
    let mut unread = std::mem::take(&mut out.0.borrow_mut().unread);
    std::iter::from_fn(|| codec::decode(&mut unread, 1 << 20, Protocol::V311).ok().flatten())
        .filter_map(|packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .collect()
}

fn publish_packet(topic: &str, payload: &'static [u8], retain: bool) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain,
        topic: TopicName::new(topic).expect("a topic"),
        packet_id: None,
        payload: bytes::Bytes::from_static(payload),
    })
}

fn subscribe_packet(filter: &str) -> Packet {
    let filter = TopicFilter::new(filter).expect("a filter");
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("not 0"),
        filters: vec![(filter, QoS::AtMostOnce)],
    })
}

/// Two [`Server`]s joined as shards, the test carrying what they tell
/// each other as a runtime would: a subscriber on one gets what a
/// publisher on the other sends.
#[test]
fn servers_hand_their_shard_messages_to_the_runtime() {
    let mut servers = joined_servers(2);
    let (b, a) = (ConnId(1), ConnId(2));
    let b_out = connect(&mut servers[1], b, "b");
    send(&mut servers[1], b, subscribe_packet("t/#"));
    carry(&mut servers);
    connect(&mut servers[0], a, "a");
    send(&mut servers[0], a, publish_packet("t/x", b"hello", false));
    assert!(servers[1].poll_shard_messages().is_empty());
    carry(&mut servers);
    let published: Vec<_> = publishes_to(&b_out).into_iter().map(|p| p.payload).collect();
    assert_eq!(published, [bytes::Bytes::from_static(b"hello")]);
}

/// Two shards that each take a new retained message of one topic before
/// hearing of the other's keep the same one (without an order of the
/// changes, each kept the other's, and their subscribers disagreed for
/// good). Sharing a store, they leave that one in it whichever shard's
/// batches land last.
#[test]
fn shards_agree_on_the_last_of_two_retained_messages_set_at_once() {
    let config = Config { persistence: true, ..Config::default() };
    for (first, second) in [(0, 1), (1, 0)] {
        let mut servers = joined_servers_with(&config, 2);
        let (a, b) = (ConnId(1), ConnId(2));
        connect(&mut servers[0], a, "a");
        connect(&mut servers[1], b, "b");
        let (publisher, payload) = [(a, &b"from a"[..]), (b, &b"from b"[..])][first];
        send(&mut servers[first], publisher, publish_packet("r/t", payload, true));
        let (publisher, payload) = [(a, &b"from a"[..]), (b, &b"from b"[..])][second];
        send(&mut servers[second], publisher, publish_packet("r/t", payload, true));
        carry(&mut servers);
        let kept: Vec<_> = (0..2)
            .map(|shard| {
                let conn = ConnId(10 + shard as u64);
                let id = if shard == 0 { "c" } else { "b2" };
                assert_eq!(home_shard(id, 2), ShardId(u16::try_from(shard).expect("0 or 1")));
                let out = connect(&mut servers[shard], conn, id);
                send(&mut servers[shard], conn, subscribe_packet("r/t"));
                publishes_to(&out).into_iter().map(|p| p.payload).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(kept[0].len(), 1, "{kept:?}");
        assert_eq!(kept[0], kept[1], "shards {first} then {second}");
        let batches: Vec<Vec<StoreBatch>> = servers.iter_mut().map(Server::poll_store_batches).collect();
        for landing in [[0, 1], [1, 0]] {
            let mut store = StoredState::default();
            for batch in landing.iter().flat_map(|&shard| &batches[shard]) {
                store.apply_batch(batch);
            }
            let topic = TopicName::new("r/t").expect("a topic");
            let stored = store.retained.get(&topic).and_then(|id| store.messages.get(id)).map(|m| m.payload.clone());
            assert_eq!(stored.as_ref(), kept[0].first(), "shards {first} then {second}, {landing:?} landing");
        }
    }
}

/// What a server did, in order: packets sent to its client and messages
/// posted to other shards.
#[derive(Debug, Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: String) {
        self.0.lock().expect("not poisoned").push(entry);
    }

    fn position(&self, entry: &str) -> usize {
        let entries = self.0.lock().expect("not poisoned");
        entries.iter().position(|e| e == entry).unwrap_or_else(|| panic!("no {entry:?} in {entries:?}"))
    }
}

impl culex_core::server::Outbox for Log {
    fn send(
        &mut self,
        data: bytes::Bytes,
    ) -> Result<Option<culex_core::congestion::WriterProgress>, culex_core::server::OutboxFull> {
        let mut data = BytesMut::from(&data[..]);
        while let Ok(Some(packet)) = codec::decode(&mut data, 1 << 20, Protocol::V311) {
            let name = format!("{packet:?}");
            self.push(format!("sent {}", name.split(['(', ' ']).next().unwrap_or_default()));
        }
        Ok(None)
    }

    fn close(&mut self, _: culex_core::CloseReason) {}

    fn pause_reading(&mut self, _: bool) {}
}

impl culex_core::shard::ShardBus for Log {
    fn post(&mut self, to: ShardId, message: culex_core::shard::ShardMessage) {
        let kind = format!("{message:?}");
        self.push(format!("to {} {}", to.0, kind.split(['(', ' ', '{']).next().unwrap_or_default()));
    }
}

/// With a bus, a shard's messages leave as they are made: the route
/// before the SUBACK, the retained message before the PUBACK, so that a
/// client acting on either finds every shard told.
#[test]
fn a_bus_carries_what_a_shard_tells_before_the_acknowledgement() {
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_700_000_000.0));
    let log = Log::default();
    let mut broker = Broker::new(Config::default());
    broker.join_shards(ShardId(0), 2);
    let mut server = Server::new(broker, None);
    server.post_shard_messages(Box::new(log.clone()));
    let a = ConnId(1);
    server.accept_as(now, a, Peer::default(), log.clone());
    let send = |server: &mut Server<Log>, packet: Packet| {
        let mut bytes = BytesMut::new();
        packet.encode(&mut bytes);
        server.received(now, a, &bytes);
    };
    assert_eq!(home_shard("a", 2), ShardId(0));
    send(&mut server, ClientOptions::new("a").connect_packet());
    let filter = TopicFilter::new("t/#").expect("a filter");
    let packet_id = PacketId::new(1).expect("not 0");
    send(&mut server, Packet::Subscribe(Subscribe { packet_id, filters: vec![(filter, QoS::AtLeastOnce)] }));
    assert!(log.position("to 1 Route") < log.position("sent SubAck"));
    let publish = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: TopicName::new("t/x").expect("a topic"),
        packet_id: Some(PacketId::new(2).expect("not 0")),
        payload: bytes::Bytes::from_static(b"kept"),
    };
    send(&mut server, Packet::Publish(publish));
    assert!(log.position("to 1 Publish") < log.position("sent PubAck"));
    assert!(server.poll_shard_messages().is_empty());
}

/// An id a shard assigns has that shard as its home: a client that
/// reconnects with it later comes back to the same shard and meets its
/// session (or takes over its connection).
#[test]
fn an_assigned_id_lives_on_the_shard_that_assigned_it() {
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_700_000_000.0));
    let mut broker = Broker::new(Config::default());
    broker.join_shards(ShardId(1), 3);
    for n in 1..=20 {
        let conn = broker.accept(now, Peer::default());
        let mut bytes = BytesMut::new();
        ClientOptions::new("").clean_session(true).connect_packet().encode(&mut bytes);
        broker.handle_input(now, culex_core::Input::Received { conn, data: &bytes });
        let assigned = std::iter::from_fn(|| broker.poll_action())
            .find_map(|action| match action {
                culex_core::Action::MarkOnline { client, .. } => Some(client),
                _ => None,
            })
            .unwrap_or_else(|| panic!("connection {n} is online"));
        assert_eq!(home_shard(assigned.as_str(), 3), ShardId(1), "{assigned}");
    }
}
