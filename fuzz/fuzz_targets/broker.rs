//! Drives a whole `Broker` with several connections from arbitrary bytes
//! and checks, after every operation, the invariants a runtime, a client
//! and the presence store rely on whatever the peers send.
//!
//! The input is a sequence of operations; the first byte of each picks it:
//! open a connection, feed raw bytes (or a large filler block) to
//! connection k, feed a *valid* packet built from the next bytes (so the
//! fuzzer reaches sessions, QoS flows, takeovers, retained messages, wills
//! and expiry without having to invent the wire format), answer what the
//! client owes (PUBACK, PUBREC, PUBCOMP), answer a deferred authentication
//! (the policy defers user "defer", refuses "bad" and "no"), let the
//! runtime write some of what waits for a connection (and report it), end
//! a connection from the network side, advance virtual time and fire the
//! timer, or shut down. A connection the broker pauses is fed nothing
//! until it resumes; what its client sent meanwhile comes then.
//! Missing bytes read as zero, so every input is a valid program.
//!
//! Alongside the broker, the target keeps what an observer can know: per
//! connection, the client-to-server stream decoded by a shadow decoder
//! (hence when the broker last saw a packet and which CONNECT it got), the
//! server-to-client packets, and the presence set built from
//! `MarkOnline` / `MarkOffline`.
//!
//! Checked after every call, with the actions drained in order:
//! - every `Send` is non-empty and decodes into whole server-to-client
//!   packets; the first packet on a connection is CONNACK, there is at most
//!   one, CONNACK 0 comes after the connection's `MarkOnline`, a refused
//!   connection gets nothing else and is closed, and Session Present is 0
//!   for a clean session or MQTT 3.1;
//! - no `Send`, `Deliver`, `MarkOnline` or `Authenticate` for a
//!   connection after its `Close` (or after the runtime reported it
//!   closed), `MarkOffline` only after it, `Close` once; keepalive and CONNECT timeouts are never early, and after
//!   `handle_timeout` none is overdue and `poll_timeout` lies ahead; at any
//!   time `poll_timeout` is at or before every open connection's deadline;
//! - `MarkOnline` / `MarkOffline` alternate per client id, and the presence
//!   set agrees with `client_of`, `session(id).conn` and `stats`;
//! - `Deliver` never carries a copy whose `expired_at` has passed, is for
//!   the client's current connection, and matches one first-time (DUP 0)
//!   PUBLISH in that connection's bytes; `DropExpired` only for expired
//!   copies; `stats` counts both exactly;
//! - `buffered_len` stays within `max_packet_size` and equals what the
//!   shadow decoder has not consumed;
//! - sessions hold at most 2 copies in flight and 4 queued, plus what held
//!   publishers had sent; the subscription tree holds exactly the
//!   sessions' subscriptions;
//! - `PauseReading` / `ResumeReading` alternate per open connection; a
//!   paused one is never timed out by its keepalive, which counts afresh
//!   from its resume; a close for not reading comes only while more than
//!   the budget waits and nothing was written for `not_reading_timeout`;
//! - `Authenticate` comes only for a deferred CONNECT, once, before any
//!   CONNACK;
//! - a close for an acknowledgement of the wrong kind names a PUBACK,
//!   PUBREC or PUBCOMP the client just sent, and never one it owed.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use culex_core::codec::{
    Connect, ConnectReturnCode, LastWill, MAX_REMAINING_LENGTH, Packet, Publish, Subscribe, Unsubscribe, decode,
};
use culex_core::congestion::WriterGauge;
use culex_core::policy::{AccessPolicy, AuthDecision, ClientInfo, FilterAccess, Refusal, is_sys_topic};
use culex_core::{
    Ack, Action, Broker, CloseReason, Config, ConnId, Input, Instant, Now, PacketId, Peer, Protocol, QoS, TopicFilter,
    TopicName, UnixTime, Violation,
};
use libfuzzer_sys::fuzz_target;

/// Wall clock at virtual time zero: 2026-01-01T00:00:00Z.
const START_UNIX: f64 = 1_767_225_600.0;
/// Connections opened per run at most (later "open" ops do nothing).
const MAX_CONNS: usize = 24;
/// The largest frame a client accepts from the broker.
const CLIENT_MAX_PACKET: usize = MAX_REMAINING_LENGTH + 5;

const WINDOW: usize = 2;
const MAX_QUEUED: usize = 4;
/// Copies a held publisher may have sent before its reads stopped: the
/// harness stops feeding a paused connection, so at most one read's worth
/// per publisher, every connection publishing.
const MAX_OVERFLOW: usize = 64 * MAX_CONNS;
/// The writer's budget of unwritten bytes.
const BUDGET: usize = 512;
/// How long a writer that is behind may write nothing.
const NOT_READING_MS: u64 = 30_000;
const SIZE_LIMIT: usize = 256;
const CONNECT_TIMEOUT_MS: u64 = 10_000;

/// Client ids: a tiny set so takeovers and resumed sessions happen; the
/// empty id gets an assigned one; the long one is refused for MQTT 3.1.
const CLIENT_IDS: [&str; 5] = ["a", "b", "c", "", "abcdefghijklmnopqrstuvwxyz"];
const TOPICS: [&str; 6] = ["t/1", "t/2", "$s/x", "a", "t/1/x", "$SYS/x"];
const FILTERS: [&str; 10] = ["t/1", "t/+", "#", "t/#", "$s/#", "+/2", "+", "+/+/x", "a", "$SYS/#"];
const KEEP_ALIVES: [u16; 6] = [0, 1, 2, 5, 60, 65_535];
/// User names, and what [`FuzzPolicy`] answers for each.
const USERNAMES: [&str; 4] = ["u", DEFER_USER, "bad", "no"];
/// The user name whose CONNECT is checked off the broker's thread.
const DEFER_USER: &str = "defer";
/// The filter [`FuzzPolicy`] refuses (SUBACK 0x80).
const DENIED_FILTER: &str = "$SYS/#";
/// The filter [`FuzzPolicy`] grants with a check of each message.
const CHECKED_FILTER: &str = "t/+";
/// The topic [`FuzzPolicy`] lets no one read through [`CHECKED_FILTER`].
const UNREADABLE_TOPIC: &str = "t/2";

/// Allows anonymous clients and "u", defers "defer" to the runtime,
/// refuses "bad" and "no"; refuses subscriptions to `$SYS/#`, checks each
/// message of `t/+` (holding back `t/2`) and, as the default policy,
/// refuses publishing into `$SYS`.
#[derive(Debug)]
struct FuzzPolicy;

impl AccessPolicy for FuzzPolicy {
    fn authenticate(&self, client: ClientInfo<'_>, _: Option<&Bytes>) -> AuthDecision {
        match client.username {
            Some(DEFER_USER) => AuthDecision::Defer,
            Some("bad") => AuthDecision::Refuse(Refusal::BadUserNameOrPassword),
            Some("no") => AuthDecision::Refuse(Refusal::NotAuthorized),
            _ => AuthDecision::Allow,
        }
    }

    fn filter_access(&self, _: ClientInfo<'_>, filter: &TopicFilter) -> FilterAccess {
        match filter.as_str() {
            DENIED_FILTER => FilterAccess::Denied,
            CHECKED_FILTER => FilterAccess::Partial,
            _ => FilterAccess::Whole,
        }
    }

    fn may_read(&self, _: ClientInfo<'_>, topic: &TopicName) -> bool {
        topic.as_str() != UNREADABLE_TOPIC
    }

    fn may_publish(&self, _: ClientInfo<'_>, topic: &TopicName) -> bool {
        !is_sys_topic(topic)
    }
}

/// Events seen, printed after each input when `CULEX_FUZZ_STATS` is set, to
/// see how deep a corpus reaches (`cargo fuzz run broker -- -runs=0`).
static EVENTS: [AtomicU64; 16] = [const { AtomicU64::new(0) }; 16];
const EVENT_NAMES: [&str; 16] = [
    "connack-accepted",
    "connack-refused",
    "session-present",
    "taken-over",
    "keepalive-timeout",
    "connect-timeout",
    "deliver-qos0",
    "deliver-qos1/2",
    "resend-dup",
    "drop-expired",
    "pubrel-sent",
    "too-large",
    "authenticate",
    "wrong-ack",
    "reads-paused",
    "not-reading",
];

fn event(i: usize) {
    if stats_enabled() {
        EVENTS[i].fetch_add(1, Ordering::Relaxed);
    }
}

fn stats_enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("CULEX_FUZZ_STATS").is_some())
}

fn print_events() {
    if stats_enabled() {
        let counts: Vec<String> =
            EVENT_NAMES.iter().zip(&EVENTS).map(|(n, c)| format!("{n}={}", c.load(Ordering::Relaxed))).collect();
        eprintln!("events: {}", counts.join(" "));
    }
}

fn config() -> Config {
    Config {
        max_inflight_messages: WINDOW as u16,
        max_queued_messages: MAX_QUEUED,
        max_unwritten_bytes: BUDGET,
        not_reading_timeout: Duration::from_millis(NOT_READING_MS),
        message_size_limit: SIZE_LIMIT,
        connect_timeout: Duration::from_millis(CONNECT_TIMEOUT_MS),
        // Small enough that the refusal of a long keepalive is reachable.
        max_keepalive: 3_600,
        ..Config::default()
    }
}

/// Reads the input; past its end every byte is zero.
struct Bytes0<'a> {
    data: &'a [u8],
}

impl<'a> Bytes0<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[usize::from(self.u8()) % items.len()]
    }

    fn qos(&mut self) -> QoS {
        self.pick(&[QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
    }

    fn packet_id(&mut self) -> PacketId {
        // Small ids, so acks and duplicates hit the ones in use.
        PacketId::new(u16::from(self.u8() % 5) + 1).expect("non-zero")
    }
}

/// What the observer knows of one connection.
#[derive(Debug)]
struct ConnView {
    id: ConnId,
    /// The broker still holds it (no `Close`, no `Input::Closed` yet).
    open: bool,
    opened_at: u64,
    /// Client-to-server bytes not yet decoded by the shadow decoder.
    shadow: BytesMut,
    /// The shadow decoder hit an error: the broker must have closed.
    shadow_failed: bool,
    /// The first packet decoded on the connection, if it was CONNECT.
    connect: Option<Connect>,
    /// Its CONNECT names [`DEFER_USER`] and is not answered yet: the
    /// broker decodes nothing after it, so neither does the shadow.
    auth_wait: bool,
    /// `Action::Authenticate` seen, `Input::Authenticated` not sent yet.
    auth_asked: bool,
    /// Packets decoded so far.
    packets_in: u64,
    /// Virtual time (ms) of the last packet decoded.
    last_packet: u64,
    /// `MarkOnline` seen for this connection.
    online_marked: bool,
    connacks: u32,
    refused: bool,
    /// Packets received from the broker.
    packets_out: u64,
    /// Acknowledgements the client owes, in the order they became due.
    owed: Vec<Packet>,
    /// PUBACK, PUBREC and PUBCOMP decoded from the client's last read.
    acks_fed: Vec<(Ack, PacketId)>,
    /// The broker paused reading it: what the client sends waits in
    /// `unsent` until it resumes.
    paused: bool,
    unsent: BytesMut,
    /// What the runtime's writer would count of the bytes sent to it, and
    /// when it last wrote any while behind.
    gauge: WriterGauge,
    progressed_at: u64,
}

struct Harness {
    broker: Broker,
    max_packet_size: usize,
    now_ms: u64,
    conns: Vec<ConnView>,
    /// Presence as the store sees it: online client -> its connection.
    online: BTreeMap<String, ConnId>,
    /// Every client id ever marked online (for the session checks).
    known_clients: BTreeSet<String>,
    /// `DropExpired` actions seen, for the counter.
    dropped_expired: u64,
    /// The acks being fed are all owed: none may break a flow.
    acking_owed: bool,
}

fn now_at(ms: u64) -> Now {
    Now::new(Instant::from_origin(Duration::from_millis(ms)), UnixTime::from_secs_f64(unix_at(ms)))
}

fn unix_at(ms: u64) -> f64 {
    START_UNIX + ms as f64 / 1000.0
}

impl Harness {
    fn new() -> Self {
        let config = config();
        let max_packet_size = config.max_packet_size();
        Self {
            broker: Broker::with_policy(config, Box::new(FuzzPolicy)),
            max_packet_size,
            now_ms: 0,
            conns: Vec::new(),
            online: BTreeMap::new(),
            known_clients: CLIENT_IDS.iter().map(|s| (*s).to_owned()).collect(),
            dropped_expired: 0,
            acking_owed: false,
        }
    }

    fn now(&self) -> Now {
        now_at(self.now_ms)
    }

    fn view(&mut self, id: ConnId) -> &mut ConnView {
        let i = self.conns.iter().position(|c| c.id == id).unwrap_or_else(|| panic!("action for unknown {id}"));
        &mut self.conns[i]
    }

    // ---- operations ---------------------------------------------------

    fn open(&mut self) {
        if self.conns.len() >= MAX_CONNS {
            return;
        }
        let id = self.broker.accept(self.now(), Peer::default());
        assert!(self.conns.iter().all(|c| c.id != id), "connection id {id} reused");
        self.conns.push(ConnView {
            id,
            open: true,
            opened_at: self.now_ms,
            shadow: BytesMut::new(),
            shadow_failed: false,
            connect: None,
            auth_wait: false,
            auth_asked: false,
            packets_in: 0,
            last_packet: self.now_ms,
            online_marked: false,
            connacks: 0,
            refused: false,
            packets_out: 0,
            owed: Vec::new(),
            acks_fed: Vec::new(),
            paused: false,
            unsent: BytesMut::new(),
            gauge: WriterGauge::new(BUDGET),
            progressed_at: self.now_ms,
        });
        self.drain();
    }

    /// Feeds `data` to connection `k` as one read (or keeps it in its
    /// socket while the broker does not read it).
    fn feed(&mut self, k: usize, data: &[u8]) {
        let Some(view) = self.conns.get_mut(k) else { return };
        if view.paused && view.open {
            view.unsent.extend_from_slice(data);
            return;
        }
        let id = view.id;
        view.acks_fed.clear();
        if view.open && !view.shadow_failed {
            view.shadow.extend_from_slice(data);
            shadow_decode(view, self.max_packet_size, self.now_ms);
        }
        let now = self.now();
        self.broker.handle_input(now, Input::Received { conn: id, data });
        self.drain();
    }

    /// Answers the oldest unanswered `Authenticate` (the connection may be
    /// closed by now, as a runtime's answer may come late).
    fn answer_auth(&mut self, how: u8) {
        let max_packet_size = self.max_packet_size;
        let now_ms = self.now_ms;
        let Some(view) = self.conns.iter_mut().find(|v| v.auth_asked) else { return };
        view.auth_asked = false;
        let result = match how % 4 {
            0 => Err(Refusal::BadUserNameOrPassword),
            1 => Err(Refusal::NotAuthorized),
            _ => Ok(()),
        };
        let id = view.id;
        view.acks_fed.clear();
        if view.open && result.is_ok() {
            // The broker now decodes what waited behind the CONNECT.
            view.auth_wait = false;
            shadow_decode(view, max_packet_size, now_ms);
        }
        let now = self.now();
        self.broker.handle_input(now, Input::Authenticated { conn: id, result });
        self.drain();
    }

    /// Feeds `data` in two reads split at `at`.
    fn feed_split(&mut self, k: usize, data: &[u8], at: usize) {
        let at = at.min(data.len());
        if at == 0 || at == data.len() {
            return self.feed(k, data);
        }
        self.feed(k, &data[..at]);
        self.feed(k, &data[at..]);
    }

    /// The runtime wrote `n` of the bytes waiting for connection `k`, and
    /// reports it as a runtime does.
    fn written(&mut self, k: usize, n: usize) {
        let now_ms = self.now_ms;
        let Some(view) = self.conns.get_mut(k).filter(|v| v.open) else { return };
        let Some(progress) = view.gauge.written(n) else { return };
        view.progressed_at = now_ms;
        let id = view.id;
        let now = self.now();
        self.broker.handle_input(now, Input::Writer { conn: id, progress });
        self.drain();
    }

    fn lost(&mut self, k: usize) {
        let Some(view) = self.conns.get_mut(k) else { return };
        let id = view.id;
        view.open = false;
        let now = self.now();
        self.broker.handle_input(now, Input::Closed { conn: id });
        self.drain();
    }

    fn advance(&mut self, ms: u64) {
        self.now_ms += ms;
        let now = self.now();
        self.broker.handle_timeout(now);
        self.drain();
        if let Some(next) = self.broker.poll_timeout() {
            assert!(next > now.instant, "timer at {next:?} still due after handle_timeout at {:?}", now.instant);
        }
        // Nothing overdue survives the timer.
        for view in &self.conns {
            if !view.open {
                continue;
            }
            if !view.online_marked {
                assert!(
                    view.opened_at + CONNECT_TIMEOUT_MS > self.now_ms,
                    "{} opened at {} ms still awaiting CONNECT at {} ms",
                    view.id,
                    view.opened_at,
                    self.now_ms
                );
            } else if let Some(grace) = keepalive_grace(view).filter(|_| !view.paused) {
                assert!(
                    view.last_packet + grace > self.now_ms,
                    "{} silent since {} ms (grace {grace} ms) still open at {} ms",
                    view.id,
                    view.last_packet,
                    self.now_ms
                );
            }
        }
    }

    fn shutdown(&mut self) {
        let now = self.now();
        self.broker.shutdown(now);
        self.drain();
        assert!(self.conns.iter().all(|c| !c.open), "connection left open by shutdown");
        assert!(self.online.is_empty(), "clients left online by shutdown: {:?}", self.online);
        assert_eq!(self.broker.stats().connections, 0);
    }

    fn ack_owed(&mut self, k: usize, how_many: u8) {
        let Some(view) = self.conns.get_mut(k) else { return };
        let n = match how_many % 4 {
            0 => view.owed.len(),
            n => usize::from(n).min(view.owed.len()),
        };
        let acks: Vec<Packet> = view.owed.drain(..n).collect();
        if acks.is_empty() {
            return;
        }
        let mut buf = BytesMut::new();
        for ack in &acks {
            ack.encode(&mut buf);
        }
        self.acking_owed = true;
        self.feed(k, &buf);
        self.acking_owed = false;
    }

    // ---- checks ---------------------------------------------------------

    /// Drains every action, checking each against what came before, then
    /// checks the broker's state.
    fn drain(&mut self) {
        let now = self.now();
        // Per connection: first deliveries announced, and dup=0 PUBLISH
        // packets written, during this drain.
        let mut delivers: BTreeMap<ConnId, usize> = BTreeMap::new();
        let mut fresh_publishes: BTreeMap<ConnId, usize> = BTreeMap::new();
        let mut guard = 0u32;
        // Reports a runtime would make, and sockets to read again, once
        // this drain is over.
        let mut reports = Vec::new();
        let mut resumed = Vec::new();
        while let Some(action) = self.broker.poll_action() {
            guard += 1;
            assert!(guard < 1_000_000, "poll_action does not end");
            match action {
                Action::Send { conn, data } => {
                    let len = data.len();
                    let fresh = self.on_send(conn, data);
                    *fresh_publishes.entry(conn).or_default() += fresh;
                    let now_ms = self.now_ms;
                    let view = self.view(conn);
                    if let Some(progress) = view.gauge.queued(len) {
                        view.progressed_at = now_ms;
                        reports.push((conn, progress));
                    }
                }
                Action::PauseReading { conn } => {
                    let view = self.view(conn);
                    assert!(view.open && !view.paused, "PauseReading for {conn} (open {}, paused)", view.open);
                    view.paused = true;
                    event(14);
                }
                Action::ResumeReading { conn } => {
                    let now_ms = self.now_ms;
                    let view = self.view(conn);
                    assert!(view.open && view.paused, "ResumeReading for {conn} (open {}, not paused)", view.open);
                    view.paused = false;
                    // Its keepalive counts from the resume.
                    view.last_packet = now_ms;
                    resumed.push(conn);
                }
                Action::Close { conn, reason } => {
                    let now_ms = self.now_ms;
                    let acking_owed = self.acking_owed;
                    let view = self.view(conn);
                    assert!(view.open, "Close for {conn}, already closed ({reason:?})");
                    view.open = false;
                    if let CloseReason::Violation(Violation::WrongAck { id, received, .. }) = reason {
                        assert!(!acking_owed, "{conn} closed for an ack it owed: {reason}");
                        assert!(view.acks_fed.contains(&(received, id)), "{conn} closed for an ack not sent: {reason}");
                        event(13);
                    }
                    match reason {
                        CloseReason::TakenOver => event(3),
                        CloseReason::TooLarge { .. } => event(11),
                        _ => {}
                    }
                    match reason {
                        CloseReason::KeepAliveTimeout => {
                            event(4);
                            let grace = keepalive_grace(view).expect("keepalive timeout without keepalive");
                            assert!(
                                view.last_packet + grace <= now_ms,
                                "{conn} closed for keepalive at {} ms, last packet {} ms, grace {grace} ms",
                                now_ms,
                                view.last_packet
                            );
                        }
                        CloseReason::ConnectTimeout => {
                            event(5);
                            assert!(!view.online_marked, "{conn}: connect timeout after CONNECT accepted");
                            assert!(view.opened_at + CONNECT_TIMEOUT_MS <= now_ms, "{conn}: early connect timeout");
                        }
                        CloseReason::NotReading => {
                            event(15);
                            assert!(view.gauge.unwritten() > BUDGET, "{conn} closed for not reading, within budget");
                            assert!(
                                view.progressed_at + NOT_READING_MS <= now_ms,
                                "{conn} closed for not reading at {now_ms} ms, progress at {} ms",
                                view.progressed_at
                            );
                        }
                        CloseReason::ConnectionLost => panic!("Close with ConnectionLost for {conn}"),
                        CloseReason::TooManyConnections => panic!("max_connections is not set"),
                        _ => {}
                    }
                }
                Action::MarkOnline { client, conn } => {
                    let view = self.view(conn);
                    assert!(view.open, "MarkOnline {client} for closed {conn}");
                    assert!(!view.online_marked, "second MarkOnline for {conn}");
                    assert_eq!(view.connacks, 0, "MarkOnline {client} after CONNACK on {conn}");
                    view.online_marked = true;
                    let name = client.as_str().to_owned();
                    if let Some(old) = self.online.get(&name) {
                        panic!("MarkOnline {client} on {conn} while online on {old}");
                    }
                    self.online.insert(name.clone(), conn);
                    self.known_clients.insert(name);
                }
                Action::MarkOffline { client, conn } => {
                    let view = self.view(conn);
                    assert!(!view.open, "MarkOffline {client} for {conn} still open");
                    assert_eq!(
                        self.online.remove(client.as_str()),
                        Some(conn),
                        "MarkOffline {client} on {conn} does not match presence"
                    );
                }
                Action::Deliver { client, conn, message, qos, packet_id } => {
                    assert!(
                        !message.is_expired(now.unix),
                        "Deliver to {client} of a copy expired at {:?}, now {}",
                        message.expires_at,
                        now.unix.as_secs_f64()
                    );
                    assert!(qos <= message.qos, "copy at QoS {qos} of a QoS {} message", message.qos);
                    assert_eq!(packet_id.is_some(), qos != QoS::AtMostOnce, "packet id vs QoS {qos}");
                    assert_eq!(
                        self.online.get(client.as_str()),
                        Some(&conn),
                        "Deliver to {client} on {conn}, which is not its online connection"
                    );
                    assert!(self.view(conn).open, "Deliver on closed {conn}");
                    *delivers.entry(conn).or_default() += 1;
                    event(if qos == QoS::AtMostOnce { 6 } else { 7 });
                }
                Action::Authenticate { conn, client, username, .. } => {
                    let view = self.view(conn);
                    assert!(view.open, "Authenticate for closed {conn}");
                    assert!(view.auth_wait && !view.auth_asked, "unexpected Authenticate for {conn} ({client})");
                    assert_eq!(username.as_deref(), Some(DEFER_USER), "Authenticate for {conn}");
                    assert!(!view.online_marked && view.connacks == 0, "Authenticate for {conn} after CONNACK");
                    view.auth_asked = true;
                    event(12);
                }
                Action::Store { batch } => panic!("store batch {} with persistence off", batch.seq),
                Action::ToShard { to, .. } => panic!("a message to shard {} with one shard", to.0),
                Action::DropExpired { client, message } => {
                    event(9);
                    assert!(message.is_expired(now.unix), "DropExpired for {client} of a live message");
                    self.dropped_expired += 1;
                }
            }
        }
        for (conn, n) in &fresh_publishes {
            assert_eq!(delivers.get(conn).copied().unwrap_or(0), *n, "{conn}: first PUBLISHes vs Deliver actions");
        }
        for (conn, n) in &delivers {
            assert_eq!(fresh_publishes.get(conn).copied().unwrap_or(0), *n, "{conn}: Deliver actions vs PUBLISHes");
        }
        self.check_state();
        for (conn, progress) in reports {
            if self.view(conn).open {
                let now = self.now();
                self.broker.handle_input(now, Input::Writer { conn, progress });
                self.drain();
            }
        }
        for conn in resumed {
            let Some(k) = self.conns.iter().position(|c| c.id == conn) else { continue };
            let unsent = std::mem::take(&mut self.conns[k].unsent);
            if !unsent.is_empty() {
                self.feed(k, &unsent);
            }
        }
    }

    /// Checks one `Send`; returns how many first-delivery PUBLISHes it held.
    fn on_send(&mut self, conn: ConnId, data: Bytes) -> usize {
        let view = self.view(conn);
        assert!(view.open, "Send for {conn} after it was closed");
        assert!(!data.is_empty(), "empty Send for {conn}");
        let mut buf = BytesMut::from(&data[..]);
        let mut fresh = 0;
        while !buf.is_empty() {
            // The broker writes 3.1.1's flags to every client.
            let packet = match decode(&mut buf, CLIENT_MAX_PACKET, Protocol::V311) {
                Ok(Some(packet)) => packet,
                Ok(None) => panic!("Send for {conn} ends in a partial packet: {:?}", &buf[..buf.len().min(16)]),
                Err(e) => panic!("Send for {conn} does not decode: {e}"),
            };
            view.packets_out += 1;
            if view.packets_out == 1 {
                assert!(matches!(packet, Packet::ConnAck(_)), "first packet to {conn} is {packet:?}");
            }
            match packet {
                Packet::ConnAck(ack) => {
                    view.connacks += 1;
                    assert_eq!(view.connacks, 1, "second CONNACK to {conn}");
                    if ack.code == ConnectReturnCode::Accepted {
                        event(if ack.session_present { 2 } else { 0 });
                        assert!(view.online_marked, "CONNACK 0 to {conn} without MarkOnline before it");
                        if let Some(connect) = &view.connect
                            && (connect.clean_session || connect.protocol == Protocol::V31)
                        {
                            assert!(!ack.session_present, "session present for {connect:?}");
                        }
                    } else {
                        assert!(!view.online_marked, "refusal CONNACK to {conn} after MarkOnline");
                        assert!(!ack.session_present, "session present on a refusal");
                        view.refused = true;
                        event(1);
                    }
                }
                Packet::Publish(Publish { dup, qos, packet_id, .. }) => {
                    server_packet_after_connack(view, "PUBLISH");
                    match (qos, packet_id) {
                        (QoS::AtMostOnce, _) => {}
                        (QoS::AtLeastOnce, Some(pid)) => view.owed.push(Packet::PubAck(pid)),
                        (QoS::ExactlyOnce, Some(pid)) => view.owed.push(Packet::PubRec(pid)),
                        (_, None) => unreachable!("the codec gives QoS 1/2 an id"),
                    }
                    if dup {
                        event(8);
                    } else {
                        fresh += 1;
                    }
                }
                Packet::PubRel(pid) => {
                    server_packet_after_connack(view, "PUBREL");
                    event(10);
                    view.owed.push(Packet::PubComp(pid));
                }
                Packet::PubAck(_)
                | Packet::PubRec(_)
                | Packet::PubComp(_)
                | Packet::SubAck(_)
                | Packet::UnsubAck(_)
                | Packet::PingResp => server_packet_after_connack(view, "ack"),
                other => panic!("client-only packet sent to {conn}: {other:?}"),
            }
        }
        fresh
    }

    fn check_state(&mut self) {
        let mut open = 0;
        for view in &self.conns {
            let buffered = self.broker.buffered_len(view.id);
            assert!(buffered <= self.max_packet_size, "{} buffers {buffered} bytes", view.id);
            if !view.open {
                assert_eq!(self.broker.client_of(view.id), None, "closed {} still bound", view.id);
                assert_eq!(buffered, 0, "closed {} still buffers", view.id);
                continue;
            }
            open += 1;
            assert!(!view.shadow_failed, "{} fed a malformed frame and still open", view.id);
            assert!(!view.refused, "{} refused and still open", view.id);
            assert_eq!(buffered, view.shadow.len(), "{}: buffered bytes vs undecoded stream", view.id);
            match self.broker.client_of(view.id) {
                Some(client) => {
                    assert!(view.online_marked, "{} bound to {client} without MarkOnline", view.id);
                    assert_eq!(self.online.get(client.as_str()), Some(&view.id), "{} bound to {client}", view.id);
                    assert_eq!(view.connacks, 1, "{} bound to {client} without its CONNACK", view.id);
                }
                None => assert!(!view.online_marked, "{} marked online but unbound", view.id),
            }
        }
        let stats = self.broker.stats();
        assert_eq!(stats.connections, open, "stats.connections vs open connections");
        assert!(stats.sessions >= self.online.len(), "fewer sessions than clients online");
        assert_eq!(stats.counts.dropped.expired, self.dropped_expired, "dropped.expired vs DropExpired actions");
        // The timer is never late: every open connection's deadline is
        // covered by poll_timeout.
        let next = self.broker.poll_timeout();
        for view in self.conns.iter().filter(|v| v.open) {
            let due = if view.online_marked {
                keepalive_grace(view).filter(|_| !view.paused).map(|grace| view.last_packet + grace)
            } else {
                Some(view.opened_at + CONNECT_TIMEOUT_MS)
            };
            if let Some(due) = due {
                let due = Instant::from_origin(Duration::from_millis(due));
                assert!(next.is_some_and(|t| t <= due), "{}: deadline {due:?} but poll_timeout {next:?}", view.id);
            }
        }
        let (mut sessions, mut subscriptions) = (0, 0);
        for client in &self.known_clients {
            let session = self.broker.session(client);
            if let Some(s) = &session {
                sessions += 1;
                subscriptions += s.subscriptions.len();
            }
            let online_conn = self.online.get(client).copied();
            assert_eq!(session.as_ref().and_then(|s| s.conn), online_conn, "session of {client} vs presence");
            if let Some(session) = session {
                assert!(session.inflight <= WINDOW, "{client}: {} in flight", session.inflight);
                // Beyond the limit only what held publishers had sent.
                assert!(session.queued <= MAX_QUEUED + MAX_OVERFLOW, "{client}: {} queued", session.queued);
            }
        }
        // Every session belongs to a client that was once online, so the
        // store and the subscription tree can be counted from outside.
        assert_eq!(stats.sessions, sessions, "stats.sessions vs sessions of known clients");
        assert_eq!(stats.subscriptions, subscriptions, "subscription tree vs session subscriptions");
    }
}

/// Decodes what the broker has decoded of the client's stream, stopping
/// behind a CONNECT the policy defers, by the rules of the protocol that
/// CONNECT named (3.1.1's before it), as the broker does.
fn shadow_decode(view: &mut ConnView, max_packet_size: usize, now_ms: u64) {
    while !view.auth_wait && !view.shadow_failed {
        let protocol = view.connect.as_ref().map_or(Protocol::V311, |c| c.protocol);
        match decode(&mut view.shadow, max_packet_size, protocol) {
            Ok(Some(packet)) => {
                view.packets_in += 1;
                view.last_packet = now_ms;
                match packet {
                    Packet::PubAck(id) => view.acks_fed.push((Ack::PubAck, id)),
                    Packet::PubRec(id) => view.acks_fed.push((Ack::PubRec, id)),
                    Packet::PubComp(id) => view.acks_fed.push((Ack::PubComp, id)),
                    _ => {}
                }
                if view.packets_in == 1
                    && let Packet::Connect(connect) = packet
                {
                    view.auth_wait = connect.username.as_deref() == Some(DEFER_USER);
                    view.connect = Some(*connect);
                }
            }
            Ok(None) => break,
            Err(_) => view.shadow_failed = true,
        }
    }
}

fn server_packet_after_connack(view: &ConnView, what: &str) {
    assert!(view.connacks == 1 && !view.refused, "{what} to {} without an accepting CONNACK", view.id);
}

/// The keepalive grace in ms of an accepted connection, if it has one.
fn keepalive_grace(view: &ConnView) -> Option<u64> {
    let keep_alive = view.connect.as_ref()?.keep_alive;
    (keep_alive > 0).then(|| u64::from(keep_alive) * 1500)
}

// ---- building valid packets ---------------------------------------------

fn topic(input: &mut Bytes0<'_>) -> TopicName {
    TopicName::new(input.pick(&TOPICS)).expect("valid topic")
}

fn filter(input: &mut Bytes0<'_>) -> TopicFilter {
    TopicFilter::new(input.pick(&FILTERS)).expect("valid filter")
}

/// A payload, often JSON with an `expired_at` around the current time.
fn payload(input: &mut Bytes0<'_>, now_ms: u64) -> Bytes {
    let now = unix_at(now_ms);
    let text = match input.u8() % 16 {
        0 | 1 => "x".to_owned(),
        2 => String::new(),
        3 => format!(r#"{{"expired_at": {}}}"#, now - 10.0),
        4 => format!(r#"{{"expired_at": {now}}}"#),
        5 => format!(r#"{{"expired_at": {}, "m": "hi"}}"#, unix_at(now_ms + 1)),
        6 => format!(r#"{{"expired_at": {}}}"#, unix_at(now_ms + u64::from(input.u8()) * 100)),
        7 => format!(r#" {{"expiredAt": {}}}"#, unix_at(now_ms + u64::from(input.u8()) * 10)),
        8 => format!(r#"{{"expired_at": {}}}"#, now + 1e6),
        9 => r#"{"expired_at": "soon"}"#.to_owned(),
        10 => "a".repeat(SIZE_LIMIT + 1 + usize::from(input.u8() % 4)),
        11 => {
            // Exactly at the limit, or one above, with a live or past expiry.
            let at = if input.u8().is_multiple_of(2) { now - 1.0 } else { now + 5.0 };
            let head = format!(r#"{{"expired_at": {at}, "p": ""#);
            let size = SIZE_LIMIT + usize::from(input.u8() % 2);
            let pad = size.saturating_sub(head.len() + 2);
            format!("{head}{}\"}}", "p".repeat(pad))
        }
        12 => r#"{"expired_at": 1e400}"#.to_owned(),
        13 => r#"{"expired_at": -1e308, "expiredAt": 1}"#.to_owned(),
        _ => {
            let n = usize::from(input.u8() % 32);
            return Bytes::copy_from_slice(input.take(n));
        }
    };
    Bytes::from(text)
}

fn connect_packet(input: &mut Bytes0<'_>, now_ms: u64) -> Packet {
    let flags = input.u8();
    let protocol = if flags & 0x80 != 0 && flags & 0x40 != 0 { Protocol::V31 } else { Protocol::V311 };
    let client_id = ByteString::from(input.pick(&CLIENT_IDS));
    let keep_alive = match input.u8() % 8 {
        7 => 4_000, // above max_keepalive: refused
        n => KEEP_ALIVES[usize::from(n) % KEEP_ALIVES.len()],
    };
    let will = (flags & 0x02 != 0).then(|| LastWill {
        topic: topic(input),
        payload: payload(input, now_ms),
        qos: input.qos(),
        retain: flags & 0x04 != 0,
    });
    let username = (flags & 0x08 != 0).then(|| ByteString::from_static(input.pick(&USERNAMES)));
    let password = (flags & 0x08 != 0 && flags & 0x10 != 0).then(|| Bytes::from_static(b"pw"));
    Packet::Connect(Box::new(Connect {
        protocol,
        clean_session: flags & 0x01 != 0,
        keep_alive,
        client_id,
        will,
        username,
        password,
        bridge: flags & 0x20 != 0,
    }))
}

fn valid_packet(input: &mut Bytes0<'_>, now_ms: u64) -> Packet {
    match input.u8() % 14 {
        0..=2 => connect_packet(input, now_ms),
        3 | 4 => {
            let n = 1 + usize::from(input.u8() % 3);
            let filters = (0..n).map(|_| (filter(input), input.qos())).collect();
            Packet::Subscribe(Subscribe { packet_id: input.packet_id(), filters })
        }
        5 => {
            let n = 1 + usize::from(input.u8() % 2);
            let filters = (0..n).map(|_| filter(input)).collect();
            Packet::Unsubscribe(Unsubscribe { packet_id: input.packet_id(), filters })
        }
        6..=8 => {
            let flags = input.u8();
            let qos = QoS::from_bits(flags % 3).expect("0..=2");
            let packet_id = (qos != QoS::AtMostOnce).then(|| input.packet_id());
            Packet::Publish(Publish {
                dup: qos != QoS::AtMostOnce && flags & 0x10 != 0,
                qos,
                retain: flags & 0x08 != 0,
                topic: topic(input),
                packet_id,
                payload: payload(input, now_ms),
            })
        }
        9 => Packet::PubAck(input.packet_id()),
        10 => Packet::PubRec(input.packet_id()),
        11 => Packet::PubRel(input.packet_id()),
        12 => Packet::PubComp(input.packet_id()),
        _ => {
            if input.u8().is_multiple_of(4) {
                Packet::Disconnect
            } else {
                Packet::PingReq
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes0 { data };
    let mut h = Harness::new();
    while !input.is_empty() {
        let op = input.u8();
        // Connection k among those opened so far (closed ones included).
        let pick_conn = |input: &mut Bytes0<'_>, h: &Harness| {
            let b = usize::from(input.u8());
            if h.conns.is_empty() { None } else { Some(b % h.conns.len()) }
        };
        match op {
            0..=23 => h.open(),
            24..=127 => {
                let Some(k) = pick_conn(&mut input, &h) else { continue };
                let packet = valid_packet(&mut input, h.now_ms);
                let mut buf = BytesMut::new();
                packet.encode(&mut buf);
                let split = usize::from(input.u8());
                h.feed_split(k, &buf, split.saturating_sub(0xC0));
            }
            128..=151 => {
                let Some(k) = pick_conn(&mut input, &h) else { continue };
                let how_many = input.u8();
                h.ack_owed(k, how_many);
            }
            152..=159 => {
                let how = input.u8();
                h.answer_auth(how);
            }
            160..=191 => {
                let Some(k) = pick_conn(&mut input, &h) else { continue };
                let n = usize::from(input.u8() % 128);
                let bytes = input.take(n);
                h.feed(k, bytes);
            }
            192..=207 => {
                let Some(k) = pick_conn(&mut input, &h) else { continue };
                h.lost(k);
            }
            240..=247 => {
                let Some(k) = pick_conn(&mut input, &h) else { continue };
                let n = usize::from(input.u16());
                h.written(k, n);
            }
            208..=239 => {
                let ms = match input.u8() {
                    b @ 0..=127 => u64::from(b) * 50,           // up to 6.35 s
                    b @ 128..=239 => u64::from(b - 127) * 1000, // up to 112 s
                    _ => u64::from(input.u16()) * 100,          // up to 109 min
                };
                h.advance(ms);
            }
            248..=251 => {
                // A large block, to reach the packet-size cap.
                let Some(k) = pick_conn(&mut input, &h) else { continue };
                let len = usize::from(input.u16()) + 1;
                let fill = input.u8();
                h.feed(k, &vec![fill; len]);
            }
            _ => h.shutdown(),
        }
    }
    print_events();
});
