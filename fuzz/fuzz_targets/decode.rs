//! Feeds arbitrary bytes to the decoder in chunks, as a socket would, by
//! the rules of MQTT 3.1 or 3.1.1, and checks that every packet it accepts
//! re-encodes to bytes that decode to the same packet, within the cap.
#![no_main]

use bytes::BytesMut;
use culex_core::Protocol;
use culex_core::codec::{Packet, decode};
use libfuzzer_sys::fuzz_target;

/// A small cap, so that the size check is exercised too.
const CAP: usize = 4096;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the protocol (top bit) and the chunk size; the
    // rest is the stream.
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let protocol = if first & 0x80 == 0 { Protocol::V311 } else { Protocol::V31 };
    let chunk = usize::from(first & 0x7F).max(1);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.clone();
            match decode(&mut buf, CAP, protocol) {
                Ok(Some(packet)) => check_round_trip(&packet, protocol),
                Ok(None) => {
                    assert_eq!(buf, before, "a short frame must leave the buffer alone");
                    break;
                }
                // The connection would be closed: nothing more to read.
                Err(_) => return,
            }
        }
    }
});

fn check_round_trip(packet: &Packet, protocol: Protocol) {
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    assert_eq!(out.len(), packet.encoded_len(), "encoded_len of {packet:?}");
    assert!(out.len() <= CAP, "{packet:?} re-encodes above the cap");
    let len = out.len();
    let again = decode(&mut out, CAP, protocol);
    assert_eq!(again, Ok(Some(packet.clone())), "round trip of {packet:?}");
    assert!(out.is_empty(), "{len} encoded bytes not all consumed");
}
