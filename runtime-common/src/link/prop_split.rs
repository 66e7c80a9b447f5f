//! Any split of a connection's byte stream into reads gives the same MQTT
//! bytes: the link (TLS, WebSocket, WebSocket under TLS) is fed what real
//! clients write, cut at every point and in random pieces, and driven the
//! way both runtimes drive it: the opening first, then the link, with
//! what came in the opening's last read handed over once.
//!
//! The WebSocket streams were recorded from paho-mqtt and MQTT.js
//! (`tests/data/ws/record.py`); TLS is rustls' client, writing its
//! application data right behind its handshake as a TCP_NODELAY client
//! does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use bytes::{Bytes, BytesMut};
use culex_core::Protocol;
use culex_core::codec::{self, Packet};
use quickcheck::QuickCheck;
use rustls::ClientConnection;

use crate::link::{Link, OpenStep, Opening, Transport, WebSocket};
use crate::testing::{client_with, from_client, listener, remote, to_client};
use crate::ws::{Deframed, End};

/// What paho-mqtt 2.2 wrote over WebSocket: the upgrade, CONNECT,
/// SUBSCRIBE, PUBLISH at QoS 0, 1 and 2 (12, 300 and 2,000 bytes), the
/// acknowledgements of what it received, UNSUBSCRIBE, DISCONNECT.
const PAHO: &[u8] = include_bytes!("../../tests/data/ws/paho.bin");
/// The same session from MQTT.js 5 (which also offers permessage-deflate).
const MQTTJS: &[u8] = include_bytes!("../../tests/data/ws/mqttjs.bin");

/// Most flights a client writes before it has said everything.
const MAX_FLIGHTS: usize = 10;

/// A client as the server meets it.
trait Client {
    /// What it writes next, having read `answer`; empty once it has
    /// nothing more to say.
    fn next_flight(&mut self, answer: &[u8]) -> Vec<u8>;

    /// The plaintext it has read from the server.
    fn read(&self) -> &[u8];
}

/// A recording, written at once: a client that does not wait for the
/// 101 before its first frame puts both in one read.
struct Recorded {
    stream: &'static [u8],
    written: bool,
    read: Vec<u8>,
}

impl Client for Recorded {
    fn next_flight(&mut self, answer: &[u8]) -> Vec<u8> {
        self.read.extend_from_slice(answer);
        if std::mem::replace(&mut self.written, true) { Vec::new() } else { self.stream.to_vec() }
    }

    fn read(&self) -> &[u8] {
        &self.read
    }
}

/// rustls' client, writing `app` as soon as its handshake is done: under
/// TLS 1.3, in the same flight as its Finished.
struct TlsClient {
    conn: ClientConnection,
    app: Vec<u8>,
    written: bool,
    read: Vec<u8>,
}

impl Client for TlsClient {
    fn next_flight(&mut self, answer: &[u8]) -> Vec<u8> {
        let plain = to_client(&mut self.conn, answer).expect("the client takes what the server wrote");
        self.read.extend_from_slice(&plain);
        let mut flight = from_client(&mut self.conn);
        if !self.conn.is_handshaking() && !std::mem::replace(&mut self.written, true) {
            self.conn.writer().write_all(&self.app).unwrap();
            flight.extend(from_client(&mut self.conn));
        }
        flight
    }

    fn read(&self) -> &[u8] {
        &self.read
    }
}

/// The server side, as a runtime drives it.
struct Server {
    opening: Option<Opening>,
    link: Option<Link>,
    got: Outcome,
}

/// Everything a split could change.
#[derive(Default, PartialEq, Eq)]
struct Outcome {
    /// MQTT bytes handed to the core.
    mqtt: Vec<u8>,
    /// How the link ended, if it did.
    end: Option<End>,
    /// Whether the opening was refused.
    refused: bool,
    /// The plaintext the client read.
    client_read: Vec<u8>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outcome")
            .field("mqtt", &format_args!("{} bytes", self.mqtt.len()))
            .field("end", &self.end)
            .field("refused", &self.refused)
            .field("client_read", &String::from_utf8_lossy(&self.client_read))
            .finish()
    }
}

impl Server {
    fn new(transport: &Transport) -> Self {
        let opening = transport.opening(&remote());
        let link = opening.is_none().then(Link::raw);
        Self { opening, link, got: Outcome::default() }
    }

    /// One read of `data`; what the server writes back.
    fn read(&mut self, data: &[u8]) -> Vec<u8> {
        if self.got.refused || self.got.end.is_some() {
            return Vec::new();
        }
        if let Some(link) = &mut self.link {
            let got = link.incoming(Bytes::copy_from_slice(data));
            return self.take(got);
        }
        let opening = self.opening.as_mut().expect("an opening until the link");
        match opening.feed(data) {
            OpenStep::NeedMore { reply } => reply.to_vec(),
            OpenStep::Open { reply, link, first, .. } => {
                self.link = Some(link);
                [&reply[..], &self.take(first)].concat()
            }
            OpenStep::Refuse { reply } | OpenStep::Respond { reply } => {
                self.got.refused = true;
                reply.to_vec()
            }
        }
    }

    fn take(&mut self, got: Deframed) -> Vec<u8> {
        self.got.mqtt.extend_from_slice(&got.data);
        self.got.end = got.end;
        got.reply.to_vec()
    }
}

/// Plays a fresh `client` against a server on `transport`, the client's
/// whole stream cut at the offsets `cuts` (sorted) besides where it waits
/// for an answer. Also gives the stream's length.
fn play(transport: &Transport, mut client: Box<dyn Client>, cuts: &[usize]) -> (Outcome, usize) {
    let mut server = Server::new(transport);
    let (mut offset, mut answer) = (0, Vec::new());
    for _ in 0..MAX_FLIGHTS {
        let flight = client.next_flight(&std::mem::take(&mut answer));
        if flight.is_empty() {
            break;
        }
        let mut from = 0;
        for &cut in cuts {
            if cut > offset + from && cut < offset + flight.len() {
                answer.extend(server.read(&flight[from..cut - offset]));
                from = cut - offset;
            }
        }
        answer.extend(server.read(&flight[from..]));
        offset += flight.len();
    }
    let mut outcome = server.got;
    outcome.client_read = client.read().to_vec();
    (outcome, offset)
}

/// A transport, a way to make the client that talks to it, and the MQTT
/// bytes that client sends.
struct Case {
    name: &'static str,
    transport: Transport,
    client: fn() -> Box<dyn Client>,
    mqtt: fn() -> Vec<u8>,
}

impl Case {
    /// The outcome with each flight in one read (checked to carry the
    /// client's MQTT bytes), and the stream's length.
    fn whole(&self) -> (Outcome, usize) {
        let (whole, len) = play(&self.transport, (self.client)(), &[]);
        assert!(whole.mqtt == (self.mqtt)(), "{}: the whole stream gave {whole:?}", self.name);
        (whole, len)
    }

    /// Every single cut gives the outcome of the whole stream.
    fn check_every_cut(&self) {
        let (whole, len) = self.whole();
        for cut in 1..len {
            let (split, _) = play(&self.transport, (self.client)(), &[cut]);
            assert!(split == whole, "{}: cut at {cut} of {len}: {split:?}\nwhole: {whole:?}", self.name);
        }
    }

    /// Random cuts (`tests` sets of them) give the same outcome.
    fn check_random_cuts(&'static self, tests: u64) {
        thread_local! {
            static CHECKED: std::cell::RefCell<Option<(&'static Case, Outcome, usize)>> =
                const { std::cell::RefCell::new(None) };
        }
        fn prop(cuts: Vec<usize>) -> bool {
            CHECKED.with_borrow(|checked| {
                let (case, whole, len) = checked.as_ref().expect("a case to check");
                let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % len).collect();
                cuts.sort_unstable();
                play(&case.transport, (case.client)(), &cuts).0 == *whole
            })
        }
        let (whole, len) = self.whole();
        CHECKED.set(Some((self, whole, len)));
        QuickCheck::new().tests(tests).quickcheck(prop as fn(Vec<usize>) -> bool);
    }
}

fn recorded(stream: &'static [u8]) -> Box<dyn Client> {
    Box::new(Recorded { stream, written: false, read: Vec::new() })
}

fn tls_client(version: &'static rustls::SupportedProtocolVersion, app: &[u8]) -> Box<dyn Client> {
    Box::new(TlsClient { conn: client_with(None, &[version]), app: app.to_vec(), written: false, read: Vec::new() })
}

fn websocket() -> Transport {
    Transport { tls: None, websocket: Some(WebSocket::new(1 << 20)) }
}

fn tls(websocket: bool) -> Transport {
    Transport { tls: Some(listener(|_| {})), websocket: websocket.then(|| WebSocket::new(1 << 20)) }
}

/// The MQTT bytes in a recorded WebSocket stream, read the plain way:
/// after the request's blank line, each frame's payload unmasked (the
/// recordings use no fragmentation or extensions).
fn unmasked(stream: &[u8]) -> Vec<u8> {
    let head = stream.windows(4).position(|w| w == b"\r\n\r\n").expect("an upgrade request") + 4;
    let (mut rest, mut mqtt) = (&stream[head..], Vec::new());
    while let [first, second, tail @ ..] = rest {
        let (len, tail) = match second & 0x7f {
            126 => (usize::from(u16::from_be_bytes([tail[0], tail[1]])), &tail[2..]),
            127 => (usize::try_from(u64::from_be_bytes(tail[..8].try_into().unwrap())).unwrap(), &tail[8..]),
            n => (usize::from(n), tail),
        };
        let (mask, tail) = tail.split_at(4);
        if first & 0x0f == 0x2 {
            mqtt.extend(tail[..len].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        rest = &tail[len..];
    }
    mqtt
}

fn paho_mqtt() -> Vec<u8> {
    unmasked(PAHO)
}

fn mqttjs_mqtt() -> Vec<u8> {
    unmasked(MQTTJS)
}

static WS_PAHO: std::sync::LazyLock<Case> = std::sync::LazyLock::new(|| Case {
    name: "WebSocket, paho",
    transport: websocket(),
    client: || recorded(PAHO),
    mqtt: paho_mqtt,
});
static WS_MQTTJS: std::sync::LazyLock<Case> = std::sync::LazyLock::new(|| Case {
    name: "WebSocket, MQTT.js",
    transport: websocket(),
    client: || recorded(MQTTJS),
    mqtt: mqttjs_mqtt,
});
static TLS13: std::sync::LazyLock<Case> = std::sync::LazyLock::new(|| Case {
    name: "TLS 1.3",
    transport: tls(false),
    client: || tls_client(&rustls::version::TLS13, &paho_mqtt()),
    mqtt: paho_mqtt,
});
static TLS12: std::sync::LazyLock<Case> = std::sync::LazyLock::new(|| Case {
    name: "TLS 1.2",
    transport: tls(false),
    client: || tls_client(&rustls::version::TLS12, &mqttjs_mqtt()),
    mqtt: mqttjs_mqtt,
});
static TLS13_WS: std::sync::LazyLock<Case> = std::sync::LazyLock::new(|| Case {
    name: "WebSocket under TLS 1.3, paho",
    transport: tls(true),
    client: || tls_client(&rustls::version::TLS13, PAHO),
    mqtt: paho_mqtt,
});
static TLS12_WS: std::sync::LazyLock<Case> = std::sync::LazyLock::new(|| Case {
    name: "WebSocket under TLS 1.2, MQTT.js",
    transport: tls(true),
    client: || tls_client(&rustls::version::TLS12, MQTTJS),
    mqtt: mqttjs_mqtt,
});

/// Quickcheck cases per TLS property (each a full handshake); the
/// WebSocket ones take ten times as many.
fn tls_tests() -> u64 {
    std::env::var("QUICKCHECK_TESTS").ok().and_then(|n| n.parse().ok()).map_or(100, |n: u64| (n / 10).max(50))
}

/// The packets in `mqtt`, decoded one after the other.
fn packets(mqtt: &[u8]) -> Vec<Packet> {
    let mut buf = BytesMut::from(mqtt);
    let mut out = Vec::new();
    while let Some(packet) = codec::decode(&mut buf, 1 << 20, Protocol::V311).expect("well-formed MQTT") {
        out.push(packet);
    }
    assert!(buf.is_empty(), "{} bytes after the last packet", buf.len());
    out
}

#[test]
fn recordings_carry_the_session() {
    // paho closes the socket after DISCONNECT; MQTT.js sends a close frame.
    for (case, end) in [(&*WS_PAHO, None), (&*WS_MQTTJS, Some(End::Closed))] {
        let (whole, _) = case.whole();
        assert!(!whole.refused && whole.end == end, "{}: {whole:?}", case.name);
        assert!(whole.client_read.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"), "{}", case.name);
        let packets = packets(&whole.mqtt);
        assert!(matches!(packets.first(), Some(Packet::Connect(_))), "{}", case.name);
        assert!(matches!(packets.last(), Some(Packet::Disconnect)), "{}", case.name);
        let sizes: Vec<usize> = packets
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(publish) => Some(publish.payload.len()),
                _ => None,
            })
            .collect();
        assert_eq!(sizes, [12, 300, 2000], "{}", case.name);
    }
    for case in [&*TLS13_WS, &*TLS12_WS] {
        let (whole, _) = case.whole();
        assert!(whole.client_read.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"), "{}", case.name);
    }
}

#[test]
fn websocket_any_single_cut() {
    WS_PAHO.check_every_cut();
    WS_MQTTJS.check_every_cut();
}

#[test]
fn websocket_random_cuts() {
    let tests = tls_tests() * 10;
    WS_PAHO.check_random_cuts(tests);
    WS_MQTTJS.check_random_cuts(tests);
}

#[test]
fn tls13_any_single_cut() {
    TLS13.check_every_cut();
}

#[test]
fn tls12_any_single_cut() {
    TLS12.check_every_cut();
}

#[test]
fn tls_random_cuts() {
    TLS13.check_random_cuts(tls_tests());
    TLS12.check_random_cuts(tls_tests());
}

#[test]
fn websocket_under_tls_any_single_cut() {
    TLS13_WS.check_every_cut();
    TLS12_WS.check_every_cut();
}

#[test]
fn websocket_under_tls_random_cuts() {
    TLS13_WS.check_random_cuts(tls_tests());
    TLS12_WS.check_random_cuts(tls_tests());
}
