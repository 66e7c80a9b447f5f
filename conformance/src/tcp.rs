//! The TCP target: scenarios replayed over real sockets against a running
//! broker, in real time. Blocking `std::net` sockets with read timeouts;
//! every wait is bounded.
//!
//! Each run gets its own prefix for `{p}`, so client ids and topics of
//! different runs never meet. After a run the target removes what it left
//! on the broker: retained messages on the topics it published with RETAIN
//! (wills included) and the persistent sessions of the ids it used with
//! `clean=0`.
//!
//! Given the broker's command ([`TcpOptions::broker_command`]), the target
//! also runs the scenarios that stop the broker (`shutdown`, `restart`,
//! `crash`): each on a broker process of its own (`process.rs`),
//! started for it and removed after it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use culex_core::codec::{self, Connect, Packet, Publish};
use culex_core::{PacketId, Protocol, QoS, TopicName};
use culex_spec::{BrokerConf, Env, Requirement, Scenario};

use crate::core_target::CORE_PREFIX;
use crate::process::{BrokerCommand, OwnBroker};
use crate::runner::{self, Driver, Event, Patience};
use crate::transcript::{Transcript, describe_sent};
use crate::{Outcome, Run};

/// The largest packet a test client accepts.
const MAX_PACKET: usize = codec::MAX_REMAINING_LENGTH + 5;

/// How reads are sliced while waiting on several connections.
const SLICE: Duration = Duration::from_millis(5);

/// What the broker under test offers and how patient to be.
#[derive(Debug, Clone)]
pub struct TcpOptions {
    /// The settings the broker runs with (`--broker-config`): scenarios
    /// whose `[config]` it does not provide are skipped.
    pub broker_conf: Option<BrokerConf>,
    /// Redis holding the presence hash (`--redis`): without it presence
    /// scenarios are skipped.
    pub redis: Option<SocketAddr>,
    /// The hash presence is kept in.
    pub redis_key: String,
    /// The broker implements Culex payload expiry (`--extensions expiry`).
    pub expiry: bool,
    /// How long an expectation waits for its packet.
    pub timeout: Duration,
    /// How long an `any order:` set waits for its `maybe` members.
    pub grace: Duration,
    /// Speak MQTT over WebSocket (`--websocket`): every connection does the
    /// HTTP upgrade asking for subprotocol `mqtt`, and every write is one
    /// binary frame. Scenarios that need WebSocket run only then.
    pub websocket: bool,
    /// How to start the broker (`-- COMMAND...` after the options): the
    /// scenarios that stop it run on brokers the target starts itself.
    /// Without it they are skipped.
    pub broker_command: Option<BrokerCommand>,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            broker_conf: None,
            redis: None,
            redis_key: "mqtt".to_owned(),
            expiry: false,
            timeout: Duration::from_secs(2),
            grace: Duration::from_millis(300),
            websocket: false,
            broker_command: None,
        }
    }
}

/// A running broker reached over TCP.
#[derive(Debug, Clone)]
pub struct TcpTarget {
    addr: SocketAddr,
    options: TcpOptions,
    run_tag: String,
}

impl TcpTarget {
    /// A target at `addr`.
    pub fn new(addr: SocketAddr, options: TcpOptions) -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let seed = (nanos as u64) ^ (u64::from(std::process::id()) << 20);
        Self { addr, options, run_tag: base36(seed % 36u64.pow(4), 4) }
    }

    /// Whether `scenario` stops the broker, and so runs on a broker of
    /// its own.
    fn needs_own_broker(scenario: &Scenario) -> bool {
        scenario.requires.contains(&Requirement::Shutdown) || scenario.requires.contains(&Requirement::Restart)
    }

    /// Why this target cannot run `scenario`, if it cannot.
    pub fn skip_reason(&self, scenario: &Scenario) -> Option<String> {
        let mut missing = Vec::new();
        let own_broker = Self::needs_own_broker(scenario);
        if own_broker && self.options.broker_command.is_none() {
            let steps = if scenario.requires.contains(&Requirement::Restart) { "restart, crash" } else { "shutdown" };
            missing.push(format!(
                "control of the broker process ({steps}: give the broker command after --, as run-tcp.sh does)"
            ));
        }
        for r in &scenario.requires {
            match r {
                Requirement::Presence if self.options.redis.is_none() => missing.push("presence (give --redis)".into()),
                Requirement::Expiry if !self.options.expiry => {
                    missing.push("the expiry extension (give --extensions expiry)".into())
                }
                Requirement::Certificates => missing.push("TLS client certificates (no TLS mode yet)".into()),
                Requirement::WebSocket if !self.options.websocket => {
                    missing.push("WebSocket (give --websocket, against a websockets listener)".into())
                }
                _ => {}
            }
        }
        // A broker of the scenario's own is configured for it.
        let configured_for_it = own_broker && self.options.broker_command.is_some();
        if !scenario.config.is_empty() && !configured_for_it {
            let absent = match &self.options.broker_conf {
                Some(conf) => conf.missing(&scenario.config),
                None => scenario.config.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            };
            if !absent.is_empty() {
                missing.push(format!("broker config {} (give --broker-config)", absent.join(" ")));
            }
        }
        (!missing.is_empty()).then(|| format!("needs {}", missing.join(", ")))
    }

    /// Replays `scenario`; `index` makes its prefix unique within the run.
    pub fn run(&self, scenario: &Scenario, index: usize) -> Run {
        if let Some(why) = self.skip_reason(scenario) {
            return Run { scenario: scenario.name.clone(), outcome: Outcome::Skip(why), transcript: String::new() };
        }
        let prefix = format!("cx{}{}", self.run_tag, base36(index as u64 % 1296, 2));
        let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let env = Env { prefix: prefix.clone(), unix_now };
        let mut own = None;
        if let Some(command) = self.options.broker_command.as_ref().filter(|_| Self::needs_own_broker(scenario)) {
            let settings: Vec<(String, String)> = scenario
                .config
                .iter()
                .filter(|(k, v)| self.options.broker_conf.as_ref().is_none_or(|c| c.entries.get(*k) != Some(*v)))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match OwnBroker::start(command, &settings) {
                Ok(broker) => own = Some(broker),
                Err(message) => {
                    let outcome = Outcome::Fail { line: 0, step: "(starting a broker of its own)".into(), message };
                    return Run { scenario: scenario.name.clone(), outcome, transcript: String::new() };
                }
            }
        }
        let mut driver = TcpDriver {
            target: self,
            addr: own.as_ref().map_or(self.addr, OwnBroker::addr),
            own,
            conns: BTreeMap::new(),
            transcript: Transcript::new(),
            retained: BTreeSet::new(),
            persistent: BTreeSet::new(),
        };
        let outcome = runner::run(&mut driver, scenario, &env);
        let TcpDriver { conns, transcript, retained, persistent, own, .. } = driver;
        for conn in conns.values() {
            conn.wire.shutdown();
        }
        drop(conns);
        match own {
            // Its store goes with it; stopped gently, so presence is written.
            Some(mut broker) => {
                let _ = broker.stop(false);
            }
            None => self.clean_up(&prefix, &retained, &persistent),
        }
        // The run's prefix is noise: show the core's, so a TCP transcript
        // diffs cleanly against the core's and recorded results are stable.
        let stable = |s: &str| s.replace(&prefix, CORE_PREFIX);
        let outcome = match outcome {
            Outcome::Fail { line, step, message } => Outcome::Fail { line, step, message: stable(&message) },
            other => other,
        };
        Run { scenario: scenario.name.clone(), outcome, transcript: stable(transcript.as_str()) }
    }

    /// Removes retained messages and persistent sessions a run left.
    fn clean_up(&self, prefix: &str, retained: &BTreeSet<String>, persistent: &BTreeSet<String>) {
        // Let the broker see the closed sockets (and publish wills) first.
        std::thread::sleep(Duration::from_millis(50));
        for id in persistent {
            let _ = self.session(id, |_| Ok(()));
        }
        if !retained.is_empty() {
            let _ = self.session(&format!("{prefix}cleanup"), |wire| {
                for (n, topic) in retained.iter().enumerate() {
                    let Ok(topic) = TopicName::new(topic.as_str()) else { continue };
                    let id = PacketId::new(u16::try_from(n % 65_000 + 1).unwrap_or(1));
                    let publish = Publish {
                        dup: false,
                        qos: QoS::AtLeastOnce,
                        retain: true,
                        topic,
                        packet_id: id,
                        payload: Bytes::new(),
                    };
                    write_packet(wire, &Packet::Publish(publish))?;
                    read_packet(wire, self.options.timeout)?;
                }
                Ok(())
            });
        }
    }

    /// Connects with a clean session as `client_id`, runs `body`, and
    /// disconnects.
    fn session(&self, client_id: &str, body: impl FnOnce(&mut Wire) -> io::Result<()>) -> io::Result<()> {
        let mut stream =
            Wire::connect(self.addr, self.options.timeout, self.options.websocket).map_err(io::Error::other)?;
        let connect = Connect {
            protocol: Protocol::V311,
            clean_session: true,
            keep_alive: 60,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            bridge: false,
        };
        write_packet(&mut stream, &Packet::Connect(Box::new(connect)))?;
        match read_packet(&mut stream, self.options.timeout)? {
            Packet::ConnAck(a) if a.code as u8 == 0 => {}
            other => return Err(io::Error::other(format!("cleanup refused: {other:?}"))),
        }
        body(&mut stream)?;
        write_packet(&mut stream, &Packet::Disconnect)
    }
}

fn write_packet(wire: &mut Wire, packet: &Packet) -> io::Result<()> {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf);
    wire.write_mqtt(&buf)
}

/// Reads one packet, waiting at most `timeout` in all.
fn read_packet(wire: &mut Wire, timeout: Duration) -> io::Result<Packet> {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = codec::decode(&mut buf, MAX_PACKET, Protocol::V311).map_err(io::Error::other)? {
            return Ok(packet);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        if wire.read_into(&mut buf, left)?.is_some() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// `n` in base 36, zero-padded to `width` digits.
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One client's socket and what has come in on it.
#[derive(Debug)]
struct Conn {
    wire: Wire,
    inbuf: BytesMut,
    events: VecDeque<Event>,
    /// The broker closed it (or it failed); no more reads.
    ended: bool,
}

struct TcpDriver<'a> {
    target: &'a TcpTarget,
    /// Where the broker of this run listens.
    addr: SocketAddr,
    /// The broker of this run's own, if it stops it.
    own: Option<OwnBroker>,
    conns: BTreeMap<String, Conn>,
    transcript: Transcript,
    /// Topics published with RETAIN (and retained will topics).
    retained: BTreeSet<String>,
    /// Client ids connected with `clean=0`.
    persistent: BTreeSet<String>,
}

impl TcpDriver<'_> {
    /// One read on `client`'s socket, waiting at most `wait`.
    fn fill(&mut self, client: &str, wait: Duration) {
        let Some(conn) = self.conns.get_mut(client) else { return };
        if conn.ended {
            return;
        }
        let ended = match conn.wire.read_into(&mut conn.inbuf, wait) {
            Ok(None) => None,
            Ok(Some(how)) => Some((!how.is_empty()).then_some(how)),
            Err(e) => Some(Some(e.to_string())),
        };
        loop {
            // What a broker sends is held to 3.1.1's flags, whatever the
            // client speaks: both brokers write them so to 3.1 clients too.
            match codec::decode(&mut conn.inbuf, MAX_PACKET, Protocol::V311) {
                Ok(Some(packet)) => {
                    self.transcript.note(format_args!("{client} <- {}", culex_core::sim::describe(&packet)));
                    conn.events.push_back(Event::Packet(packet));
                }
                Ok(None) => break,
                Err(e) => {
                    self.transcript.note(format_args!("{client} <- undecodable bytes: {e}"));
                    conn.events.push_back(Event::Garbage(e.to_string()));
                    conn.inbuf.clear();
                    conn.ended = true;
                    break;
                }
            }
        }
        if let Some(error) = ended {
            conn.ended = true;
            let how = error.map(|e| format!(" ({e})")).unwrap_or_default();
            self.transcript.note(format_args!("{client} <- CLOSE{how}"));
        }
    }

    /// Records what a write leaves on the broker, for the cleanup.
    fn remember(&mut self, bytes: &[u8]) {
        let mut buf = BytesMut::from(bytes);
        // The laxer 3.1 rules: a 3.1 client's odd flags must not hide the
        // packets behind them.
        while let Ok(Some(packet)) = codec::decode(&mut buf, usize::MAX, Protocol::V31) {
            match packet {
                Packet::Publish(p) if p.retain => {
                    self.retained.insert(p.topic.as_str().to_owned());
                }
                Packet::Connect(c) => {
                    if !c.clean_session {
                        self.persistent.insert(c.client_id.to_string());
                    }
                    if let Some(will) = c.will.filter(|w| w.retain) {
                        self.retained.insert(will.topic.as_str().to_owned());
                    }
                }
                _ => {}
            }
        }
    }
}

impl Driver for TcpDriver<'_> {
    fn open(&mut self, client: &str) -> Result<(), String> {
        let options = &self.target.options;
        let wire = Wire::connect(self.addr, options.timeout, options.websocket)?;
        let how = if options.websocket { " (WebSocket, subprotocol mqtt)" } else { "" };
        self.transcript.note(format_args!("{client} connects{how}"));
        self.conns
            .insert(client.to_owned(), Conn { wire, inbuf: BytesMut::new(), events: VecDeque::new(), ended: false });
        Ok(())
    }

    fn send(&mut self, client: &str, bytes: &[u8]) {
        self.remember(bytes);
        self.transcript.note(format_args!("{client} -> {}", describe_sent(bytes)));
        let Some(conn) = self.conns.get_mut(client) else { return };
        if let Err(e) = conn.wire.write_mqtt(bytes) {
            // The broker has closed it; the next expectation will see that.
            self.transcript.note(format_args!("{client} write failed: {e}"));
        }
    }

    fn send_text(&mut self, client: &str, text: &[u8]) -> Result<(), String> {
        self.transcript.note(format_args!("{client} -> TEXT {:?}", String::from_utf8_lossy(text)));
        let conn = self.conns.get_mut(client).ok_or_else(|| format!("{client} has no connection"))?;
        if conn.wire.ws.is_none() {
            return Err("a text frame needs a WebSocket connection (give --websocket)".into());
        }
        if let Err(e) = conn.wire.write_frame(0x1, text) {
            self.transcript.note(format_args!("{client} write failed: {e}"));
        }
        Ok(())
    }

    fn drop_connection(&mut self, client: &str) {
        if let Some(conn) = self.conns.remove(client) {
            conn.wire.shutdown();
            self.transcript.note(format_args!("{client} connection lost"));
        }
    }

    fn wait(&mut self, by: Duration) {
        let deadline = Instant::now() + by;
        let clients: Vec<String> = self.conns.keys().cloned().collect();
        // Bounded by the deadline; each pass reads every socket once.
        while Instant::now() < deadline {
            let mut idle = true;
            for client in &clients {
                let left = deadline.saturating_duration_since(Instant::now());
                if self.conns.get(client).is_some_and(|c| !c.ended) {
                    idle = false;
                    self.fill(client, left.min(SLICE));
                }
            }
            if idle {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            }
        }
        self.transcript.advance(by);
    }

    fn next_event(&mut self, client: &str, patience: Patience) -> Option<Event> {
        let wait = match patience {
            Patience::Expect => self.target.options.timeout,
            Patience::Grace => self.target.options.grace,
            Patience::Now => Duration::ZERO,
        };
        let deadline = Instant::now() + wait;
        loop {
            let conn = self.conns.get_mut(client)?;
            if let Some(event) = conn.events.pop_front() {
                return Some(event);
            }
            if conn.ended {
                return Some(Event::Closed);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            self.fill(client, left.min(Duration::from_millis(100)));
            let conn = self.conns.get(client)?;
            if conn.events.is_empty() && !conn.ended && Instant::now() >= deadline {
                return None;
            }
        }
    }

    fn check_presence(&mut self, client_id: &str, online: bool) -> Result<(), String> {
        let options = &self.target.options;
        let Some(redis) = options.redis else { return Err("no Redis to read presence from".into()) };
        let deadline = Instant::now() + options.timeout;
        loop {
            let listed = hexists(redis, &options.redis_key, client_id, options.timeout)
                .map_err(|e| format!("Redis at {redis}: {e}"))?;
            if listed == online {
                self.transcript
                    .note(format_args!("presence: {client_id} {}", if online { "online" } else { "offline" }));
                return Ok(());
            }
            if Instant::now() >= deadline {
                let state = if listed { "still online" } else { "not online" };
                return Err(format!("{client_id} is {state} (HEXISTS {} {client_id})", options.redis_key));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn shutdown(&mut self) -> Result<(), String> {
        let broker = self.own.as_mut().ok_or("the TCP target controls no broker here")?;
        self.transcript.note(format_args!("broker shuts down (SIGTERM)"));
        broker.stop(false)
    }

    fn restart(&mut self, crash: bool) -> Result<(), String> {
        let broker = self.own.as_mut().ok_or("the TCP target controls no broker here")?;
        let how = if crash { "broker crashes (SIGKILL)" } else { "broker stops (SIGTERM)" };
        self.transcript.note(format_args!("{how}"));
        broker.restart(crash)?;
        self.transcript.note(format_args!("broker restarts"));
        // Every connection ended with the process.
        self.conns.clear();
        Ok(())
    }
}

/// A client's byte stream to the broker: plain TCP, or MQTT carried in
/// WebSocket binary frames over it (`--websocket`).
#[derive(Debug)]
struct Wire {
    stream: TcpStream,
    /// Over WebSocket: bytes from the server not deframed yet.
    ws: Option<BytesMut>,
}

impl Wire {
    /// Connects to `addr`; with `websocket`, does the HTTP/1.1 upgrade and
    /// checks that the server chose the subprotocol `mqtt`.
    fn connect(addr: SocketAddr, timeout: Duration, websocket: bool) -> Result<Self, String> {
        let stream =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(timeout));
        let mut wire = Self { stream, ws: None };
        if websocket {
            wire.upgrade(addr, timeout)?;
        }
        Ok(wire)
    }

    fn upgrade(&mut self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        let mut key = [0; 16];
        key[..8].copy_from_slice(&random_u64().to_le_bytes());
        key[8..].copy_from_slice(&random_u64().to_le_bytes());
        let request = format!(
            "GET /mqtt HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
            base64(&key)
        );
        self.stream.write_all(request.as_bytes()).map_err(|e| format!("WebSocket upgrade: {e}"))?;
        // Read the answer up to its blank line, byte by byte so no frame
        // bytes after it are taken; bounded in time and size.
        let deadline = Instant::now() + timeout;
        let mut head = Vec::new();
        let mut byte = [0; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || head.len() > 8192 {
                return Err("WebSocket upgrade: no complete answer from the server".into());
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match self.stream.read(&mut byte) {
                Ok(0) => return Err("WebSocket upgrade: the server closed the connection".into()),
                Ok(_) => head.push(byte[0]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("WebSocket upgrade: {e}")),
            }
        }
        let head = String::from_utf8_lossy(&head);
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("101") {
            return Err(format!("WebSocket upgrade: the server answered `{status}`, not 101"));
        }
        let protocol = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(name, _)| name.trim().eq_ignore_ascii_case("sec-websocket-protocol"))
            .map(|(_, value)| value.trim().to_owned());
        if protocol.as_deref() != Some("mqtt") {
            return Err(format!(
                "WebSocket upgrade: the server returned subprotocol {}, not mqtt",
                protocol.map_or("none".to_owned(), |p| format!("`{p}`"))
            ));
        }
        self.ws = Some(BytesMut::new());
        Ok(())
    }

    /// Writes MQTT bytes: as they are, or as one masked binary frame.
    fn write_mqtt(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.ws.is_some() { self.write_frame(0x2, bytes) } else { self.stream.write_all(bytes) }
    }

    /// Writes one masked, final WebSocket frame.
    fn write_frame(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = (random_u64() as u32).to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.write_all(&frame)
    }

    /// One read, waiting at most `wait`; MQTT bytes go to `inbuf`.
    /// `Ok(Some(how))` when the connection ended (`how` may say why).
    fn read_into(&mut self, inbuf: &mut BytesMut, wait: Duration) -> io::Result<Option<String>> {
        let mut chunk = [0; 16 * 1024];
        self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        let n = match self.stream.read(&mut chunk) {
            Ok(0) => return Ok(Some(String::new())),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(raw) = self.ws.as_mut() else {
            inbuf.extend_from_slice(&chunk[..n]);
            return Ok(None);
        };
        raw.extend_from_slice(&chunk[..n]);
        let mut pongs = Vec::new();
        let mut ended = None;
        while let Some((opcode, payload)) = deframe(raw)? {
            match opcode {
                0x0 | 0x2 => inbuf.extend_from_slice(&payload),
                0x8 => {
                    let code = payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
                    ended = Some(code.map_or("WebSocket close".to_owned(), |c| format!("WebSocket close {c}")));
                    break;
                }
                0x9 => pongs.push(payload),
                0xA => {}
                other => {
                    return Err(io::Error::other(format!("WebSocket frame with opcode {other:#x} from the server")));
                }
            }
        }
        for payload in pongs {
            self.write_frame(0xA, &payload)?;
        }
        Ok(ended)
    }

    fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Takes one complete frame off `raw`: its opcode and unmasked payload.
fn deframe(raw: &mut BytesMut) -> io::Result<Option<(u8, Vec<u8>)>> {
    if raw.len() < 2 {
        return Ok(None);
    }
    let opcode = raw[0] & 0x0F;
    let masked = raw[1] & 0x80 != 0;
    let (len, mut at) = match raw[1] & 0x7F {
        126 if raw.len() >= 4 => (u64::from(u16::from_be_bytes([raw[2], raw[3]])), 4),
        127 if raw.len() >= 10 => (u64::from_be_bytes(raw[2..10].try_into().unwrap_or_default()), 10),
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_PACKET)
        .ok_or_else(|| io::Error::other("WebSocket frame too large"))?;
    let mask = if masked {
        let Some(m) = raw.get(at..at + 4) else { return Ok(None) };
        at += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    if raw.len() < at + len {
        return Ok(None);
    }
    let frame = raw.split_to(at + len);
    let mut payload = frame[at..].to_vec();
    if let Some(mask) = mask {
        payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
    }
    Ok(Some((opcode, payload)))
}

/// A random number, from the standard library's hash seeds.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish()
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 0x3F) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `HEXISTS key field` over RESP, on a fresh connection.
fn hexists(addr: SocketAddr, key: &str, field: &str, timeout: Duration) -> io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut command = Vec::new();
    command.extend_from_slice(b"*3\r\n");
    for arg in ["HEXISTS", key, field] {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg.as_bytes());
        command.extend_from_slice(b"\r\n");
    }
    stream.write_all(&command)?;
    let mut reply = String::new();
    BufReader::new(stream).take(1024).read_line(&mut reply)?;
    match reply.trim_end() {
        ":1" => Ok(true),
        ":0" => Ok(false),
        other => Err(io::Error::other(format!("unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_pads_and_wraps() {
        assert_eq!(base36(0, 2), "00");
        assert_eq!(base36(35, 2), "0z");
        assert_eq!(base36(36 * 36 + 1, 2), "01");
    }

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn deframe_waits_for_whole_frames_and_unmasks() {
        let mut raw = BytesMut::from(&[0x82, 0x03, 1, 2][..]);
        assert_eq!(deframe(&mut raw).ok(), Some(None));
        raw.extend_from_slice(&[3, 0x88, 0x82, 0, 0, 0, 0, 0x03]);
        assert_eq!(deframe(&mut raw).ok(), Some(Some((0x2, vec![1, 2, 3]))));
        assert_eq!(deframe(&mut raw).ok(), Some(None));
        raw.extend_from_slice(&[0xEB]);
        assert_eq!(deframe(&mut raw).ok(), Some(Some((0x8, vec![0x03, 0xEB]))));
        assert!(raw.is_empty());
    }
}
