//! Slow subscribers: clients that read what the broker sends them at a
//! fixed budget of bytes per second, in small chunks with sleeps between,
//! on a socket whose receive buffer is kept small (`SO_RCVBUF`), so that
//! the broker itself holds what they have not read yet.
//!
//! A slow subscriber reads at its budget until the run tells it the flood
//! is over (the other subscribers are done). It then reads at full speed
//! what the broker still holds for it and probes the connection with
//! PINGREQ: a broker that closed the connection answers with a reset, one
//! that kept it with PINGRESP (once the messages queued before it are
//! read; Mosquitto drops a PINGRESP behind a full queue, so the probe is
//! repeated).

use std::io;
use std::sync::Arc;
use std::time::Duration;

use culex_core::codec::Packet;
use serde_json::{Map, Value, json};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::pubsub::{KEEP_ALIVE, Role, SUBSCRIBER_READ, Shared, ready_client, subscribe};
use super::received::Received;
use crate::mqtt::Client;
use crate::report::{Errors, secs};

/// Smallest and largest read of a slow subscriber: a hundredth of its
/// budget, within these bounds.
const CHUNK_MIN: usize = 256;
const CHUNK_MAX: usize = 4096;

/// Longest probe of the connection after the flood.
const PING_WAIT: Duration = Duration::from_secs(10);

/// Silence after which what the broker held counts as read, and the
/// first PINGREQ goes out.
const QUIET: Duration = Duration::from_millis(250);

/// Time between PINGREQs until one is answered (and before the first one
/// if the broker never falls silent).
const PING_AGAIN: Duration = Duration::from_secs(1);

/// How many slow subscribers a run has and how they read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SlowReaders {
    pub(crate) count: usize,
    /// Read budget of each, in bytes per second.
    pub(crate) bytes_per_sec: u64,
    /// `SO_RCVBUF` of each socket, set before connecting.
    pub(crate) rcvbuf: u32,
}

impl SlowReaders {
    /// No slow subscriber.
    pub(crate) const NONE: Self = Self { count: 0, bytes_per_sec: 1, rcvbuf: 0 };

    /// Bytes read at once: about 10 ms of budget.
    fn chunk(&self) -> usize {
        usize::try_from(self.bytes_per_sec / 100).unwrap_or(CHUNK_MAX).clamp(CHUNK_MIN, CHUNK_MAX)
    }
}

/// What one slow subscriber saw.
#[derive(Debug)]
pub(crate) struct SlowOutcome {
    received: Received,
    /// First arrivals while reading at the budget.
    at_rate: u64,
    /// Bytes read at the budget.
    bytes: u64,
    /// Connected and subscribed.
    connected: bool,
    /// When and how the broker closed the connection, if it did.
    closed: Option<(Instant, String)>,
    /// A PINGRESP came back after the flood.
    answered_ping: bool,
    pub(crate) timed_out: bool,
    pub(crate) errors: Errors,
}

/// One slow subscriber: connects with a small receive buffer, subscribes,
/// reports ready, reads at its budget until `end`, then pings.
pub(crate) async fn subscriber(
    shared: Arc<Shared>,
    index: usize,
    ready: oneshot::Sender<Result<(), String>>,
    mut end: watch::Receiver<bool>,
) -> SlowOutcome {
    let plan = &shared.plan;
    let mut out = SlowOutcome {
        received: Received::new(plan, index),
        at_rate: 0,
        bytes: 0,
        connected: false,
        closed: None,
        answered_ping: false,
        timed_out: false,
        errors: Errors::default(),
    };
    let id = format!("load-{}-slow-{index}", shared.tag);
    let setup = async {
        let mut client =
            Client::connect_with_rcvbuf(shared.addr(Role::Subscriber, index), &id, KEEP_ALIVE, plan.slow.rcvbuf)
                .await?;
        subscribe(&mut client, plan, index).await?;
        Ok(client)
    };
    let who = format!("slow subscriber {index}");
    let Some(mut client) = ready_client(setup, shared.deadline, ready, &who, &mut out.timed_out).await else {
        return out;
    };
    out.connected = true;
    if let Err(error) = read_slowly(&shared, &mut client, &mut end, &mut out).await {
        out.note(&who, error);
    }
    out.at_rate = out.received.distinct;
    if out.closed.is_none()
        && !out.timed_out
        && let Err(error) = probe(&shared, &mut client, &mut out).await
    {
        out.note(&who, error);
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), client.disconnect()).await;
    out
}

impl SlowOutcome {
    /// The broker never closed the connection, up to the end of the
    /// probe.
    fn stayed_connected(&self) -> bool {
        self.connected && self.closed.is_none() && !self.timed_out && self.errors.count() == 0
    }

    /// A read or write error: the broker closed the connection, unless
    /// what it sent was malformed.
    fn note(&mut self, who: &str, error: io::Error) {
        if error.kind() == io::ErrorKind::InvalidData {
            self.errors.push(format!("{who}: {error}"));
        } else {
            self.closed.get_or_insert((Instant::now(), error.to_string()));
        }
    }
}

/// Reads at the budget until `end` says the flood is over, the broker
/// closes the connection, or the deadline.
async fn read_slowly(
    shared: &Shared,
    client: &mut Client,
    end: &mut watch::Receiver<bool>,
    out: &mut SlowOutcome,
) -> io::Result<()> {
    let deadline = shared.deadline;
    let chunk = shared.plan.slow.chunk();
    let mut budget = Budget::new(shared.plan.slow.bytes_per_sec, chunk, Instant::now());
    loop {
        if *end.borrow() || end.has_changed().is_err() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            out.timed_out = true;
            return Ok(());
        }
        let wait = budget.wait(now, chunk);
        if !wait.is_zero() {
            tokio::select! {
                () = sleep(wait) => {}
                _ = end.changed() => {}
                () = sleep_until(deadline) => {}
            }
            continue;
        }
        let read = tokio::select! {
            read = client.fill_at_most(budget.available(now).min(chunk)) => read?,
            _ = end.changed() => continue,
            () = sleep_until(deadline) => continue,
        };
        if read == 0 {
            out.closed = Some((Instant::now(), "end of stream".to_owned()));
            return Ok(());
        }
        budget.spend(read);
        out.bytes += read as u64;
        receive_buffered(shared, client, out)?;
        if timeout_at(deadline, client.flush()).await.is_err() {
            out.timed_out = true;
            return Ok(());
        }
    }
}

/// Counts every complete packet read so far; hands back the first packet
/// that is neither PUBLISH nor PUBREL.
fn receive_buffered(shared: &Shared, client: &mut Client, out: &mut SlowOutcome) -> io::Result<Option<Packet>> {
    let (arrived, arrived_ns) = (Instant::now(), shared.epoch.now_ns());
    while let Some(packet) = client.decode()? {
        if let Some(other) = out.received.handle(client, packet, arrived, arrived_ns) {
            return Ok(Some(other));
        }
    }
    Ok(None)
}

/// Reads at full speed and sends PINGREQ once the broker falls silent
/// (or after [`PING_AGAIN`]), again every [`PING_AGAIN`], until PINGRESP,
/// the end of the connection, or [`PING_WAIT`].
async fn probe(shared: &Shared, client: &mut Client, out: &mut SlowOutcome) -> io::Result<()> {
    let began = Instant::now();
    let limit = (began + PING_WAIT).min(shared.deadline);
    let mut ping_at = began + QUIET;
    let mut pinged = false;
    client.read_chunk = SUBSCRIBER_READ;
    loop {
        if timeout_at(limit, client.flush()).await.is_err() {
            return Ok(());
        }
        if let Some(Packet::PingResp) = receive_buffered(shared, client, out)? {
            out.answered_ping = true;
            return Ok(());
        }
        tokio::select! {
            read = client.fill() => {
                if read? == 0 {
                    out.closed = Some((Instant::now(), "end of stream".to_owned()));
                    return Ok(());
                }
                if !pinged {
                    ping_at = (Instant::now() + QUIET).min(began + PING_AGAIN);
                }
            }
            () = sleep_until(ping_at) => {
                client.queue(&Packet::PingReq);
                pinged = true;
                ping_at = Instant::now() + PING_AGAIN;
            }
            () = sleep_until(limit) => return Ok(()),
        }
    }
}

/// The slow subscribers' fields of a result; `start` is the start signal.
pub(crate) fn report(fields: &mut Map<String, Value>, readers: &SlowReaders, outcomes: &[SlowOutcome], start: Instant) {
    let count = readers.count;
    let answered = outcomes.iter().filter(|o| o.answered_ping).count();
    let first_close = outcomes.iter().filter_map(|o| o.closed.as_ref()).min_by_key(|(at, _)| *at);
    let extra = json!({
        "slow_subscribers": count,
        "slow_read_bytes_per_s": readers.bytes_per_sec,
        "slow_rcvbuf_bytes": readers.rcvbuf,
        "slow_stayed_connected": (count > 0).then(|| outcomes.len() == count && outcomes.iter().all(SlowOutcome::stayed_connected)),
        "slow_answered_ping": answered,
        "slow_closed": outcomes.iter().filter(|o| o.closed.is_some()).count(),
        "slow_closed_after_s": first_close.map_or(Value::Null, |(at, _)| secs(at.saturating_duration_since(start))),
        "slow_close": first_close.map(|(_, how)| how.clone()),
        "slow_received": outcomes.iter().map(|o| o.received.distinct).sum::<u64>(),
        "slow_received_at_rate": outcomes.iter().map(|o| o.at_rate).sum::<u64>(),
        "slow_bytes_read_at_rate": outcomes.iter().map(|o| o.bytes).sum::<u64>(),
    });
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
}

/// A token bucket: `rate` bytes per second, at most `burst` banked, so
/// that a reader idle for a while cannot then read in one go.
#[derive(Debug, Clone, Copy)]
struct Budget {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Budget {
    fn new(rate: u64, burst: usize, now: Instant) -> Self {
        Self { rate: rate.max(1) as f64, burst: burst as f64, tokens: 0.0, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// Bytes that may be read at `now`.
    fn available(&mut self, now: Instant) -> usize {
        self.refill(now);
        self.tokens.max(0.0) as usize
    }

    /// How long from `now` until `bytes` may be read.
    fn wait(&mut self, now: Instant, bytes: usize) -> Duration {
        self.refill(now);
        let missing = bytes as f64 - self.tokens;
        if missing <= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(missing / self.rate) }
    }

    /// Takes `bytes` read.
    fn spend(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_paces_reads_at_its_rate() {
        let start = Instant::now();
        let mut budget = Budget::new(1000, 100, start);
        assert_eq!(budget.available(start), 0);
        assert_eq!(budget.wait(start, 100), Duration::from_millis(100));
        let later = start + Duration::from_millis(50);
        assert_eq!(budget.available(later), 50);
        budget.spend(50);
        assert_eq!(budget.wait(later, 100), Duration::from_millis(100));
    }

    #[test]
    fn budget_banks_at_most_its_burst() {
        let start = Instant::now();
        let mut budget = Budget::new(1_000_000, 4096, start);
        assert_eq!(budget.available(start + Duration::from_secs(60)), 4096);
    }

    #[test]
    fn chunk_is_a_hundredth_of_the_budget_within_bounds() {
        let readers = |bytes_per_sec| SlowReaders { count: 1, bytes_per_sec, rcvbuf: 0 };
        assert_eq!(readers(1_000_000).chunk(), CHUNK_MAX);
        assert_eq!(readers(200_000).chunk(), 2000);
        assert_eq!(readers(1000).chunk(), CHUNK_MIN);
    }
}
