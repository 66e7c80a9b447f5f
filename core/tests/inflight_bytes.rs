//! `max_inflight_bytes`: outgoing QoS 1 and 2 messages go in flight while
//! fewer payload bytes than the limit are; one larger than it still goes
//! alone. Nothing is lost or reordered: what waits goes out as
//! acknowledgements come.

use std::time::Duration;

use bytes::Bytes;
use culex_core::codec::{Packet, Publish};
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Config, ConnId, PacketId, QoS};
use quickcheck::{Arbitrary, Gen, QuickCheck};

fn broker(max_inflight_bytes: usize, max_inflight_messages: u16) -> Simulation {
    Simulation::new(Config {
        max_inflight_bytes,
        max_inflight_messages,
        max_queued_messages: 0,
        sys_interval: Duration::ZERO,
        connection_messages: false,
        ..Config::default()
    })
}

/// A subscriber to `t` that acknowledges only when told to.
fn subscriber(sim: &mut Simulation, qos: QoS) -> ConnId {
    let sub = sim.connect(ClientOptions::new("sub").auto_ack(false));
    sim.subscribe(sub, "t", qos);
    let _ = sim.take_received(sub);
    sub
}

fn published(sim: &mut Simulation, conn: ConnId) -> Vec<Publish> {
    sim.take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .collect()
}

fn sizes(publishes: &[Publish]) -> Vec<usize> {
    publishes.iter().map(|p| p.payload.len()).collect()
}

fn id(publish: &Publish) -> PacketId {
    publish.packet_id.unwrap_or_else(|| panic!("QoS 1 and 2 carry a packet id"))
}

#[test]
fn messages_go_in_flight_while_fewer_bytes_than_the_limit_are() {
    let mut sim = broker(100, 20);
    let sub = subscriber(&mut sim, QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    for _ in 0..3 {
        sim.publish(publ, "t", &[b'x'; 60], QoS::AtLeastOnce, false);
    }
    // 0 < 100 and 60 < 100: two go; 120 bytes in flight hold the third.
    let first = published(&mut sim, sub);
    assert_eq!(sizes(&first), [60, 60]);
    sim.send(sub, &Packet::PubAck(id(&first[0])));
    assert_eq!(sizes(&published(&mut sim, sub)), [60]);
}

#[test]
fn a_message_larger_than_the_limit_goes_alone() {
    let mut sim = broker(100, 20);
    let sub = subscriber(&mut sim, QoS::ExactlyOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    sim.publish(publ, "t", &[b'x'; 150], QoS::ExactlyOnce, false);
    sim.publish(publ, "t", &[b'y'; 10], QoS::ExactlyOnce, false);
    let big = published(&mut sim, sub);
    assert_eq!(sizes(&big), [150]);
    // Still in flight until PUBCOMP, as a QoS 2 message counts for the window.
    sim.send(sub, &Packet::PubRec(id(&big[0])));
    assert!(published(&mut sim, sub).is_empty());
    sim.send(sub, &Packet::PubComp(id(&big[0])));
    assert_eq!(sizes(&published(&mut sim, sub)), [10]);
}

#[test]
fn without_a_limit_only_the_count_holds_messages() {
    let mut sim = broker(0, 2);
    let sub = subscriber(&mut sim, QoS::AtLeastOnce);
    let publ = sim.connect(ClientOptions::new("pub"));
    for _ in 0..3 {
        sim.publish(publ, "t", &[b'x'; 1000], QoS::AtLeastOnce, false);
    }
    assert_eq!(sizes(&published(&mut sim, sub)), [1000, 1000]);
}

/// A run: payload sizes, the limit, and the order acknowledgements come in.
#[derive(Debug, Clone)]
struct Run {
    sizes: Vec<u16>,
    limit: u16,
    window: u8,
    ack_picks: Vec<u8>,
}

impl Arbitrary for Run {
    fn arbitrary(g: &mut Gen) -> Self {
        let count = usize::arbitrary(g) % 30 + 1;
        Self {
            sizes: (0..count).map(|_| u16::arbitrary(g) % 300 + 1).collect(),
            limit: u16::arbitrary(g) % 500 + 1,
            window: u8::arbitrary(g) % 5,
            ack_picks: (0..count).map(|_| u8::arbitrary(g)).collect(),
        }
    }
}

/// Whatever the sizes and the order of acknowledgements: before each
/// message went out fewer bytes than the limit (and fewer messages than
/// the window) were in flight, and every message arrives once, in order.
#[test]
fn the_limit_holds_and_nothing_is_lost_or_reordered() {
    fn prop(run: Run) -> bool {
        let mut sim = broker(usize::from(run.limit), u16::from(run.window));
        let sub = subscriber(&mut sim, QoS::AtLeastOnce);
        let publ = sim.connect(ClientOptions::new("pub"));
        for (n, size) in run.sizes.iter().enumerate() {
            // The first byte numbers the message.
            let mut payload = vec![b'.'; usize::from(*size)];
            payload[0] = n as u8;
            sim.publish(publ, "t", &payload, QoS::AtLeastOnce, false);
        }
        let mut in_flight: Vec<Publish> = Vec::new();
        let mut received: Vec<Bytes> = Vec::new();
        let mut picks = run.ack_picks.iter().cycle();
        for _ in 0..10 * run.sizes.len() {
            for publish in published(&mut sim, sub) {
                let bytes: usize = in_flight.iter().map(|p| p.payload.len()).sum();
                let window = if run.window == 0 { 65_535 } else { usize::from(run.window) };
                assert!(bytes < usize::from(run.limit), "{bytes} bytes in flight when another went out");
                assert!(in_flight.len() < window, "window of {window} full when another went out");
                received.push(publish.payload.clone());
                in_flight.push(publish);
            }
            if in_flight.is_empty() {
                break;
            }
            let at = usize::from(*picks.next().unwrap_or(&0)) % in_flight.len();
            let done = in_flight.remove(at);
            sim.send(sub, &Packet::PubAck(id(&done)));
        }
        let order: Vec<u8> = received.iter().map(|p| p[0]).collect();
        order == (0..run.sizes.len()).map(|n| n as u8).collect::<Vec<_>>()
    }
    QuickCheck::new().tests(300).quickcheck(prop as fn(Run) -> bool);
}
