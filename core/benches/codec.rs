//! Codec throughput on the packet a broker handles most: PUBLISH, with a
//! 64-byte and a 1 KiB payload, at QoS 0 and QoS 1.
//!
//! Decoding runs over a buffer of [`FRAMES`] back-to-back packets, as a
//! socket read delivers them, so the one-off cost of sharing the buffer is
//! spread as it is in the broker; encoding appends to a reused buffer, as
//! the fan-out does.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use culex_core::codec::{Packet, decode, encode_publish};
use culex_core::topic::TopicName;
use culex_core::{PacketId, Protocol, QoS};

/// Packets per decoded buffer.
const FRAMES: usize = 100;
/// Cap passed to the decoder: well above every benchmarked packet.
const CAP: usize = 1 << 20;

fn cases() -> Vec<(String, QoS, Vec<u8>)> {
    let mut cases = Vec::new();
    for size in [64, 1024] {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
            let label = if size == 64 { "64B" } else { "1KiB" };
            cases.push((format!("{label}/qos{}", qos.bits()), qos, vec![0x5A; size]));
        }
    }
    cases
}

fn packet_id(qos: QoS) -> Option<PacketId> {
    (qos != QoS::AtMostOnce).then(|| PacketId::new(42)).flatten()
}

fn bench_decode(c: &mut Criterion) {
    let topic = TopicName::new("sensors/building-1/floor-2/temperature").expect("valid topic");
    let mut group = c.benchmark_group("decode_publish");
    for (name, qos, payload) in cases() {
        let mut stream = BytesMut::new();
        for _ in 0..FRAMES {
            encode_publish(&mut stream, false, qos, false, &topic, packet_id(qos), &payload);
        }
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_function(&name, |b| {
            b.iter_batched(
                || stream.clone(),
                |mut buf| {
                    while let Ok(Some(packet)) = decode(&mut buf, CAP, Protocol::V311) {
                        black_box(packet);
                    }
                    buf
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let topic = TopicName::new("sensors/building-1/floor-2/temperature").expect("valid topic");
    let mut group = c.benchmark_group("encode_publish");
    for (name, qos, payload) in cases() {
        let mut out = BytesMut::with_capacity(4096);
        group.throughput(Throughput::Elements(1));
        group.bench_function(&name, |b| {
            b.iter(|| {
                out.clear();
                encode_publish(&mut out, false, qos, false, black_box(&topic), packet_id(qos), black_box(&payload));
                black_box(out.len())
            });
        });
    }
    group.finish();

    // The generic path, for comparison with the fast path above.
    let mut buf = BytesMut::new();
    encode_publish(&mut buf, false, QoS::AtLeastOnce, false, &topic, packet_id(QoS::AtLeastOnce), &[0x5A; 64]);
    let Ok(Some(packet @ Packet::Publish(_))) = decode(&mut buf, CAP, Protocol::V311) else {
        unreachable!("the bench input is a valid PUBLISH");
    };
    let mut out = BytesMut::with_capacity(4096);
    c.bench_function("encode_packet/64B/qos1", |b| {
        b.iter(|| {
            out.clear();
            black_box(&packet).encode(&mut out);
            black_box(out.len())
        });
    });
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
