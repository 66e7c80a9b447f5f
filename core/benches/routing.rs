//! Routing one QoS 0 PUBLISH through the whole broker: decode, match,
//! encode per subscriber, and drain the actions, to 1 and to 1,000
//! subscribers of the same topic.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use culex_core::codec::{Packet, Publish, Subscribe};
use culex_core::sim::ClientOptions;
use culex_core::{Broker, Config, ConnId, Input, Instant, Now, PacketId, Peer, QoS, TopicFilter, TopicName, UnixTime};

fn encode(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    out.to_vec()
}

fn drain(broker: &mut Broker) -> usize {
    let mut n = 0;
    while let Some(action) = broker.poll_action() {
        black_box(&action);
        n += 1;
    }
    n
}

/// A broker with `subscribers` clients on `bench/topic` and one publisher.
fn setup(subscribers: usize) -> (Broker, ConnId, Now) {
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(1_767_225_600.0));
    let mut broker = Broker::new(Config::default());
    let subscribe = encode(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::MIN,
        filters: vec![(TopicFilter::new("bench/+").expect("valid filter"), QoS::AtMostOnce)],
    }));
    for n in 0..subscribers {
        let conn = broker.accept(now, Peer::default());
        let mut bytes = encode(&ClientOptions::new(&format!("sub-{n}")).connect_packet());
        bytes.extend_from_slice(&subscribe);
        broker.handle_input(now, Input::Received { conn, data: &bytes });
        drain(&mut broker);
    }
    let publisher = broker.accept(now, Peer::default());
    let connect = encode(&ClientOptions::new("publisher").connect_packet());
    broker.handle_input(now, Input::Received { conn: publisher, data: &connect });
    drain(&mut broker);
    (broker, publisher, now)
}

fn bench_route(c: &mut Criterion) {
    let publish = encode(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("bench/topic").expect("valid topic"),
        packet_id: None,
        payload: vec![0x5A; 64].into(),
    }));
    let mut group = c.benchmark_group("route_qos0_64B");
    for subscribers in [1, 1000] {
        let (mut broker, publisher, now) = setup(subscribers);
        group.throughput(Throughput::Elements(subscribers as u64));
        group.bench_function(format!("to_{subscribers}"), |b| {
            b.iter(|| {
                broker.handle_input(now, Input::Received { conn: publisher, data: black_box(&publish) });
                drain(&mut broker)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_route);
criterion_main!(benches);
