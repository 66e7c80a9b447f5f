//! Plays a server to the sans-IO client with arbitrary bytes, in chunks,
//! between the client's own requests and clock ticks: the client never
//! panics, and once it reports a lost connection it reads nothing more
//! until it connects again.
#![no_main]

use std::time::Duration;

use bytes::Bytes;
use culex_core::client::{Client, ClientEvent, ClientOptions};
use culex_core::{Instant, QoS, TopicFilter, TopicName};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let options = ClientOptions {
        max_inflight: usize::from(first & 0x03),
        max_packet_size: 4096,
        bridge: first & 0x04 != 0,
        manual_ack: first & 0x10 != 0,
        pipeline: first & 0x20 != 0,
        ..ClientOptions::new("fuzz").keep_alive(u16::from(first >> 4)).clean_session(first & 0x08 == 0)
    };
    let mut client = Client::new(options);
    let mut now = Instant::ZERO;
    client.connect(now);
    let chunk = usize::from(first & 0x1F).max(1);
    let topic = TopicName::new("f/t").expect("a valid topic");
    let filter = TopicFilter::new("f/#").expect("a valid filter");
    for (n, piece) in stream.chunks(chunk).enumerate() {
        match n % 7 {
            1 => {
                let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][n % 3];
                client.publish(now, topic.clone(), Bytes::from_static(b"x"), qos, n % 2 == 0);
            }
            3 => {
                client.subscribe(now, vec![(filter.clone(), QoS::ExactlyOnce)]);
            }
            5 => {
                now = now + Duration::from_secs(u64::from(piece[0] % 20));
                client.timeout(now);
            }
            _ => {}
        }
        client.received(now, piece);
        while client.poll_transmit().is_some() {}
        let mut lost = false;
        while let Some(event) = client.poll_event() {
            lost |= matches!(event, ClientEvent::Lost(_) | ClientEvent::Refused(_));
        }
        if lost {
            assert!(!client.is_connected());
            client.connection_lost();
            client.connect(now);
        }
    }
});
