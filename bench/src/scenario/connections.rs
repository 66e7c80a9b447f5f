//! Many idle clients: how fast the broker accepts them with a bounded
//! number of handshakes in flight, and how much memory each one costs it.

use std::sync::Arc;
use std::time::Duration;

use culex_core::codec::Packet;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, timeout_at};

use crate::mqtt::Client;
use crate::options::Options;
use crate::procfs::{CpuMeter, listen_drops, rss_kib};
use crate::report::{Errors, per_sec, secs};
use crate::stats::Latencies;
use crate::tool_cpu::ToolMeter;

/// Time given to the broker to settle before its memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// Runs the scenario and reports it.
pub(crate) async fn run(options: &Options) -> Value {
    let deadline = Instant::now() + options.deadline;
    let clients = options.clients;
    let concurrency = options.concurrency.unwrap_or(200);
    let pid = options.broker_pid;
    let rss_before = pid.and_then(rss_kib);
    let cpu = CpuMeter::start(pid);
    let drops_before = listen_drops();
    let mut errors = Errors::default();
    let mut timed_out = false;
    let mut held: Vec<Client> = Vec::with_capacity(clients);
    let mut handshakes = Latencies::default();
    let mut last_connack = None;

    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let tag = std::process::id();
    let tool = ToolMeter::start(options.threads);
    let start = Instant::now();
    for i in 0..clients {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                break;
            }
        };
        let addr = options.addr;
        tasks.spawn(async move {
            let began = Instant::now();
            let id = format!("load-conn-{tag}-{i}");
            let result = timeout_at(deadline, Client::connect(addr, &id, 0)).await;
            drop(permit);
            (result, began.elapsed(), Instant::now())
        });
        while let Some(done) = tasks.try_join_next() {
            collect(done, &mut held, &mut handshakes, &mut last_connack, &mut errors, &mut timed_out);
        }
    }
    while let Some(done) = tasks.join_next().await {
        collect(done, &mut held, &mut handshakes, &mut last_connack, &mut errors, &mut timed_out);
    }
    let connect_time = last_connack.map(|t: Instant| t.saturating_duration_since(start));
    let cpu = cpu.finish();
    let tool = tool.finish(connect_time);

    let settle_until = (Instant::now() + SETTLE).min(deadline);
    tokio::time::sleep_until(settle_until).await;
    let rss_after = pid.and_then(rss_kib);
    let alive = ping_all(&mut held, deadline, &mut errors).await;
    let connected = held.len();
    drop(held);
    sleep(SETTLE.min(deadline.saturating_duration_since(Instant::now()))).await;
    let rss_after_close = pid.and_then(rss_kib);

    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if connected > 0 => Value::from((a.saturating_sub(b) * 1024) as f64 / connected as f64),
        _ => Value::Null,
    };
    let mut fields = crate::header(options);
    let extra = json!({
        "clients": clients,
        "concurrency": concurrency,
        "connected": connected,
        "failed": clients - connected,
        "alive_after": alive,
        "connect_s": connect_time.map_or(Value::Null, secs),
        "connects_per_s": per_sec(connected as u64, connect_time.unwrap_or(Duration::ZERO)),
        "handshake_us": handshakes.summary(),
        "broker_rss_kib_before": rss_before,
        "broker_rss_kib_after": rss_after,
        "broker_rss_kib_after_close": rss_after_close,
        "rss_per_conn_bytes": per_conn.as_f64().map(|b| b.round()),
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

type Done = (Result<std::io::Result<Client>, tokio::time::error::Elapsed>, Duration, Instant);

fn collect(
    done: Result<Done, tokio::task::JoinError>,
    held: &mut Vec<Client>,
    handshakes: &mut Latencies,
    last: &mut Option<Instant>,
    errors: &mut Errors,
    timed_out: &mut bool,
) {
    match done {
        Ok((Ok(Ok(client)), took, at)) => {
            held.push(client);
            handshakes.record(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
            *last = Some(last.map_or(at, |l| l.max(at)));
        }
        Ok((Ok(Err(error)), _, _)) => errors.push(error.to_string()),
        Ok((Err(_), _, _)) => {
            *timed_out = true;
            errors.push("no CONNACK before the deadline");
        }
        Err(error) => errors.push(format!("client task failed: {error}")),
    }
}

/// PINGREQ on every held connection; counts the PINGRESPs.
async fn ping_all(held: &mut [Client], deadline: Instant, errors: &mut Errors) -> usize {
    let mut sent = vec![false; held.len()];
    for (client, sent) in held.iter_mut().zip(&mut sent) {
        client.queue(&Packet::PingReq);
        match timeout_at(deadline, client.flush()).await {
            Ok(Ok(())) => *sent = true,
            Ok(Err(error)) => errors.push(format!("PINGREQ: {error}")),
            Err(_) => return 0,
        }
    }
    let mut alive = 0;
    for (client, _) in held.iter_mut().zip(sent).filter(|(_, sent)| *sent) {
        match timeout_at(deadline, client.next_packet()).await {
            Ok(Ok(Some(Packet::PingResp))) => alive += 1,
            Ok(Ok(other)) => errors.push(format!("expected PINGRESP, got {other:?}")),
            Ok(Err(error)) => errors.push(format!("PINGRESP: {error}")),
            Err(_) => {
                errors.push("PINGRESP not received before the deadline");
                break;
            }
        }
    }
    alive
}
