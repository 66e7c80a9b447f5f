//! Bridges between brokers of this crate, over in-memory sockets that can
//! break at any point: messages cross with their topics remapped and their
//! QoS kept, nothing loops, the state topic follows the connection, and
//! every QoS 1/2 message published while the bridge is up or down reaches
//! the other side as its QoS promises, in order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use culex_core::bridge::{BridgeId, Dial};
use culex_core::client::{Client, ClientEvent, ClientOptions};
use culex_core::conf::{BridgeAddress, BridgeConf, BridgeTopic, Direction, RestartTimeout, StartType};
use culex_core::congestion::WriterProgress;
use culex_core::error::CloseReason;
use culex_core::server::{Outbox, OutboxFull, Server};
use culex_core::{Broker, Config, ConnId, Instant, Now, Peer, QoS, TopicFilter, TopicName, UnixTime};
use quickcheck::{Arbitrary, Gen, QuickCheck};

/// One direction of a socket: what was written and not yet read, and
/// whether the writer closed it.
#[derive(Debug, Default)]
struct Half {
    bytes: Vec<Bytes>,
    closed: bool,
}

/// A server's writer for one socket.
#[derive(Debug, Clone, Default)]
struct Pipe(Rc<RefCell<Half>>);

impl Outbox for Pipe {
    fn send(&mut self, data: Bytes) -> Result<Option<WriterProgress>, OutboxFull> {
        self.0.borrow_mut().bytes.push(data);
        Ok(None)
    }

    fn close(&mut self, _: CloseReason) {
        self.0.borrow_mut().closed = true;
    }

    fn pause_reading(&mut self, _: bool) {}
}

/// Where a socket ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// A connection of server `node`.
    Server(usize, ConnId),
    /// Test client `n`.
    Client(usize),
}

/// A socket: `a` writes into `to_b`, `b` into `to_a`.
struct Socket {
    a: End,
    b: End,
    to_b: Pipe,
    to_a: Pipe,
}

/// Brokers, bridges between them and test clients, in virtual time.
struct Net {
    nodes: Vec<Server<Pipe>>,
    clients: Vec<(usize, Client)>,
    sockets: Vec<Socket>,
    now: Instant,
    next_conn: u64,
    /// Whether dials to a node succeed.
    reachable: Vec<bool>,
    /// What each test client received.
    received: Vec<Vec<(String, Bytes, QoS, bool)>>,
    /// Per node: store batches wait until [`Net::release`] (a slow disk).
    slow_disk: Vec<bool>,
}

fn at(now: Instant) -> Now {
    Now::new(now, UnixTime::from_secs_f64(1_767_225_600.0 + now.since_origin().as_secs_f64()))
}

impl Net {
    fn new(nodes: usize) -> Self {
        Self::with(nodes, Config::default())
    }

    /// Brokers with `config`, persistence on: an acknowledgement may wait
    /// for the disk.
    fn with(nodes: usize, config: Config) -> Self {
        let config = Config { persistence: true, ..config };
        let nodes = (0..nodes).map(|_| Server::new(Broker::new(config.clone()), None)).collect::<Vec<_>>();
        let (reachable, slow_disk) = (vec![true; nodes.len()], vec![false; nodes.len()]);
        Self {
            nodes,
            clients: Vec::new(),
            sockets: Vec::new(),
            now: Instant::ZERO,
            next_conn: 1,
            reachable,
            received: Vec::new(),
            slow_disk,
        }
    }

    fn bridge(&mut self, node: usize, conf: BridgeConf) -> BridgeId {
        let id = self.nodes[node].start_bridge(at(self.now), conf, "host", 7);
        self.settle();
        id
    }

    /// A client of `node`, connected.
    fn client(&mut self, node: usize, id: &str) -> usize {
        self.clients.push((node, Client::new(ClientOptions::new(id))));
        self.received.push(Vec::new());
        let n = self.clients.len() - 1;
        self.connect_client(n);
        n
    }

    fn connect_client(&mut self, n: usize) {
        let node = self.clients[n].0;
        let conn = self.conn_id();
        let to_server = Pipe::default();
        self.nodes[node].accept_as(at(self.now), conn, Peer::default(), to_server.clone());
        self.sockets.push(Socket {
            a: End::Server(node, conn),
            b: End::Client(n),
            to_b: to_server,
            to_a: Pipe::default(),
        });
        self.clients[n].1.connect(self.now);
        self.settle();
    }

    fn conn_id(&mut self) -> ConnId {
        self.next_conn += 1;
        ConnId(self.next_conn)
    }

    fn subscribe(&mut self, n: usize, filter: &str, qos: QoS) {
        let filter = TopicFilter::new(filter).unwrap();
        self.clients[n].1.subscribe(self.now, vec![(filter, qos)]);
        self.settle();
    }

    fn publish(&mut self, n: usize, topic: &str, payload: &str, qos: QoS, retain: bool) {
        self.publish_only(n, topic, payload, qos, retain);
        self.settle();
    }

    /// Publishes without moving the bytes anywhere yet.
    fn publish_only(&mut self, n: usize, topic: &str, payload: &str, qos: QoS, retain: bool) {
        let topic = TopicName::new(topic).unwrap();
        self.clients[n].1.publish(self.now, topic, Bytes::copy_from_slice(payload.as_bytes()), qos, retain);
    }

    /// Makes every batch `node` made so far durable; whether there was one.
    fn commit(&mut self, node: usize) -> bool {
        let Some(last) = self.nodes[node].poll_store_batches().last().map(|b| b.seq) else { return false };
        self.nodes[node].stored(at(self.now), last);
        true
    }

    /// A slow disk of `node` catches up once.
    fn release(&mut self, node: usize) {
        self.commit(node);
        self.settle();
    }

    /// Opens what the servers ask for.
    fn dial(&mut self) -> bool {
        let mut any = false;
        for node in 0..self.nodes.len() {
            for Dial { bridge, address, probe, .. } in self.nodes[node].poll_dials() {
                any = true;
                let target = usize::from(address.port - 1000);
                let now = at(self.now);
                if !self.reachable[target] {
                    match probe {
                        true => self.nodes[node].probed(now, bridge, false),
                        false => self.nodes[node].dial_failed(now, bridge, "Connection refused"),
                    }
                    continue;
                }
                if probe {
                    self.nodes[node].probed(now, bridge, true);
                    continue;
                }
                let (near, far) = (self.conn_id(), self.conn_id());
                let (to_far, to_near) = (Pipe::default(), Pipe::default());
                self.nodes[target].accept_as(now, far, Peer::default(), to_near.clone());
                self.nodes[node].dialed(now, bridge, near, to_far.clone());
                self.sockets.push(Socket {
                    a: End::Server(node, near),
                    b: End::Server(target, far),
                    to_b: to_far,
                    to_a: to_near,
                });
            }
        }
        any
    }

    /// Moves bytes until nothing moves (bounded: a loop between brokers
    /// fails here).
    fn settle(&mut self) {
        assert!(!self.rounds(10_000), "the network never settled: a loop?");
    }

    /// Moves bytes, each socket's in one go per round, for at most
    /// `limit` rounds; whether anything still moves.
    fn rounds(&mut self, limit: usize) -> bool {
        for _ in 0..limit {
            let mut moved = self.dial();
            for node in 0..self.nodes.len() {
                if !self.slow_disk[node] {
                    moved |= self.commit(node);
                }
            }
            for n in 0..self.clients.len() {
                if let Some(data) = self.clients[n].1.poll_transmit()
                    && let Some(socket) = self.sockets.iter().find(|s| s.b == End::Client(n))
                {
                    socket.to_a.0.borrow_mut().bytes.push(data);
                }
            }
            let mut s = 0;
            while s < self.sockets.len() {
                let (a, b) = (self.sockets[s].a, self.sockets[s].b);
                let (to_b, to_a) = (self.sockets[s].to_b.clone(), self.sockets[s].to_a.clone());
                moved |= self.carry(&to_b, b);
                moved |= self.carry(&to_a, a);
                let closed = to_b.0.borrow().closed || to_a.0.borrow().closed;
                if closed {
                    self.sockets.remove(s);
                    self.hang_up(a);
                    self.hang_up(b);
                    moved = true;
                } else {
                    s += 1;
                }
            }
            for n in 0..self.clients.len() {
                while let Some(event) = self.clients[n].1.poll_event() {
                    if let ClientEvent::Message(p) = event {
                        self.received[n].push((p.topic.as_str().to_owned(), p.payload, p.qos, p.retain));
                    }
                }
            }
            if !moved {
                return false;
            }
        }
        true
    }

    fn carry(&mut self, pipe: &Pipe, to: End) -> bool {
        let bytes = std::mem::take(&mut pipe.0.borrow_mut().bytes);
        let now = at(self.now);
        for data in &bytes {
            match to {
                End::Server(node, conn) => self.nodes[node].received(now, conn, data),
                End::Client(n) => self.clients[n].1.received(self.now, data),
            }
        }
        !bytes.is_empty()
    }

    fn hang_up(&mut self, end: End) {
        match end {
            End::Server(node, conn) => self.nodes[node].closed(at(self.now), conn),
            End::Client(n) => self.clients[n].1.connection_lost(),
        }
    }

    /// Breaks every socket between servers: what was on its way is lost.
    fn cut_bridges(&mut self) {
        let (cut, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.sockets).into_iter().partition(|s| matches!(s.b, End::Server(..)));
        self.sockets = kept;
        for socket in cut {
            self.hang_up(socket.a);
            self.hang_up(socket.b);
        }
        self.settle();
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        let now = at(self.now);
        for node in &mut self.nodes {
            node.timeout(now);
        }
        for (_, client) in &mut self.clients {
            client.timeout(self.now);
        }
        self.settle();
    }

    fn take(&mut self, n: usize) -> Vec<(String, Bytes, QoS, bool)> {
        std::mem::take(&mut self.received[n])
    }

    /// What client `n` received, as topic and text, the last of each topic.
    fn take_texts(&mut self, n: usize) -> BTreeMap<String, String> {
        self.take(n).into_iter().map(|(topic, value, ..)| (topic, String::from_utf8(value.to_vec()).unwrap())).collect()
    }

    /// The payloads client `n` received, in order.
    fn take_payloads(&mut self, n: usize) -> Vec<Bytes> {
        self.take(n).into_iter().map(|(_, payload, ..)| payload).collect()
    }

    fn bridge_up(&self, node: usize) -> bool {
        self.nodes[node].bridges().iter().all(|b| b.is_connected())
    }
}

fn topic(pattern: &str, direction: Direction, qos: QoS, local: &str, remote: &str) -> BridgeTopic {
    BridgeTopic { pattern: pattern.into(), direction, qos, local_prefix: local.into(), remote_prefix: remote.into() }
}

/// A bridge of `name` to node `to` with Mosquitto's defaults and a
/// constant one-second restart.
fn conf(name: &str, to: usize, topics: Vec<BridgeTopic>) -> BridgeConf {
    let port = 1000 + u16::try_from(to).unwrap();
    BridgeConf {
        addresses: vec![BridgeAddress { host: "127.0.0.1".into(), port }],
        topics,
        restart_timeout: RestartTimeout::Constant(1),
        ..BridgeConf::new(name)
    }
}

fn msg(topic: &str, payload: &str, qos: QoS, retain: bool) -> (String, Bytes, QoS, bool) {
    (topic.into(), Bytes::copy_from_slice(payload.as_bytes()), qos, retain)
}

#[test]
fn out_topics_cross_with_their_prefixes_and_the_lower_qos() {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "#", QoS::ExactlyOnce);
    net.take(sub);
    net.bridge(0, conf("b", 1, vec![topic("sensors/#", Direction::Out, QoS::AtLeastOnce, "edge/", "site/")]));
    assert!(net.bridge_up(0));
    let publisher = net.client(0, "pub");
    net.publish(publisher, "edge/sensors/t", "21", QoS::ExactlyOnce, false);
    net.publish(publisher, "edge/other", "no", QoS::AtLeastOnce, false);
    net.publish(publisher, "edge/sensors/h", "50", QoS::AtMostOnce, false);
    assert_eq!(
        net.take(sub),
        vec![msg("site/sensors/t", "21", QoS::AtLeastOnce, false), msg("site/sensors/h", "50", QoS::AtMostOnce, false)]
    );
}

#[test]
fn in_topics_cross_and_keep_the_retain_flag_of_a_bridge_aware_remote() {
    let mut net = Net::new(2);
    let remote_pub = net.client(1, "rpub");
    net.publish(remote_pub, "cmd/kept", "k", QoS::AtLeastOnce, true);
    let sub = net.client(0, "sub");
    net.subscribe(sub, "local/#", QoS::AtLeastOnce);
    net.bridge(0, conf("b", 1, vec![topic("cmd/#", Direction::In, QoS::AtLeastOnce, "local/", "")]));
    // The remote's retained message arrives on subscribe, retained.
    assert_eq!(net.take(sub), vec![msg("local/cmd/kept", "k", QoS::AtLeastOnce, false)]);
    let late = net.client(0, "late");
    net.subscribe(late, "local/#", QoS::AtLeastOnce);
    assert_eq!(net.take(late), vec![msg("local/cmd/kept", "k", QoS::AtLeastOnce, true)]);
    net.publish(remote_pub, "cmd/go", "1", QoS::ExactlyOnce, false);
    assert_eq!(net.take(sub), vec![msg("local/cmd/go", "1", QoS::AtLeastOnce, false)]);
}

#[test]
fn two_brokers_bridged_both_ways_on_everything_neither_loop_nor_duplicate() {
    let mut net = Net::new(2);
    let on_a = net.client(0, "a-sub");
    let on_b = net.client(1, "b-sub");
    net.subscribe(on_a, "t/#", QoS::AtLeastOnce);
    net.subscribe(on_b, "t/#", QoS::AtLeastOnce);
    net.bridge(0, conf("ab", 1, vec![topic("#", Direction::Both, QoS::AtLeastOnce, "", "")]));
    let pub_a = net.client(0, "pa");
    let pub_b = net.client(1, "pb");
    net.publish(pub_a, "t/a", "from a", QoS::AtLeastOnce, false);
    net.publish(pub_b, "t/b", "from b", QoS::AtLeastOnce, false);
    let both = vec![msg("t/a", "from a", QoS::AtLeastOnce, false), msg("t/b", "from b", QoS::AtLeastOnce, false)];
    assert_eq!(net.take(on_a), both);
    assert_eq!(net.take(on_b), both);
}

#[test]
fn the_state_topic_follows_the_connection_here_and_there() {
    let mut net = Net::new(2);
    let here = net.client(0, "here");
    let there = net.client(1, "there");
    net.subscribe(here, "$SYS/broker/connection/#", QoS::AtLeastOnce);
    net.subscribe(there, "$SYS/broker/connection/#", QoS::AtLeastOnce);
    net.bridge(0, conf("b", 1, vec![topic("x", Direction::Out, QoS::AtMostOnce, "", "")]));
    let state = |v: &str| msg("$SYS/broker/connection/host.b/state", v, QoS::AtLeastOnce, false);
    assert_eq!(net.take(here), vec![state("0"), state("1")]);
    assert_eq!(net.take(there), vec![state("1")]);
    // The connection breaks: the remote publishes the will, "0".
    net.reachable[1] = false;
    net.cut_bridges();
    assert_eq!(net.take(here), vec![state("0")]);
    assert_eq!(net.take(there), vec![state("0")]);
    assert!(!net.bridge_up(0));
    net.reachable[1] = true;
    net.advance(Duration::from_secs(2));
    assert!(net.bridge_up(0));
    assert_eq!(net.take(here), vec![state("1")]);
    assert_eq!(net.take(there), vec![state("1")]);
}

#[test]
fn messages_queue_while_the_remote_is_down_and_cross_when_it_returns() {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "q/#", QoS::AtLeastOnce);
    net.bridge(0, conf("b", 1, vec![topic("q/#", Direction::Out, QoS::ExactlyOnce, "", "")]));
    let publisher = net.client(0, "pub");
    net.reachable[1] = false;
    net.cut_bridges();
    for n in 0..5 {
        net.publish(publisher, "q/t", &n.to_string(), QoS::AtLeastOnce, false);
    }
    assert_eq!(net.nodes[0].broker().session("local.host.b").map(|s| s.queued), Some(5));
    net.advance(Duration::from_secs(2));
    assert!(net.take(sub).is_empty());
    net.reachable[1] = true;
    net.advance(Duration::from_secs(2));
    assert_eq!(net.take_payloads(sub), (0..5).map(|n| Bytes::from(n.to_string())).collect::<Vec<_>>());
}

#[test]
fn messages_queue_from_start_when_the_remote_was_never_there() {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "q/#", QoS::AtLeastOnce);
    net.reachable[1] = false;
    net.bridge(0, conf("b", 1, vec![topic("q/#", Direction::Out, QoS::AtLeastOnce, "", "")]));
    let publisher = net.client(0, "pub");
    net.publish(publisher, "q/t", "early", QoS::AtLeastOnce, false);
    net.reachable[1] = true;
    net.advance(Duration::from_secs(2));
    assert_eq!(net.take(sub), vec![msg("q/t", "early", QoS::AtLeastOnce, false)]);
}

#[test]
fn a_failed_address_moves_to_the_next_and_the_primary_is_probed_back() {
    let mut net = Net::new(3);
    let mut two = conf("b", 1, vec![topic("#", Direction::Out, QoS::AtLeastOnce, "", "")]);
    two.addresses.push(BridgeAddress { host: "127.0.0.1".into(), port: 1002 });
    net.reachable[1] = false;
    net.bridge(0, two);
    assert!(!net.bridge_up(0));
    net.advance(Duration::from_secs(2));
    assert!(net.bridge_up(0));
    assert!(net.nodes[2].broker().session("host.b").is_some_and(|s| s.conn.is_some()));
    // The primary returns: found by the probe, the bridge moves back.
    net.reachable[1] = true;
    net.advance(Duration::from_secs(6));
    net.advance(Duration::from_secs(2));
    assert!(net.bridge_up(0));
    assert!(net.nodes[1].broker().session("host.b").is_some_and(|s| s.conn.is_some()));
    assert!(net.nodes[2].broker().session("host.b").is_none_or(|s| s.conn.is_none()));
}

#[test]
fn start_type_once_does_not_come_back() {
    let mut net = Net::new(2);
    let mut once = conf("b", 1, vec![topic("#", Direction::Out, QoS::AtLeastOnce, "", "")]);
    once.start_type = StartType::Once;
    net.bridge(0, once);
    assert!(net.bridge_up(0));
    net.cut_bridges();
    net.advance(Duration::from_secs(60));
    assert!(!net.bridge_up(0));
}

#[test]
fn a_lazy_bridge_connects_at_its_threshold_and_leaves_when_idle() {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "#", QoS::AtLeastOnce);
    let mut lazy = conf("b", 1, vec![topic("l/#", Direction::Out, QoS::AtLeastOnce, "", "")]);
    lazy.start_type = StartType::Lazy { threshold: 3, idle_timeout: 10 };
    lazy.notifications = false;
    net.bridge(0, lazy);
    assert!(net.bridge_up(0));
    net.advance(Duration::from_secs(11));
    assert!(!net.bridge_up(0), "idle for longer than idle_timeout");
    let publisher = net.client(0, "pub");
    net.publish(publisher, "l/1", "1", QoS::AtLeastOnce, false);
    net.publish(publisher, "l/2", "2", QoS::AtLeastOnce, false);
    net.advance(Duration::from_secs(30));
    assert!(!net.bridge_up(0));
    net.take(sub);
    net.publish(publisher, "l/3", "3", QoS::AtLeastOnce, false);
    assert!(net.bridge_up(0));
    assert_eq!(net.take(sub).len(), 3);
}

/// What happens next in the property test.
#[derive(Debug, Clone)]
enum Step {
    /// A message from the publisher, not carried yet.
    Publish(QoS),
    /// Bytes move for a few rounds: a message may be half way.
    Carry(u8),
    /// The bridge's socket breaks.
    Cut,
    /// Time for the bridge to come back.
    Wait,
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 10 {
            0 => Self::Cut,
            1 => Self::Wait,
            2 | 3 => Self::Carry(u8::arbitrary(g) % 6),
            4 | 5 => Self::Publish(QoS::AtLeastOnce),
            6 | 7 => Self::Publish(QoS::ExactlyOnce),
            _ => Self::Publish(QoS::AtMostOnce),
        }
    }
}

/// Across random breaks of the bridge, every QoS 1 message published on
/// one side arrives on the other at least once and every QoS 2 message
/// exactly once, in the order published; QoS 0 at most once.
fn nothing_acknowledged_is_lost(steps: Vec<Step>) -> bool {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "p/#", QoS::ExactlyOnce);
    net.bridge(0, conf("b", 1, vec![topic("p/#", Direction::Out, QoS::ExactlyOnce, "", "")]));
    let publisher = net.client(0, "pub");
    let mut sent: Vec<(String, QoS)> = Vec::new();
    for (n, step) in steps.into_iter().enumerate() {
        match step {
            Step::Publish(qos) => {
                net.publish_only(publisher, "p/t", &n.to_string(), qos, false);
                sent.push((n.to_string(), qos));
            }
            Step::Carry(rounds) => {
                net.rounds(usize::from(rounds));
            }
            Step::Cut => net.cut_bridges(),
            Step::Wait => net.advance(Duration::from_secs(2)),
        }
    }
    net.settle();
    net.advance(Duration::from_secs(2));
    net.advance(Duration::from_secs(2));
    let got: Vec<String> =
        net.take(sub).into_iter().map(|(_, p, _, _)| String::from_utf8(p.to_vec()).unwrap()).collect();
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for payload in &got {
        *counts.entry(payload).or_default() += 1;
    }
    let counted = sent.iter().all(|(payload, qos)| {
        let n = counts.get(payload.as_str()).copied().unwrap_or(0);
        match qos {
            QoS::AtMostOnce => n <= 1,
            QoS::AtLeastOnce => n >= 1,
            QoS::ExactlyOnce => n == 1,
        }
    });
    // First arrivals of QoS 1 messages, and of QoS 2 messages, keep the
    // order they were sent in (MQTT orders messages of one QoS, section
    // 4.6).
    let firsts: Vec<&str> = {
        let mut seen = std::collections::BTreeSet::new();
        got.iter().map(String::as_str).filter(|p| seen.insert(*p)).collect()
    };
    let ordered = [QoS::AtLeastOnce, QoS::ExactlyOnce].into_iter().all(|qos| {
        let of_qos: Vec<&str> = sent.iter().filter(|(_, q)| *q == qos).map(|(p, _)| p.as_str()).collect();
        firsts.iter().filter(|p| of_qos.contains(p)).copied().collect::<Vec<_>>() == of_qos
    });
    counted && ordered
}

#[test]
fn prop_nothing_acknowledged_is_lost_across_breaks() {
    QuickCheck::new().tests(200).quickcheck(nothing_acknowledged_is_lost as fn(Vec<Step>) -> bool);
}

#[test]
fn each_bridge_reports_its_figures_under_sys() {
    let mut net = Net::new(2);
    let watcher = net.client(0, "watcher");
    net.subscribe(watcher, "$SYS/broker/bridge/#", QoS::AtMostOnce);
    net.bridge(0, conf("b", 1, vec![topic("f/#", Direction::Both, QoS::AtLeastOnce, "", "")]));
    let here = net.client(0, "here");
    let there = net.client(1, "there");
    net.publish(here, "f/out", "12345", QoS::AtLeastOnce, false);
    net.publish(there, "f/in", "123", QoS::AtLeastOnce, false);
    net.take(watcher);
    net.advance(Duration::from_secs(60));
    let figures = net.take_texts(watcher);
    let figure = |name: &str| figures.get(&format!("$SYS/broker/bridge/b/{name}")).map(String::as_str);
    assert_eq!(figure("state"), Some("connected"));
    assert_eq!(figure("messages/sent"), Some("1"));
    assert_eq!(figure("bytes/sent"), Some("5"));
    assert_eq!(figure("messages/received"), Some("1"));
    assert_eq!(figure("bytes/received"), Some("3"));
    assert_eq!(figure("queued"), Some("0"));
    assert_eq!(figure("reconnects"), Some("0"));
    // Down, with two messages waiting: said at the next interval.
    net.reachable[1] = false;
    net.cut_bridges();
    net.publish(here, "f/1", "x", QoS::AtLeastOnce, false);
    net.publish(here, "f/2", "x", QoS::AtLeastOnce, false);
    net.advance(Duration::from_secs(60));
    let changed = net.take_texts(watcher);
    assert_eq!(changed.get("$SYS/broker/bridge/b/state").map(String::as_str), Some("disconnected"));
    assert_eq!(changed.get("$SYS/broker/bridge/b/queued").map(String::as_str), Some("2"));
}

/// Bridge `b` from node 0 to node 1 on `q/#`.
fn queue_conf() -> BridgeConf {
    conf("b", 1, vec![topic("q/#", Direction::Out, QoS::AtLeastOnce, "", "")])
}

/// Bridge `b` started, then stopped; three QoS 1 messages wait in its
/// session; the returned client of node 1 subscribes to them.
fn stopped_with_three_queued() -> (Net, usize) {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "q/#", QoS::AtLeastOnce);
    let id = net.bridge(0, queue_conf());
    let publisher = net.client(0, "pub");
    net.nodes[0].stop_bridge(at(net.now), id);
    net.settle();
    for n in 0..3 {
        net.publish(publisher, "q/t", &n.to_string(), QoS::AtLeastOnce, false);
    }
    (net, sub)
}

#[test]
fn what_the_local_side_got_before_the_remote_answered_is_sent_once_it_has() {
    let (mut net, sub) = stopped_with_three_queued();
    // Started again with a slow disk and the remote away: the local side
    // gets its CONNACK and the queue, and waits for its SUBACK.
    net.reachable[1] = false;
    net.slow_disk[0] = true;
    net.bridge(0, queue_conf());
    net.release(0);
    assert!(net.take(sub).is_empty());
    // The remote answers before the SUBACK is on disk.
    net.reachable[1] = true;
    net.advance(Duration::from_secs(2));
    net.release(0);
    net.slow_disk[0] = false;
    net.advance(Duration::from_secs(1));
    assert_eq!(net.take_payloads(sub), ["0", "1", "2"].map(|p| Bytes::from_static(p.as_bytes())));
}

#[test]
fn slow_disks_on_both_sides_lose_nothing_queued() {
    let (mut net, sub) = stopped_with_three_queued();
    net.slow_disk = vec![true, true];
    net.bridge(0, queue_conf());
    net.release(0);
    net.release(1);
    net.release(0);
    net.release(1);
    net.slow_disk = vec![false, false];
    net.advance(Duration::from_secs(1));
    assert_eq!(net.take_payloads(sub), ["0", "1", "2"].map(|p| Bytes::from_static(p.as_bytes())));
}

#[test]
fn outgoing_retain_false_clears_the_flag_and_max_packet_size_drops_what_is_larger() {
    let mut net = Net::new(2);
    let mut plain = conf("b", 1, vec![topic("r/#", Direction::Out, QoS::AtLeastOnce, "", "")]);
    plain.outgoing_retain = false;
    plain.max_packet_size = 30;
    net.bridge(0, plain);
    let publisher = net.client(0, "pub");
    net.publish(publisher, "r/kept", "v", QoS::AtLeastOnce, true);
    net.publish(publisher, "r/big", &"x".repeat(40), QoS::AtLeastOnce, false);
    net.publish(publisher, "r/after", "ok", QoS::AtLeastOnce, false);
    // Not retained there: a late subscriber gets nothing on r/kept.
    let late = net.client(1, "late");
    net.subscribe(late, "r/#", QoS::AtLeastOnce);
    assert!(net.take(late).is_empty());
    // The large one was dropped (and acknowledged here), the next crossed.
    let sub = net.client(1, "sub");
    net.subscribe(sub, "r/#", QoS::AtLeastOnce);
    net.publish(publisher, "r/last", "ok", QoS::AtLeastOnce, false);
    assert_eq!(net.take(sub), vec![msg("r/last", "ok", QoS::AtLeastOnce, false)]);
    assert_eq!(net.nodes[0].bridges()[0].stats().dropped, 1);
    assert_eq!(net.nodes[0].broker().session("local.host.b").map(|s| s.inflight), Some(0));
}

#[test]
fn copies_the_bridge_session_drops_are_counted_in_its_figures() {
    let mut net = Net::with(2, Config { max_queued_messages: 2, ..Config::default() });
    let watcher = net.client(0, "watcher");
    net.subscribe(watcher, "$SYS/broker/bridge/b/dropped", QoS::AtMostOnce);
    net.reachable[1] = false;
    net.bridge(0, conf("b", 1, vec![topic("d/#", Direction::Out, QoS::AtLeastOnce, "", "")]));
    let publisher = net.client(0, "pub");
    for n in 0..5 {
        net.publish(publisher, "d/t", &n.to_string(), QoS::AtLeastOnce, false);
    }
    net.take(watcher);
    net.advance(Duration::from_secs(60));
    assert_eq!(net.take(watcher), vec![msg("$SYS/broker/bridge/b/dropped", "3", QoS::AtMostOnce, false)]);
}

#[test]
fn a_changed_bridge_drops_the_subscriptions_of_topics_it_no_longer_has() {
    let mut net = Net::new(2);
    let sub = net.client(1, "sub");
    net.subscribe(sub, "#", QoS::AtLeastOnce);
    let id = net.bridge(0, conf("b", 1, vec![topic("old/#", Direction::Out, QoS::AtLeastOnce, "", "")]));
    net.nodes[0].stop_bridge(at(net.now), id);
    net.settle();
    // Started again with another topic (a reload, a restart): its stored
    // session still had `old/#`.
    net.bridge(0, conf("b", 1, vec![topic("new/#", Direction::Out, QoS::AtLeastOnce, "", "")]));
    let subscriptions = net.nodes[0].broker().session("local.host.b").map(|s| s.subscriptions);
    assert_eq!(subscriptions, Some(vec![("new/#".to_owned(), QoS::AtLeastOnce)]));
    let publisher = net.client(0, "pub");
    net.publish(publisher, "old/1", "gone", QoS::AtLeastOnce, false);
    net.publish(publisher, "new/1", "kept", QoS::AtLeastOnce, false);
    assert_eq!(net.take(sub), vec![msg("new/1", "kept", QoS::AtLeastOnce, false)]);
}
