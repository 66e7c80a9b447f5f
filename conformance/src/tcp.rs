//! The TCP target: scenarios replayed over real sockets against a running
//! broker, in real time. Blocking `std::net` sockets with read timeouts;
//! every wait is bounded.
//!
//! Each run gets its own prefix for `{p}`, so client ids and topics of
//! different runs never meet. After a run the target removes what it left
//! on the broker: retained messages on the topics it published with RETAIN
//! (wills included) and the persistent sessions of the ids it used with
//! `clean=0`.

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

    /// Why this target cannot run `scenario`, if it cannot.
    pub fn skip_reason(&self, scenario: &Scenario) -> Option<String> {
        let mut missing = Vec::new();
        for r in &scenario.requires {
            match r {
                Requirement::Presence if self.options.redis.is_none() => missing.push("presence (give --redis)".into()),
                Requirement::Expiry if !self.options.expiry => {
                    missing.push("the expiry extension (give --extensions expiry)".into())
                }
                Requirement::Shutdown => missing.push("control of the broker (shutdown)".into()),
                _ => {}
            }
        }
        if !scenario.config.is_empty() {
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
        let mut driver = TcpDriver {
            target: self,
            conns: BTreeMap::new(),
            transcript: Transcript::new(),
            retained: BTreeSet::new(),
            persistent: BTreeSet::new(),
        };
        let outcome = runner::run(&mut driver, scenario, &env);
        let TcpDriver { conns, transcript, retained, persistent, .. } = driver;
        for conn in conns.values() {
            let _ = conn.stream.shutdown(Shutdown::Both);
        }
        drop(conns);
        self.clean_up(&prefix, &retained, &persistent);
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
            let _ = self.session(&format!("{prefix}cleanup"), |stream| {
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
                    write_packet(stream, &Packet::Publish(publish))?;
                    read_packet(stream, self.options.timeout)?;
                }
                Ok(())
            });
        }
    }

    /// Connects with a clean session as `client_id`, runs `body`, and
    /// disconnects.
    fn session(&self, client_id: &str, body: impl FnOnce(&mut TcpStream) -> io::Result<()>) -> io::Result<()> {
        let mut stream = TcpStream::connect_timeout(&self.addr, self.options.timeout)?;
        stream.set_write_timeout(Some(self.options.timeout))?;
        let connect = Connect {
            protocol: Protocol::V311,
            clean_session: true,
            keep_alive: 60,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
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

fn write_packet(stream: &mut TcpStream, packet: &Packet) -> io::Result<()> {
    let mut buf = BytesMut::new();
    packet.encode(&mut buf);
    stream.write_all(&buf)
}

/// Reads one packet, waiting at most `timeout` in all.
fn read_packet(stream: &mut TcpStream, timeout: Duration) -> io::Result<Packet> {
    let deadline = Instant::now() + timeout;
    let mut buf = BytesMut::new();
    let mut chunk = [0; 4096];
    loop {
        if let Some(packet) = codec::decode(&mut buf, MAX_PACKET).map_err(io::Error::other)? {
            return Ok(packet);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
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
    stream: TcpStream,
    inbuf: BytesMut,
    events: VecDeque<Event>,
    /// The broker closed it (or it failed); no more reads.
    ended: bool,
}

struct TcpDriver<'a> {
    target: &'a TcpTarget,
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
        let mut chunk = [0; 16 * 1024];
        let _ = conn.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let ended = match conn.stream.read(&mut chunk) {
            Ok(0) => Some(None),
            Ok(n) => {
                conn.inbuf.extend_from_slice(&chunk[..n]);
                None
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => None,
            Err(e) => Some(Some(e.to_string())),
        };
        loop {
            match codec::decode(&mut conn.inbuf, MAX_PACKET) {
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
        while let Ok(Some(packet)) = codec::decode(&mut buf, usize::MAX) {
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
        let timeout = self.target.options.timeout;
        let stream = TcpStream::connect_timeout(&self.target.addr, timeout)
            .map_err(|e| format!("cannot connect to {}: {e}", self.target.addr))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(timeout));
        self.transcript.note(format_args!("{client} connects"));
        self.conns
            .insert(client.to_owned(), Conn { stream, inbuf: BytesMut::new(), events: VecDeque::new(), ended: false });
        Ok(())
    }

    fn send(&mut self, client: &str, bytes: &[u8]) {
        self.remember(bytes);
        self.transcript.note(format_args!("{client} -> {}", describe_sent(bytes)));
        let Some(conn) = self.conns.get_mut(client) else { return };
        if let Err(e) = conn.stream.write_all(bytes) {
            // The broker has closed it; the next expectation will see that.
            self.transcript.note(format_args!("{client} write failed: {e}"));
        }
    }

    fn drop_connection(&mut self, client: &str) {
        if let Some(conn) = self.conns.remove(client) {
            let _ = conn.stream.shutdown(Shutdown::Both);
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
        Err("the TCP target cannot shut the broker down".into())
    }
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
}
