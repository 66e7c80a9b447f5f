//! Several shards acting as one broker ([`culex_core::shard`]), in the
//! simulation: what crosses shards, and the `$SYS` figures shard 0
//! publishes for all of them. The differential check
//! (`conformance/tests/prop_model.rs`) holds the shards to the one-broker
//! model for random operation sequences; these are the named cases.

use std::time::Duration;

use culex_core::codec::Publish;
use culex_core::shard::{ShardId, home_shard};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Config, QoS};

/// Two shards: `a` and `c` live on shard 0, `b` on shard 1.
fn two_shards(config: Config) -> Simulation {
    assert_eq!(home_shard("a", 2), ShardId(0));
    assert_eq!(home_shard("c", 2), ShardId(0));
    assert_eq!(home_shard("b", 2), ShardId(1));
    Simulation::with_shards(config, 2)
}

fn payloads(publishes: &[Publish], topic: &str) -> Vec<String> {
    publishes
        .iter()
        .filter(|p| p.topic.as_str() == topic)
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

#[test]
fn messages_cross_shards_in_order_and_retained_ones_reach_later_subscribers() {
    let mut sim = two_shards(Config::default());
    let b = sim.connect(ClientOptions::new("b"));
    sim.subscribe(b, "t/#", QoS::AtLeastOnce);
    let a = sim.connect(ClientOptions::new("a"));
    for n in 0..5 {
        sim.publish(a, "t/x", format!("m{n}").as_bytes(), QoS::AtLeastOnce, false);
    }
    sim.publish(a, "r/x", b"kept", QoS::AtMostOnce, true);
    let got = sim.take_publishes(b);
    assert_eq!(payloads(&got, "t/x"), ["m0", "m1", "m2", "m3", "m4"]);
    assert!(payloads(&got, "r/x").is_empty(), "b does not subscribe to r/#");
    // The retained message is on shard 1 too: b's SUBSCRIBE finds it there.
    sim.subscribe(b, "r/#", QoS::AtMostOnce);
    let got = sim.take_publishes(b);
    assert_eq!(payloads(&got, "r/x"), ["kept"]);
    assert!(got[0].retain);
    // Unsubscribed: shard 0 is told, and its messages stop.
    sim.unsubscribe(b, "t/#");
    sim.publish(a, "t/x", b"after", QoS::AtLeastOnce, false);
    assert!(sim.take_publishes(b).is_empty());
}

#[test]
fn a_will_crosses_shards() {
    let mut sim = two_shards(Config::default());
    let b = sim.connect(ClientOptions::new("b"));
    sim.subscribe(b, "wills/#", QoS::AtMostOnce);
    let will = culex_core::codec::LastWill {
        topic: culex_core::TopicName::new("wills/a").expect("a topic"),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
    };
    let a = sim.connect(ClientOptions::new("a").will(will));
    sim.drop_connection(a);
    assert_eq!(payloads(&sim.take_publishes(b), "wills/a"), ["gone"]);
}

/// Shard 0 publishes `$SYS` for every shard, from the figures the others
/// send it at each `sys_interval` (at most one interval old); the other
/// shards publish none of their own, and hold shard 0's as retained.
#[test]
fn shard_0_publishes_the_figures_of_all_shards() {
    let config = Config { sys_interval: Duration::from_secs(10), ..Config::default() };
    let mut sim = two_shards(config);
    let b = sim.connect(ClientOptions::new("b"));
    sim.subscribe(b, "$SYS/broker/clients/#", QoS::AtMostOnce);
    let a = sim.connect(ClientOptions::new("a"));
    let c = sim.connect(ClientOptions::new("c"));
    sim.subscribe(c, "$SYS/broker/clients/connected", QoS::AtMostOnce);
    sim.advance(Duration::from_secs(25));
    let at_b = sim.take_publishes(b);
    assert_eq!(payloads(&at_b, "$SYS/broker/clients/connected").last().map(String::as_str), Some("3"));
    assert_eq!(payloads(&at_b, "$SYS/broker/clients/total").last().map(String::as_str), Some("3"));
    assert_eq!(payloads(&at_b, "$SYS/broker/clients/maximum").last().map(String::as_str), Some("3"));
    // One publisher of figures: each update reaches b once.
    let connected = payloads(&at_b, "$SYS/broker/clients/connected");
    assert!(connected.len() <= 3, "{connected:?}");
    assert_eq!(payloads(&sim.take_publishes(c), "$SYS/broker/clients/connected").last().map(String::as_str), Some("3"));
    sim.disconnect(a);
    sim.advance(Duration::from_secs(20));
    assert_eq!(payloads(&sim.take_publishes(b), "$SYS/broker/clients/connected").last().map(String::as_str), Some("2"));
    // A late subscriber on shard 1 finds the retained figure there.
    let b2 = sim.connect(ClientOptions::new("b").clean_session(true));
    sim.subscribe(b2, "$SYS/broker/clients/maximum", QoS::AtMostOnce);
    assert_eq!(payloads(&sim.take_publishes(b2), "$SYS/broker/clients/maximum"), ["3"]);
}
