//! Helpers shared by the codec tests.

use bytes::BytesMut;

use super::{DecodeError, Packet, decode, fixed_header};
use crate::error::Violation;

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
    assert!(digits.len() % 2 == 0, "odd number of hex digits in {s:?}");
    digits.chunks(2).map(|pair| pair[0] << 4 | pair[1]).collect()
}

/// Decodes all of `bytes` with no size cap.
pub(crate) fn decode_all(bytes: &[u8]) -> (Result<Option<Packet>, DecodeError>, BytesMut) {
    let mut buf = BytesMut::from(bytes);
    let result = decode(&mut buf, usize::MAX);
    (result, buf)
}

/// `hex` decodes to exactly `packet`, and `packet` encodes to `hex`.
#[track_caller]
pub(crate) fn assert_golden(hex_frame: &str, packet: &Packet) {
    let bytes = hex(hex_frame);
    let (result, rest) = decode_all(&bytes);
    assert_eq!(result, Ok(Some(packet.clone())), "decoding {hex_frame}");
    assert!(rest.is_empty(), "decoding {hex_frame} left {rest:?}");
    let mut out = BytesMut::new();
    packet.encode(&mut out);
    assert_eq!(out.as_ref(), bytes.as_slice(), "encoding {packet:?}");
    assert_eq!(packet.encoded_len(), bytes.len(), "encoded_len of {packet:?}");
}

/// `hex`, one whole frame, is refused with `violation`.
#[track_caller]
pub(crate) fn assert_violation(hex_frame: &str, violation: Violation) {
    let bytes = hex(hex_frame);
    // Guard against typos in the test itself: the frame must be whole,
    // so the violation is about its content, not a short read.
    if let Ok(Some(header)) = fixed_header::parse(&bytes) {
        assert_eq!(header.frame_len(), bytes.len(), "test frame {hex_frame} is not whole");
    }
    let (result, _) = decode_all(&bytes);
    assert_eq!(result, Err(DecodeError::Malformed(violation)), "decoding {hex_frame}");
}
