//! Smoke test that CI can afford (a few seconds): every scenario of
//! `culex-load`, with tiny counts, against an in-process Culex broker on
//! tokio, on one thread and on two. It checks that the tool runs, prints
//! one JSON line with its own CPU use, and that the broker loses nothing
//! at these loads. The real comparison is
//! `scripts/bench.sh`; `scripts/bench.sh --quick` is its smoke run.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use culex_runtime::Settings;
use serde_json::Value;

/// A Culex broker on its own thread and runtime, stopped on drop.
struct Broker {
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Broker {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut settings = Settings::embedded_defaults();
        settings.listeners = vec![culex_runtime::Listener::mqtt(SocketAddr::from(([127, 0, 0, 1], port)))];
        settings.core.connection_messages = false;
        settings.core.max_inflight_messages = 64;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime
                .block_on(culex_tokio::run(settings, async {
                    let _ = stopped.await;
                }))
                .unwrap();
        });
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "broker did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self { port, stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `culex-load` and returns its one JSON line.
fn load(port: u16, args: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_culex-load"))
        .args(args.split_whitespace())
        .args(["--port", &port.to_string(), "--deadline-secs", "20", "--drain-ms", "500"])
        .args(["--broker-pid", &std::process::id().to_string()])
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{args}: expected one line, got {stdout:?}");
    let result: Value = serde_json::from_str(lines[0]).unwrap();
    assert!(output.status.success(), "{args}: {result}\n{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(result["error_count"], 0, "{args}: {result}");
    assert_eq!(result["timed_out"], false, "{args}: {result}");
    let threads = if args.contains("--threads 2") { 2 } else { 1 };
    assert_eq!(result["tool_threads"], threads, "{args}: {result}");
    assert!(result["tool_cpu_s"].as_f64().is_some(), "{args}: {result}");
    assert!(result["tool_cpu_util"].as_f64().is_some(), "{args}: {result}");
    assert!(result["tool_saturated"].is_boolean(), "{args}: {result}");
    result
}

/// Checks a message run delivered `deliveries` exactly once, in order.
fn assert_delivered(args: &str, r: &Value, deliveries: u64) {
    assert_eq!(r["delivered"], deliveries, "{args}: {r}");
    assert_eq!(r["lost"], 0, "{args}: {r}");
    assert_eq!(r["duplicates"], 0, "{args}: {r}");
    assert_eq!(r["out_of_order"], 0, "{args}: {r}");
    assert!(r["delivered_per_s"].as_f64().unwrap() > 0.0, "{args}: {r}");
}

#[test]
fn every_scenario_runs_against_culex_on_one_thread_and_two() {
    let broker = Broker::start();
    let port = broker.port;
    for threads in ["", "--threads 2"] {
        for (args, deliveries) in [
            ("fan-in --messages 4000", 4000),
            ("fan-in --publishers 16 --messages 4000", 4000),
            ("fan-out --messages 300", 3000),
            ("qos1 --messages 2000", 2000),
            ("qos2 --messages 1000", 1000),
            ("expiry --messages 1000 --payload json", 1000),
            ("latency --qos 1 --rate 2000 --duration-secs 0.25", 500),
        ] {
            let args = format!("{args} {threads}");
            let r = load(port, &args);
            assert_delivered(&args, &r, deliveries);
            assert_eq!(r["latency_us"]["samples"], deliveries, "{args}: {r}");
        }
        let r = load(port, &format!("connections --clients 200 --concurrency 50 {threads}"));
        assert_eq!(r["connected"], 200, "{r}");
        assert_eq!(r["alive_after"], 200, "{r}");
        assert!(r["broker_rss_kib_after"].as_u64().unwrap() > 0, "{r}");
        let r = load(port, &format!("presence --cycles 200 --concurrency 10 {threads}"));
        assert_eq!(r["completed"], 200, "{r}");
    }
}

#[test]
fn slow_subscriber_runs_with_and_without_the_slow_one() {
    let broker = Broker::start();
    let flood = "slow-subscriber --duration-secs 0.5 --rate 20000 --publishers 2 --subscribers 1";
    let args = format!("{flood} --slow-read-bytes-per-sec 100000");
    let r = load(broker.port, &args);
    assert!(r["delivered"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["slow_subscribers"], 1, "{r}");
    assert!(r["slow_stayed_connected"].is_boolean(), "{r}");
    assert!(r["slow_received"].as_u64().unwrap() > 0, "{r}");
    assert!(r["broker_rss_kib_peak"].as_u64().unwrap() > 0, "{r}");
    assert!(r["broker_rss_growth_kib"].is_i64(), "{r}");
    let args = format!("{flood} --slow-subscribers 0 --threads 2");
    let r = load(broker.port, &args);
    assert_delivered(&args, &r, r["sent"].as_u64().unwrap());
    assert_eq!(r["slow_stayed_connected"], Value::Null, "{r}");
}

#[test]
fn non_loopback_hosts_are_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_culex-load"))
        .args(["fan-in", "--host", "192.0.2.1", "--port", "1883"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
