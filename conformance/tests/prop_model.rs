//! The core against the reference model: random operation sequences over
//! three clients, run through both; every observation of the core must be
//! the one the model gives (see `spec/MODEL.md`).

use culex_conformance::differential::{CLIENTS, Differential, Op, run, run_nodes, run_sharded};
use culex_conformance::model::{Choices, Overlap, Qos2Routing};
use culex_core::shard::home_shard;
use quickcheck::{Arbitrary, Gen, QuickCheck};

/// Sequences longer than this are cut: long enough for sessions to be
/// resumed, taken over and queued behind the window, short enough for
/// 2000 cases in seconds.
const MAX_OPS: usize = 40;

#[derive(Debug, Clone)]
struct AnyOp(Op);

fn small(g: &mut Gen, n: u8) -> u8 {
    u8::arbitrary(g) % n
}

impl Arbitrary for AnyOp {
    fn arbitrary(g: &mut Gen) -> Self {
        let client = small(g, 3);
        Self(match small(g, 12) {
            0 | 1 => Op::Connect {
                client,
                clean: bool::arbitrary(g),
                will: bool::arbitrary(g).then(|| (small(g, 4), small(g, 3), small(g, 3) == 0)),
                keep_alive: if small(g, 4) == 0 { 1 + small(g, 3) } else { 0 },
            },
            2 | 3 => Op::Subscribe { client, filter: small(g, 9), qos: small(g, 3) },
            4 => Op::Unsubscribe { client, filter: small(g, 9) },
            5..=7 => Op::Publish {
                client,
                topic: small(g, 4),
                qos: small(g, 3),
                retain: small(g, 3) == 0,
                empty: small(g, 6) == 0,
                release: small(g, 3) != 0,
                expires_in: (small(g, 4) == 0).then(|| small(g, 5)),
            },
            8 | 9 if small(g, 4) == 0 => Op::Release { client },
            8 | 9 => Op::Ack { client, all: bool::arbitrary(g) },
            10 => {
                if bool::arbitrary(g) {
                    Op::Disconnect { client }
                } else {
                    Op::Drop { client }
                }
            }
            _ => Op::Advance { secs: small(g, 4) },
        })
    }
}

fn property(ops: Vec<AnyOp>) -> Result<(), String> {
    let ops: Vec<Op> = ops.into_iter().take(MAX_OPS).map(|op| op.0).collect();
    run(&ops)
}

#[test]
fn the_core_observes_what_the_model_allows() {
    QuickCheck::new().quickcheck(property as fn(Vec<AnyOp>) -> Result<(), String>);
}

/// Without keepalives: connections of different shards due at the same
/// instant have no order between them, where the model closes them in the
/// order they were made (see `spec/MODEL.md`, "Shards").
fn without_keepalives(ops: Vec<AnyOp>) -> Vec<Op> {
    ops.into_iter()
        .take(MAX_OPS)
        .map(|op| match op.0 {
            Op::Connect { client, clean, will, .. } => Op::Connect { client, clean, will, keep_alive: 0 },
            op => op,
        })
        .collect()
}

fn property_sharded(ops: Vec<AnyOp>, three: bool) -> Result<(), String> {
    run_sharded(&without_keepalives(ops), if three { 3 } else { 2 })
}

fn property_nodes(ops: Vec<AnyOp>, three: bool) -> Result<(), String> {
    run_nodes(&without_keepalives(ops), if three { 3 } else { 2 })
}

/// Two or three cluster nodes act as one broker: connections go to the
/// nodes in turn, so a client connecting again lands on another node and
/// takes its session there (claims, sessions handed over), and what the
/// nodes tell each other goes through the links' bytes and ledgers.
#[test]
fn nodes_observe_what_the_model_allows() {
    QuickCheck::new().quickcheck(property_nodes as fn(Vec<AnyOp>, bool) -> Result<(), String>);
}

/// Two or three shards act as one broker: the clients' home shards differ
/// (`a` and `c` share one of two, `b` has the other), so subscriptions,
/// messages, retained messages and wills cross between them.
#[test]
fn shards_observe_what_the_model_allows() {
    let homes = |n| CLIENTS.map(|c| home_shard(c, n));
    assert!(homes(2).iter().any(|&h| h != homes(2)[0]), "{:?}", homes(2));
    assert!(homes(3).iter().any(|&h| h != homes(3)[0]), "{:?}", homes(3));
    QuickCheck::new().quickcheck(property_sharded as fn(Vec<AnyOp>, bool) -> Result<(), String>);
}

// ---- regressions: sequences the property found, kept as examples -------

/// A QoS 2 copy released (PUBREC sent) and a QoS 1 copy not acknowledged
/// when the connection drops: on reconnect the session resends PUBREL and
/// the PUBLISH with DUP 1 in their order, keeps the third copy queued
/// behind the full window, and the client's PUBREL refers to the copy it
/// got on its earlier connection ([MQTT-4.4.0-1], [MQTT-4.6.0-1]). The
/// will, retained, reaches the client's own stored session.
#[test]
fn a_resumed_session_resends_pubrel_and_publish_in_order_then_the_queue() {
    let ops = [
        Op::Connect { client: 0, clean: false, will: Some((0, 1, true)), keep_alive: 0 },
        Op::Subscribe { client: 0, filter: 4, qos: 2 },
        Op::Connect { client: 1, clean: true, will: None, keep_alive: 0 },
        Op::Publish { client: 1, topic: 0, qos: 2, retain: true, empty: false, release: true, expires_in: None },
        Op::Publish { client: 1, topic: 1, qos: 1, retain: false, empty: false, release: true, expires_in: None },
        Op::Publish { client: 1, topic: 1, qos: 1, retain: false, empty: false, release: true, expires_in: None },
        Op::Ack { client: 0, all: false },
        Op::Drop { client: 0 },
        Op::Connect { client: 0, clean: false, will: None, keep_alive: 0 },
        Op::Ack { client: 0, all: true },
        Op::Ack { client: 0, all: true },
        Op::Connect { client: 1, clean: true, will: None, keep_alive: 0 },
    ];
    assert_eq!(run(&ops), Ok(()));
}

/// A retained QoS 1 message reaches a QoS 2 subscription at QoS 1
/// ([MQTT-3.8.4-6]), with RETAIN 1 ([MQTT-3.3.1-8]), and an empty retained
/// PUBLISH deletes it for the next subscriber ([MQTT-3.3.1-10]).
#[test]
fn a_retained_copy_goes_at_the_lower_qos_until_deleted() {
    let ops = [
        Op::Connect { client: 1, clean: true, will: None, keep_alive: 0 },
        Op::Connect { client: 2, clean: true, will: Some((0, 0, false)), keep_alive: 0 },
        Op::Publish { client: 1, topic: 0, qos: 1, retain: true, empty: false, release: true, expires_in: None },
        Op::Subscribe { client: 2, filter: 4, qos: 2 },
        Op::Publish { client: 1, topic: 0, qos: 0, retain: true, empty: true, release: true, expires_in: None },
        Op::Subscribe { client: 2, filter: 0, qos: 2 },
        Op::Drop { client: 2 },
    ];
    assert_eq!(run(&ops), Ok(()));
}

/// A QoS 2 message not released when its clean session is taken over by a
/// connection keeping a session: the new session does not hold it
/// ([MQTT-3.1.2-6]), so its PUBREL gets PUBCOMP and routes nothing, even
/// while a message with the same topic and (empty) payload waits under
/// another id ([MQTT-4.3.3-2]).
#[test]
fn a_pubrel_for_a_message_of_a_discarded_session_routes_nothing() {
    let ops = [
        Op::Connect { client: 0, clean: true, will: None, keep_alive: 0 },
        Op::Connect { client: 1, clean: true, will: None, keep_alive: 0 },
        Op::Publish { client: 1, topic: 1, qos: 2, retain: true, empty: false, release: false, expires_in: None },
        Op::Subscribe { client: 0, filter: 5, qos: 1 },
        Op::Publish { client: 1, topic: 1, qos: 2, retain: false, empty: true, release: true, expires_in: None },
        Op::Connect { client: 1, clean: false, will: Some((2, 1, true)), keep_alive: 0 },
        Op::Publish { client: 1, topic: 1, qos: 2, retain: true, empty: true, release: true, expires_in: None },
        Op::Release { client: 1 },
    ];
    assert_eq!(run(&ops), Ok(()));
}

/// Time passing: a publisher with keepalive 2 stays silent past 3 s and is
/// closed by the broker, its will reaching the stored session of a
/// subscriber that is away ([MQTT-3.1.2-24], [MQTT-3.1.2-8]); the message it
/// published to expire in 2 s is gone by then, in flight or queued, and the
/// one without expiry and the will are what the subscriber gets back.
#[test]
fn a_silent_client_times_out_and_expired_copies_are_not_resent() {
    let ops = [
        Op::Connect { client: 0, clean: false, will: None, keep_alive: 0 },
        Op::Subscribe { client: 0, filter: 4, qos: 1 },
        Op::Connect { client: 1, clean: true, will: Some((1, 1, false)), keep_alive: 2 },
        Op::Publish { client: 1, topic: 0, qos: 1, retain: false, empty: false, release: true, expires_in: Some(2) },
        Op::Publish { client: 1, topic: 0, qos: 1, retain: false, empty: false, release: true, expires_in: Some(2) },
        Op::Publish { client: 1, topic: 0, qos: 1, retain: true, empty: false, release: true, expires_in: Some(2) },
        Op::Publish { client: 1, topic: 2, qos: 1, retain: false, empty: false, release: true, expires_in: None },
        Op::Drop { client: 0 },
        Op::Advance { secs: 2 },
        Op::Advance { secs: 1 },
        Op::Connect { client: 0, clean: false, will: None, keep_alive: 0 },
        Op::Ack { client: 0, all: true },
        Op::Subscribe { client: 2, filter: 0, qos: 1 },
        Op::Connect { client: 2, clean: true, will: None, keep_alive: 0 },
        Op::Subscribe { client: 2, filter: 0, qos: 1 },
    ];
    assert_eq!(run(&ops), Ok(()));
    let mut diff = Differential::new();
    for op in &ops[..10] {
        assert_eq!(diff.step(op), Ok(()));
    }
    assert!(
        diff.transcript().contains("keepalive expired"),
        "the keepalive closed a connection:\n{}",
        diff.transcript()
    );
}

/// The comparison tells the brokers the standard allows apart: the core
/// is not one giving a copy per overlapping subscription, nor one routing
/// QoS 2 on PUBLISH ([MQTT-3.3.5-1], [MQTT-4.3.3-2]).
#[test]
fn the_core_is_not_the_broker_of_the_other_choices() {
    let disagrees = |choices: Choices, ops: &[Op]| {
        let mut diff = Differential::with_choices(choices);
        ops.iter().map(|op| diff.step(op)).any(|r| r.is_err())
    };
    let overlapping = [
        Op::Connect { client: 0, clean: true, will: None, keep_alive: 0 },
        Op::Subscribe { client: 0, filter: 0, qos: 0 },
        Op::Subscribe { client: 0, filter: 4, qos: 1 },
        Op::Publish { client: 0, topic: 0, qos: 1, retain: false, empty: false, release: true, expires_in: None },
    ];
    let per_subscription = Choices { overlap: Overlap::PerSubscription, ..Choices::CULEX };
    assert!(disagrees(per_subscription, &overlapping));
    let unreleased = [
        Op::Connect { client: 0, clean: true, will: None, keep_alive: 0 },
        Op::Subscribe { client: 0, filter: 4, qos: 2 },
        Op::Publish { client: 0, topic: 0, qos: 2, retain: false, empty: false, release: false, expires_in: None },
    ];
    let on_publish = Choices { qos2_routing: Qos2Routing::OnPublish, ..Choices::CULEX };
    assert!(disagrees(on_publish, &unreleased));
    assert!(!disagrees(Choices::CULEX, &overlapping) && !disagrees(Choices::CULEX, &unreleased));
}
