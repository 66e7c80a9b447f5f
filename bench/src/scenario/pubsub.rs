//! Publishers and subscribers exchanging stamped messages: fan-in,
//! fan-out, qos1, qos2, latency and expiry are all this flow with
//! different shapes.
//!
//! Subscribers connect and subscribe first; publishers connect; then all
//! publishers start at once. Each subscriber stops when it has every
//! message published, when the publishers are done and nothing has come
//! for the drain time, or at the deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use culex_core::codec::{Packet, encode_publish};
use culex_core::{PacketId, QoS, TopicFilter, TopicName};
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use crate::mqtt::{Client, protocol_error};
use crate::options::{Options, PayloadKind};
use crate::payload::{self, Epoch, Stamp};
use crate::procfs::{CpuMeter, rss_kib};
use crate::report::{Errors, per_sec, percent, secs};
use crate::stats::{Latencies, SeqTracker};

/// Keepalive of every client: longer than any run.
const KEEP_ALIVE: u16 = 600;

/// Read size of subscribers, which may receive a lot.
const SUBSCRIBER_READ: usize = 256 * 1024;

/// How often an idle subscriber checks whether it is done.
const TICK: Duration = Duration::from_millis(50);

/// The shape of a message scenario.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    /// Messages published in all, split evenly between publishers.
    pub(crate) messages: u64,
    /// One topic per publisher.
    pub(crate) topics: Vec<TopicName>,
    /// What every subscriber subscribes to.
    pub(crate) filter: TopicFilter,
    pub(crate) qos: QoS,
    /// Messages per second in all; `None`: as fast as the broker takes them.
    pub(crate) rate: Option<u64>,
    pub(crate) inflight: u16,
    pub(crate) payload: PayloadKind,
    pub(crate) payload_bytes: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) drain: Duration,
}

impl Plan {
    fn share(&self, publisher: usize) -> u64 {
        let p = self.publishers as u64;
        self.messages / p + u64::from((publisher as u64) < self.messages % p)
    }
}

/// What the run shares with every task.
#[derive(Debug)]
struct Shared {
    plan: Plan,
    addr: SocketAddr,
    epoch: Epoch,
    deadline: Instant,
    tag: String,
}

#[derive(Debug, Default)]
struct PubOutcome {
    sent: u64,
    completed: u64,
    /// When the last message was written (QoS 0) or completed (QoS 1, 2).
    finished: Option<Instant>,
    unexpected_acks: u64,
    timed_out: bool,
    errors: Errors,
    client: Option<Client>,
}

#[derive(Debug)]
struct SubOutcome {
    trackers: Vec<SeqTracker>,
    latencies: Latencies,
    last_arrival: Option<Instant>,
    /// Payloads that are not this run's.
    foreign: u64,
    /// PUBLISH packets with another QoS than subscribed.
    wrong_qos: u64,
    timed_out: bool,
    errors: Errors,
}

/// Runs the flow and reports it.
pub(crate) async fn run(options: &Options, plan: Plan) -> Value {
    let deadline = Instant::now() + options.deadline;
    let cpu = CpuMeter::start(options.broker_pid);
    let rss_before = options.broker_pid.and_then(rss_kib);
    let shared = Arc::new(Shared {
        plan,
        addr: options.addr,
        epoch: Epoch::start(),
        deadline,
        tag: format!("{}-{}", options.scenario.name(), std::process::id()),
    });
    let plan = &shared.plan;

    let (done_tx, done_rx) = watch::channel(None);
    let (start_tx, start_rx) = watch::channel(None);
    let mut errors = Errors::default();

    let mut subscribers = Vec::new();
    let mut ready = Vec::new();
    for index in 0..plan.subscribers {
        let (tx, rx) = oneshot::channel();
        subscribers.push(tokio::spawn(subscriber(shared.clone(), index, tx, done_rx.clone())));
        ready.push(rx);
    }
    let mut publishers = Vec::new();
    for index in 0..plan.publishers {
        let (tx, rx) = oneshot::channel();
        publishers.push(tokio::spawn(publisher(shared.clone(), index, tx, start_rx.clone())));
        ready.push(rx);
    }
    // Subscribers hold their SUBACK and publishers their CONNACK.
    let mut all_ready = true;
    for rx in ready {
        match timeout_at(deadline, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => {
                errors.push(error);
                all_ready = false;
            }
            Ok(Err(_)) => all_ready = false,
            Err(_) => {
                errors.push("clients not ready before the deadline");
                all_ready = false;
                break;
            }
        }
    }
    let start = Instant::now();
    // Without every client, publishers are released with nothing to do.
    let _ = start_tx.send(Some((start, all_ready)));

    let mut pubs = Vec::new();
    for handle in publishers {
        match timeout_at(deadline + Duration::from_secs(1), handle).await {
            Ok(Ok(outcome)) => pubs.push(outcome),
            Ok(Err(error)) => errors.push(format!("publisher task failed: {error}")),
            Err(_) => errors.push("publisher task did not end by the deadline"),
        }
    }
    let total_sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let _ = done_tx.send(Some(total_sent));
    let mut subs = Vec::new();
    for handle in subscribers {
        match timeout_at(deadline + Duration::from_secs(1), handle).await {
            Ok(Ok(outcome)) => subs.push(outcome),
            Ok(Err(error)) => errors.push(format!("subscriber task failed: {error}")),
            Err(_) => errors.push("subscriber task did not end by the deadline"),
        }
    }
    let cpu = cpu.finish();
    let rss_after = options.broker_pid.and_then(rss_kib);
    for p in &mut pubs {
        if let Some(client) = p.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
        }
    }

    let mut fields = crate::header(options);
    describe_plan(&mut fields, plan);
    let completed: u64 = pubs.iter().map(|p| p.completed).sum();
    let publish_time = pubs.iter().filter_map(|p| p.finished).max().map(|t| t.saturating_duration_since(start));
    let deliver_time = subs.iter().filter_map(|s| s.last_arrival).max().map(|t| t.saturating_duration_since(start));
    let expected = total_sent * subs.len() as u64;
    let delivered: u64 = subs.iter().flat_map(|s| &s.trackers).map(SeqTracker::distinct).sum();
    let sum = |f: fn(&SeqTracker) -> u64| subs.iter().flat_map(|s| &s.trackers).map(f).sum::<u64>();
    let (duplicates, out_of_order, unexpected) =
        (sum(SeqTracker::duplicates), sum(SeqTracker::out_of_order), sum(SeqTracker::unexpected));
    let mut latencies = Latencies::default();
    let timed_out = pubs.iter().any(|p| p.timed_out) || subs.iter().any(|s| s.timed_out);
    for p in pubs {
        errors.merge(p.errors);
    }
    let (mut foreign, mut wrong_qos) = (0, 0);
    for s in subs {
        latencies.merge(s.latencies);
        errors.merge(s.errors);
        foreign += s.foreign;
        wrong_qos += s.wrong_qos;
    }
    let zero = Duration::ZERO;
    let extra = json!({
        "sent": total_sent,
        "completed": completed,
        "expected_deliveries": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "loss_pct": percent(expected.saturating_sub(delivered), expected),
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "unexpected": unexpected + foreign,
        "wrong_qos": wrong_qos,
        "publish_s": publish_time.map_or(Value::Null, secs),
        "deliver_s": deliver_time.map_or(Value::Null, secs),
        "sent_per_s": per_sec(total_sent, publish_time.unwrap_or(zero)),
        "completed_per_s": per_sec(completed, publish_time.unwrap_or(zero)),
        "delivered_per_s": per_sec(delivered, deliver_time.unwrap_or(zero)),
        "latency_us": latencies.summary(),
        "broker_rss_kib_before": rss_before,
        "broker_rss_kib_after": rss_after,
        "timed_out": timed_out,
        "error_count": errors.count(),
        "errors": errors.to_json(),
    });
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
    cpu.report(&mut fields);
    Value::Object(fields)
}

fn describe_plan(fields: &mut Map<String, Value>, plan: &Plan) {
    let describe = json!({
        "qos": plan.qos.bits(),
        "publishers": plan.publishers,
        "subscribers": plan.subscribers,
        "messages": plan.messages,
        "rate": plan.rate,
        "inflight": if plan.qos == QoS::AtMostOnce { Value::Null } else { Value::from(plan.inflight) },
        "payload": plan.payload.name(),
        "payload_bytes": plan.payload_bytes,
        "filter": plan.filter.as_str(),
    });
    if let Value::Object(describe) = describe {
        fields.extend(describe);
    }
}

/// One publisher: connects, waits for the start, publishes its share.
async fn publisher(
    shared: Arc<Shared>,
    index: usize,
    ready: oneshot::Sender<Result<(), String>>,
    mut start: watch::Receiver<Option<(Instant, bool)>>,
) -> PubOutcome {
    let mut out = PubOutcome::default();
    let deadline = shared.deadline;
    let id = format!("load-{}-pub-{index}", shared.tag);
    let mut client = match timeout_at(deadline, Client::connect(shared.addr, &id, KEEP_ALIVE)).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            let _ = ready.send(Err(format!("publisher {index}: {error}")));
            return out;
        }
        Err(_) => {
            out.timed_out = true;
            let _ = ready.send(Err(format!("publisher {index}: no CONNACK before the deadline")));
            return out;
        }
    };
    let _ = ready.send(Ok(()));
    let go = match timeout_at(deadline, start.wait_for(Option::is_some)).await {
        Ok(Ok(go)) => *go,
        _ => None,
    };
    if let Some((begin, true)) = go {
        if let Err(error) = publish(&shared, index, &mut client, begin, &mut out).await {
            out.errors.push(format!("publisher {index}: {error}"));
        }
    }
    out.client = Some(client);
    out
}

async fn publish(
    shared: &Shared,
    index: usize,
    client: &mut Client,
    begin: Instant,
    out: &mut PubOutcome,
) -> std::io::Result<()> {
    let plan = &shared.plan;
    let deadline = shared.deadline;
    let share = plan.share(index);
    let topic = &plan.topics[index];
    let qos = plan.qos;
    let window = if qos == QoS::AtMostOnce { u64::MAX } else { u64::from(plan.inflight) };
    // Per publisher: the total rate is shared evenly.
    let interval = plan.rate.map(|rate| Duration::from_secs_f64(plan.publishers as f64 / rate as f64));
    // Paced messages go one per write, so each is stamped as it leaves.
    let batch = if interval.is_some() { 1 } else { plan.batch_bytes };
    let mut in_flight = vec![false; usize::from(u16::MAX) + 1];
    let mut pending: u64 = 0;
    let mut next_id = PacketId::MIN;
    let mut scratch = Vec::with_capacity(plan.payload_bytes.max(64));
    let due = |seq: u64| interval.map(|iv| begin + iv.mul_f64(seq as f64));
    loop {
        let now = Instant::now();
        if now >= deadline {
            out.timed_out = true;
            return Ok(());
        }
        while out.sent < share
            && pending < window
            && client.wbuf.len() < batch
            && due(out.sent).is_none_or(|t| t <= now)
        {
            let stamp = Stamp { publisher: index as u32, seq: out.sent, sent_ns: shared.epoch.now_ns() };
            payload::write(plan.payload, plan.payload_bytes, stamp, &mut scratch);
            let packet_id = if qos == QoS::AtMostOnce {
                None
            } else {
                let id = next_id;
                next_id = next_id.next();
                let slot = &mut in_flight[usize::from(id.get())];
                if *slot {
                    return Err(protocol_error(format!("packet id {} still in flight after 65535 more", id.get())));
                }
                *slot = true;
                pending += 1;
                Some(id)
            };
            encode_publish(&mut client.wbuf, false, qos, false, topic, packet_id, &scratch);
            out.sent += 1;
        }
        if !client.wbuf.is_empty() {
            match timeout_at(deadline, client.flush()).await {
                Ok(result) => result?,
                Err(_) => {
                    out.timed_out = true;
                    return Ok(());
                }
            }
            if qos == QoS::AtMostOnce {
                out.completed = out.sent;
                out.finished = Some(Instant::now());
            }
            continue;
        }
        if out.sent >= share && pending == 0 {
            return Ok(());
        }
        let next_due = if out.sent < share && pending < window { due(out.sent) } else { None };
        tokio::select! {
            read = client.fill(), if qos != QoS::AtMostOnce => {
                if read? == 0 {
                    return Err(protocol_error(format!("broker closed the connection with {pending} in flight")));
                }
                while let Some(packet) = client.decode()? {
                    let (id, done) = match packet {
                        Packet::PubAck(id) if qos == QoS::AtLeastOnce => (id, true),
                        Packet::PubRec(id) if qos == QoS::ExactlyOnce => (id, false),
                        Packet::PubComp(id) if qos == QoS::ExactlyOnce => (id, true),
                        Packet::PingResp => continue,
                        other => return Err(protocol_error(format!("unexpected packet {other:?}"))),
                    };
                    let slot = &mut in_flight[usize::from(id.get())];
                    if !*slot {
                        out.unexpected_acks += 1;
                        out.errors.push(format!("acknowledgement for packet id {} not in flight", id.get()));
                        continue;
                    }
                    if done {
                        *slot = false;
                        pending -= 1;
                        out.completed += 1;
                        out.finished = Some(Instant::now());
                    } else {
                        client.queue(&Packet::PubRel(id));
                    }
                }
            }
            () = sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {}
            () = sleep_until(deadline) => {
                out.timed_out = true;
                return Ok(());
            }
        }
    }
}

/// One subscriber: connects, subscribes, reports ready, receives.
async fn subscriber(
    shared: Arc<Shared>,
    index: usize,
    ready: oneshot::Sender<Result<(), String>>,
    done: watch::Receiver<Option<u64>>,
) -> SubOutcome {
    let plan = &shared.plan;
    let mut out = SubOutcome {
        trackers: (0..plan.publishers).map(|p| SeqTracker::new(plan.share(p))).collect(),
        latencies: Latencies::default(),
        last_arrival: None,
        foreign: 0,
        wrong_qos: 0,
        timed_out: false,
        errors: Errors::default(),
    };
    let deadline = shared.deadline;
    let id = format!("load-{}-sub-{index}", shared.tag);
    let setup = async {
        let mut client = Client::connect(shared.addr, &id, KEEP_ALIVE).await?;
        let granted = client.subscribe(&plan.filter, plan.qos).await?;
        if granted != plan.qos {
            return Err(protocol_error(format!("asked QoS {} and was granted {granted}", plan.qos)));
        }
        client.read_chunk = SUBSCRIBER_READ;
        Ok(client)
    };
    let mut client = match timeout_at(deadline, setup).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => {
            let _ = ready.send(Err(format!("subscriber {index}: {error}")));
            return out;
        }
        Err(_) => {
            out.timed_out = true;
            let _ = ready.send(Err(format!("subscriber {index}: not subscribed before the deadline")));
            return out;
        }
    };
    let _ = ready.send(Ok(()));
    if let Err(error) = receive(&shared, &mut client, &done, &mut out).await {
        out.errors.push(format!("subscriber {index}: {error}"));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
    out
}

async fn receive(
    shared: &Shared,
    client: &mut Client,
    done: &watch::Receiver<Option<u64>>,
    out: &mut SubOutcome,
) -> std::io::Result<()> {
    let plan = &shared.plan;
    let deadline = shared.deadline;
    let mut distinct: u64 = 0;
    let mut last_activity = Instant::now();
    let mut arrived_ns = shared.epoch.now_ns();
    loop {
        while let Some(packet) = client.decode()? {
            match packet {
                Packet::Publish(publish) => {
                    if publish.qos != plan.qos {
                        out.wrong_qos += 1;
                    }
                    match publish.packet_id {
                        Some(id) if publish.qos == QoS::AtLeastOnce => client.queue(&Packet::PubAck(id)),
                        Some(id) if publish.qos == QoS::ExactlyOnce => client.queue(&Packet::PubRec(id)),
                        _ => {}
                    }
                    let Some(stamp) = payload::read(&publish.payload) else {
                        out.foreign += 1;
                        continue;
                    };
                    let Some(tracker) = out.trackers.get_mut(stamp.publisher as usize) else {
                        out.foreign += 1;
                        continue;
                    };
                    let before = tracker.distinct();
                    tracker.record(stamp.seq);
                    if tracker.distinct() > before {
                        distinct += 1;
                        out.latencies.record(arrived_ns.saturating_sub(stamp.sent_ns));
                    }
                    out.last_arrival = Some(last_activity);
                }
                Packet::PubRel(id) => client.queue(&Packet::PubComp(id)),
                _ => {}
            }
        }
        if timeout_at(deadline, client.flush()).await.is_err() {
            out.timed_out = true;
            return Ok(());
        }
        if distinct >= plan.messages {
            return Ok(());
        }
        if let Some(sent) = *done.borrow() {
            if distinct >= sent || last_activity.elapsed() >= plan.drain {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            out.timed_out = true;
            return Ok(());
        }
        tokio::select! {
            read = client.fill() => {
                if read? == 0 {
                    return Err(protocol_error("broker closed the connection"));
                }
                last_activity = Instant::now();
                arrived_ns = shared.epoch.now_ns();
            }
            () = sleep(TICK) => {}
        }
    }
}
