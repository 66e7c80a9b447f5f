//! Flow control in the simulation: subscribers that cannot keep up hold
//! their publishers instead of losing what was acknowledged, stop holding
//! after the stall bound, and cost bounded memory at QoS 0; holds always
//! end. See `culex_core::congestion`.

mod common;

use std::time::Duration;

use common::payloads;
use culex_core::shard::home_shard;
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{CloseReason, Config, ConnId, QoS};

fn config() -> Config {
    Config {
        max_inflight_messages: 2,
        max_queued_messages: 4,
        max_unwritten_bytes: 1000,
        connection_messages: false,
        sys_interval: Duration::ZERO,
        ..Config::default()
    }
}

/// A subscriber that reads only when told to, subscribed to `t` at `qos`
/// (without keepalive: it sends nothing by itself).
fn slow_subscriber(sim: &mut Simulation, name: &str, qos: QoS) -> ConnId {
    let sub = sim.connect(ClientOptions::new(name).reading(false).keep_alive(0));
    sim.subscribe(sub, "t", qos);
    sim.read(sub, usize::MAX);
    let _ = sim.take_received(sub);
    sub
}

/// With two shards the subscriber and the publisher are on different
/// ones: the subscriber's shard holds the publisher through the
/// publisher's (`ShardMessage::Hold`, `Release`).
#[test]
fn a_reading_subscriber_gets_every_message_its_publisher_was_acknowledged_for() {
    assert_ne!(home_shard("sub", 2), home_shard("pub", 2));
    for (shards, qos) in [1, 2].into_iter().flat_map(|n| [(n, QoS::AtLeastOnce), (n, QoS::ExactlyOnce)]) {
        let mut sim = Simulation::with_shards(config(), shards);
        let sub = slow_subscriber(&mut sim, "sub", qos);
        let publ = sim.connect(ClientOptions::new("pub"));
        for n in 0..50 {
            sim.publish(publ, "t", format!("{n}").as_bytes(), qos, false);
        }
        assert!(sim.is_paused(publ), "{qos:?}: the publisher is held");
        let mut got = Vec::new();
        for _ in 0..200 {
            sim.read(sub, 40);
            got.extend(payloads(&mut sim, sub));
            sim.advance(Duration::from_millis(100));
        }
        let want: Vec<String> = (0..50).map(|n| n.to_string()).collect();
        assert_eq!(got, want, "{qos:?}");
        let dropped: u64 = sim.brokers().iter().map(|b| b.stats().counts.dropped_for_room()).sum();
        assert_eq!(dropped, 0, "{shards} shards, {qos:?}");
        assert!(!sim.is_paused(publ), "{shards} shards, {qos:?}");
        assert_eq!(sim.closed(publ), None, "{shards} shards, {qos:?}");
    }
}

#[test]
fn a_held_publisher_outlives_its_keepalive() {
    let mut sim = Simulation::new(config());
    let sub = slow_subscriber(&mut sim, "sub", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub").keep_alive(1));
    for n in 0..20 {
        sim.publish(publ, "t", format!("{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    assert!(sim.is_paused(publ));
    // The subscriber acknowledges a little every 3 s: the hold lives on,
    // longer than 1.5 keepalives of the publisher, which cannot be heard.
    for _ in 0..5 {
        sim.advance(Duration::from_secs(3));
        sim.read(sub, 60);
    }
    assert_eq!(sim.closed(publ), None);
    // Released, its keepalive counts from the release.
    sim.read(sub, usize::MAX);
    sim.set_reading(sub, true);
    assert!(!sim.is_paused(publ));
    sim.advance(Duration::from_millis(1400));
    assert_eq!(sim.closed(publ), None);
    sim.advance(Duration::from_millis(200));
    assert_eq!(sim.closed(publ), Some(CloseReason::KeepAliveTimeout));
}

#[test]
fn a_subscriber_that_stops_acknowledging_stops_holding_after_the_stall_bound() {
    let mut sim = Simulation::new(config());
    sim.record();
    let stuck = slow_subscriber(&mut sim, "stuck", QoS::AtLeastOnce);
    let fast = sim.connect(ClientOptions::new("fast"));
    sim.subscribe(fast, "t", QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    for n in 0..20 {
        sim.publish(publ, "t", format!("{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    assert!(sim.is_paused(publ));
    sim.advance(Duration::from_millis(4900));
    assert!(sim.is_paused(publ));
    sim.advance(Duration::from_millis(200));
    // Past 5 s: released; the stuck one's overflow is dropped from now on.
    assert!(!sim.is_paused(publ));
    for n in 20..40 {
        sim.publish(publ, "t", format!("{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    assert!(!sim.is_paused(publ));
    let got = payloads(&mut sim, fast);
    assert_eq!(got, (0..40).map(|n| n.to_string()).collect::<Vec<_>>());
    assert!(sim.broker().stats().counts.dropped_for_room() >= 20);
    assert_eq!(sim.closed(stuck), None);
    insta::assert_snapshot!(sim.transcript());
}

#[test]
fn a_slow_qos0_reader_costs_its_budget_and_stays_connected_while_it_reads() {
    let mut sim = Simulation::new(config());
    let slow = slow_subscriber(&mut sim, "slow", QoS::AtMostOnce);
    let publ = sim.connect(ClientOptions::new("pub").keep_alive(0));
    let payload = [b'x'; 100];
    for _ in 0..20 {
        for _ in 0..50 {
            sim.publish(publ, "t", &payload, QoS::AtMostOnce, false);
            // Never more than the budget and one more copy wait.
            assert!(sim.unread_len(slow) <= 1000 + 110, "{} bytes waiting", sim.unread_len(slow));
        }
        sim.advance(Duration::from_secs(10));
        sim.read(slow, 300);
    }
    assert!(!sim.is_paused(publ), "QoS 0 never holds a publisher");
    assert_eq!(sim.closed(slow), None, "it reads, slowly: it stays");
    let dropped = sim.broker().stats().counts.dropped_for_room();
    assert!(dropped > 500, "only {dropped} dropped");
    // It stops reading: 30 s without progress while behind closes it.
    for _ in 0..20 {
        sim.publish(publ, "t", &payload, QoS::AtMostOnce, false);
    }
    sim.advance(Duration::from_secs(29));
    assert_eq!(sim.closed(slow), None);
    sim.advance(Duration::from_secs(2));
    assert_eq!(sim.closed(slow), Some(CloseReason::NotReading));
}

#[test]
fn two_clients_publishing_to_each_other_while_reading_slowly_are_never_held_for_good() {
    let mut sim = Simulation::new(config());
    let a = sim.connect(ClientOptions::new("a").reading(false).keep_alive(0));
    let b = sim.connect(ClientOptions::new("b").reading(false).keep_alive(0));
    sim.subscribe(a, "to/a", QoS::AtLeastOnce);
    sim.subscribe(b, "to/b", QoS::AtLeastOnce);
    for conn in [a, b] {
        sim.read(conn, usize::MAX);
    }
    for n in 0..30 {
        sim.publish(a, "to/b", format!("{n}").as_bytes(), QoS::AtLeastOnce, false);
        sim.publish(b, "to/a", format!("{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    // Each holds the other; both read a little, now and then.
    for _ in 0..100 {
        sim.advance(Duration::from_secs(1));
        sim.read(a, 30);
        sim.read(b, 30);
    }
    assert!(!sim.is_paused(a) && !sim.is_paused(b));
    assert_eq!((sim.closed(a), sim.closed(b)), (None, None));
}
