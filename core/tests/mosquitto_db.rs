//! Importing Mosquitto's `mosquitto.db`: files written by Mosquitto 2.0.11
//! (`tests/data/mosquitto-db`, made by its `make.sh`), and properties
//! checked against a test-only writer of DB version 5 and 6 files.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use culex_core::codec::Packet;
use culex_core::persistence::mosquitto_db::{
    ChunkKind, Dropped, ImportError, ImportSummary, Imported, MAGIC, import, is_mosquitto_db,
};
use culex_core::persistence::{CopyState, MessageId, StoredCopy, StoredSession, StoredState};
use culex_core::sim::{ClientOptions, Simulation, describe};
use culex_core::{
    Broker, ClientId, Config, ConnId, Instant, ListenerId, Message, Now, PacketId, Publisher, QoS, TopicFilter,
    TopicName, UnixTime,
};
use quickcheck::{Arbitrary, Gen, QuickCheck};

// ---------------------------------------------------------------------
// Fixtures written by Mosquitto 2.0.11.

/// Just after the fixtures were written: `sess5` (expiring at
/// 1796424339) and the `a/exp` message (1796427879) still live.
const WRITTEN: f64 = 1_796_424_300.0;
/// A day later: both have expired.
const LATER: f64 = 1_796_500_000.0;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/mosquitto-db/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn import_at(bytes: &[u8], secs: f64) -> Imported {
    match import(bytes, UnixTime::from_secs_f64(secs)) {
        Ok(imported) => imported,
        Err(e) => panic!("import failed: {e}"),
    }
}

fn topic(name: &str) -> TopicName {
    TopicName::new(name.to_owned()).expect("valid topic")
}

fn filter(text: &str) -> TopicFilter {
    TopicFilter::new(text.to_owned()).expect("valid filter")
}

fn message(name: &str, payload: &str, qos: QoS, retain: bool) -> Arc<Message> {
    Arc::new(Message::new(topic(name), Bytes::from(payload.to_owned()), qos, retain))
}

/// `message` as published by the client Mosquitto's test file names.
fn published(message: Arc<Message>) -> Arc<Message> {
    let publisher = Publisher {
        client_id: ClientId::new("source_id"),
        username: Some(Arc::from("username")),
        listener: ListenerId::default(),
    };
    Arc::new(Message { publisher: Some(Arc::new(publisher)), ..(*message).clone() })
}

/// `state` with the publishers of its retained messages taken off, after
/// checking that each has one: the fixtures' publishers are mosquitto_pub
/// clients with random ids (`auto-...`).
fn without_publishers(mut state: StoredState) -> StoredState {
    for (id, message) in &mut state.messages {
        let publisher = message.publisher.as_ref().map(|p| p.client_id.as_str().starts_with("auto-"));
        assert_eq!(publisher, message.retain.then_some(true), "message {id:?}: {message:?}");
        *message = Arc::new(Message { publisher: None, ..(**message).clone() });
    }
    state
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

fn copy(message: u64, qos: QoS, state: CopyState) -> StoredCopy {
    StoredCopy { message: MessageId(message), qos, retain: false, state }
}

fn session(
    username: Option<&str>,
    offline_since: f64,
    next: Option<u16>,
    subscriptions: &[(&str, QoS)],
    copies: &[StoredCopy],
) -> StoredSession {
    StoredSession {
        username: username.map(Arc::from),
        offline_since: Some(offline_since as u64),
        next_packet_id: next.map(pid),
        epoch: 0,
        subscriptions: subscriptions.iter().map(|(f, q)| (filter(f), *q)).collect(),
        copies: copies.iter().enumerate().map(|(i, c)| (i as u64 + 1, *c)).collect(),
        incoming: BTreeMap::new(),
    }
}

fn summary(state: &StoredState, dropped: Dropped) -> ImportSummary {
    let copies = || state.sessions.values().flat_map(|s| s.copies.values());
    ImportSummary {
        db_version: 6,
        big_endian: false,
        written_at_exit: Some(true),
        retained: state.retained.len(),
        sessions: state.sessions.len(),
        subscriptions: state.sessions.values().map(|s| s.subscriptions.len()).sum(),
        queued: copies().filter(|c| c.state.is_queued()).count(),
        in_flight: copies().filter(|c| !c.state.is_queued()).count(),
        incoming: state.sessions.values().map(|s| s.incoming.len()).sum(),
        messages: state.messages.len(),
        dropped,
    }
}

#[test]
fn fixtures_are_mosquitto_files() {
    for name in ["retained.db", "sessions.db", "inflight.db"] {
        assert!(is_mosquitto_db(&fixture(name)), "{name}");
    }
    assert!(!is_mosquitto_db(b""));
    assert!(!is_mosquitto_db(&MAGIC[..14]));
    assert!(!is_mosquitto_db(&[0; 64]));
}

#[test]
fn retained_fixture() {
    let got = import_at(&fixture("retained.db"), WRITTEN);
    let messages = BTreeMap::from([
        (MessageId(53), message("r/0", "retained at QoS 0", QoS::AtMostOnce, true)),
        (MessageId(55), message("r/1", "retained at QoS 1", QoS::AtLeastOnce, true)),
        (MessageId(56), message("r/2", "retained at QoS 2", QoS::ExactlyOnce, true)),
        (
            MessageId(57),
            message("r/json", r#"{"expired_at": 4102444800, "text": "expires in 2100"}"#, QoS::AtLeastOnce, true),
        ),
    ]);
    let retained = [("r/0", 53), ("r/1", 55), ("r/2", 56), ("r/json", 57)];
    let state = StoredState {
        messages,
        retained: retained.iter().map(|(t, id)| (topic(t), MessageId(*id))).collect(),
        ..StoredState::default()
    };
    // The payload's expiry, read as the broker reads it.
    assert_eq!(state.messages[&MessageId(57)].expires_at, Some(4_102_444_800.0));
    assert_eq!(got.summary, summary(&state, Dropped::default()));
    assert_eq!(without_publishers(got.state), state);
}

fn sessions_messages() -> BTreeMap<MessageId, Arc<Message>> {
    BTreeMap::from([
        (MessageId(53), message("a/1", "queued at QoS 1", QoS::AtLeastOnce, false)),
        (MessageId(54), message("a/2", "queued at QoS 2", QoS::ExactlyOnce, false)),
        (MessageId(56), message("b/x", "retained and queued", QoS::ExactlyOnce, true)),
        (MessageId(57), message("a/exp", "expires in an hour", QoS::AtLeastOnce, false)),
    ])
}

#[test]
fn sessions_fixture() {
    use QoS::{AtLeastOnce as Q1, ExactlyOnce as Q2};
    let got = import_at(&fixture("sessions.db"), WRITTEN);
    let queued = CopyState::Queued(None);
    let sessions = BTreeMap::from([
        (
            ClientId::new("sess1"),
            session(
                Some("bob"),
                WRITTEN,
                Some(5),
                &[("a/#", Q1), ("b/+", Q2)],
                &[copy(53, Q1, queued), copy(54, Q1, queued), copy(56, Q2, queued), copy(57, Q1, queued)],
            ),
        ),
        // The garbage user name (768 heap bytes) is dropped, the session kept.
        (
            ClientId::new("sess2"),
            session(
                None,
                WRITTEN,
                Some(4),
                &[("a/#", Q2)],
                &[copy(53, Q1, queued), copy(54, Q2, queued), copy(57, Q1, queued)],
            ),
        ),
        (ClientId::new("sess5"), session(Some("eve"), WRITTEN, Some(2), &[("a/1", Q1)], &[copy(53, Q1, queued)])),
    ]);
    let state = StoredState {
        messages: sessions_messages(),
        retained: BTreeMap::from([(topic("b/x"), MessageId(56))]),
        sessions,
        ..StoredState::default()
    };
    assert_eq!(got.summary, summary(&state, Dropped { invalid_usernames: 1, ..Dropped::default() }));
    assert_eq!(without_publishers(got.state), state);
}

#[test]
fn sessions_fixture_after_expiry() {
    use QoS::{AtLeastOnce as Q1, ExactlyOnce as Q2};
    // A day later: sess5's session and the a/exp message have expired.
    let got = import_at(&fixture("sessions.db"), LATER);
    let queued = CopyState::Queued(None);
    let mut messages = sessions_messages();
    messages.remove(&MessageId(57));
    let sessions = BTreeMap::from([
        (
            ClientId::new("sess1"),
            session(
                Some("bob"),
                LATER,
                Some(5),
                &[("a/#", Q1), ("b/+", Q2)],
                &[copy(53, Q1, queued), copy(54, Q1, queued), copy(56, Q2, queued)],
            ),
        ),
        (
            ClientId::new("sess2"),
            session(None, LATER, Some(4), &[("a/#", Q2)], &[copy(53, Q1, queued), copy(54, Q2, queued)]),
        ),
    ]);
    let state = StoredState {
        messages,
        retained: BTreeMap::from([(topic("b/x"), MessageId(56))]),
        sessions,
        ..StoredState::default()
    };
    let dropped = Dropped { invalid_usernames: 1, expired_messages: 1, expired_sessions: 1, ..Dropped::default() };
    assert_eq!(got.summary, summary(&state, dropped));
    assert_eq!(without_publishers(got.state), state);
}

#[test]
fn inflight_fixture() {
    use QoS::{AtLeastOnce as Q1, ExactlyOnce as Q2};
    let got = import_at(&fixture("inflight.db"), WRITTEN);
    let messages = BTreeMap::from([
        (MessageId(53), message("out/1", "in flight at QoS 1", Q1, false)),
        (MessageId(54), message("out/2", "in flight at QoS 2", Q2, false)),
        (MessageId(55), message("out/2", "released at QoS 2", Q2, false)),
        (MessageId(56), message("out/1", "queued behind", Q1, false)),
        (MessageId(57), message("in/x", "awaiting PUBREL", Q2, false)),
    ]);
    let raw_out = session(
        Some("dave"),
        WRITTEN,
        Some(5),
        &[("out/1", Q1), ("out/2", Q2)],
        &[
            copy(53, Q1, CopyState::Sent(pid(1))),
            copy(54, Q2, CopyState::Sent(pid(2))),
            copy(55, Q2, CopyState::Released(pid(3))),
            copy(56, Q1, CopyState::Queued(None)),
        ],
    );
    // No user name (its garbage one dropped); incoming packet 7 awaits PUBREL.
    let mut raw_in = session(None, WRITTEN, None, &[], &[]);
    raw_in.incoming.insert(pid(7), Some(MessageId(57)));
    let state = StoredState {
        messages,
        sessions: BTreeMap::from([(ClientId::new("raw-in"), raw_in), (ClientId::new("raw-out"), raw_out)]),
        ..StoredState::default()
    };
    assert_eq!(got.summary, summary(&state, Dropped { invalid_usernames: 1, ..Dropped::default() }));
    assert_eq!(got.state, state);
}

#[test]
fn summary_reads_well() {
    let got = import_at(&fixture("sessions.db"), LATER);
    assert_eq!(
        got.summary.to_string(),
        "1 retained messages, 2 persistent sessions with 3 subscriptions, 5 queued, 0 in-flight and 0 incoming \
         messages (3 message bodies); left out: 1 invalid user names (kept the sessions without them), \
         1 expired messages, 1 expired sessions"
    );
}

#[test]
fn fixtures_survive_every_cut_and_flip() {
    for name in ["retained.db", "sessions.db", "inflight.db"] {
        let bytes = fixture(name);
        for cut in 0..=bytes.len() {
            if let Ok(got) = import(&bytes[..cut], UnixTime::from_secs_f64(WRITTEN)) {
                check_consistent(&got, WRITTEN);
            }
        }
        for at in 0..bytes.len() {
            for bit in [0x01, 0x80, 0xFF] {
                let mut flipped = bytes.clone();
                flipped[at] ^= bit;
                if let Ok(got) = import(&flipped, UnixTime::from_secs_f64(WRITTEN)) {
                    check_consistent(&got, WRITTEN);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------
// Headers and errors.

fn header(version: u32) -> Vec<u8> {
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&version.to_be_bytes());
    bytes
}

fn now() -> UnixTime {
    UnixTime::from_secs_f64(NOW as f64)
}

#[test]
fn an_empty_file_is_an_empty_state() {
    let got = import(b"", now()).expect("empty imports");
    assert!(got.state.is_empty());
    assert_eq!(got.summary, ImportSummary::default());
    // A header alone: no chunks.
    let got = import(&header(6), now()).expect("header imports");
    assert!(got.state.is_empty());
    assert_eq!(got.summary.db_version, 6);
    assert_eq!(got.summary.written_at_exit, None);
}

#[test]
fn what_is_not_mosquitto_is_refused() {
    assert_eq!(import(b"SQLite format 3\0", now()), Err(ImportError::NotMosquitto));
    assert_eq!(import(&[0; 4096], now()), Err(ImportError::NotMosquitto));
    assert_eq!(import(b"x", now()), Err(ImportError::NotMosquitto));
    for len in 1..23 {
        assert_eq!(import(&header(6)[..len], now()), Err(ImportError::ShortHeader { len }), "{len}");
    }
}

#[test]
fn old_and_unknown_versions_are_refused() {
    for version in 2..=4 {
        let err = import(&header(version), now()).expect_err("too old");
        assert_eq!(err, ImportError::TooOld { version });
        let text = err.to_string();
        assert!(text.contains("Mosquitto 1.6 or later"), "{text}");
        assert!(text.contains(&format!("version {version}")), "{text}");
    }
    for version in [0, 1, 7, 0x0600_0000] {
        assert_eq!(import(&header(version), now()), Err(ImportError::Unsupported { version }));
    }
    assert!(import(&header(5), now()).is_ok());
}

fn chunk(kind: u32, length: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = kind.to_be_bytes().to_vec();
    bytes.extend_from_slice(&length.to_be_bytes());
    bytes.extend_from_slice(body);
    bytes
}

#[test]
fn a_cfg_with_other_id_sizes_is_refused() {
    let mut bytes = header(6);
    bytes.extend(chunk(1, 16, &[1, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 0, 0]));
    assert_eq!(import(&bytes, now()), Err(ImportError::DbIdSize { offset: 23, size: 4 }));
}

fn store_body(payload_len: u32, topic: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = 7u64.to_le_bytes().to_vec();
    body.extend_from_slice(&0i64.to_le_bytes());
    body.extend_from_slice(&payload_len.to_be_bytes());
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(&[0, 0, 1, 1]);
    body.extend_from_slice(topic);
    body.extend_from_slice(payload);
    body
}

#[test]
fn an_oversized_payload_is_refused() {
    let mut bytes = header(6);
    let body = store_body(268_435_456, b"t", b"");
    bytes.extend(chunk(2, body.len() as u32, &body));
    assert_eq!(import(&bytes, now()), Err(ImportError::PayloadTooLong { offset: 23, len: 268_435_456 }));
}

#[test]
fn a_message_longer_than_its_chunk_is_refused() {
    let mut bytes = header(6);
    let body = store_body(5, b"t", b"hello");
    bytes.extend(chunk(2, body.len() as u32 - 1, &body));
    let err = ImportError::BadLength { chunk: ChunkKind::MsgStore, offset: 23, length: body.len() as u32 - 1 };
    assert_eq!(import(&bytes, now()), Err(err));
}

#[test]
fn a_chunk_cut_short_is_refused_with_its_offset() {
    let mut bytes = header(6);
    let body = store_body(5, b"t", b"hello");
    bytes.extend(chunk(2, body.len() as u32, &body));
    let len = bytes.len() - 1;
    let err = ImportError::Truncated { chunk: ChunkKind::MsgStore, offset: 23, len };
    assert_eq!(import(&bytes[..len], now()), Err(err.clone()));
    assert!(err.to_string().contains("byte 23"), "{err}");
    // An unknown chunk running past the end, too.
    let mut bytes = header(6);
    bytes.extend(chunk(99, 10, b"abc"));
    let len = bytes.len();
    assert_eq!(import(&bytes, now()), Err(ImportError::Truncated { chunk: ChunkKind::Unknown(99), offset: 23, len }));
}

/// A file laid out as the hand-made ones of Mosquitto's own unit tests
/// (`test/unit/files/persist_read/v6-*.test-db`, values as their tests
/// assert): `last_db_id` bytes `00 00 00 00 12 34 56 78`, a session
/// "never" expiring with a stray expiry time of 35, properties after a
/// message, and a RETAIN chunk whose `length` is 0.
#[test]
fn a_file_like_mosquittos_own_test_files() {
    let mut bytes = header(6);
    bytes.extend(chunk(1, 16, &[0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 1, 8, 0, 0, 0, 0, 0, 0]));
    let mut store = 84u64.to_le_bytes().to_vec();
    store.extend(0i64.to_le_bytes());
    store.extend(7u32.to_be_bytes());
    store.extend([0, 2, 0, 9, 0, 8, 0, 5, 0x07, 0x5B, 2, 1]);
    store.extend(b"source_idusernametopicpayload");
    store.extend([2, 1, 1]);
    bytes.extend(chunk(2, store.len() as u32, &store));
    let mut client = 35i64.to_le_bytes().to_vec();
    client.extend(u32::MAX.to_be_bytes());
    client.extend([0x52, 0x87, 0, 9, 0x07, 0x5B, 0, 7, 0, 0, 0, 0]);
    client.extend(b"client-idusrname");
    bytes.extend(chunk(6, client.len() as u32, &client));
    let mut msg = 84u64.to_le_bytes().to_vec();
    msg.extend([0, 0x73, 0, 9, 1, 3, 0, 1]);
    msg.extend(b"client-id");
    bytes.extend(chunk(3, msg.len() as u32, &msg));
    bytes.extend(chunk(4, 0, &84u64.to_le_bytes()));
    let mut sub = 0x7623u32.to_be_bytes().to_vec();
    sub.extend([0, 9, 0, 12, 1, 12, 0, 0]);
    sub.extend(b"client-idsubscription");
    bytes.extend(chunk(5, sub.len() as u32, &sub));

    let got = import(&bytes, now()).expect("imports");
    let mut session = session(Some("usrname"), NOW as f64, Some(0x5288), &[("subscription", QoS::AtLeastOnce)], &[]);
    session.copies.insert(1, copy(84, QoS::AtLeastOnce, CopyState::Sent(pid(0x73))));
    let want = StoredState {
        messages: BTreeMap::from([(MessageId(84), published(message("topic", "payload", QoS::ExactlyOnce, true)))]),
        retained: BTreeMap::from([(topic("topic"), MessageId(84))]),
        sessions: BTreeMap::from([(ClientId::new("client-id"), session)]),
        ..StoredState::default()
    };
    assert_eq!(got.state, want);
    assert!(!got.summary.big_endian);
}

// ---------------------------------------------------------------------
// A writer of DB version 5 and 6 files, for the properties.

/// The moment the properties import at.
const NOW: i64 = 1_800_000_000;

#[derive(Debug, Clone)]
struct StoreSpec {
    id: u64,
    expiry_time: i64,
    qos: u8,
    retain: bool,
    source_id: Vec<u8>,
    source_username: Vec<u8>,
    topic: Vec<u8>,
    payload: Vec<u8>,
    props: Vec<u8>,
}

#[derive(Debug, Clone)]
struct MsgSpec {
    store: u64,
    mid: u16,
    qos: u8,
    state: u8,
    retain: bool,
    dup: bool,
    direction: u8,
    props: Vec<u8>,
}

#[derive(Debug, Clone)]
struct ClientSpec {
    id: Vec<u8>,
    /// Whether it has a CLIENT chunk (Mosquitto restores a session named
    /// only by its SUB or CLIENT_MSG chunks too).
    has_chunk: bool,
    username: Vec<u8>,
    last_mid: u16,
    expiry_time: i64,
    expiry_interval: u32,
    subs: Vec<(Vec<u8>, u8)>,
    msgs: Vec<MsgSpec>,
}

/// One chunk of the file, by index into [`Contents`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Cfg,
    Store(usize),
    Client(usize),
    Sub(usize, usize),
    Msg(usize, usize),
    Retain(usize),
    Unknown(usize),
}

#[derive(Debug, Clone)]
struct Contents {
    version: u32,
    big_endian: bool,
    /// A 32-bit x86 writer: CFG and CLIENT without trailing padding.
    i386: bool,
    /// `length` 0 where Mosquitto ignores it, as in its own test files.
    zero_lengths: bool,
    shutdown: bool,
    stores: Vec<StoreSpec>,
    clients: Vec<ClientSpec>,
    retains: Vec<u64>,
    unknown: Vec<(u32, Vec<u8>)>,
    /// The chunks in file order: a message before whatever refers to it,
    /// as Mosquitto's reader needs; anything else in any order.
    order: Vec<Item>,
}

fn below(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

fn pick<T: Clone>(g: &mut Gen, options: &[T]) -> T {
    g.choose(options).cloned().expect("options")
}

/// One of a few values that matter, or any.
fn special_or_any(g: &mut Gen, special: &[u16]) -> u16 {
    if below(g, 4) == 0 { u16::arbitrary(g) } else { pick(g, special) }
}

fn small_bytes(g: &mut Gen, max: usize) -> Vec<u8> {
    let n = below(g, max + 1);
    (0..n).map(|_| u8::arbitrary(g)).collect()
}

/// A user name or client id: mostly valid, sometimes what Mosquitto
/// 2.0.11 wrote for a client without one (heap bytes), sometimes empty.
fn name(g: &mut Gen, stem: &str) -> Vec<u8> {
    match below(g, 16) {
        0 => Vec::new(),
        1 => [stem.as_bytes(), b"\0\x7f\xf0garbage"].concat(),
        2 => vec![0xC3, 0x28],
        3 => "é\u{1}".as_bytes().to_vec(),
        _ => stem.as_bytes().to_vec(),
    }
}

fn topic_bytes(g: &mut Gen) -> Vec<u8> {
    if below(g, 5) == 0 {
        return pick(g, &[&b"x/+"[..], b"", b"a\0b", b"\xff"]).to_vec();
    }
    pick(g, &["a", "a/b", "b/c/d", "$SYS/broker/uptime", "é/ü"]).as_bytes().to_vec()
}

fn filter_bytes(g: &mut Gen) -> Vec<u8> {
    if below(g, 5) == 0 {
        return pick(g, &[&b"a#"[..], b"", b"a/+x", b"\xc3"]).to_vec();
    }
    pick(g, &["a", "a/#", "+/b", "#", "a/b", "$SYS/#"]).as_bytes().to_vec()
}

/// An expiry time: none, past, now, future, or so far ahead Mosquitto
/// drops it (kept here).
fn message_expiry(g: &mut Gen) -> i64 {
    pick(g, &[0, 0, 0, NOW - 1000, NOW, NOW + 1000, NOW + (1 << 33), -5])
}

impl Arbitrary for Contents {
    fn arbitrary(g: &mut Gen) -> Self {
        let version = pick(g, &[5, 6, 6, 6]);
        let zero_lengths = below(g, 4) == 0;
        let i386 = !zero_lengths && below(g, 4) == 0;
        // Odd ids: swapped, they read as absurdly large.
        let mut ids: Vec<u64> =
            (0..below(g, 8)).map(|i| 2 * (i as u64 * 1000 + u64::from(u16::arbitrary(g))) + 1).collect();
        ids.sort_unstable();
        ids.dedup();
        let stores: Vec<StoreSpec> = ids
            .iter()
            .map(|&id| StoreSpec {
                id,
                expiry_time: message_expiry(g),
                qos: pick(g, &[0, 1, 1, 2, 2, 3]),
                retain: bool::arbitrary(g),
                source_id: small_bytes(g, 4),
                source_username: small_bytes(g, 3),
                topic: topic_bytes(g),
                payload: if below(g, 4) == 0 {
                    format!(r#"{{"expired_at": {}}}"#, NOW + 5).into_bytes()
                } else {
                    small_bytes(g, 12)
                },
                props: small_bytes(g, 3),
            })
            .collect();
        // References: mostly to messages the file holds, some missing.
        let store_ref = |g: &mut Gen| -> u64 {
            if ids.is_empty() || below(g, 6) == 0 { 2 * u64::from(u8::arbitrary(g)) + 100_001 } else { pick(g, &ids) }
        };
        let clients = (0..below(g, 5))
            .map(|i| ClientSpec {
                id: name(g, &format!("client{i}")),
                has_chunk: below(g, 6) != 0,
                username: if version == 5 { Vec::new() } else { name(g, "user") },
                last_mid: special_or_any(g, &[0, 1, 7, 65534, 65535]),
                expiry_time: pick(g, &[0, 0, NOW - 10, NOW + 10]),
                expiry_interval: pick(g, &[u32::MAX, u32::MAX, 0, 60]),
                subs: (0..below(g, 4)).map(|_| (filter_bytes(g), pick(g, &[0, 1, 1, 2, 2, 3]))).collect(),
                msgs: (0..below(g, 6))
                    .map(|_| MsgSpec {
                        store: store_ref(g),
                        mid: special_or_any(g, &[0, 1, 2, 3, 4]),
                        qos: pick(g, &[0, 1, 1, 2, 2, 2, 3]),
                        state: pick(g, &[0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 11, 12]),
                        retain: bool::arbitrary(g),
                        dup: bool::arbitrary(g),
                        direction: pick(g, &[0, 0, 1, 1, 1, 1, 2]),
                        props: small_bytes(g, 2),
                    })
                    .collect(),
            })
            .collect::<Vec<_>>();
        let retains = (0..below(g, 4)).map(|_| store_ref(g)).collect();
        let unknown = (0..below(g, 2)).map(|_| (pick(g, &[0, 7, 99, u32::MAX]), small_bytes(g, 5))).collect();
        let mut contents = Self {
            version,
            big_endian: bool::arbitrary(g),
            i386,
            zero_lengths,
            shutdown: bool::arbitrary(g),
            stores,
            clients,
            retains,
            unknown,
            order: Vec::new(),
        };
        contents.order = random_order(g, &contents);
        contents
    }
}

/// The store a chunk refers to, if any.
fn refers_to(c: &Contents, item: Item) -> Option<u64> {
    match item {
        Item::Msg(ci, mi) => Some(c.clients[ci].msgs[mi].store),
        Item::Retain(ri) => Some(c.retains[ri]),
        _ => None,
    }
}

/// A random order of every chunk in which each message comes before the
/// chunks that refer to it.
fn random_order(g: &mut Gen, c: &Contents) -> Vec<Item> {
    let mut pending = vec![Item::Cfg];
    pending.extend((0..c.stores.len()).map(Item::Store));
    for (ci, client) in c.clients.iter().enumerate() {
        if client.has_chunk {
            pending.push(Item::Client(ci));
        }
        pending.extend((0..client.subs.len()).map(|si| Item::Sub(ci, si)));
        pending.extend((0..client.msgs.len()).map(|mi| Item::Msg(ci, mi)));
    }
    pending.extend((0..c.retains.len()).map(Item::Retain));
    pending.extend((0..c.unknown.len()).map(Item::Unknown));
    let mut written = BTreeSet::new();
    let mut order = Vec::new();
    while !pending.is_empty() {
        let ready: Vec<usize> = (0..pending.len())
            .filter(|&i| {
                refers_to(c, pending[i]).is_none_or(|id| !c.stores.iter().any(|s| s.id == id) || written.contains(&id))
            })
            .collect();
        let item = pending.remove(pick(g, &ready));
        if let Item::Store(si) = item {
            written.insert(c.stores[si].id);
        }
        order.push(item);
    }
    order
}

fn u64_bytes(c: &Contents, v: u64) -> [u8; 8] {
    if c.big_endian { v.to_be_bytes() } else { v.to_le_bytes() }
}

fn be16(n: usize) -> [u8; 2] {
    (n as u16).to_be_bytes()
}

/// The body of one chunk, and the `length` its header gives.
fn chunk_body(c: &Contents, item: Item) -> (u32, Vec<u8>, u32) {
    let mut b = Vec::new();
    let (kind, sized) = match item {
        Item::Cfg => {
            let last = c.stores.iter().map(|s| s.id).max().unwrap_or(0) + 2;
            b.extend(u64_bytes(c, last));
            b.extend([u8::from(c.shutdown), 8]);
            b.extend(vec![0xAA; if c.i386 { 2 } else { 6 }]);
            (1, false)
        }
        Item::Store(si) => {
            let s = &c.stores[si];
            b.extend(u64_bytes(c, s.id));
            b.extend(u64_bytes(c, s.expiry_time as u64));
            b.extend((s.payload.len() as u32).to_be_bytes());
            b.extend(be16(1));
            b.extend(be16(s.source_id.len()));
            b.extend(be16(s.source_username.len()));
            b.extend(be16(s.topic.len()));
            b.extend(be16(1883));
            b.extend([s.qos, u8::from(s.retain)]);
            for part in [&s.source_id, &s.source_username, &s.topic, &s.payload, &s.props] {
                b.extend(part);
            }
            (2, true)
        }
        Item::Msg(ci, mi) => {
            let (client, m) = (&c.clients[ci], &c.clients[ci].msgs[mi]);
            b.extend(u64_bytes(c, m.store));
            b.extend(m.mid.to_be_bytes());
            b.extend(be16(client.id.len()));
            b.extend([m.qos, m.state, u8::from(m.retain) << 4 | u8::from(m.dup), m.direction]);
            b.extend(&client.id);
            b.extend(&m.props);
            (3, true)
        }
        Item::Retain(ri) => {
            b.extend(u64_bytes(c, c.retains[ri]));
            (4, false)
        }
        Item::Sub(ci, si) => {
            let (client, (filter, qos)) = (&c.clients[ci], &c.clients[ci].subs[si]);
            b.extend(0u32.to_be_bytes());
            b.extend(be16(client.id.len()));
            b.extend(be16(filter.len()));
            b.extend([*qos, 0, 0xAA, 0xAA]);
            b.extend(&client.id);
            b.extend(filter);
            (5, false)
        }
        Item::Client(ci) => {
            let client = &c.clients[ci];
            b.extend(u64_bytes(c, client.expiry_time as u64));
            b.extend(client.expiry_interval.to_be_bytes());
            b.extend(client.last_mid.to_be_bytes());
            b.extend(be16(client.id.len()));
            if c.version == 6 {
                b.extend(be16(1883));
                b.extend(be16(client.username.len()));
                if !c.i386 {
                    b.extend([0xAA; 4]);
                }
            }
            b.extend(&client.id);
            if c.version == 6 {
                b.extend(&client.username);
            }
            (6, false)
        }
        Item::Unknown(ui) => {
            b.extend(&c.unknown[ui].1);
            (c.unknown[ui].0, true)
        }
    };
    let length = if c.zero_lengths && !sized { 0 } else { b.len() as u32 };
    (kind, b, length)
}

/// The file, and the offset at which each chunk ends (the header's end
/// first).
fn write(c: &Contents) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = MAGIC.to_vec();
    bytes.extend([0; 4]);
    bytes.extend(c.version.to_be_bytes());
    let mut ends = vec![bytes.len()];
    for &item in &c.order {
        let (kind, body, length) = chunk_body(c, item);
        bytes.extend(kind.to_be_bytes());
        bytes.extend(length.to_be_bytes());
        bytes.extend(body);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

// The model: what the first `items` of the file should import as,
// written from the rules, not from the importer.

fn valid_text(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8(bytes.to_vec()).ok()?;
    // Control characters and the non-characters U+xFFFE and U+xFFFF, as MQTT forbids.
    let control = |c: char| c <= '\u{1f}' || ('\u{7f}'..='\u{9f}').contains(&c) || u32::from(c) & 0xFFFE == 0xFFFE;
    (!text.chars().any(control) && !text.is_empty()).then_some(text)
}

enum Status {
    Kept,
    Dropped,
    Missing,
}

fn expect(c: &Contents, items: &[Item]) -> StoredState {
    let stores: BTreeMap<u64, &StoreSpec> = items
        .iter()
        .filter_map(|i| if let Item::Store(si) = i { Some(&c.stores[*si]) } else { None })
        .map(|s| (s.id, s))
        .collect();
    let usable = |s: &StoreSpec| {
        let expired = s.expiry_time > 0 && s.expiry_time < NOW;
        let topic = String::from_utf8(s.topic.clone()).ok().and_then(|t| TopicName::new(t).ok());
        !expired && topic.is_some() && s.qos <= 2
    };
    let status = |id: u64| match stores.get(&id) {
        Some(s) if usable(s) => Status::Kept,
        Some(_) => Status::Dropped,
        None => Status::Missing,
    };
    let mut retained = BTreeMap::new();
    // By client index: exists, and the chunks in file order.
    let mut exists = BTreeSet::new();
    let mut client_chunk = BTreeSet::new();
    let mut subs: BTreeMap<usize, BTreeMap<TopicFilter, QoS>> = BTreeMap::new();
    let mut msgs: BTreeMap<usize, Vec<&MsgSpec>> = BTreeMap::new();
    for item in items {
        match *item {
            Item::Client(ci) => {
                exists.insert(ci);
                client_chunk.insert(ci);
            }
            Item::Sub(ci, si) => {
                exists.insert(ci);
                let (f, q) = &c.clients[ci].subs[si];
                let f = String::from_utf8(f.clone()).ok().and_then(|f| TopicFilter::new(f).ok());
                if let (Some(f), Some(q)) = (f, QoS::from_bits(*q)) {
                    subs.entry(ci).or_default().insert(f, q);
                }
            }
            Item::Msg(ci, mi) => {
                let m = &c.clients[ci].msgs[mi];
                if matches!(status(m.store), Status::Kept) {
                    exists.insert(ci);
                }
                msgs.entry(ci).or_default().push(m);
            }
            Item::Retain(ri) => {
                let id = c.retains[ri];
                if let Status::Kept = status(id) {
                    let name = String::from_utf8(stores[&id].topic.clone()).expect("kept");
                    if !name.starts_with("$SYS") {
                        retained.insert(topic(&name), MessageId(id));
                    }
                }
            }
            Item::Cfg | Item::Store(_) | Item::Unknown(_) => {}
        }
    }
    let mut sessions = BTreeMap::new();
    for (ci, client) in c.clients.iter().enumerate() {
        let Some(id) = valid_text(&client.id) else { continue };
        if !exists.contains(&ci) {
            continue;
        }
        if client_chunk.contains(&ci) {
            let t = client.expiry_time;
            let expired = match client.expiry_interval {
                u32::MAX => false,
                0 if t == 0 => true,
                _ => t != 0 && t < NOW,
            };
            if expired {
                continue;
            }
        }
        let has_chunk = client_chunk.contains(&ci);
        let mut session = StoredSession {
            username: if has_chunk { valid_text(&client.username).map(Arc::from) } else { None },
            offline_since: Some(NOW as u64),
            next_packet_id: if has_chunk && client.last_mid != 0 && client.last_mid != 65535 {
                PacketId::new(client.last_mid + 1)
            } else {
                None
            },
            subscriptions: subs.remove(&ci).unwrap_or_default(),
            ..StoredSession::default()
        };
        let mut ids = BTreeSet::new();
        for m in msgs.remove(&ci).unwrap_or_default() {
            let Some(qos) = QoS::from_bits(m.qos) else { continue };
            match (m.direction, status(m.store)) {
                (1, Status::Kept) => {
                    let mut state = match PacketId::new(m.mid) {
                        _ if qos == QoS::AtMostOnce || m.state == 11 => CopyState::Queued(None),
                        None => CopyState::Queued(None),
                        Some(id) if qos == QoS::ExactlyOnce && (m.state == 6 || m.state == 9) => {
                            CopyState::Released(id)
                        }
                        Some(id) => CopyState::Sent(id),
                    };
                    if state.packet_id().is_some_and(|id| !ids.insert(id)) {
                        state = CopyState::Queued(None);
                    }
                    let seq = session.copies.len() as u64 + 1;
                    session
                        .copies
                        .insert(seq, StoredCopy { message: MessageId(m.store), qos, retain: m.retain, state });
                }
                (0, status) if qos == QoS::ExactlyOnce && m.mid != 0 => match status {
                    Status::Kept => {
                        session.incoming.insert(pid(m.mid), Some(MessageId(m.store)));
                    }
                    Status::Dropped => {
                        session.incoming.insert(pid(m.mid), None);
                    }
                    Status::Missing => {}
                },
                _ => {}
            }
        }
        sessions.insert(ClientId::new(id), session);
    }
    let mut state = StoredState { retained, sessions, ..StoredState::default() };
    let referenced: BTreeSet<MessageId> = state.references().collect();
    let retained_ids: BTreeSet<MessageId> = state.retained.values().copied().collect();
    for id in referenced {
        let s = stores[&id.0];
        let name = String::from_utf8(s.topic.clone()).expect("kept");
        let qos = QoS::from_bits(s.qos).expect("kept");
        let retain = s.retain || retained_ids.contains(&id);
        let mut message = Message::new(topic(&name), Bytes::from(s.payload.clone()), qos, retain);
        // A retained message keeps the client Mosquitto recorded.
        if let Some(client_id) = valid_text(&s.source_id).filter(|id| !id.is_empty() && retain) {
            let username = valid_text(&s.source_username).filter(|n| !n.is_empty()).map(Arc::from);
            let client_id = ClientId::new(client_id);
            message.publisher = Some(Arc::new(Publisher { client_id, username, listener: ListenerId::default() }));
        }
        state.messages.insert(id, Arc::new(message));
    }
    state
}

/// What holds of any import: every reference resolves, every message is
/// referred to, the summary counts what the state holds.
fn check_consistent(got: &Imported, now: f64) {
    let state = &got.state;
    let referenced: BTreeSet<MessageId> = state.references().collect();
    let held: BTreeSet<MessageId> = state.messages.keys().copied().collect();
    assert_eq!(referenced, held, "references and messages differ");
    for (name, id) in &state.retained {
        assert_eq!(&state.messages[id].topic, name);
        assert!(!name.as_str().starts_with("$SYS"));
    }
    for session in state.sessions.values() {
        assert_eq!(session.offline_since, Some(now as u64));
        let seqs: Vec<u64> = session.copies.keys().copied().collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let ids: Vec<PacketId> = session.copies.values().filter_map(|c| c.state.packet_id()).collect();
        assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "duplicate packet ids");
        if let Some(next) = session.next_packet_id {
            assert_ne!(next, PacketId::MIN);
        }
    }
    assert!(state.unreleased.is_empty() && state.wills.is_empty());
    assert_eq!(state.last_batch, 0);
    let s = &got.summary;
    let copies = || state.sessions.values().flat_map(|s| s.copies.values());
    assert_eq!(s.retained, state.retained.len());
    assert_eq!(s.sessions, state.sessions.len());
    assert_eq!(s.messages, state.messages.len());
    assert_eq!(s.subscriptions, state.sessions.values().map(|s| s.subscriptions.len()).sum::<usize>());
    assert_eq!(s.incoming, state.sessions.values().map(|s| s.incoming.len()).sum::<usize>());
    assert_eq!(s.queued, copies().filter(|c| c.state.is_queued()).count());
    assert_eq!(s.in_flight, copies().filter(|c| !c.state.is_queued()).count());
    // Only an empty file has no version.
    assert!(matches!(s.db_version, 5 | 6) || *s == ImportSummary::default());
}

#[test]
fn written_files_import_as_written() {
    fn property(c: Contents) -> Result<(), String> {
        let (bytes, _) = write(&c);
        let got = import(&bytes, now()).map_err(|e| e.to_string())?;
        check_consistent(&got, NOW as f64);
        let want = expect(&c, &c.order);
        if got.state != want {
            return Err(format!("got {:#?}\nwant {want:#?}", got.state));
        }
        let s = &got.summary;
        let mixed = c.stores.is_empty() && c.retains.is_empty() && c.clients.iter().all(|c| c.msgs.is_empty());
        if s.big_endian != c.big_endian && !mixed {
            return Err(format!("read big-endian: {}", s.big_endian));
        }
        if s.db_version != c.version
            || s.written_at_exit != Some(c.shutdown)
            || s.dropped.unknown_chunks != c.unknown.len()
        {
            return Err(format!("summary {s:?}"));
        }
        Ok(())
    }
    QuickCheck::new().tests(300).quickcheck(property as fn(Contents) -> Result<(), String>);
}

#[test]
fn a_file_cut_anywhere_imports_whole_chunks_or_fails() {
    fn property(c: Contents) -> Result<(), String> {
        let (bytes, ends) = write(&c);
        for cut in 0..=bytes.len() {
            let got = import(&bytes[..cut], now());
            // The last chunk end at or before the cut.
            let done = ends.iter().rposition(|&end| end <= cut);
            match (got, done) {
                (Ok(got), _) if cut == 0 => {
                    if !got.state.is_empty() {
                        return Err("an empty file imported something".into());
                    }
                }
                (Err(ImportError::ShortHeader { len }), None) if len == cut => {}
                (Ok(got), Some(n)) if cut - ends[n] < 8 => {
                    check_consistent(&got, NOW as f64);
                    let want = expect(&c, &c.order[..n]);
                    if got.state != want || got.summary.dropped.trailing_bytes != cut - ends[n] {
                        return Err(format!("cut at {cut}: got {:#?}\nwant {want:#?}", got.state));
                    }
                }
                (Err(ImportError::Truncated { offset, len, .. }), Some(n)) if cut - ends[n] >= 8 => {
                    if offset != ends[n] || len != cut {
                        return Err(format!("cut at {cut}: truncated at {offset} of {len}"));
                    }
                }
                (got, _) => return Err(format!("cut at {cut} of {}: {got:?}", bytes.len())),
            }
        }
        Ok(())
    }
    QuickCheck::new().tests(100).quickcheck(property as fn(Contents) -> Result<(), String>);
}

#[test]
fn flipped_bytes_never_panic() {
    fn property(c: Contents, flips: Vec<(usize, u8)>) -> bool {
        let (mut bytes, _) = write(&c);
        // Past the header (the CFG chunk is always there), where a flip
        // is not refused at once.
        let chunks = bytes.len() - 23;
        for (at, bits) in flips {
            bytes[23 + at % chunks] ^= bits.max(1);
        }
        if let Ok(got) = import(&bytes, now()) {
            check_consistent(&got, NOW as f64);
        }
        true
    }
    QuickCheck::new().tests(1000).quickcheck(property as fn(Contents, Vec<(usize, u8)>) -> bool);
}

// ---------------------------------------------------------------------
// A broker restored from an import serves what Mosquitto held.

fn restored(name: &str) -> Simulation {
    let imported = import_at(&fixture(name), WRITTEN);
    let mut broker = Broker::new(Config { persistence: true, ..Config::default() });
    broker.restore(Now::new(Instant::ZERO, UnixTime::from_secs_f64(WRITTEN)), imported.state);
    Simulation::with_broker(broker, WRITTEN)
}

fn received(sim: &mut Simulation, conn: ConnId) -> Vec<String> {
    sim.take_received(conn).iter().map(describe).collect()
}

#[test]
fn restored_sessions_receive_their_queued_messages() {
    let mut sim = restored("sessions.db");
    let sess1 = sim.connect(ClientOptions::new("sess1").clean_session(false).credentials("bob", b""));
    // Packet ids go on from Mosquitto's last one.
    assert_eq!(
        received(&mut sim, sess1),
        [
            "CONNACK sp=1 rc=0",
            r#"PUBLISH d0 q1 r0 id=5 "a/1" "queued at QoS 1""#,
            r#"PUBLISH d0 q1 r0 id=6 "a/2" "queued at QoS 2""#,
            r#"PUBLISH d0 q2 r0 id=7 "b/x" "retained and queued""#,
            r#"PUBLISH d0 q1 r0 id=8 "a/exp" "expires in an hour""#,
            "PUBREL id=7",
        ]
    );
    let sess2 = sim.connect(ClientOptions::new("sess2").clean_session(false));
    assert_eq!(
        received(&mut sim, sess2),
        [
            "CONNACK sp=1 rc=0",
            r#"PUBLISH d0 q1 r0 id=4 "a/1" "queued at QoS 1""#,
            r#"PUBLISH d0 q2 r0 id=5 "a/2" "queued at QoS 2""#,
            r#"PUBLISH d0 q1 r0 id=6 "a/exp" "expires in an hour""#,
            "PUBREL id=5",
        ]
    );
    let fresh = sim.connect(ClientOptions::new("fresh"));
    sim.subscribe(fresh, "#", QoS::ExactlyOnce);
    assert_eq!(
        received(&mut sim, fresh),
        [
            "CONNACK sp=0 rc=0",
            "SUBACK id=1 [q2]",
            r#"PUBLISH d0 q2 r1 id=1 "b/x" "retained and queued""#,
            "PUBREL id=1",
        ]
    );
}

#[test]
fn restored_in_flight_messages_are_resent() {
    let mut sim = restored("inflight.db");
    let out = sim.connect(ClientOptions::new("raw-out").clean_session(false).credentials("dave", b"").auto_ack(false));
    // As Mosquitto would: PUBLISH again with DUP, PUBREL for the one
    // past PUBREC, then what was queued.
    assert_eq!(
        received(&mut sim, out),
        [
            "CONNACK sp=1 rc=0",
            r#"PUBLISH d1 q1 r0 id=1 "out/1" "in flight at QoS 1""#,
            r#"PUBLISH d1 q2 r0 id=2 "out/2" "in flight at QoS 2""#,
            "PUBREL id=3",
            r#"PUBLISH d0 q1 r0 id=5 "out/1" "queued behind""#,
        ]
    );
    let watcher = sim.connect(ClientOptions::new("watcher"));
    sim.subscribe(watcher, "in/#", QoS::AtMostOnce);
    let inc = sim.connect(ClientOptions::new("raw-in").clean_session(false).auto_ack(false));
    assert_eq!(received(&mut sim, inc), ["CONNACK sp=1 rc=0"]);
    // Its QoS 2 message held since before the import is released now.
    sim.send(inc, &Packet::PubRel(pid(7)));
    assert_eq!(received(&mut sim, inc), ["PUBCOMP id=7"]);
    assert_eq!(
        received(&mut sim, watcher),
        ["CONNACK sp=0 rc=0", "SUBACK id=1 [q0]", r#"PUBLISH d0 q0 r0 "in/x" "awaiting PUBREL""#]
    );
}
