//! The broker's figures ([`Stats`], `$SYS`, [`Server::systree`]) and
//! `presence_topics`, driven through a [`Server`] whose outboxes keep
//! what they were sent: the counts are compared with the bytes and
//! packets that really went through.

mod recorder;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use culex_core::codec::{self, Packet, Publish, Subscribe};
use culex_core::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess, Refusal};
use culex_core::presence::{PresenceSettings, PresenceSync};
use culex_core::server::Server;
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{
    Broker, CloseReason, Config, ConnId, Instant, Now, PacketId, Peer, Protocol, QoS, TopicFilter, TopicName, UnixTime,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};
use recorder::Recorder;

/// The wall clock at the virtual origin.
const START_UNIX: f64 = 1_700_000_000.0;

/// A server, its connections and a virtual clock.
struct Net {
    server: Server<Recorder>,
    at: Duration,
    taps: BTreeMap<ConnId, Recorder>,
    /// Bytes and packets handed to the server.
    fed: (u64, u64),
}

impl Net {
    fn new(config: Config, presence: Option<PresenceSync>) -> Self {
        Self {
            server: Server::new(Broker::new(config), presence),
            at: Duration::ZERO,
            taps: BTreeMap::new(),
            fed: (0, 0),
        }
    }

    fn now(&self) -> Now {
        Now::new(Instant::from_origin(self.at), UnixTime::from_secs_f64(START_UNIX + self.at.as_secs_f64()))
    }

    fn open(&mut self) -> ConnId {
        let tap = Recorder::default();
        let conn = self.server.accept(self.now(), Peer::default(), tap.clone());
        self.taps.insert(conn, tap);
        conn
    }

    /// A connection whose CONNECT (per `options`) was answered.
    fn connect(&mut self, options: ClientOptions) -> ConnId {
        let conn = self.open();
        self.send(conn, &options.connect_packet());
        conn
    }

    fn send(&mut self, conn: ConnId, packet: &Packet) {
        let mut bytes = BytesMut::new();
        packet.encode(&mut bytes);
        self.fed.0 += bytes.len() as u64;
        self.fed.1 += 1;
        self.server.received(self.now(), conn, &bytes);
    }

    fn subscribe(&mut self, conn: ConnId, filter: &str, qos: QoS) {
        let filter = TopicFilter::new(filter).expect("valid filter");
        self.send(conn, &Packet::Subscribe(Subscribe { packet_id: PacketId::MIN, filters: vec![(filter, qos)] }));
    }

    fn publish(&mut self, conn: ConnId, topic: &str, payload: &[u8], qos: QoS, id: u16) {
        self.send(conn, &publish(topic, payload, qos, id));
    }

    /// The connection ends without DISCONNECT.
    fn drop_conn(&mut self, conn: ConnId) {
        self.server.closed(self.now(), conn);
    }

    /// Packets `conn` was sent since the last look.
    fn take(&mut self, conn: ConnId) -> Vec<Packet> {
        let Some(tap) = self.taps.get(&conn) else { return Vec::new() };
        let mut sent = tap.0.borrow_mut();
        let mut packets = Vec::new();
        while let Ok(Some(packet)) = codec::decode(&mut sent.unread, usize::MAX, Protocol::V311) {
            packets.push(packet);
        }
        packets
    }

    /// The PUBLISH packets `conn` was sent since the last look, as topic
    /// and payload.
    fn messages(&mut self, conn: ConnId) -> Vec<(String, String)> {
        self.take(conn)
            .into_iter()
            .filter_map(|packet| match packet {
                Packet::Publish(p) => Some((p.topic.as_str().to_owned(), String::from_utf8_lossy(&p.payload).into())),
                _ => None,
            })
            .collect()
    }

    fn is_closed(&self, conn: ConnId) -> bool {
        self.taps.get(&conn).is_some_and(|tap| tap.0.borrow().closed.is_some())
    }

    fn bytes_sent(&self) -> u64 {
        self.taps.values().map(|tap| tap.0.borrow().bytes).sum()
    }

    fn advance(&mut self, by: Duration) {
        self.at += by;
        self.server.timeout(self.now());
    }
}

/// A PUBLISH, not retained; `id` is its packet id at QoS 1 and 2.
fn publish(topic: &str, payload: &[u8], qos: QoS, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: TopicName::new(topic).expect("valid topic"),
        packet_id: PacketId::new(id).filter(|_| qos != QoS::AtMostOnce),
        payload: Bytes::copy_from_slice(payload),
    })
}

fn quiet() -> Config {
    Config { sys_interval: Duration::ZERO, ..Config::default() }
}

#[test]
fn counts_match_what_went_through_the_sockets() {
    let mut net = Net::new(quiet(), None);
    let sub = net.connect(ClientOptions::new("sub"));
    net.subscribe(sub, "t", QoS::ExactlyOnce);
    let publ = net.connect(ClientOptions::new("pub"));
    net.publish(publ, "t", b"a", QoS::AtMostOnce, 0);
    net.publish(publ, "t", b"bb", QoS::AtLeastOnce, 1);
    net.publish(publ, "t", b"ccc", QoS::ExactlyOnce, 2);
    net.send(publ, &Packet::PubRel(PacketId::new(2).expect("non-zero")));
    net.send(publ, &Packet::PingReq);
    let mut sent = net.take(publ);
    // The subscriber completes its flows.
    let mut delivered = Vec::new();
    for packet in net.take(sub) {
        if let Packet::Publish(p) = &packet {
            delivered.push((p.qos, p.payload.len()));
            match (p.qos, p.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => net.send(sub, &Packet::PubAck(id)),
                (QoS::ExactlyOnce, Some(id)) => net.send(sub, &Packet::PubRec(id)),
                _ => {}
            }
        }
        sent.push(packet);
    }
    for packet in net.take(sub) {
        if let Packet::PubRel(id) = packet {
            net.send(sub, &Packet::PubComp(id));
        }
        sent.push(packet);
    }
    net.send(publ, &Packet::Disconnect);
    sent.extend(net.take(publ));

    let stats = net.server.broker().stats();
    let counts = stats.counts;
    assert_eq!((counts.bytes_received, counts.packets_received), net.fed);
    assert_eq!(counts.bytes_sent, net.bytes_sent());
    assert_eq!(counts.packets_sent, sent.len() as u64, "{sent:?}");
    assert_eq!(delivered, [(QoS::AtMostOnce, 1), (QoS::AtLeastOnce, 2), (QoS::ExactlyOnce, 3)]);
    assert_eq!(counts.publish_received, [1, 1, 1]);
    assert_eq!(counts.publish_received_bytes, [1, 2, 3]);
    assert_eq!(counts.publish_sent, [1, 1, 1]);
    assert_eq!(counts.publish_sent_bytes, [1, 2, 3]);
    assert_eq!((counts.sockets_accepted, counts.connects), (2, 2));
    assert_eq!((stats.clients_connected, stats.clients_connected_max), (1, 2));
    assert_eq!((stats.sessions, stats.sessions_max), (1, 2));
    assert_eq!((stats.inflight, stats.queued, stats.awaiting_pubrel), (0, 0, 0));
}

#[test]
fn a_resend_counts_as_a_publish_sent() {
    let mut sim = Simulation::new(quiet());
    let sub = sim.connect(ClientOptions::new("sub").clean_session(false).auto_ack(false));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"x", QoS::AtLeastOnce, false);
    sim.drop_connection(sub);
    let _again = sim.connect(ClientOptions::new("sub").clean_session(false));
    assert_eq!(sim.broker().stats().counts.publish_sent, [0, 2, 0]);
}

#[test]
fn what_sessions_hold_is_summed_and_stored() {
    let config = Config { max_inflight_messages: 1, ..quiet() };
    let mut sim = Simulation::new(config);
    let slow = sim.connect(ClientOptions::new("slow").clean_session(false).auto_ack(false));
    sim.subscribe(slow, "t", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub").auto_ack(false));
    sim.publish(publ, "t", b"12", QoS::AtLeastOnce, false);
    sim.publish(publ, "t", b"345", QoS::AtLeastOnce, false);
    sim.publish(publ, "r", b"6789", QoS::AtMostOnce, true);
    // A QoS 2 message whose PUBREL never comes.
    sim.send(publ, &publish("q", b"abcde", QoS::ExactlyOnce, 7));
    let stats = sim.broker().stats();
    assert_eq!((stats.inflight, stats.inflight_bytes), (1, 2));
    assert_eq!((stats.queued, stats.queued_bytes), (1, 3));
    assert_eq!((stats.retained, stats.retained_bytes), (1, 4));
    assert_eq!((stats.awaiting_pubrel, stats.awaiting_pubrel_bytes), (1, 5));
    assert_eq!((stats.stored(), stats.stored_bytes()), (4, 14));
    // The retained message is replaced, then deleted.
    sim.publish(publ, "r", b"0", QoS::AtMostOnce, true);
    assert_eq!(sim.broker().stats().retained_bytes, 1);
    sim.publish(publ, "r", b"", QoS::AtMostOnce, true);
    assert_eq!(sim.broker().stats().retained_bytes, 0);
}

#[test]
fn the_stores_pending_batches_are_counted_with_persistence_only() {
    assert_eq!(Simulation::new(quiet()).broker().stats().store_batches_pending, None);
    let mut sim = Simulation::new(Config { persistence: true, ..quiet() });
    sim.manual_commits(true);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "r", b"kept", QoS::AtMostOnce, true);
    sim.publish(publ, "s", b"kept", QoS::AtMostOnce, true);
    assert_eq!(sim.broker().stats().store_batches_pending, Some(2));
    sim.commit();
    assert_eq!(sim.broker().stats().store_batches_pending, Some(0));
}

/// Lets user names in, after a check, and anonymous clients not; denies
/// everything under `secret/`.
#[derive(Debug)]
struct Guarded;

impl AccessPolicy for Guarded {
    fn authenticate(&self, client: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        match client.username {
            Some(_) => AuthDecision::Defer,
            None => AuthDecision::Refuse(Refusal::NotAuthorized),
        }
    }

    fn filter_access(&self, _: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess {
        if filter.as_str().starts_with("secret/") { FilterAccess::Denied } else { FilterAccess::Whole }
    }

    fn may_read(&self, _: ClientInfo<'_>, _: &TopicName) -> bool {
        true
    }

    fn may_publish(&self, _: ClientInfo<'_>, topic: &TopicName) -> bool {
        !topic.as_str().starts_with("secret/")
    }
}

#[test]
fn refusals_denials_timeouts_and_drops_are_counted_by_cause() {
    let config = Config { message_size_limit: 20, ..quiet() };
    let mut sim = Simulation::with_broker(Broker::with_policy(config, Box::new(Guarded)), START_UNIX);
    sim.set_authenticator(Box::new(|_, _, password| match password {
        Some(password) if password == b"right" => Ok(()),
        _ => Err(Refusal::NotAuthorized),
    }));
    let anonymous = sim.connect(ClientOptions::new("anonymous"));
    let wrong = sim.connect(ClientOptions::new("wrong").credentials("u", b"wrong"));
    assert!(sim.closed(anonymous).is_some() && sim.closed(wrong).is_some());
    let client = sim.connect(ClientOptions::new("c").credentials("u", b"right").keep_alive(2));
    sim.subscribe(client, "secret/#", QoS::AtMostOnce);
    sim.subscribe(client, "open/#", QoS::AtMostOnce);
    sim.publish(client, "secret/x", b"1", QoS::AtMostOnce, false);
    sim.publish(client, "open/x", &[b'x'; 21], QoS::AtMostOnce, false);
    // Sent to the client itself: expired on the way.
    sim.publish(client, "open/x", br#"{"expired_at":1}"#, QoS::AtMostOnce, false);
    sim.advance(Duration::from_secs(4));
    assert_eq!(sim.closed(client), Some(CloseReason::KeepAliveTimeout));
    let counts = sim.broker().stats().counts;
    assert_eq!((counts.auth_not_authorised, counts.auth_bad_credentials), (1, 1));
    assert_eq!((counts.acl_denied_subscribe, counts.acl_denied_publish), (1, 1));
    assert_eq!(counts.keepalive_timeouts, 1);
    assert_eq!((counts.dropped.too_large, counts.dropped.expired), (1, 1));
}

#[test]
fn full_queues_expired_copies_and_expired_sessions_are_counted() {
    let config =
        Config { max_queued_messages: 1, persistent_client_expiration: Some(Duration::from_secs(3600)), ..quiet() };
    let mut sim = Simulation::new(config);
    let away = sim.connect(ClientOptions::new("away").clean_session(false));
    sim.subscribe(away, "t", QoS::AtLeastOnce);
    sim.disconnect(away);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", br#"{"expired_at":1}"#, QoS::AtLeastOnce, false);
    sim.publish(publ, "t", b"2", QoS::AtLeastOnce, false);
    let counts = sim.broker().stats().counts;
    assert_eq!((counts.dropped.queue_full, counts.dropped_for_room()), (1, 1));
    // The expired copy is dropped when it would go out.
    let back = sim.connect(ClientOptions::new("away").clean_session(false));
    assert_eq!(sim.broker().stats().counts.dropped.expired, 1);
    sim.disconnect(back);
    sim.advance(Duration::from_secs(2 * 3600));
    let stats = sim.broker().stats();
    assert_eq!(stats.counts.sessions_expired, 1);
    assert!(sim.broker().session("away").is_none());
    assert_eq!(stats.sessions_max, 2);
}

/// The integer figures among `published`, without the aliases and loads.
fn integer_figures(published: &[(String, String)]) -> BTreeMap<String, u64> {
    let alias = ["clients/active", "clients/inactive", "store/messages/count"];
    published
        .iter()
        .filter(|(topic, _)| !topic.starts_with("$SYS/broker/load/"))
        .filter(|(topic, _)| !alias.iter().any(|a| topic.ends_with(a)))
        .filter_map(|(topic, value)| {
            let number = value.strip_suffix(" seconds").unwrap_or(value);
            Some((topic.clone(), number.parse().ok()?))
        })
        .collect()
}

#[test]
fn systree_agrees_with_what_sys_publishes() {
    let config = Config { sys_interval: Duration::from_secs(10), persistence: false, ..Config::default() };
    let mut net = Net::new(config, Some(PresenceSync::new(PresenceSettings::default())));
    let watcher = net.connect(ClientOptions::new("watcher"));
    net.subscribe(watcher, "$SYS/#", QoS::AtMostOnce);
    let publ = net.connect(ClientOptions::new("pub"));
    net.publish(publ, "t", b"x", QoS::AtLeastOnce, 1);
    net.at += Duration::from_secs(3);
    let tree: BTreeMap<String, u64> = net.server.systree(net.now()).into_iter().collect();
    net.server.timeout(net.now());
    let published = net.messages(watcher);
    let figures = integer_figures(&published);
    assert_eq!(tree, figures, "published: {published:?}");
    assert_eq!(tree.get("$SYS/broker/uptime"), Some(&3));
    assert_eq!(tree.get("$SYS/broker/clients/connected"), Some(&2));
    assert_eq!(tree.get("$SYS/broker/presence/connected"), Some(&0));
    assert_eq!(tree.get("$SYS/broker/presence/pending"), Some(&2));
    assert!(!tree.contains_key("$SYS/broker/clients/active"));
    // The words and loads are published, not in the tree.
    let topics: BTreeSet<&str> = published.iter().map(|(t, _)| t.as_str()).collect();
    assert!(topics.contains("$SYS/broker/version") && topics.contains("$SYS/broker/load/sockets/15min"));
    assert!(topics.contains("$SYS/broker/clients/active"));
    // The version once; the uptime every time; a figure again only when
    // it changed.
    net.advance(Duration::from_secs(10));
    let second = net.messages(watcher);
    let second: BTreeMap<&str, &str> = second.iter().map(|(t, v)| (t.as_str(), v.as_str())).collect();
    assert_eq!(second.get("$SYS/broker/uptime"), Some(&"13 seconds"));
    assert!(!second.contains_key("$SYS/broker/version"));
    assert!(!second.contains_key("$SYS/broker/clients/connected"));
    assert!(second.contains_key("$SYS/broker/messages/sent"));
}

const STATE: &str = "$SYS/broker/connection/client/+/state";

fn states(net: &mut Net, conn: ConnId) -> Vec<(String, String)> {
    net.messages(conn)
        .into_iter()
        .filter_map(|(topic, value)| {
            let id = topic.strip_prefix("$SYS/broker/connection/client/")?.strip_suffix("/state")?;
            Some((id.to_owned(), value))
        })
        .collect()
}

fn state(id: &str, value: &str) -> (String, String) {
    (id.to_owned(), value.to_owned())
}

fn presence_topics() -> Config {
    Config { presence_topics: true, ..quiet() }
}

/// A server with `config`, and a client watching the state topics.
fn watched(config: Config) -> (Net, ConnId) {
    let mut net = Net::new(config, None);
    let watcher = net.connect(ClientOptions::new("watcher"));
    net.subscribe(watcher, STATE, QoS::AtMostOnce);
    (net, watcher)
}

#[test]
fn presence_topics_say_1_on_accept_and_0_when_the_connection_ends() {
    let (mut net, watcher) = watched(presence_topics());
    let a = net.connect(ClientOptions::new("a"));
    let b = net.connect(ClientOptions::new("b"));
    net.send(a, &Packet::Disconnect);
    net.drop_conn(b);
    let c = net.connect(ClientOptions::new("c").keep_alive(1));
    net.advance(Duration::from_secs(2));
    assert!(net.is_closed(c));
    assert_eq!(
        states(&mut net, watcher),
        [
            state("watcher", "1"),
            state("a", "1"),
            state("b", "1"),
            state("a", "0"),
            state("b", "0"),
            state("c", "1"),
            state("c", "0")
        ]
    );
    // Retained, at QoS 0, for whoever subscribes later, with the retain
    // flag.
    let late = net.connect(ClientOptions::new("late"));
    net.subscribe(late, STATE, QoS::ExactlyOnce);
    let retained: Vec<_> = net
        .take(late)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some((p.topic.as_str().to_owned(), p.qos, p.retain)),
            _ => None,
        })
        .collect();
    assert!(retained.iter().all(|(_, qos, retain)| *qos == QoS::AtMostOnce && *retain), "{retained:?}");
    let ids: BTreeSet<_> = retained.iter().map(|(t, _, _)| t.as_str()).collect();
    assert_eq!(ids.len(), 5, "a, b, c, watcher and late: {ids:?}");
}

#[test]
fn a_takeover_leaves_1() {
    let (mut net, watcher) = watched(presence_topics());
    let first = net.connect(ClientOptions::new("a").clean_session(false));
    let _second = net.connect(ClientOptions::new("a"));
    assert!(net.is_closed(first));
    assert_eq!(states(&mut net, watcher), [state("watcher", "1"), state("a", "1"), state("a", "0"), state("a", "1")]);
    let late = net.connect(ClientOptions::new("late"));
    net.subscribe(late, "$SYS/broker/connection/client/a/state", QoS::AtMostOnce);
    assert_eq!(states(&mut net, late), [state("a", "1")]);
}

#[test]
fn presence_topics_are_off_by_default_and_not_for_clients_to_write() {
    let (mut net, watcher) = watched(quiet());
    let a = net.connect(ClientOptions::new("a"));
    net.publish(a, "$SYS/broker/connection/client/a/state", b"0", QoS::AtMostOnce, 0);
    net.publish(a, "$SYS/broker/connection/client/x/state", b"1", QoS::AtMostOnce, 0);
    net.drop_conn(a);
    assert_eq!(states(&mut net, watcher), []);
    assert_eq!(net.messages(watcher), []);

    let (mut net, watcher) = watched(presence_topics());
    let a = net.connect(ClientOptions::new("a"));
    net.publish(a, "$SYS/broker/connection/client/a/state", b"0", QoS::AtMostOnce, 0);
    assert_eq!(states(&mut net, watcher), [state("watcher", "1"), state("a", "1")]);
}

#[test]
fn an_id_that_makes_no_topic_has_no_state_and_still_connects() {
    let mut net = Net::new(presence_topics(), None);
    let watcher = net.connect(ClientOptions::new("watcher"));
    net.subscribe(watcher, "$SYS/broker/connection/client/#", QoS::AtMostOnce);
    // The topic would be 65,536 bytes: one too many.
    let long = "x".repeat(65_535 - "$SYS/broker/connection/client//state".len() + 1);
    let fits = &long[1..];
    let too_long = net.connect(ClientOptions::new(&long));
    let just = net.connect(ClientOptions::new(fits));
    assert!(matches!(net.take(too_long).first(), Some(Packet::ConnAck(_))));
    assert!(!net.is_closed(too_long));
    let long_ones = |net: &mut Net| -> Vec<(usize, String)> {
        states(net, watcher).into_iter().filter(|(id, _)| id.len() > 100).map(|(id, v)| (id.len(), v)).collect()
    };
    assert_eq!(long_ones(&mut net), [(fits.len(), "1".to_owned())]);
    net.drop_conn(too_long);
    net.drop_conn(just);
    assert_eq!(long_ones(&mut net), [(fits.len(), "0".to_owned())]);
}

#[test]
fn a_0_expires_after_a_day_and_a_1_does_not() {
    let mut net = Net::new(presence_topics(), None);
    let gone = net.connect(ClientOptions::new("gone"));
    let _here = net.connect(ClientOptions::new("here").keep_alive(0));
    net.drop_conn(gone);
    net.advance(Duration::from_secs(86_399));
    let early = net.connect(ClientOptions::new("early").keep_alive(0));
    net.subscribe(early, STATE, QoS::AtMostOnce);
    let mut seen = states(&mut net, early);
    seen.sort();
    assert_eq!(seen, [state("early", "1"), state("gone", "0"), state("here", "1")]);
    net.advance(Duration::from_secs(2));
    let late = net.connect(ClientOptions::new("late"));
    net.subscribe(late, STATE, QoS::AtMostOnce);
    let mut seen = states(&mut net, late);
    seen.sort();
    assert_eq!(seen, [state("early", "1"), state("here", "1"), state("late", "1")]);
}

/// What a client does next, among a few client ids.
#[derive(Debug, Clone)]
enum Op {
    /// Connects with id `n` (a takeover if it is connected).
    Connect(u8, bool),
    /// The `n`th open connection sends DISCONNECT.
    Disconnect(u8),
    /// The `n`th open connection ends without it.
    Drop(u8),
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        let n = u8::arbitrary(g) % 4;
        match u8::arbitrary(g) % 3 {
            0 => Self::Connect(n, bool::arbitrary(g)),
            1 => Self::Disconnect(n),
            _ => Self::Drop(n),
        }
    }
}

#[test]
fn the_last_state_of_each_id_is_whether_it_is_connected() {
    fn prop(ops: Vec<Op>) -> bool {
        let mut net = Net::new(presence_topics(), None);
        let watcher = net.connect(ClientOptions::new("watcher"));
        net.subscribe(watcher, STATE, QoS::AtMostOnce);
        let mut open: Vec<(ConnId, String)> = Vec::new();
        for op in ops {
            match op {
                Op::Connect(n, clean) => {
                    let id = format!("c{n}");
                    let conn = net.connect(ClientOptions::new(&id).clean_session(clean));
                    open.retain(|(_, other)| *other != id);
                    open.push((conn, id));
                }
                Op::Disconnect(n) | Op::Drop(n) if !open.is_empty() => {
                    let (conn, _) = open.remove(usize::from(n) % open.len());
                    match op {
                        Op::Disconnect(_) => net.send(conn, &Packet::Disconnect),
                        _ => net.drop_conn(conn),
                    }
                }
                Op::Disconnect(_) | Op::Drop(_) => {}
            }
        }
        let connected: BTreeSet<String> = open.into_iter().map(|(_, id)| id).collect();
        // The live stream's last word per id, and what is retained, say
        // the same: "1" for exactly the ids connected.
        let spectators = ["watcher", "late"];
        let mut last = BTreeMap::new();
        for (id, value) in states(&mut net, watcher) {
            last.insert(id, value);
        }
        let late = net.connect(ClientOptions::new("late"));
        net.subscribe(late, STATE, QoS::AtMostOnce);
        let retained: BTreeMap<String, String> = states(&mut net, late).into_iter().collect();
        let players = |states: BTreeMap<String, String>| -> BTreeMap<String, String> {
            states.into_iter().filter(|(id, _)| !spectators.contains(&id.as_str())).collect()
        };
        let (last, retained) = (players(last), players(retained));
        let online: BTreeSet<String> = last.iter().filter(|(_, v)| *v == "1").map(|(id, _)| id.clone()).collect();
        // The gauge agrees: the players connected, the watcher and late.
        let stats = net.server.broker().stats();
        online == connected && last == retained && stats.clients_connected == connected.len() + 2
    }
    QuickCheck::new().tests(200).quickcheck(prop as fn(Vec<Op>) -> bool);
}
