//! The MQTT client of `culex_core::client` against the broker of the same
//! crate, over in-memory connections that can break at any point: every
//! QoS 1/2 message published reaches the subscriber as its QoS promises,
//! and a transcript of a session that breaks and resumes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use culex_core::client::{Client, ClientEvent, ClientOptions};
use culex_core::codec::{self, Packet};
use culex_core::{
    Action, Broker, Config, ConnId, Input, Instant, Now, Peer, Protocol, QoS, TopicFilter, TopicName, UnixTime,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};

/// A client joined to the broker by a connection that can be cut.
struct Wired {
    client: Client,
    conn: Option<ConnId>,
    /// Every byte the broker sent it, in order.
    from_broker: Vec<u8>,
    /// Every packet each way, for transcripts.
    log: Vec<String>,
}

/// The broker and its clients, in virtual time.
struct Net {
    broker: Broker,
    now: Instant,
    clients: Vec<Wired>,
    /// Packets broker → client, decoded, kept for the transcript.
    received: Vec<BytesMut>,
}

impl Net {
    fn new(options: Vec<ClientOptions>) -> Self {
        let clients: Vec<Wired> = options
            .into_iter()
            .map(|o| Wired { client: Client::new(o), conn: None, from_broker: Vec::new(), log: Vec::new() })
            .collect();
        let received = clients.iter().map(|_| BytesMut::new()).collect();
        Self { broker: Broker::new(Config::default()), now: Instant::ZERO, clients, received }
    }

    fn at(&self) -> Now {
        Now::new(self.now, UnixTime::from_secs_f64(1_767_225_600.0 + self.now.since_origin().as_secs_f64()))
    }

    /// Opens a connection for client `n` and sends CONNECT.
    fn connect(&mut self, n: usize) {
        let conn = self.broker.accept(self.at(), Peer::default());
        self.clients[n].conn = Some(conn);
        self.received[n].clear();
        self.clients[n].client.connect(self.now);
        self.settle();
    }

    /// Cuts client `n`'s connection: what was on its way is lost.
    fn cut(&mut self, n: usize) {
        if let Some(conn) = self.clients[n].conn.take() {
            self.broker.handle_input(self.at(), Input::Closed { conn });
            self.clients[n].client.connection_lost();
            self.clients[n].log.push("-- connection cut".into());
            while self.broker.poll_action().is_some() {}
        }
    }

    /// Moves bytes both ways until nothing moves (bounded).
    fn settle(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            for n in 0..self.clients.len() {
                let Some(data) = self.clients[n].client.poll_transmit() else { continue };
                let Some(conn) = self.clients[n].conn else { continue };
                log_packets(&mut self.clients[n].log, "->", &data);
                self.broker.handle_input(self.at(), Input::Received { conn, data: &data });
                moved = true;
            }
            while let Some(action) = self.broker.poll_action() {
                match action {
                    Action::Send { conn, data } => {
                        let Some(n) = self.clients.iter().position(|w| w.conn == Some(conn)) else { continue };
                        log_packets(&mut self.clients[n].log, "<-", &data);
                        self.clients[n].from_broker.extend_from_slice(&data);
                        self.clients[n].client.received(self.now, &data);
                        moved = true;
                    }
                    Action::Close { conn, .. } => {
                        if let Some(n) = self.clients.iter().position(|w| w.conn == Some(conn)) {
                            self.clients[n].conn = None;
                            self.clients[n].client.connection_lost();
                        }
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the network never settled");
    }

    fn events(&mut self, n: usize) -> Vec<ClientEvent> {
        std::iter::from_fn(|| self.clients[n].client.poll_event()).collect()
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
        self.broker.handle_timeout(self.at());
        for n in 0..self.clients.len() {
            self.clients[n].client.timeout(self.now);
        }
        self.settle();
    }
}

/// Appends one line per packet in `data` (whole packets: the client and
/// the broker write packets whole).
fn log_packets(log: &mut Vec<String>, way: &str, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(packet)) = codec::decode(&mut buf, usize::MAX, Protocol::V311) {
        log.push(format!("{way} {}", describe(&packet)));
    }
}

fn describe(packet: &Packet) -> String {
    match packet {
        Packet::Connect(c) => format!("CONNECT {} clean={}", c.client_id, c.clean_session),
        Packet::ConnAck(a) => format!("CONNACK session_present={} {}", a.session_present, a.code),
        Packet::Publish(p) => format!(
            "PUBLISH {} q{} dup={} retain={} id={} {:?}",
            p.topic.as_str(),
            p.qos as u8,
            p.dup,
            p.retain,
            p.packet_id.map_or(0, |id| id.get()),
            String::from_utf8_lossy(&p.payload)
        ),
        Packet::PubAck(id) => format!("PUBACK {}", id.get()),
        Packet::PubRec(id) => format!("PUBREC {}", id.get()),
        Packet::PubRel(id) => format!("PUBREL {}", id.get()),
        Packet::PubComp(id) => format!("PUBCOMP {}", id.get()),
        Packet::Subscribe(s) => format!("SUBSCRIBE {} {:?}", s.packet_id.get(), s.filters),
        Packet::SubAck(s) => format!("SUBACK {} {:?}", s.packet_id.get(), s.return_codes),
        Packet::Unsubscribe(u) => format!("UNSUBSCRIBE {}", u.packet_id.get()),
        Packet::UnsubAck(id) => format!("UNSUBACK {}", id.get()),
        Packet::PingReq => "PINGREQ".into(),
        Packet::PingResp => "PINGRESP".into(),
        Packet::Disconnect => "DISCONNECT".into(),
    }
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name).unwrap()
}

/// What the publisher does next.
#[derive(Debug, Clone, Copy)]
enum Step {
    Publish(QoS),
    /// Lets `n` rounds of bytes through before the next step.
    Deliver,
    CutPublisher,
    CutSubscriber,
}

impl Arbitrary for Step {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 10 {
            0..=2 => Self::Publish(QoS::AtLeastOnce),
            3..=5 => Self::Publish(QoS::ExactlyOnce),
            6 => Self::Publish(QoS::AtMostOnce),
            7 => Self::Deliver,
            8 => Self::CutPublisher,
            _ => Self::CutSubscriber,
        }
    }
}

/// Whatever the cuts, once both are connected again and the bytes settle,
/// every QoS 1 message reached the subscriber at least once and every
/// QoS 2 message exactly once, and the publisher holds nothing.
#[test]
fn client_qos_promises_hold_across_cut_connections() {
    fn prop(steps: Vec<Step>, window: u8) -> bool {
        let publisher = ClientOptions { max_inflight: usize::from(window % 4), ..ClientOptions::new("pub") };
        let subscriber = ClientOptions::new("sub").clean_session(false);
        let mut net = Net::new(vec![publisher.clean_session(false), subscriber]);
        net.connect(1);
        net.clients[1].client.subscribe(net.now, vec![(TopicFilter::new("t/#").unwrap(), QoS::ExactlyOnce)]);
        net.settle();
        net.connect(0);
        let mut sent: BTreeMap<String, QoS> = BTreeMap::new();
        for (n, step) in steps.iter().enumerate() {
            match *step {
                Step::Publish(qos) => {
                    let payload = format!("m{n}");
                    let client = &mut net.clients[0].client;
                    client.publish(net.now, topic("t/x"), Bytes::from(payload.clone()), qos, false);
                    sent.insert(payload, qos);
                    // Only part of what the publisher wrote may arrive
                    // before the next cut: deliver only every other step.
                    if n % 2 == 0 {
                        net.settle();
                    }
                }
                Step::Deliver => net.settle(),
                Step::CutPublisher => {
                    net.cut(0);
                    net.connect(0);
                }
                Step::CutSubscriber => {
                    net.cut(1);
                    net.connect(1);
                }
            }
        }
        net.settle();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for event in net.events(1) {
            if let ClientEvent::Message(p) = event {
                *counts.entry(String::from_utf8_lossy(&p.payload).into_owned()).or_default() += 1;
            }
        }
        let kept = sent.iter().all(|(payload, qos)| {
            let got = counts.get(payload).copied().unwrap_or(0);
            match qos {
                QoS::AtMostOnce => got <= 1,
                QoS::AtLeastOnce => got >= 1,
                QoS::ExactlyOnce => got == 1,
            }
        });
        kept && net.clients[0].client.unacknowledged() == 0
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<Step>, u8) -> bool);
}

/// A session as a bridge or a device lives it: subscribe, publish at each
/// QoS, lose the connection with messages in flight, resume (sent again
/// with DUP), keep the connection alive with pings.
#[test]
fn client_transcript_of_a_session_that_breaks_and_resumes() {
    let mut net = Net::new(vec![ClientOptions::new("dev").clean_session(false).keep_alive(10)]);
    net.connect(0);
    net.clients[0].client.subscribe(net.now, vec![(TopicFilter::new("cmd/#").unwrap(), QoS::ExactlyOnce)]);
    net.settle();
    for (qos, body) in [(QoS::AtMostOnce, "zero"), (QoS::AtLeastOnce, "one"), (QoS::ExactlyOnce, "two")] {
        net.clients[0].client.publish(net.now, topic("cmd/echo"), Bytes::from_static(body.as_bytes()), qos, false);
        net.settle();
    }
    // Two messages written, the connection cut before they arrive.
    let client = &mut net.clients[0].client;
    client.publish(net.now, topic("cmd/late"), Bytes::from_static(b"a"), QoS::AtLeastOnce, false);
    client.publish(net.now, topic("cmd/late"), Bytes::from_static(b"b"), QoS::ExactlyOnce, false);
    let lost = client.poll_transmit().expect("two PUBLISH written");
    assert!(!lost.is_empty());
    net.cut(0);
    net.connect(0);
    net.advance(Duration::from_secs(10));
    net.advance(Duration::from_secs(1));
    let mut transcript = String::new();
    for line in &net.clients[0].log {
        writeln!(transcript, "{line}").unwrap();
    }
    writeln!(transcript, "== events").unwrap();
    for event in net.events(0) {
        let line = match event {
            ClientEvent::Message(p) => format!(
                "message {} q{} dup={} {:?}",
                p.topic.as_str(),
                p.qos as u8,
                p.dup,
                String::from_utf8_lossy(&p.payload)
            ),
            other => format!("{other:?}"),
        };
        writeln!(transcript, "{line}").unwrap();
    }
    insta::assert_snapshot!(transcript);
}

/// A server that stops answering: the PINGREQ goes a keepalive after the
/// last packet written, and the connection is given up a keepalive later.
#[test]
fn client_gives_up_a_connection_whose_pings_go_unanswered() {
    let mut client = Client::new(ClientOptions::new("quiet").keep_alive(5));
    client.connect(Instant::ZERO);
    client.poll_transmit();
    client.received(Instant::ZERO, &[0x20, 0x02, 0x00, 0x00]);
    let five = Instant::ZERO + Duration::from_secs(5);
    assert_eq!(client.next_deadline(), Some(five));
    client.timeout(five);
    assert_eq!(client.poll_transmit().as_deref(), Some(&[0xc0, 0x00][..]));
    let ten = five + Duration::from_secs(5);
    assert_eq!(client.next_deadline(), Some(ten));
    client.timeout(ten);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(events.last(), Some(ClientEvent::Lost(_))), "{events:?}");
    assert!(!client.is_connected());
}

/// A refused CONNECT, a packet a server never sends, a malformed one: the
/// client reports and drops the connection; a bridge's CONNECT carries the
/// protocol level with its high bit set.
#[test]
fn client_reports_refusals_and_broken_servers() {
    let mut client = Client::new(ClientOptions::new("c"));
    client.connect(Instant::ZERO);
    client.received(Instant::ZERO, &[0x20, 0x02, 0x00, 0x05]);
    assert!(matches!(client.poll_event(), Some(ClientEvent::Refused(code)) if code as u8 == 5));
    client.connect(Instant::ZERO);
    client.received(Instant::ZERO, &[0x20, 0x02, 0x00, 0x00, 0xc0, 0x00]);
    let events: Vec<_> = std::iter::from_fn(|| client.poll_event()).collect();
    assert!(matches!(events.as_slice(), [ClientEvent::Connected { .. }, ClientEvent::Lost(_)]), "{events:?}");
    client.connect(Instant::ZERO);
    client.received(Instant::ZERO, &[0x20, 0x03, 0x00, 0x00, 0x00]);
    assert!(matches!(client.poll_event(), Some(ClientEvent::Lost(_))));
    let mut bridge = Client::new(ClientOptions { bridge: true, ..ClientOptions::new("b") });
    bridge.connect(Instant::ZERO);
    let connect = bridge.poll_transmit().unwrap();
    // Fixed header (2), name length (2), "MQTT" (4), then the level.
    assert_eq!(connect[8], 0x84);
}

/// A bridge (a CONNECT with the protocol level's high bit set, as
/// Mosquitto's `try_private` sends it) is not sent back what it publishes,
/// gets the RETAIN flag as published, and may publish its state under
/// `$SYS/broker/connection/<name>/state`; a plain client gets neither.
#[test]
fn client_as_a_bridge_gets_no_echo_and_retain_as_published() {
    let bridge = ClientOptions { bridge: true, ..ClientOptions::new("edge.bridge") };
    let mut net = Net::new(vec![bridge, ClientOptions::new("plain")]);
    for n in 0..2 {
        net.connect(n);
        // `#` does not match `$SYS` topics ([MQTT-4.7.2-1]).
        let filters = ["#", "$SYS/broker/connection/#"].map(|f| (TopicFilter::new(f).unwrap(), QoS::AtLeastOnce));
        net.clients[n].client.subscribe(net.now, filters.to_vec());
        net.settle();
    }
    let state = topic("$SYS/broker/connection/edge.bridge/state");
    net.clients[0].client.publish(net.now, state, Bytes::from_static(b"1"), QoS::AtLeastOnce, true);
    net.clients[0].client.publish(net.now, topic("edge/t"), Bytes::from_static(b"up"), QoS::AtLeastOnce, true);
    net.settle();
    net.clients[1].client.publish(net.now, topic("cloud/t"), Bytes::from_static(b"down"), QoS::AtLeastOnce, true);
    net.settle();
    let got = |events: Vec<ClientEvent>| -> Vec<(String, bool)> {
        events
            .into_iter()
            .filter_map(|e| match e {
                ClientEvent::Message(p) => Some((p.topic.as_str().to_owned(), p.retain)),
                _ => None,
            })
            .collect()
    };
    assert_eq!(got(net.events(0)), [("cloud/t".to_owned(), true)]);
    assert_eq!(
        got(net.events(1)),
        [
            ("$SYS/broker/connection/edge.bridge/state".to_owned(), false),
            ("edge/t".to_owned(), false),
            ("cloud/t".to_owned(), false)
        ]
    );
    // A plain client may not write there, nor anywhere else under $SYS.
    net.clients[1].client.publish(
        net.now,
        topic("$SYS/broker/connection/x/state"),
        Bytes::new(),
        QoS::AtMostOnce,
        false,
    );
    net.clients[1].client.publish(
        net.now,
        topic("$SYS/broker/uptime"),
        Bytes::from_static(b"0"),
        QoS::AtMostOnce,
        false,
    );
    net.settle();
    assert_eq!(got(net.events(1)), [("$SYS/broker/connection/x/state".to_owned(), false)]);
}

/// The requests of the split test, made before any byte arrives.
fn requests(client: &mut Client) {
    client.subscribe(Instant::ZERO, vec![(TopicFilter::new("s/#").unwrap(), QoS::ExactlyOnce)]);
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce, QoS::AtLeastOnce].into_iter().enumerate() {
        client.publish(Instant::ZERO, topic(&format!("s/{n}")), Bytes::from(vec![b'x'; n * 40]), qos, n == 3);
    }
}

/// What a client that made [`requests`] reports, fed `chunks` in order.
fn events_of(chunks: &[&[u8]]) -> Vec<ClientEvent> {
    let mut client = Client::new(ClientOptions::new("split"));
    client.connect(Instant::ZERO);
    requests(&mut client);
    for chunk in chunks {
        client.received(Instant::ZERO, chunk);
    }
    std::iter::from_fn(|| client.poll_event()).collect()
}

/// Real traffic from the broker (CONNACK, SUBACK, the messages echoed at
/// each QoS, their acknowledgements), cut at every point and in random
/// chunks, gives the client the same events as in one piece.
#[test]
fn client_any_split_of_the_servers_bytes_gives_the_same_events() {
    let mut net = Net::new(vec![ClientOptions::new("split")]);
    let conn = net.broker.accept(net.at(), Peer::default());
    net.clients[0].conn = Some(conn);
    net.clients[0].client.connect(net.now);
    requests(&mut net.clients[0].client);
    net.settle();
    let stream = net.clients[0].from_broker.clone();
    let whole = events_of(&[&stream]);
    // CONNACK, SUBACK, the four messages (the SUBSCRIBE went first: it
    // was made first) and the three acknowledged publishes.
    let messages: Vec<_> = whole
        .iter()
        .filter_map(|e| if let ClientEvent::Message(p) = e { Some(p.topic.as_str()) } else { None })
        .collect();
    assert_eq!(messages.len(), 4, "{whole:?}");
    assert_eq!(whole.len(), 9, "{whole:?}");
    for cut in 0..=stream.len() {
        let (a, b) = stream.split_at(cut);
        assert_eq!(events_of(&[a, b]), whole, "cut at {cut}");
    }
    fn prop(sizes: Vec<u8>, stream: Vec<u8>, whole: Vec<ClientEvent>) -> bool {
        let mut chunks = Vec::new();
        let mut rest = stream.as_slice();
        for size in sizes.iter().map(|s| usize::from(*s % 16) + 1).cycle().take(stream.len()) {
            if rest.is_empty() {
                break;
            }
            let (a, b) = rest.split_at(size.min(rest.len()));
            chunks.push(a);
            rest = b;
        }
        chunks.push(rest);
        events_of(&chunks) == whole
    }
    let mut g = Gen::new(50);
    for _ in 0..300 {
        let sizes = Vec::<u8>::arbitrary(&mut g);
        assert!(prop(sizes.clone(), stream.clone(), whole.clone()), "chunk sizes {sizes:?}");
    }
}

/// A CONNECT that no CONNACK answers within the keepalive is given up,
/// and QoS 0 messages waited only for that CONNACK: published with no
/// connection at all, they are dropped, not piled up.
#[test]
fn client_gives_up_without_connack_and_keeps_no_qos0_while_down() {
    let mut client = Client::new(ClientOptions::new("slow").keep_alive(5));
    client.publish(Instant::ZERO, topic("t"), Bytes::from_static(b"dropped"), QoS::AtMostOnce, false);
    client.connect(Instant::ZERO);
    client.poll_transmit();
    client.publish(Instant::ZERO, topic("t"), Bytes::from_static(b"queued"), QoS::AtMostOnce, false);
    assert_eq!(client.poll_transmit(), None, "nothing goes before CONNACK");
    let five = Instant::ZERO + Duration::from_secs(5);
    assert_eq!(client.next_deadline(), Some(five));
    client.timeout(five);
    assert!(matches!(client.poll_event(), Some(ClientEvent::Lost(culex_core::client::LostReason::ConnAckTimeout))));
    // The message that waited for that CONNACK went with the connection.
    client.connect(five);
    client.poll_transmit();
    client.publish(five, topic("t"), Bytes::from_static(b"kept"), QoS::AtMostOnce, false);
    client.received(five, &[0x20, 0x02, 0x00, 0x00]);
    let sent = client.poll_transmit().expect("the QoS 0 message after CONNACK");
    let mut buf = BytesMut::from(&sent[..]);
    let Ok(Some(Packet::Publish(p))) = codec::decode(&mut buf, usize::MAX, Protocol::V311) else { panic!("{sent:?}") };
    assert_eq!(&p.payload[..], b"kept");
    assert!(buf.is_empty(), "only that one: the others were dropped");
}

#[test]
fn a_pipelining_client_subscribes_behind_connect_and_only_once() {
    let mut options = ClientOptions::new("p");
    options.pipeline = true;
    let mut client = Client::new(options);
    client.connect(Instant::ZERO);
    let filter = TopicFilter::new("a/#").unwrap();
    let id = client.subscribe(Instant::ZERO, vec![(filter, QoS::AtLeastOnce)]).unwrap();
    let mut sent = BytesMut::from(&client.poll_transmit().unwrap()[..]);
    let decode = |buf: &mut BytesMut| codec::decode(buf, 1 << 20, Protocol::V311).unwrap();
    assert!(matches!(decode(&mut sent), Some(Packet::Connect(_))));
    assert!(matches!(decode(&mut sent), Some(Packet::Subscribe(s)) if s.packet_id == id));
    client.received(Instant::ZERO, &[0x20, 2, 0, 0]);
    assert_eq!(client.poll_transmit(), None, "the SUBSCRIBE went out already");
    // Unanswered when the connection drops: sent again on the next one.
    client.connection_lost();
    client.connect(Instant::ZERO);
    let mut again = BytesMut::from(&client.poll_transmit().unwrap()[..]);
    assert!(matches!(decode(&mut again), Some(Packet::Connect(_))));
    assert!(matches!(decode(&mut again), Some(Packet::Subscribe(s)) if s.packet_id == id));
}
