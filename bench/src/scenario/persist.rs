//! Persistence: the content a restart has to bring back (`persist-fill`),
//! the restart itself (`restart`), and how many durable changes a broker
//! makes per second (`persist-changes`).
//!
//! The broker's configuration (persistence on or off, where its store is)
//! is the caller's: `scripts/bench.sh` starts the broker, runs
//! `persist-fill`, stops it with SIGTERM, starts it again and runs
//! `restart` at once, so that the probe sees the broker from its first
//! millisecond.
//!
//! Every publication here is QoS 1 and counted when its PUBACK arrives:
//! a broker with persistence acknowledges only what its store holds (or,
//! Mosquitto, what its memory holds until its next save), so what was
//! acknowledged is the content.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use culex_core::codec::{Packet, encode_publish};
use culex_core::{PacketId, QoS, TopicFilter, TopicName};
use serde_json::{Map, Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout, timeout_at};

use super::pubsub::KEEP_ALIVE;
use crate::mqtt::{Client, protocol_error};
use crate::options::{Options, PayloadKind};
use crate::payload::{self, Epoch, Stamp};
use crate::procfs::{CpuMeter, CpuUse, IoMeter, cpu_time, process_age, rss_kib, store_size};
use crate::report::{Errors, per_sec, secs};
use crate::stats::{Latencies, round1};
use crate::tool_cpu::ToolMeter;

/// Longest a broker may take to close a connection after DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the restart probe tries to connect.
const PROBE_EVERY: Duration = Duration::from_millis(5);

/// Longest wait for one TCP connect of the probe.
const PROBE_CONNECT: Duration = Duration::from_secs(1);

/// How long after its first CONNACK the restarted broker's memory is read
/// again.
const SETTLE: Duration = Duration::from_secs(1);

/// Longest silence while the restart probe collects a sample.
const SAMPLE_IDLE: Duration = Duration::from_secs(2);

/// Time past the deadline a task has to hand its outcome back.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// Sessions and retained topics the restart probe checks.
const SAMPLES: u64 = 3;

/// The client id of persistent session `i` of `persist-fill`.
fn session_id(i: u64) -> String {
    format!("load-persist-{i}")
}

/// The topic persistent session `i` subscribes to.
fn session_topic(i: u64) -> String {
    format!("bench/persist/s/{i}")
}

/// The topic of retained message `i`.
fn retained_topic(i: u64) -> String {
    format!("bench/persist/r/{i}")
}

/// The topic of a publisher's `k`th message.
type TopicOf = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// What one publisher is asked to publish.
struct Job {
    count: u64,
    topic: TopicOf,
    retain: bool,
}

/// What a group of publishers achieved.
#[derive(Debug, Default)]
struct Published {
    sent: u64,
    acked: u64,
    last_ack: Option<Instant>,
    timed_out: bool,
    errors: Errors,
}

/// How publishers publish: window, payload, writes.
#[derive(Debug, Clone, Copy)]
struct Style {
    window: u16,
    payload_bytes: usize,
    batch_bytes: usize,
    deadline: Instant,
}

impl Style {
    fn of(o: &Options, deadline: Instant) -> Self {
        Self { window: o.inflight, payload_bytes: o.payload_bytes, batch_bytes: o.batch_bytes, deadline }
    }
}

/// One publisher's count.
#[derive(Debug, Default)]
struct Progress {
    sent: u64,
    acked: u64,
    last_ack: Option<Instant>,
    timed_out: bool,
}

/// Publishes `job` at QoS 1 on `client`, `style.window` messages
/// unacknowledged at most; stamps each payload as publisher `publisher`.
async fn publish_qos1(
    client: &mut Client,
    job: &Job,
    publisher: u32,
    style: Style,
    epoch: &Epoch,
    out: &mut Progress,
) -> io::Result<()> {
    let mut in_flight = vec![false; usize::from(u16::MAX) + 1];
    let mut unacked: u64 = 0;
    let mut next_id = PacketId::MIN;
    let mut scratch = Vec::with_capacity(style.payload_bytes.max(64));
    loop {
        if Instant::now() >= style.deadline {
            out.timed_out = true;
            return Ok(());
        }
        while out.sent < job.count && unacked < u64::from(style.window) && client.wbuf.len() < style.batch_bytes {
            let name = (job.topic)(out.sent);
            let topic = TopicName::new(name.clone()).map_err(|e| protocol_error(format!("bad topic {name}: {e}")))?;
            let stamp = Stamp { publisher, seq: out.sent, sent_ns: epoch.now_ns() };
            payload::write(PayloadKind::Plain, style.payload_bytes, stamp, &mut scratch);
            let id = next_id;
            next_id = next_id.next();
            let slot = &mut in_flight[usize::from(id.get())];
            if *slot {
                return Err(protocol_error(format!("packet id {} still in flight after 65535 more", id.get())));
            }
            *slot = true;
            encode_publish(&mut client.wbuf, false, QoS::AtLeastOnce, job.retain, &topic, Some(id), &scratch);
            out.sent += 1;
            unacked += 1;
        }
        if !client.wbuf.is_empty() {
            if timeout_at(style.deadline, client.flush()).await.is_err() {
                out.timed_out = true;
                return Ok(());
            }
            continue;
        }
        if out.sent >= job.count && unacked == 0 {
            return Ok(());
        }
        tokio::select! {
            read = client.fill() => {
                if read? == 0 {
                    return Err(protocol_error(format!("broker closed the connection with {unacked} in flight")));
                }
                while let Some(packet) = client.decode()? {
                    match packet {
                        Packet::PubAck(id) if in_flight[usize::from(id.get())] => {
                            in_flight[usize::from(id.get())] = false;
                            unacked -= 1;
                            out.acked += 1;
                            out.last_ack = Some(Instant::now());
                        }
                        Packet::PingResp => {}
                        other => return Err(protocol_error(format!("unexpected packet {other:?}"))),
                    }
                }
            }
            () = sleep_until(style.deadline) => {
                out.timed_out = true;
                return Ok(());
            }
        }
    }
}

/// Runs one job per client at once; hands the clients back (those whose
/// task ended) with what they achieved together.
async fn run_publishers(
    clients: Vec<Client>,
    jobs: Vec<Job>,
    style: Style,
    epoch: &Arc<Epoch>,
) -> (Vec<Client>, Published) {
    let handles: Vec<_> = clients
        .into_iter()
        .zip(jobs)
        .enumerate()
        .map(|(index, (mut client, job))| {
            let epoch = epoch.clone();
            tokio::spawn(async move {
                let mut progress = Progress::default();
                let publisher = u32::try_from(index).unwrap_or(u32::MAX);
                let result = publish_qos1(&mut client, &job, publisher, style, &epoch, &mut progress).await;
                (client, progress, result.err().map(|e| format!("publisher {index}: {e}")))
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut all = Published::default();
    for handle in handles {
        match timeout_at(style.deadline + JOIN_GRACE, handle).await {
            Ok(Ok((client, progress, error))) => {
                clients.push(client);
                all.sent += progress.sent;
                all.acked += progress.acked;
                all.last_ack = all.last_ack.max(progress.last_ack);
                all.timed_out |= progress.timed_out;
                if let Some(error) = error {
                    all.errors.push(error);
                }
            }
            Ok(Err(error)) => all.errors.push(format!("publisher task failed: {error}")),
            Err(_) => {
                all.timed_out = true;
                all.errors.push("publisher task did not end by the deadline");
            }
        }
    }
    (clients, all)
}

/// Connects `count` publishers (clean sessions) named after `tag`.
async fn connect_publishers(addr: SocketAddr, count: usize, tag: &str, deadline: Instant) -> io::Result<Vec<Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        let id = format!("load-{tag}-pub-{i}");
        let connected = timeout_at(deadline, Client::connect(addr, &id, KEEP_ALIVE)).await;
        clients.push(connected.map_err(|_| io::Error::other("publisher not connected before the deadline"))??);
    }
    Ok(clients)
}

/// Sends DISCONNECT on every client, without waiting long.
async fn disconnect_all(clients: Vec<Client>) {
    for client in clients {
        let _ = timeout(Duration::from_secs(1), client.disconnect()).await;
    }
}

/// Publisher `p` of `publishers`: how many of `total` items it takes
/// (items `p`, `p + publishers`, ...).
fn share(total: u64, publishers: usize, p: usize) -> u64 {
    let (n, p) = (publishers as u64, p as u64);
    total / n + u64::from(p < total % n)
}

/// One connection of a persistent session: CONNECT with clean session 0,
/// SUBSCRIBE at QoS 1 to `topic`, DISCONNECT, and wait for the broker to
/// close. Returns the session present flag of the CONNACK.
async fn session_cycle(addr: SocketAddr, id: String, topic: String) -> io::Result<bool> {
    let (mut client, present) = Client::connect_session(addr, &id, KEEP_ALIVE, false).await?;
    let filter = TopicFilter::new(topic.clone()).map_err(|e| protocol_error(format!("bad filter {topic}: {e}")))?;
    let granted = client.subscribe(&filter, QoS::AtLeastOnce).await?;
    if granted != QoS::AtLeastOnce {
        return Err(protocol_error(format!("asked QoS 1 and was granted {granted}")));
    }
    match timeout(CLOSE_TIMEOUT, client.disconnect_and_wait()).await {
        Ok(result) => result.map(|()| present),
        Err(_) => Err(io::Error::other("broker did not close the connection after DISCONNECT")),
    }
}

/// What a pool of session cycles achieved.
#[derive(Debug, Default)]
struct Cycles {
    completed: u64,
    present: u64,
    latencies: Latencies,
    finished: Option<Instant>,
    timed_out: bool,
    errors: Errors,
}

/// Runs `cycles` session cycles (`cycle(i)` for i from 0), `workers` at
/// once, until `deadline`.
async fn run_cycles<F, Fut>(workers: usize, cycles: u64, deadline: Instant, cycle: F) -> Cycles
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = io::Result<bool>> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (next, cycle) = (next.clone(), cycle.clone());
            tokio::spawn(async move {
                let mut w = Cycles::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cycles {
                        break;
                    }
                    let began = Instant::now();
                    match timeout_at(deadline, cycle(i)).await {
                        Ok(Ok(present)) => {
                            w.completed += 1;
                            w.present += u64::from(present);
                            w.latencies.record(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
                            w.finished = Some(Instant::now());
                        }
                        Ok(Err(error)) => w.errors.push(error.to_string()),
                        Err(_) => {
                            w.timed_out = true;
                            break;
                        }
                    }
                }
                w
            })
        })
        .collect();
    let mut all = Cycles::default();
    for handle in handles {
        match timeout_at(deadline + JOIN_GRACE, handle).await {
            Ok(Ok(w)) => {
                all.completed += w.completed;
                all.present += w.present;
                all.latencies.merge(w.latencies);
                all.finished = all.finished.max(w.finished);
                all.timed_out |= w.timed_out;
                all.errors.merge(w.errors);
            }
            Ok(Err(error)) => all.errors.push(format!("worker failed: {error}")),
            Err(_) => {
                all.timed_out = true;
                all.errors.push("worker did not end by the deadline");
            }
        }
    }
    all
}

/// Adds a phase's broker CPU (percent of one core over the phase) to a
/// result, as `PREFIXbroker_cpu_pct`.
fn phase_cpu(fields: &mut Map<String, Value>, prefix: &str, cpu: &CpuUse) {
    fields.insert(format!("{prefix}broker_cpu_pct"), cpu.broker_cpu.into());
}

/// Adds the fields of a JSON object to a result.
fn extend(fields: &mut Map<String, Value>, extra: Value) {
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
}

/// `persist-fill`: persistent sessions with queued messages, then
/// retained messages.
pub(crate) async fn fill(o: &Options) -> Value {
    let deadline = Instant::now() + o.deadline;
    let epoch = Arc::new(Epoch::start());
    let publishers = o.publishers.unwrap_or(8);
    let workers = o.concurrency.unwrap_or(200);
    let style = Style::of(o, deadline);
    let mut fields = crate::header(o);
    let mut errors = Errors::default();
    let mut timed_out = false;
    let cpu = CpuMeter::start(o.broker_pid);
    let tool = ToolMeter::start(o.threads);
    let start = Instant::now();

    // Sessions: subscribed, then offline, so that what follows is queued.
    let (addr, sessions) = (o.addr, o.sessions);
    let io = IoMeter::start(o.broker_pid, o.store_path.as_deref());
    let phase = Instant::now();
    let cycles =
        run_cycles(workers, sessions, deadline, move |i| session_cycle(addr, session_id(i), session_topic(i))).await;
    let sessions_s = cycles.finished.map(|f| f.saturating_duration_since(phase));
    extend(
        &mut fields,
        json!({
            "sessions": sessions,
            "sessions_created": cycles.completed,
            "sessions_already_present": cycles.present,
            "sessions_s": sessions_s.map_or(Value::Null, secs),
            "sessions_per_s": per_sec(cycles.completed, sessions_s.unwrap_or_default()),
        }),
    );
    io.finish().report(&mut fields, "sessions_", cycles.completed);
    timed_out |= cycles.timed_out;
    errors.merge(cycles.errors);

    let clients = match connect_publishers(o.addr, publishers, "persist-fill", deadline).await {
        Ok(clients) => clients,
        Err(error) => {
            errors.push(format!("publishers: {error}"));
            Vec::new()
        }
    };
    // Queued: publisher p serves sessions p, p + publishers, ..., one
    // message to each in turn, `queued` rounds.
    let queued_jobs: Vec<Job> = (0..clients.len())
        .map(|p| {
            let mine = share(sessions, publishers, p).max(1);
            let topic: TopicOf = Arc::new(move |k| session_topic(p as u64 + (k % mine) * publishers as u64));
            Job { count: share(sessions, publishers, p) * o.queued, topic, retain: false }
        })
        .collect();
    let io = IoMeter::start(o.broker_pid, o.store_path.as_deref());
    let phase = Instant::now();
    let (clients, queued) = run_publishers(clients, queued_jobs, style, &epoch).await;
    let queued_s = queued.last_ack.map(|t| t.saturating_duration_since(phase));
    extend(
        &mut fields,
        json!({
            "queued_per_session": o.queued,
            "queued_acked": queued.acked,
            "queued_s": queued_s.map_or(Value::Null, secs),
            "queued_per_s": per_sec(queued.acked, queued_s.unwrap_or_default()),
        }),
    );
    io.finish().report(&mut fields, "queued_", queued.acked);
    timed_out |= queued.timed_out;
    errors.merge(queued.errors);

    // Retained: publisher p publishes topics p, p + publishers, ...
    let retained_jobs: Vec<Job> = (0..clients.len())
        .map(|p| {
            let topic: TopicOf = Arc::new(move |k| retained_topic(p as u64 + k * publishers as u64));
            Job { count: share(o.retained, publishers, p), topic, retain: true }
        })
        .collect();
    let io = IoMeter::start(o.broker_pid, o.store_path.as_deref());
    let phase = Instant::now();
    let (clients, retained) = run_publishers(clients, retained_jobs, style, &epoch).await;
    let retained_s = retained.last_ack.map(|t| t.saturating_duration_since(phase));
    extend(
        &mut fields,
        json!({
            "retained": o.retained,
            "retained_acked": retained.acked,
            "retained_s": retained_s.map_or(Value::Null, secs),
            "retained_per_s": per_sec(retained.acked, retained_s.unwrap_or_default()),
        }),
    );
    io.finish().report(&mut fields, "retained_", retained.acked);
    timed_out |= retained.timed_out;
    errors.merge(retained.errors);
    disconnect_all(clients).await;

    let fill_time = start.elapsed();
    let tool = tool.finish(Some(fill_time));
    let cpu = cpu.finish();
    extend(
        &mut fields,
        json!({
            "publishers": publishers,
            "inflight": o.inflight,
            "payload_bytes": o.payload_bytes,
            "fill_s": secs(fill_time),
            "broker_rss_kib_after": o.broker_pid.and_then(rss_kib),
            "store_bytes": o.store_path.as_deref().and_then(store_size).map(|s| s.0),
            "timed_out": timed_out,
            "error_count": errors.count(),
            "errors": errors.to_json(),
        }),
    );
    cpu.report(&mut fields);
    tool.report(&mut fields);
    Value::Object(fields)
}

/// When the restarted broker first answered, seen from its start.
#[derive(Debug, Default)]
struct Ready {
    /// First TCP connection accepted.
    tcp: Option<Duration>,
    /// First CONNACK.
    connack: Option<Duration>,
    attempts: u64,
    last_error: Option<String>,
}

/// Polls connect + CONNACK until the broker answers or `deadline`; the
/// times are counted from the broker process's start.
async fn await_ready(addr: SocketAddr, pid: u32, deadline: Instant) -> Ready {
    let mut ready = Ready::default();
    // The process's age has a 10 ms tick: read it once, then count on.
    let (age, origin) = (process_age(pid).unwrap_or_default(), Instant::now());
    let since_start = || age + origin.elapsed();
    while Instant::now() < deadline {
        ready.attempts += 1;
        let stream = match timeout(PROBE_CONNECT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                ready.last_error = Some(error.to_string());
                sleep(PROBE_EVERY).await;
                continue;
            }
            Err(_) => {
                ready.last_error = Some("TCP connect took more than 1 s".to_owned());
                continue;
            }
        };
        ready.tcp = ready.tcp.or(Some(since_start()));
        // A broker that listens while it restores answers later: wait.
        match timeout_at(deadline, Client::handshake(stream, "load-restart-probe", KEEP_ALIVE, true)).await {
            Ok(Ok((client, _))) => {
                ready.connack = Some(since_start());
                let _ = timeout(Duration::from_secs(1), client.disconnect()).await;
                return ready;
            }
            Ok(Err(error)) => {
                ready.last_error = Some(error.to_string());
                sleep(PROBE_EVERY).await;
            }
            Err(_) => ready.last_error = Some("no CONNACK before the deadline".to_owned()),
        }
    }
    ready
}

/// Up to [`SAMPLES`] indices spread over `0..n`: the first, the middle,
/// the last.
fn sample(n: u64) -> Vec<u64> {
    let mut picks: Vec<u64> = [0, n / 2, n.saturating_sub(1)].into_iter().filter(|&i| i < n).collect();
    picks.dedup();
    picks.truncate(SAMPLES as usize);
    picks
}

/// Reconnects persistent session `i`: whether the broker kept it, and the
/// distinct stamped messages it then delivers (acknowledged) until it has
/// `expected` or goes quiet.
async fn sample_session(addr: SocketAddr, i: u64, expected: u64, deadline: Instant) -> io::Result<(bool, u64)> {
    let (mut client, present) = Client::connect_session(addr, &session_id(i), KEEP_ALIVE, false).await?;
    let mut seen = HashSet::new();
    while (seen.len() as u64) < expected {
        let until = (Instant::now() + SAMPLE_IDLE).min(deadline);
        match timeout_at(until, client.next_packet()).await {
            Ok(Ok(Some(Packet::Publish(publish)))) => {
                if let Some(id) = publish.packet_id {
                    client.queue(&Packet::PubAck(id));
                    client.flush().await?;
                }
                if let Some(stamp) = payload::read(&publish.payload) {
                    seen.insert((stamp.publisher, stamp.seq));
                }
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err(protocol_error("broker closed the connection")),
            Ok(Err(error)) => return Err(error),
            Err(_) => break,
        }
    }
    let _ = timeout(Duration::from_secs(1), client.disconnect()).await;
    Ok((present, seen.len() as u64))
}

/// Subscribes to retained topic `i` and returns whether its retained
/// message came.
async fn sample_retained(client: &mut Client, i: u64, deadline: Instant) -> io::Result<bool> {
    let topic = retained_topic(i);
    let filter = TopicFilter::new(topic.clone()).map_err(|e| protocol_error(format!("bad filter {topic}: {e}")))?;
    client.subscribe(&filter, QoS::AtMostOnce).await?;
    let until = (Instant::now() + SAMPLE_IDLE).min(deadline);
    loop {
        match timeout_at(until, client.next_packet()).await {
            Ok(Ok(Some(Packet::Publish(publish)))) if publish.retain && publish.topic.as_str() == topic => {
                return Ok(true);
            }
            Ok(Ok(Some(_))) => {}
            Ok(Ok(None)) => return Err(protocol_error("broker closed the connection")),
            Ok(Err(error)) => return Err(error),
            Err(_) => return Ok(false),
        }
    }
}

/// `restart`: how a broker that was just started comes back.
pub(crate) async fn restart(o: &Options) -> Value {
    let deadline = Instant::now() + o.deadline;
    let Some(pid) = o.broker_pid else {
        return crate::report::failure(o, "restart needs --broker-pid");
    };
    let mut errors = Errors::default();
    let tool = ToolMeter::start(o.threads);
    let ready = await_ready(o.addr, pid, deadline).await;
    let rss_ready = rss_kib(pid);
    let cpu_ready = cpu_time(Some(pid));
    let tool = tool.finish(ready.connack);
    let mut timed_out = ready.connack.is_none();
    if let (None, Some(error)) = (ready.connack, &ready.last_error) {
        errors.push(format!("never accepted: {error}"));
    }
    sleep_until((Instant::now() + SETTLE).min(deadline)).await;
    let rss_settled = rss_kib(pid);
    let store = o.store_path.as_deref().and_then(store_size);

    // A sample of the content persist-fill made.
    let (mut present, mut queued_received) = (0, 0);
    let sessions = if ready.connack.is_some() { sample(o.sessions) } else { Vec::new() };
    for &i in &sessions {
        match sample_session(o.addr, i, o.queued, deadline).await {
            Ok((kept, received)) => {
                present += u64::from(kept);
                queued_received += received;
            }
            Err(error) => errors.push(format!("session {i}: {error}")),
        }
    }
    let retained = if ready.connack.is_some() { sample(o.retained) } else { Vec::new() };
    let mut retained_received = 0;
    if !retained.is_empty() {
        match Client::connect(o.addr, "load-restart-retained", KEEP_ALIVE).await {
            Ok(mut client) => {
                for &i in &retained {
                    match sample_retained(&mut client, i, deadline).await {
                        Ok(came) => retained_received += u64::from(came),
                        Err(error) => {
                            errors.push(format!("retained {i}: {error}"));
                            break;
                        }
                    }
                }
                let _ = timeout(Duration::from_secs(1), client.disconnect()).await;
            }
            Err(error) => errors.push(format!("retained sample: {error}")),
        }
    }
    timed_out |= Instant::now() >= deadline;

    let mut fields = crate::header(o);
    extend(
        &mut fields,
        json!({
            "ready_s": ready.connack.map_or(Value::Null, secs),
            "listening_s": ready.tcp.map_or(Value::Null, secs),
            "probe_attempts": ready.attempts,
            "broker_cpu_s_ready": cpu_ready.map(|t| round1(t.as_secs_f64() * 100.0) / 100.0),
            "broker_rss_kib_ready": rss_ready,
            "broker_rss_kib_settled": rss_settled,
            "store_bytes": store.map(|s| s.0),
            "store_disk_bytes": store.map(|s| s.1),
            "sample_sessions": sessions.len(),
            "sample_sessions_present": present,
            "sample_queued_expected": sessions.len() as u64 * o.queued,
            "sample_queued_received": queued_received,
            "sample_retained": retained.len(),
            "sample_retained_received": retained_received,
            "timed_out": timed_out,
            "error_count": errors.count(),
            "errors": errors.to_json(),
        }),
    );
    tool.report(&mut fields);
    Value::Object(fields)
}

/// `persist-changes`: retained messages on distinct topics, then
/// persistent session churn.
pub(crate) async fn changes(o: &Options) -> Value {
    let deadline = Instant::now() + o.deadline;
    let epoch = Arc::new(Epoch::start());
    let publishers = o.publishers.unwrap_or(4);
    let messages = o.messages.unwrap_or(100_000);
    let workers = o.concurrency.unwrap_or(50);
    let tag = std::process::id();
    let mut fields = crate::header(o);
    let mut errors = Errors::default();
    let mut timed_out = false;
    let cpu = CpuMeter::start(o.broker_pid);
    let tool = ToolMeter::start(o.threads);
    let start = Instant::now();

    // Retained messages: every one a new topic, so every one a change.
    let clients = match connect_publishers(o.addr, publishers, &format!("changes-{tag}"), deadline).await {
        Ok(clients) => clients,
        Err(error) => {
            errors.push(format!("publishers: {error}"));
            Vec::new()
        }
    };
    let jobs: Vec<Job> = (0..clients.len())
        .map(|p| {
            let topic: TopicOf = Arc::new(move |k| format!("bench/changes/{tag}/r/{p}/{k}"));
            Job { count: share(messages, publishers, p), topic, retain: true }
        })
        .collect();
    let phase_cpu_meter = CpuMeter::start(o.broker_pid);
    let io = IoMeter::start(o.broker_pid, o.store_path.as_deref());
    let phase = Instant::now();
    let (clients, retained) = run_publishers(clients, jobs, Style::of(o, deadline), &epoch).await;
    let retained_s = retained.last_ack.map(|t| t.saturating_duration_since(phase));
    io.finish().report(&mut fields, "retained_", retained.acked);
    phase_cpu(&mut fields, "retained_", &phase_cpu_meter.finish());
    disconnect_all(clients).await;
    extend(
        &mut fields,
        json!({
            "publishers": publishers,
            "inflight": o.inflight,
            "retained_messages": messages,
            "retained_acked": retained.acked,
            "retained_s": retained_s.map_or(Value::Null, secs),
            "retained_changes_per_s": per_sec(retained.acked, retained_s.unwrap_or_default()),
        }),
    );
    timed_out |= retained.timed_out;
    errors.merge(retained.errors);

    // Session churn: each cycle creates a persistent session and its
    // subscription, and leaves it offline.
    let (addr, cycles) = (o.addr, o.cycles);
    let phase_cpu_meter = CpuMeter::start(o.broker_pid);
    let io = IoMeter::start(o.broker_pid, o.store_path.as_deref());
    let phase = Instant::now();
    let mut churn = run_cycles(workers, cycles, deadline, move |i| {
        session_cycle(addr, format!("load-churn-{tag}-{i}"), format!("bench/changes/{tag}/s/{i}"))
    })
    .await;
    let churn_s = churn.finished.map(|f| f.saturating_duration_since(phase));
    io.finish().report(&mut fields, "churn_", churn.completed);
    phase_cpu(&mut fields, "churn_", &phase_cpu_meter.finish());
    extend(
        &mut fields,
        json!({
            "cycles": cycles,
            "concurrency": workers,
            "churn_completed": churn.completed,
            "churn_s": churn_s.map_or(Value::Null, secs),
            "churn_cycles_per_s": per_sec(churn.completed, churn_s.unwrap_or_default()),
            "churn_cycle_us": churn.latencies.summary(),
        }),
    );
    timed_out |= churn.timed_out;
    errors.merge(churn.errors);

    let tool = tool.finish(Some(start.elapsed()));
    let cpu = cpu.finish();
    extend(
        &mut fields,
        json!({
            "timed_out": timed_out,
            "error_count": errors.count(),
            "errors": errors.to_json(),
        }),
    );
    cpu.report(&mut fields);
    tool.report(&mut fields);
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_item_once() {
        for (total, publishers) in [(10, 3), (1_000_000, 8), (2, 4), (0, 2)] {
            let sum: u64 = (0..publishers).map(|p| share(total, publishers, p)).sum();
            assert_eq!(sum, total);
        }
        // Publisher p's kth retained topic: every index below the total once.
        let (total, publishers) = (10u64, 3usize);
        let mut seen: Vec<u64> = (0..publishers)
            .flat_map(|p| (0..share(total, publishers, p)).map(move |k| p as u64 + k * publishers as u64))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn samples_are_spread_and_in_range() {
        assert_eq!(sample(0), Vec::<u64>::new());
        assert_eq!(sample(1), vec![0]);
        assert_eq!(sample(2), vec![0, 1]);
        assert_eq!(sample(10_000), vec![0, 5_000, 9_999]);
    }
}
