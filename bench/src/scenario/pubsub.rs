//! Publishers and subscribers exchanging stamped messages: fan-in,
//! fan-out, qos1, qos2, latency, expiry, slow-subscriber and pairs are all
//! this flow with different shapes.
//!
//! Subscribers connect and subscribe first; publishers connect; then all
//! publishers start at once. Each subscriber stops when it has every
//! message of the publishers it hears (all of them, or in `pairs` its
//! own), when the publishers are done and nothing has come for the drain
//! time, or at the deadline. In a flood (`slow-subscriber`)
//! publishers stop after a fixed time whatever is left of their share,
//! and slow subscribers ([`super::slow`]) read until the others are done.
//!
//! A message is lost for a subscriber when the broker took charge of it
//! (written to the socket at QoS 0, acknowledged at QoS 1 and 2) and the
//! subscriber never received it.
//!
//! Against the nodes of a cluster (several ports) publisher I connects to
//! node I mod N and subscriber J to node (J+1) mod N ([`Shared::node_of`]);
//! with `--settle-ms` the publishers start that long after every client is
//! ready, and with `--redis-port` the commands Redis ran over the timed
//! phase are counted ([`crate::redis_stats`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use culex_core::codec::{Packet, encode_publish};
use culex_core::shard::{ShardId, home_shard};
use culex_core::{PacketId, QoS, TopicFilter, TopicName};
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::memory::MemoryWatch;
use super::received::Received;
use super::slow::{self, SlowReaders};
use crate::mqtt::{Client, protocol_error};
use crate::options::{Options, PayloadKind};
use crate::payload::{self, Epoch, Stamp};
use crate::procfs::{CpuMeter, IoMeter, threads_cpu_time};
use crate::redis_stats::{self, Counts};
use crate::report::{Errors, per_sec, percent, secs};
use crate::stats::{Latencies, SeqTracker};
use crate::tool_cpu::ToolMeter;

/// Keepalive of every client: longer than any run.
pub(super) const KEEP_ALIVE: u16 = 600;

/// Read size of subscribers, which may receive a lot.
pub(super) const SUBSCRIBER_READ: usize = 256 * 1024;

/// How often an idle subscriber checks whether it is done.
const TICK: Duration = Duration::from_millis(50);

/// Time past the deadline a task has to hand its outcome back.
const JOIN_GRACE: Duration = Duration::from_secs(1);

/// What a client task says once connected (and subscribed).
type Ready = oneshot::Sender<Result<(), String>>;

/// The start signal: when, and whether every client got ready.
type Start = watch::Receiver<Option<(Instant, bool)>>;

/// The end of publishing: what each publisher sent, by index.
type Done = watch::Receiver<Option<Vec<u64>>>;

/// Suffixes tried per shard for a client id on a given shard: a miss
/// after that many is a chance of about e^-64.
const SUFFIXES_PER_SHARD: u32 = 64;

/// The shape of a message scenario.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) publishers: usize,
    /// Subscribers reading at full speed.
    pub(crate) subscribers: usize,
    /// Messages published in all, split evenly between publishers.
    pub(crate) messages: u64,
    /// One topic per publisher.
    pub(crate) topics: Vec<TopicName>,
    /// What the subscribers subscribe to.
    pub(crate) subscriptions: Subscriptions,
    pub(crate) qos: QoS,
    /// Messages per second in all; `None`: as fast as the broker takes them.
    pub(crate) rate: Option<u64>,
    pub(crate) inflight: u16,
    pub(crate) payload: PayloadKind,
    pub(crate) payload_bytes: usize,
    pub(crate) batch_bytes: usize,
    pub(crate) drain: Duration,
    /// Publishing stops this long after the start, whatever is left of
    /// the shares (`slow-subscriber`).
    pub(crate) flood: Option<Duration>,
    /// Slow subscribers, besides `subscribers`.
    pub(crate) slow: SlowReaders,
    /// Whether subscribers keep a latency sample per message (not in a
    /// flood, whose samples would fill the memory).
    pub(crate) latency: bool,
    /// The clean session flag of the subscribers reading at full speed.
    pub(crate) clean_session: bool,
    /// Client ids on one shard per pair among this many (see
    /// [`Shared::client_id`]); `None`: ids as a fleet's.
    pub(crate) same_shard: Option<u16>,
}

/// What the subscribers subscribe to, and so which publishers each hears.
#[derive(Debug, Clone)]
pub(crate) enum Subscriptions {
    /// Every subscriber subscribes to this filter and hears every
    /// publisher.
    Shared(TopicFilter),
    /// Subscriber N subscribes to the topic of publisher N alone and hears
    /// only it (as many subscribers as publishers: `pairs`).
    Paired,
}

impl Plan {
    /// Messages publisher `publisher` publishes at most.
    pub(crate) fn share(&self, publisher: usize) -> u64 {
        let p = self.publishers as u64;
        self.messages / p + u64::from((publisher as u64) < self.messages % p)
    }

    /// The filter subscriber `subscriber` subscribes to.
    pub(crate) fn filter(&self, subscriber: usize) -> Option<TopicFilter> {
        match &self.subscriptions {
            Subscriptions::Shared(filter) => Some(filter.clone()),
            Subscriptions::Paired => self.topics.get(subscriber).cloned().map(TopicFilter::from),
        }
    }

    /// The publishers subscriber `subscriber` hears, by index.
    pub(crate) fn heard(&self, subscriber: usize) -> Range<usize> {
        match self.subscriptions {
            Subscriptions::Shared(_) => 0..self.publishers,
            Subscriptions::Paired => subscriber..subscriber + 1,
        }
    }
}

/// What the run shares with every task.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) plan: Plan,
    /// The broker's nodes (one address for a single broker).
    pub(super) addrs: Vec<SocketAddr>,
    pub(super) epoch: Epoch,
    pub(super) deadline: Instant,
    pub(super) tag: String,
}

/// A client's role, for its place among the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Publisher,
    Subscriber,
}

impl Shared {
    /// The node (index into `addrs`) of client `index` of `role`:
    /// publisher I on node I mod N, subscriber J on node (J+1) mod N, so
    /// that the clients of pair I, and qos1's two, are on different nodes
    /// when there are several.
    pub(super) fn node_of(&self, role: Role, index: usize) -> usize {
        let n = self.addrs.len().max(1);
        match role {
            Role::Publisher => index % n,
            Role::Subscriber => (index + 1) % n,
        }
    }

    /// The address client `index` of `role` connects to.
    pub(super) fn addr(&self, role: Role, index: usize) -> SocketAddr {
        self.addrs[self.node_of(role, index)]
    }

    /// The client id of the `role` client (`pub`, `sub`, `slow`) number
    /// `index`: `load-TAG-ROLE-INDEX`. With [`Plan::same_shard`] of N, the
    /// clients of pair `index` go to shard `index` mod N: the first
    /// `load-TAG-ROLE-INDEX-K` whose home shard that is.
    pub(super) fn client_id(&self, role: &str, index: usize) -> io::Result<String> {
        let base = format!("load-{}-{role}-{index}", self.tag);
        let Some(shards) = self.plan.same_shard else {
            return Ok(base);
        };
        let shard = ShardId(u16::try_from(index % usize::from(shards)).unwrap_or(0));
        id_on_shard(&base, shard, shards).ok_or_else(|| {
            io::Error::other(format!("no id {base}-K on {shard} of {shards} in {} tries", tries(shards)))
        })
    }
}

/// Suffixes tried for an id on one shard among `shards`.
fn tries(shards: u16) -> u32 {
    u32::from(shards) * SUFFIXES_PER_SHARD
}

/// The first `BASE-K` whose home shard among `shards` is `shard`, trying
/// K from 0 a bounded number of times.
fn id_on_shard(base: &str, shard: ShardId, shards: u16) -> Option<String> {
    (0..tries(shards)).map(|k| format!("{base}-{k}")).find(|id| home_shard(id, shards) == shard)
}

#[derive(Debug)]
struct PubOutcome {
    index: usize,
    sent: u64,
    /// Sequence numbers the broker took charge of: written (QoS 0) or
    /// acknowledged (QoS 1, 2).
    settled: SeqTracker,
    /// When the last message was written (QoS 0) or completed (QoS 1, 2).
    finished: Option<Instant>,
    unexpected_acks: u64,
    timed_out: bool,
    errors: Errors,
    client: Option<Client>,
}

#[derive(Debug)]
struct SubOutcome {
    received: Received,
    timed_out: bool,
    errors: Errors,
}

/// Runs the flow and reports it.
pub(crate) async fn run(options: &Options, plan: Plan) -> Value {
    let deadline = Instant::now() + options.deadline;
    let cpu = CpuMeter::start(options.broker_pid);
    let shared = Arc::new(Shared {
        plan,
        addrs: options.addrs.clone(),
        epoch: Epoch::start(),
        deadline,
        tag: format!("{}-{}", options.scenario.name(), std::process::id()),
    });
    let plan = &shared.plan;
    let (start_tx, start_rx) = watch::channel(None);
    let (done_tx, done_rx) = watch::channel::<Option<Vec<u64>>>(None);
    let (end_tx, end_rx) = watch::channel(false);
    let mut errors = Errors::default();

    let mut ready = Vec::new();
    let subscribers =
        spawn_ready(plan.subscribers, &mut ready, |i, tx| subscriber(shared.clone(), i, tx, done_rx.clone()));
    let slow =
        spawn_ready(plan.slow.count, &mut ready, |i, tx| slow::subscriber(shared.clone(), i, tx, end_rx.clone()));
    let publishers =
        spawn_ready(plan.publishers, &mut ready, |i, tx| publisher(shared.clone(), i, tx, start_rx.clone()));
    // Subscribers hold their SUBACK and publishers their CONNACK.
    let all_ready = await_ready(ready, deadline, &mut errors).await;
    let redis: Vec<SocketAddr> =
        options.redis_ports.iter().map(|&port| SocketAddr::new(options.addr.ip(), port)).collect();
    let idle = settle(options.settle, &redis, deadline, &mut errors).await;
    // The settle time is no part of the CPU figures.
    let cpu = if options.settle.is_zero() { cpu } else { CpuMeter::start(options.broker_pid) };
    let redis_before = read_counts(&redis, &mut errors).await;
    let watched = Watched::start(&options.watch);
    let memory = MemoryWatch::start(options.broker_pid, deadline);
    let tool = ToolMeter::start(options.threads);
    let io = IoMeter::start(options.broker_pid, options.store_path.as_deref());
    let start = Instant::now();
    // Without every client, publishers are released with nothing to do.
    let _ = start_tx.send(Some((start, all_ready)));

    let mut pubs = join_all(publishers, deadline, "publisher", &mut errors).await;
    let mut sent = vec![0; plan.publishers];
    for p in &pubs {
        if let Some(slot) = sent.get_mut(p.index) {
            *slot = p.sent;
        }
    }
    let _ = done_tx.send(Some(sent));
    let mut subs = join_all(subscribers, deadline, "subscriber", &mut errors).await;
    let redis_after = read_counts(&redis, &mut errors).await;
    let watched = watched.finish();
    let (publish_time, deliver_time) =
        (last(pubs.iter().map(|p| p.finished), start), last(subs.iter().map(|s| s.received.last_arrival), start));
    let tool = tool.finish(publish_time.max(deliver_time));
    let io = io.finish();
    let memory = memory.finish().await;
    let cpu = cpu.finish();
    // The other subscribers are done: the slow ones stop reading slowly.
    let _ = end_tx.send(true);
    let slow = join_all(slow, deadline, "slow subscriber", &mut errors).await;
    for p in &mut pubs {
        if let Some(client) = p.client.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
        }
    }

    let mut fields = crate::header(options);
    describe_plan(&mut fields, plan);
    extend(&mut fields, json!({ "nodes": shared.addrs.len(), "crossing_pct": crossing_pct(&shared) }));
    fields.extend(delivery_fields(&pubs, &subs, plan.publishers));
    let delivered: u64 = subs.iter().map(|s| s.received.distinct).sum();
    if !redis.is_empty() {
        extend(&mut fields, redis_fields(redis_before.as_ref().zip(redis_after.as_ref()), delivered, idle));
    }
    if !options.watch.is_empty() {
        extend(&mut fields, watched.report(delivered));
    }
    extend(&mut fields, timing_fields(&pubs, &mut subs, publish_time, deliver_time));
    memory.report(&mut fields);
    // Per message the broker acknowledged (QoS 1, 2) or took (QoS 0).
    io.report(&mut fields, "", pubs.iter().map(|p| p.settled.distinct()).sum());
    if plan.flood.is_some() {
        slow::report(&mut fields, &plan.slow, &slow, start);
    }
    let timed_out =
        pubs.iter().any(|p| p.timed_out) || subs.iter().any(|s| s.timed_out) || slow.iter().any(|s| s.timed_out);
    pubs.into_iter().for_each(|p| errors.merge(p.errors));
    subs.into_iter().for_each(|s| errors.merge(s.errors));
    slow.into_iter().for_each(|s| errors.merge(s.errors));
    extend(&mut fields, json!({ "timed_out": timed_out, "error_count": errors.count(), "errors": errors.to_json() }));
    cpu.report(&mut fields);
    tool.report(&mut fields);
    Value::Object(fields)
}

/// Waits `settle` (bounded by the deadline) before the start; with Redis,
/// returns the commands it ran per second meanwhile (a cluster at rest:
/// heartbeats and blocked reads).
async fn settle(settle: Duration, redis: &[SocketAddr], deadline: Instant, errors: &mut Errors) -> Option<f64> {
    if settle.is_zero() {
        return None;
    }
    let before = read_counts(redis, errors).await;
    let began = Instant::now();
    sleep_until((began + settle).min(deadline)).await;
    let after = read_counts(redis, errors).await;
    let took = began.elapsed().as_secs_f64();
    let (before, after) = before.zip(after)?;
    (took > 0.0).then(|| redis_stats::total(&after.since(&before)) as f64 / took)
}

/// The CPU time of the processes of `--watch-pid` over the timed phase.
#[derive(Debug)]
struct Watched {
    /// Name, and CPU time at the start (then the time used).
    processes: Vec<(String, u32, Option<Duration>)>,
}

impl Watched {
    fn start(watch: &[(String, u32)]) -> Self {
        Self { processes: watch.iter().map(|(name, pid)| (name.clone(), *pid, threads_cpu_time(Some(*pid)))).collect() }
    }

    /// The time each used since the start.
    fn finish(mut self) -> Self {
        for (_, pid, cpu) in &mut self.processes {
            *cpu = cpu.zip(threads_cpu_time(Some(*pid))).map(|(before, now)| now.saturating_sub(before));
        }
        self
    }

    /// `cpu_s` and `cpu_us_per_delivered` by name (null for a name with a
    /// process that could not be read).
    fn report(&self, delivered: u64) -> Value {
        let mut by_name: Vec<(String, Option<Duration>)> = Vec::new();
        for (name, _, cpu) in &self.processes {
            match by_name.iter_mut().find(|(n, _)| n == name) {
                Some((_, total)) => *total = total.zip(*cpu).map(|(a, b)| a + b),
                None => by_name.push((name.clone(), *cpu)),
            }
        }
        let seconds: Map<String, Value> = by_name
            .iter()
            .map(|(name, cpu)| (name.clone(), cpu.map_or(Value::Null, |c| Value::from(c.as_secs_f64()))))
            .collect();
        let per: Map<String, Value> = by_name
            .iter()
            .map(|(name, cpu)| {
                let us = cpu.filter(|_| delivered > 0).map(|c| c.as_secs_f64() * 1e6 / delivered as f64);
                (name.clone(), us.map_or(Value::Null, Value::from))
            })
            .collect();
        json!({ "cpu_s": seconds, "cpu_us_per_delivered": per })
    }
}

/// Redis's command counts, if there is a Redis to read; a failure is an
/// error of the run.
async fn read_counts(redis: &[SocketAddr], errors: &mut Errors) -> Option<Counts> {
    if redis.is_empty() {
        return None;
    }
    match Counts::read_all(redis).await {
        Ok(counts) => Some(counts),
        Err(error) => {
            errors.push(format!("redis: {error}"));
            None
        }
    }
}

/// The commands Redis ran over the timed phase, in all, per delivered
/// message and by command; and at rest during the settle time.
fn redis_fields(counts: Option<(&Counts, &Counts)>, delivered: u64, idle: Option<f64>) -> Value {
    let Some((before, after)) = counts else {
        return json!({ "redis_commands": null });
    };
    let by_command = after.since(before);
    let total = redis_stats::total(&by_command);
    let per = |n: u64| if delivered == 0 { Value::Null } else { Value::from(n as f64 / delivered as f64) };
    let per_command: Map<String, Value> = by_command.iter().map(|(k, &v)| (k.clone(), per(v))).collect();
    json!({
        "redis_commands": total,
        "redis_commands_per_delivered": per(total),
        "redis_commands_by_name": redis_stats::to_json(&by_command),
        "redis_commands_per_delivered_by_name": per_command,
        "redis_idle_commands_per_s": idle.map(|r| (r * 10.0).round() / 10.0),
    })
}

/// The share of the expected deliveries (a publisher's share, once per
/// subscriber hearing it) whose publisher and subscriber are on different
/// nodes, in percent.
fn crossing_pct(shared: &Shared) -> Value {
    let plan = &shared.plan;
    let (mut all, mut crossing) = (0, 0);
    for s in 0..plan.subscribers {
        for p in plan.heard(s) {
            all += plan.share(p);
            if shared.node_of(Role::Publisher, p) != shared.node_of(Role::Subscriber, s) {
                crossing += plan.share(p);
            }
        }
    }
    percent(crossing, all)
}

/// Durations, rates and latencies; takes the subscribers' latency samples.
fn timing_fields(
    pubs: &[PubOutcome],
    subs: &mut [SubOutcome],
    publish_time: Option<Duration>,
    deliver_time: Option<Duration>,
) -> Value {
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let completed: u64 = pubs.iter().map(|p| p.settled.distinct()).sum();
    let delivered: u64 = subs.iter().map(|s| s.received.distinct).sum();
    let mut latencies = Latencies::default();
    for s in subs {
        latencies.merge(std::mem::take(&mut s.received.latencies));
    }
    let (publish, deliver) = (publish_time.unwrap_or_default(), deliver_time.unwrap_or_default());
    json!({
        "publish_s": publish_time.map_or(Value::Null, secs),
        "deliver_s": deliver_time.map_or(Value::Null, secs),
        "sent_per_s": per_sec(sent, publish),
        "completed_per_s": per_sec(completed, publish),
        "delivered_per_s": per_sec(delivered, deliver),
        "latency_us": latencies.summary(),
    })
}

/// Adds the fields of a JSON object to a result.
fn extend(fields: &mut Map<String, Value>, extra: Value) {
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
}

/// How long after `start` the latest of `times` was.
fn last(times: impl Iterator<Item = Option<Instant>>, start: Instant) -> Option<Duration> {
    times.flatten().max().map(|t| t.saturating_duration_since(start))
}

/// Spawns `count` client tasks, keeping the receiver of each one's
/// readiness in `ready`.
fn spawn_ready<T, F>(
    count: usize,
    ready: &mut Vec<oneshot::Receiver<Result<(), String>>>,
    mut task: impl FnMut(usize, Ready) -> F,
) -> Vec<JoinHandle<T>>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    (0..count)
        .map(|index| {
            let (tx, rx) = oneshot::channel();
            ready.push(rx);
            tokio::spawn(task(index, tx))
        })
        .collect()
}

/// Waits until every client is ready; `false` if one failed or the
/// deadline came first.
async fn await_ready(
    ready: Vec<oneshot::Receiver<Result<(), String>>>,
    deadline: Instant,
    errors: &mut Errors,
) -> bool {
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
                return false;
            }
        }
    }
    all_ready
}

/// The outcomes of `handles`, in order; a task that failed or did not end
/// is an error, and has no outcome.
async fn join_all<T>(handles: Vec<JoinHandle<T>>, deadline: Instant, what: &str, errors: &mut Errors) -> Vec<T> {
    let mut outcomes = Vec::with_capacity(handles.len());
    for handle in handles {
        match timeout_at(deadline + JOIN_GRACE, handle).await {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(error)) => errors.push(format!("{what} task failed: {error}")),
            Err(_) => errors.push(format!("{what} task did not end by the deadline")),
        }
    }
    outcomes
}

/// Runs a client's `setup` until `deadline` and tells the run whether the
/// client is ready; the client, or `None` (with `timed_out` set when the
/// deadline came first).
pub(super) async fn ready_client(
    setup: impl Future<Output = io::Result<Client>>,
    deadline: Instant,
    ready: Ready,
    who: &str,
    timed_out: &mut bool,
) -> Option<Client> {
    match timeout_at(deadline, setup).await {
        Ok(Ok(client)) => {
            let _ = ready.send(Ok(()));
            Some(client)
        }
        Ok(Err(error)) => {
            let _ = ready.send(Err(format!("{who}: {error}")));
            None
        }
        Err(_) => {
            *timed_out = true;
            let _ = ready.send(Err(format!("{who}: not ready before the deadline")));
            None
        }
    }
}

/// Subscribes to the filter of subscriber `subscriber` at the plan's
/// QoS; anything else granted is an error.
pub(super) async fn subscribe(client: &mut Client, plan: &Plan, subscriber: usize) -> io::Result<()> {
    let filter =
        plan.filter(subscriber).ok_or_else(|| io::Error::other(format!("no topic for subscriber {subscriber}")))?;
    let granted = client.subscribe(&filter, plan.qos).await?;
    if granted != plan.qos {
        return Err(protocol_error(format!("asked QoS {} and was granted {granted}", plan.qos)));
    }
    Ok(())
}

fn describe_plan(fields: &mut Map<String, Value>, plan: &Plan) {
    let describe = json!({
        "qos": plan.qos.bits(),
        "publishers": plan.publishers,
        "subscribers": plan.subscribers,
        "messages": plan.messages,
        "rate": plan.rate,
        "flood_s": plan.flood.map_or(Value::Null, secs),
        "inflight": if plan.qos == QoS::AtMostOnce { Value::Null } else { Value::from(plan.inflight) },
        "payload": plan.payload.name(),
        "payload_bytes": plan.payload_bytes,
        "filter": match &plan.subscriptions {
            Subscriptions::Shared(filter) => filter.as_str().to_owned(),
            Subscriptions::Paired => {
                let name = |t: Option<&TopicName>| t.map_or("", TopicName::as_str).to_owned();
                format!("its pair's topic, {} to {}", name(plan.topics.first()), name(plan.topics.last()))
            }
        },
        "clean_session": plan.clean_session,
        "same_shard": plan.same_shard,
    });
    extend(fields, describe);
}

/// What the subscribers reading at full speed received of what the
/// publishers sent.
fn delivery_fields(pubs: &[PubOutcome], subs: &[SubOutcome], publishers: usize) -> Map<String, Value> {
    let sent: u64 = pubs.iter().map(|p| p.sent).sum();
    let completed: u64 = pubs.iter().map(|p| p.settled.distinct()).sum();
    let trackers = || subs.iter().flat_map(|s| &s.received.trackers);
    let sum = |f: fn(&SeqTracker) -> u64| trackers().map(f).sum::<u64>();
    let mut settled = vec![None; publishers];
    for p in pubs {
        if let Some(slot) = settled.get_mut(p.index) {
            *slot = Some(&p.settled);
        }
    }
    // Arrivals and messages taken, for every subscriber and publisher it hears.
    let settled = &settled;
    let heard = || {
        subs.iter().flat_map(move |s| {
            let heard = s.received.heard.clone();
            let arrived = s.received.trackers.get(heard.clone()).unwrap_or_default();
            arrived.iter().zip(settled.get(heard).unwrap_or_default())
        })
    };
    let expected: u64 = heard().map(|(_, settled)| settled.map_or(0, SeqTracker::distinct)).sum();
    let lost: u64 = heard().map(|(arrived, settled)| settled.map_or(0, |settled| settled.count_not_in(arrived))).sum();
    let fields = json!({
        "sent": sent,
        "completed": completed,
        "unacknowledged": sent - completed,
        "unexpected_acks": pubs.iter().map(|p| p.unexpected_acks).sum::<u64>(),
        "expected_deliveries": expected,
        "delivered": subs.iter().map(|s| s.received.distinct).sum::<u64>(),
        "lost": lost,
        "loss_pct": percent(lost, expected),
        "duplicates": sum(SeqTracker::duplicates),
        "out_of_order": sum(SeqTracker::out_of_order),
        "unexpected": sum(SeqTracker::unexpected) + subs.iter().map(|s| s.received.foreign).sum::<u64>(),
        "wrong_qos": subs.iter().map(|s| s.received.wrong_qos).sum::<u64>(),
    });
    match fields {
        Value::Object(fields) => fields,
        _ => Map::new(),
    }
}

/// One publisher: connects, waits for the start, publishes its share.
async fn publisher(shared: Arc<Shared>, index: usize, ready: Ready, mut start: Start) -> PubOutcome {
    let mut out = PubOutcome {
        index,
        sent: 0,
        settled: SeqTracker::new(shared.plan.share(index)),
        finished: None,
        unexpected_acks: 0,
        timed_out: false,
        errors: Errors::default(),
        client: None,
    };
    let deadline = shared.deadline;
    let who = format!("publisher {index}");
    let setup = async {
        Client::connect(shared.addr(Role::Publisher, index), &shared.client_id("pub", index)?, KEEP_ALIVE).await
    };
    let Some(mut client) = ready_client(setup, deadline, ready, &who, &mut out.timed_out).await else {
        return out;
    };
    let go = match timeout_at(deadline, start.wait_for(Option::is_some)).await {
        Ok(Ok(go)) => *go,
        _ => None,
    };
    if let Some((begin, true)) = go
        && let Err(error) = publish(&shared, index, &mut client, begin, &mut out).await
    {
        out.errors.push(format!("{who}: {error}"));
    }
    out.client = Some(client);
    out
}

/// The sequence number of each message in flight, by packet id (QoS 1
/// and 2; empty at QoS 0).
#[derive(Debug)]
struct InFlight {
    seqs: Vec<Option<u64>>,
    len: u64,
}

impl InFlight {
    fn new(qos: QoS) -> Self {
        let ids = if qos == QoS::AtMostOnce { 0 } else { usize::from(u16::MAX) + 1 };
        Self { seqs: vec![None; ids], len: 0 }
    }

    fn insert(&mut self, id: PacketId, seq: u64) -> io::Result<()> {
        let Some(slot) = self.seqs.get_mut(usize::from(id.get())) else {
            return Err(protocol_error("no packet ids at QoS 0"));
        };
        if slot.is_some() {
            return Err(protocol_error(format!("packet id {} still in flight after 65535 more", id.get())));
        }
        *slot = Some(seq);
        self.len += 1;
        Ok(())
    }

    fn contains(&self, id: PacketId) -> bool {
        self.seqs.get(usize::from(id.get())).is_some_and(Option::is_some)
    }

    fn remove(&mut self, id: PacketId) -> Option<u64> {
        let seq = self.seqs.get_mut(usize::from(id.get()))?.take()?;
        self.len -= 1;
        Some(seq)
    }
}

async fn publish(
    shared: &Shared,
    index: usize,
    client: &mut Client,
    begin: Instant,
    out: &mut PubOutcome,
) -> io::Result<()> {
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
    let stop = plan.flood.map(|flood| begin + flood);
    let mut in_flight = InFlight::new(qos);
    let mut written: u64 = 0;
    let mut next_id = PacketId::MIN;
    let mut scratch = Vec::with_capacity(plan.payload_bytes.max(64));
    let due = |seq: u64| interval.map(|iv| begin + iv.mul_f64(seq as f64));
    let more = |sent: u64, now: Instant| sent < share && stop.is_none_or(|stop| now < stop);
    loop {
        let now = Instant::now();
        if now >= deadline {
            out.timed_out = true;
            return Ok(());
        }
        while more(out.sent, now)
            && in_flight.len < window
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
                in_flight.insert(id, out.sent)?;
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
                (written..out.sent).for_each(|seq| out.settled.record(seq));
                written = out.sent;
                out.finished = Some(Instant::now());
            }
            continue;
        }
        let more = more(out.sent, now);
        if !more && in_flight.len == 0 {
            return Ok(());
        }
        let next_due = if more && in_flight.len < window { due(out.sent) } else { None };
        let next_due = next_due.map(|due| stop.map_or(due, |stop| due.min(stop)));
        tokio::select! {
            read = client.fill(), if qos != QoS::AtMostOnce => {
                if read? == 0 {
                    return Err(protocol_error(format!("broker closed the connection with {} in flight", in_flight.len)));
                }
                handle_acks(client, qos, &mut in_flight, out)?;
            }
            () = sleep_until(next_due.unwrap_or(deadline)), if next_due.is_some() => {}
            () = sleep_until(deadline) => {
                out.timed_out = true;
                return Ok(());
            }
        }
    }
}

/// Takes every acknowledgement read so far: PUBACK and PUBCOMP settle a
/// message, PUBREC is answered with PUBREL.
fn handle_acks(client: &mut Client, qos: QoS, in_flight: &mut InFlight, out: &mut PubOutcome) -> io::Result<()> {
    while let Some(packet) = client.decode()? {
        let (id, done) = match packet {
            Packet::PubAck(id) if qos == QoS::AtLeastOnce => (id, true),
            Packet::PubRec(id) if qos == QoS::ExactlyOnce => (id, false),
            Packet::PubComp(id) if qos == QoS::ExactlyOnce => (id, true),
            Packet::PingResp => continue,
            other => return Err(protocol_error(format!("unexpected packet {other:?}"))),
        };
        match (done, done.then(|| in_flight.remove(id)).flatten()) {
            (true, Some(seq)) => {
                out.settled.record(seq);
                out.finished = Some(Instant::now());
            }
            (false, _) if in_flight.contains(id) => client.queue(&Packet::PubRel(id)),
            _ => {
                out.unexpected_acks += 1;
                out.errors.push(format!("acknowledgement for packet id {} not in flight", id.get()));
            }
        }
    }
    Ok(())
}

/// One subscriber reading at full speed: connects, subscribes, reports
/// ready, receives.
async fn subscriber(shared: Arc<Shared>, index: usize, ready: Ready, done: Done) -> SubOutcome {
    let plan = &shared.plan;
    let mut out = SubOutcome { received: Received::new(plan, index), timed_out: false, errors: Errors::default() };
    let who = format!("subscriber {index}");
    let setup = async {
        let id = shared.client_id("sub", index)?;
        let addr = shared.addr(Role::Subscriber, index);
        let (mut client, _) = Client::connect_session(addr, &id, KEEP_ALIVE, plan.clean_session).await?;
        subscribe(&mut client, plan, index).await?;
        client.read_chunk = SUBSCRIBER_READ;
        Ok(client)
    };
    let Some(mut client) = ready_client(setup, shared.deadline, ready, &who, &mut out.timed_out).await else {
        return out;
    };
    if let Err(error) = receive(&shared, &mut client, &done, &mut out).await {
        out.errors.push(format!("{who}: {error}"));
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
    out
}

async fn receive(shared: &Shared, client: &mut Client, done: &Done, out: &mut SubOutcome) -> io::Result<()> {
    let plan = &shared.plan;
    let deadline = shared.deadline;
    let shares: Vec<u64> = (0..plan.publishers).map(|p| plan.share(p)).collect();
    let all = out.received.heard_sum(&shares);
    let mut last_activity = Instant::now();
    let mut arrived_ns = shared.epoch.now_ns();
    loop {
        while let Some(packet) = client.decode()? {
            // Nothing else is expected; PINGRESP and the like are ignored.
            let _ = out.received.handle(client, packet, last_activity, arrived_ns);
        }
        if timeout_at(deadline, client.flush()).await.is_err() {
            out.timed_out = true;
            return Ok(());
        }
        let distinct = out.received.distinct;
        if distinct >= all {
            return Ok(());
        }
        let sent = done.borrow().as_deref().map(|sent| out.received.heard_sum(sent));
        if let Some(sent) = sent
            && (distinct >= sent || last_activity.elapsed() >= plan.drain)
        {
            return Ok(());
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_on_a_shard_are_found_for_every_shard() {
        for shards in [1, 2, 3, 8] {
            for shard in 0..shards {
                let id = id_on_shard("load-pairs-1-sub-5", ShardId(shard), shards).unwrap();
                assert!(id.starts_with("load-pairs-1-sub-5-"), "{id}");
                assert_eq!(home_shard(&id, shards), ShardId(shard), "{id}");
            }
        }
        // A shard that does not exist is never found, and the search ends.
        assert_eq!(id_on_shard("load-pairs-1-sub-5", ShardId(2), 2), None);
    }
}
