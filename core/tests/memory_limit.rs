//! `memory_limit`, with a gauge the test sets: past the limit a PUBLISH
//! is dropped unacknowledged and its client disconnected, a copy for a
//! clean session is dropped and its client disconnected, and a copy for a
//! stored session is kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use culex_core::codec::{LastWill, Packet};
use culex_core::memory::MemoryGauge;
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Broker, CloseReason, Config, ConnId, QoS, TopicName};

const LIMIT: usize = 1_000_000;

#[derive(Debug, Default)]
struct Gauge(AtomicUsize);

impl MemoryGauge for Gauge {
    fn in_use(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

fn broker() -> (Simulation, Arc<Gauge>) {
    let config = Config { memory_limit: Some(LIMIT), sys_interval: Duration::ZERO, ..Config::default() };
    let gauge = Arc::new(Gauge(AtomicUsize::new(LIMIT / 2)));
    let mut broker = Broker::new(config);
    broker.set_memory_gauge(gauge.clone());
    (Simulation::with_broker(broker, 1_767_225_600.0), gauge)
}

fn over(gauge: &Gauge, over: bool) {
    gauge.0.store(if over { LIMIT + 1 } else { LIMIT / 2 }, Ordering::Relaxed);
}

fn payloads(sim: &mut Simulation, conn: ConnId) -> Vec<Bytes> {
    sim.take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(publish) => Some(publish.payload),
            _ => None,
        })
        .collect()
}

#[test]
fn a_publish_past_the_limit_is_dropped_unacknowledged_and_its_client_disconnected() {
    let (mut sim, gauge) = broker();
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "t", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"fits", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&mut sim, sub), [Bytes::from("fits")]);
    let _ = sim.take_received(publ);
    over(&gauge, true);
    sim.publish(publ, "t", b"too much", QoS::AtLeastOnce, false);
    assert_eq!(sim.closed(publ), Some(CloseReason::OutOfMemory));
    assert!(!sim.take_received(publ).iter().any(|p| matches!(p, Packet::PubAck(_))), "acknowledged");
    assert!(payloads(&mut sim, sub).is_empty());
    // Back under the limit, publishing works again.
    over(&gauge, false);
    let again = sim.connect(ClientOptions::new("pub"));
    sim.publish(again, "t", b"later", QoS::AtLeastOnce, false);
    assert_eq!(payloads(&mut sim, sub), [Bytes::from("later")]);
}

#[test]
fn a_copy_for_a_clean_session_past_the_limit_disconnects_it() {
    let (mut sim, gauge) = broker();
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "r", b"retained", QoS::AtLeastOnce, true);
    over(&gauge, true);
    let sub = sim.connect(ClientOptions::new("sub"));
    sim.subscribe(sub, "r", QoS::AtLeastOnce);
    assert_eq!(sim.closed(sub), Some(CloseReason::OutOfMemory));
}

#[test]
fn a_copy_for_a_stored_session_is_kept_past_the_limit() {
    let (mut sim, gauge) = broker();
    let stored = sim.connect(ClientOptions::new("stored").clean_session(false));
    sim.subscribe(stored, "will/#", QoS::AtLeastOnce);
    let clean = sim.connect(ClientOptions::new("clean"));
    sim.subscribe(clean, "will/#", QoS::AtLeastOnce);
    let will = LastWill {
        topic: TopicName::new("will/dying").unwrap_or_else(|e| panic!("{e}")),
        payload: Bytes::from("gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
    };
    let dying = sim.connect(ClientOptions::new("dying").will(will));
    over(&gauge, true);
    // The will is published by the broker, not read from a PUBLISH.
    sim.drop_connection(dying);
    assert_eq!(sim.closed(clean), Some(CloseReason::OutOfMemory));
    assert_eq!(sim.closed(stored), None);
    assert_eq!(payloads(&mut sim, stored), [Bytes::from("gone")]);
}

#[test]
fn without_a_gauge_the_limit_is_never_reached() {
    let config = Config { memory_limit: Some(1), sys_interval: Duration::ZERO, ..Config::default() };
    let mut sim = Simulation::new(config);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", b"x", QoS::AtLeastOnce, false);
    assert_eq!(sim.closed(publ), None);
}
