//! Helpers shared by the codec tests.

use bytes::BytesMut;

use super::{DecodeError, Packet, decode, fixed_header};
use crate::error::Violation;
use crate::types::Protocol;

/// The bytes spelled by `s`: hex pairs, whitespace ignored.
pub(crate) fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace())
        .map(|b| match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => panic!("not a hex digit: {:?}", char::from(b)),
        })
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits in {s:?}");
    digits.chunks(2).map(|pair| pair[0] << 4 | pair[1]).collect()
}

/// Decodes all of `bytes` by the rules of `protocol`, with no size cap.
pub(crate) fn decode_all(bytes: &[u8], protocol: Protocol) -> (Result<Option<Packet>, DecodeError>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let result = decode(&mut buf, usize::MAX, protocol);
    (result, buf)
}

/// `hex` decodes to exactly `packet` (under 3.1 and 3.1.1 alike), and
/// `packet` encodes to `hex`.
#[track_caller]
pub(crate) fn assert_golden(hex_frame: &str, packet: &Packet) {
    let bytes = hex(hex_frame);
    for protocol in [Protocol::V311, Protocol::V31] {
        assert_decodes(protocol, hex_frame, packet);
    }
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    assert_eq!(out.as_ref(), bytes.as_slice(), "encoding {packet:?}");
    assert_eq!(packet.encoded_len(), bytes.len(), "encoded_len of {packet:?}");
}

/// `hex`, one whole frame, decodes to exactly `packet` under `protocol`
/// (for frames whose flags only that protocol lets through, and which
/// therefore encode differently).
#[track_caller]
pub(crate) fn assert_decodes(protocol: Protocol, hex_frame: &str, packet: &Packet) {
    let (result, rest) = decode_all(&hex(hex_frame), protocol);
    assert_eq!(result, Ok(Some(packet.clone())), "decoding {hex_frame} as {protocol:?}");
    assert!(rest.is_empty(), "decoding {hex_frame} as {protocol:?} left {rest:?}");
}

/// `hex`, one whole frame, is refused with `violation` under 3.1.1.
#[track_caller]
pub(crate) fn assert_violation(hex_frame: &str, violation: Violation) {
    assert_refused(Protocol::V311, hex_frame, violation);
}

/// `hex`, one whole frame, is refused with `violation` under `protocol`.
#[track_caller]
pub(crate) fn assert_refused(protocol: Protocol, hex_frame: &str, violation: Violation) {
    let bytes = hex(hex_frame);
    // Guard against typos in the test itself: the frame must be whole,
    // so the violation is about its content, not a short read.
    if let Ok(Some(header)) = fixed_header::parse(&bytes, Protocol::V31) {
        assert_eq!(header.frame_len(), bytes.len(), "test frame {hex_frame} is not whole");
    }
    let (result, _) = decode_all(&bytes, protocol);
    assert_eq!(result, Err(DecodeError::Malformed(violation)), "decoding {hex_frame} as {protocol:?}");
}
