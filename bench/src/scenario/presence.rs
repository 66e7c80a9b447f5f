//! Connect / CONNACK / DISCONNECT churn with unique client ids. With the
//! broker's presence on, every cycle is an HSET and an HDEL in Redis; with
//! `--redis-port`, the run also checks that the presence hash empties once
//! every client has left.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout, timeout_at};

use crate::mqtt::Client;
use crate::options::Options;
use crate::procfs::{CpuMeter, listen_drops};
use crate::report::{Errors, per_sec, secs};
use crate::stats::Latencies;
use crate::tool_cpu::ToolMeter;

/// Longest a broker may take to close a connection after DISCONNECT.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest wait for the presence hash to empty after the churn.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct Worker {
    completed: u64,
    cycles: Latencies,
    errors: Errors,
    timed_out: bool,
    finished: Option<Instant>,
}

/// Runs the scenario and reports it.
pub(crate) async fn run(options: &Options) -> Value {
    let deadline = Instant::now() + options.deadline;
    let workers = options.concurrency.unwrap_or(50);
    let cycles = options.cycles;
    let cpu = CpuMeter::start(options.broker_pid);
    let drops_before = listen_drops();
    let next = Arc::new(AtomicU64::new(0));
    let tag = std::process::id();
    let tool = ToolMeter::start(options.threads);
    let start = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let next = next.clone();
            let addr = options.addr;
            tokio::spawn(async move {
                let mut w = Worker::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= cycles {
                        break;
                    }
                    if Instant::now() >= deadline {
                        w.timed_out = true;
                        break;
                    }
                    let began = Instant::now();
                    let cycle = async {
                        let client = Client::connect(addr, &format!("load-presence-{tag}-{i}"), 60).await?;
                        match timeout(CLOSE_TIMEOUT, client.disconnect_and_wait()).await {
                            Ok(result) => result,
                            Err(_) => {
                                Err(std::io::Error::other("broker did not close the connection after DISCONNECT"))
                            }
                        }
                    };
                    match timeout_at(deadline, cycle).await {
                        Ok(Ok(())) => {
                            w.completed += 1;
                            w.cycles.record(u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX));
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
    let mut errors = Errors::default();
    let mut latencies = Latencies::default();
    let (mut completed, mut timed_out, mut finished) = (0, false, None);
    for handle in handles {
        match timeout_at(deadline + Duration::from_secs(1), handle).await {
            Ok(Ok(w)) => {
                completed += w.completed;
                timed_out |= w.timed_out;
                finished = finished.max(w.finished);
                latencies.merge(w.cycles);
                errors.merge(w.errors);
            }
            Ok(Err(error)) => errors.push(format!("worker failed: {error}")),
            Err(_) => errors.push("worker did not end by the deadline"),
        }
    }
    let elapsed = finished.map(|f: Instant| f.saturating_duration_since(start));
    let cpu = cpu.finish();
    let tool = tool.finish(elapsed);

    let (left, settle) = match options.redis_ports.first().copied() {
        Some(port) => {
            let redis = std::net::SocketAddr::new(options.addr.ip(), port);
            match presence_settles(redis, &options.redis_key, deadline).await {
                Ok((left, took)) => (Value::from(left), secs(took)),
                Err(error) => {
                    errors.push(format!("redis: {error}"));
                    (Value::Null, Value::Null)
                }
            }
        }
        None => (Value::Null, Value::Null),
    };
    let mut fields = crate::header(options);
    let extra = json!({
        "cycles": cycles,
        "concurrency": workers,
        "completed": completed,
        "failed": cycles - completed,
        "churn_s": elapsed.map_or(Value::Null, secs),
        "connects_per_s": per_sec(completed, elapsed.unwrap_or(Duration::ZERO)),
        "cycle_us": latencies.summary(),
        "presence_left": left,
        "presence_settle_s": settle,
        "listen_drops": listen_drops().zip(drops_before).map(|(a, b)| a.saturating_sub(b)),
        "timed_out": timed_out,
        "error_count": errors.count(),
        "errors": errors.to_json(),
    });
    if let Value::Object(extra) = extra {
        fields.extend(extra);
    }
    cpu.report(&mut fields);
    tool.report(&mut fields);
    Value::Object(fields)
}

/// Polls `HLEN key` until it is 0 or the settle time is over; returns the
/// last length and how long it took.
async fn presence_settles(
    redis: std::net::SocketAddr,
    key: &str,
    deadline: Instant,
) -> std::io::Result<(u64, Duration)> {
    let start = Instant::now();
    let until = (start + SETTLE_TIMEOUT).min(deadline + SETTLE_TIMEOUT);
    let mut stream = timeout_at(until, TcpStream::connect(redis)).await.map_err(std::io::Error::other)??;
    loop {
        let command = format!("*2\r\n$4\r\nHLEN\r\n${}\r\n{key}\r\n", key.len());
        stream.write_all(command.as_bytes()).await?;
        let mut reply = Vec::new();
        while !reply.ends_with(b"\r\n") {
            let mut byte = [0u8; 64];
            let n = timeout_at(until, stream.read(&mut byte)).await.map_err(std::io::Error::other)??;
            if n == 0 || reply.len() > 1024 {
                return Err(std::io::Error::other("redis closed the connection"));
            }
            reply.extend_from_slice(&byte[..n]);
        }
        let text = String::from_utf8_lossy(&reply);
        let len: u64 = text
            .strip_prefix(':')
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("unexpected reply {:?}", text.trim())))?;
        if len == 0 || Instant::now() >= until {
            return Ok((len, start.elapsed()));
        }
        sleep(Duration::from_millis(20)).await;
    }
}
