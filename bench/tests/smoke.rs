//! Smoke test that CI can afford (a few seconds): every scenario of
//! `culex-load`, with tiny counts, against an in-process Culex broker on
//! tokio, on one thread and on two (the persistence scenarios on one, with
//! the broker's store in a temporary directory; pairs against two shards). It checks that the tool runs, prints
//! one JSON line with its own CPU use, and that the broker loses nothing
//! at these loads. The real comparison is
//! `scripts/bench.sh`; `scripts/bench.sh --quick` is its smoke run.

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use culex_core::conf::{PersistenceConf, Shards};
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
        Self::start_with(|_| {})
    }

    /// The broker keeps its state in `store` (`persistence true`).
    fn start_persistent(store: &Path) -> Self {
        Self::start_with(|settings| {
            settings.core.persistence = true;
            settings.persistence = Some(PersistenceConf {
                enabled: true,
                location: Some(format!("{}/", store.display())),
                ..PersistenceConf::default()
            });
        })
    }

    /// With the test's settings changed by `configure`.
    fn start_with(configure: impl FnOnce(&mut Settings)) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut settings = Settings::embedded_defaults();
        configure(&mut settings);
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
    load_at(&port.to_string(), args)
}

/// Runs `culex-load` against `ports` (`P` or `P1,P2,...`) and returns its
/// one JSON line.
fn load_at(ports: &str, args: &str) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_culex-load"))
        .args(args.split_whitespace())
        .args(["--port", ports, "--deadline-secs", "20", "--drain-ms", "500"])
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
fn pairs_run_against_two_shards_with_fleet_ids_and_same_shard_ids() {
    let broker = Broker::start_with(|settings| settings.process.shards = Shards::Count(2));
    for (args, same_shard) in [
        ("pairs --publishers 4 --messages 4000", Value::Null),
        ("pairs --publishers 4 --messages 4000 --same-shard 2 --threads 2", Value::from(2)),
        ("pairs --publishers 4 --messages 1000 --qos 1 --same-shard 2", Value::from(2)),
    ] {
        let r = load(broker.port, args);
        assert_delivered(args, &r, r["completed"].as_u64().unwrap());
        assert_eq!((r["publishers"].as_u64(), r["subscribers"].as_u64()), (Some(4), Some(4)), "{r}");
        assert_eq!(r["unexpected"], 0, "{args}: {r}");
        assert_eq!(r["same_shard"], same_shard, "{args}: {r}");
    }
}

#[test]
fn message_scenarios_spread_their_clients_over_several_ports() {
    // Three "nodes" that are one broker: every client's place is counted
    // by node, so every delivery crosses, and nothing is lost.
    let broker = Broker::start();
    let ports = format!("{0},{0},{0}", broker.port);
    let watch = format!("--watch-pid self={0} --watch-pid self={0}", std::process::id());
    for (args, deliveries) in [
        (&*format!("qos1 --messages 1000 --settle-ms 50 {watch}"), 1000),
        ("pairs --publishers 4 --messages 2000 --qos 1 --settle-ms 50", 2000),
        ("latency --qos 1 --rate 2000 --duration-secs 0.25", 500),
    ] {
        let r = load_at(&ports, args);
        assert_delivered(args, &r, deliveries);
        assert_eq!(r["nodes"], 3, "{args}: {r}");
        assert_eq!(r["crossing_pct"], 100.0, "{args}: {r}");
        // No --redis-port: nothing counted.
        assert!(r.get("redis_commands").is_none(), "{args}: {r}");
        // The broker runs in this process, watched twice.
        if args.contains("--watch-pid") {
            assert!(r["cpu_s"]["self"].as_f64().unwrap() > 0.0, "{args}: {r}");
            assert!(r["cpu_us_per_delivered"]["self"].as_f64().unwrap() > 0.0, "{args}: {r}");
        }
    }
    let r = load(broker.port, "qos1 --messages 100");
    assert_eq!((r["nodes"].as_u64(), r["crossing_pct"].as_f64()), (Some(1), Some(0.0)), "{r}");
    let output = Command::new(env!("CARGO_BIN_EXE_culex-load"))
        .args(["connections", "--clients", "10", "--port", &ports])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("only apply to message scenarios"));
}

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
        let path = std::env::temp_dir().join(format!("culex-smoke-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn persistence_scenarios_run_against_culex_with_a_store() {
    let dir = TempDir::new("persist");
    let broker = Broker::start_persistent(&dir.0);
    let store = format!("--store-path {}", dir.0.display());
    for (args, deliveries) in [("qos1 --messages 500", 500), ("qos2 --messages 200", 200)] {
        let args = format!("{args} --clean-session 0 {store}");
        let r = load(broker.port, &args);
        assert_delivered(&args, &r, deliveries);
        assert_eq!(r["clean_session"], false, "{r}");
        // The broker runs in this process, which writes the store.
        assert!(r["broker_write_bytes"].as_u64().unwrap() > 0, "{r}");
        assert!(r["broker_write_bytes_per_op"].as_f64().unwrap() > 0.0, "{r}");
    }
    let content = "--sessions 20 --queued 5 --retained 50";
    let r = load(broker.port, &format!("persist-fill {content} {store}"));
    assert_eq!((r["sessions_created"].as_u64(), r["sessions_already_present"].as_u64()), (Some(20), Some(0)), "{r}");
    assert_eq!((r["queued_acked"].as_u64(), r["retained_acked"].as_u64()), (Some(100), Some(50)), "{r}");
    // No restart here: the probe finds the broker up and the content in it.
    let r = load(broker.port, &format!("restart {content} {store}"));
    assert!(r["ready_s"].as_f64().is_some(), "{r}");
    assert!(r["store_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["sample_sessions_present"], 3, "{r}");
    assert_eq!(r["sample_queued_received"], 15, "{r}");
    assert_eq!(r["sample_retained_received"], 3, "{r}");
    let r = load(broker.port, &format!("persist-changes --messages 200 --cycles 50 {store}"));
    assert_eq!((r["retained_acked"].as_u64(), r["churn_completed"].as_u64()), (Some(200), Some(50)), "{r}");
    assert!(r["retained_changes_per_s"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["churn_cycles_per_s"].as_f64().unwrap() > 0.0, "{r}");
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
