//! The fixed header (section 2.2): the first byte, checked against the
//! flags table of the connection's protocol, and the variable-length
//! remaining length.

use bytes::{BufMut, BytesMut};

use super::{DecodeError, MAX_REMAINING_LENGTH};
use crate::error::Violation;
use crate::types::{Protocol, QoS};

/// First bytes the encoders write (type in the high nibble, flags low).
pub(crate) const CONNECT: u8 = 0x10;
pub(crate) const CONNACK: u8 = 0x20;
pub(crate) const PUBLISH: u8 = 0x30;
pub(crate) const PUBACK: u8 = 0x40;
pub(crate) const PUBREC: u8 = 0x50;
pub(crate) const PUBREL: u8 = 0x62;
pub(crate) const PUBCOMP: u8 = 0x70;
pub(crate) const SUBSCRIBE: u8 = 0x82;
pub(crate) const SUBACK: u8 = 0x90;
pub(crate) const UNSUBSCRIBE: u8 = 0xA2;
pub(crate) const UNSUBACK: u8 = 0xB0;
pub(crate) const PINGREQ: u8 = 0xC0;
pub(crate) const PINGRESP: u8 = 0xD0;
pub(crate) const DISCONNECT: u8 = 0xE0;

/// The packet type named by a first byte whose flags passed the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// CONNECT names its own protocol, so its flags are judged with the
    /// body (see `connect::decode`).
    Connect {
        flags: u8,
    },
    ConnAck,
    /// PUBLISH is the one type whose flags carry data.
    Publish {
        dup: bool,
        qos: QoS,
        retain: bool,
    },
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    PingReq,
    PingResp,
    Disconnect,
}

/// Checks the first byte against the flags table of `protocol` (see the
/// module documentation of [`codec`](super)). Types 0 and 15 are reserved
/// and a PUBLISH QoS of 3 is malformed under both. Under 3.1.1 a QoS 0
/// PUBLISH must not carry DUP and every other type has exactly one legal
/// flags value ([MQTT-2.2.2-1], [MQTT-2.2.2-2]); under 3.1 those bits
/// carry nothing and are ignored. CONNECT is left to its body.
pub(crate) fn parse_first_byte(byte: u8, protocol: Protocol) -> Result<Kind, Violation> {
    let flags = byte & 0x0F;
    // `expect` is the one legal 3.1.1 flags value, `err` the violation
    // otherwise. The legal value is tested first: the common case never
    // looks at the protocol.
    let fixed = |kind, expect, err| {
        if flags == expect || protocol == Protocol::V31 { Ok(kind) } else { Err(err) }
    };
    match byte >> 4 {
        1 => Ok(Kind::Connect { flags }),
        2 => fixed(Kind::ConnAck, 0b0000, Violation::ReservedFlags),
        3 => publish_kind(flags, protocol),
        4 => fixed(Kind::PubAck, 0b0000, Violation::ReservedFlags),
        5 => fixed(Kind::PubRec, 0b0000, Violation::ReservedFlags),
        6 => fixed(Kind::PubRel, 0b0010, Violation::PubRelFlags),
        7 => fixed(Kind::PubComp, 0b0000, Violation::ReservedFlags),
        8 => fixed(Kind::Subscribe, 0b0010, Violation::SubscribeFlags),
        9 => fixed(Kind::SubAck, 0b0000, Violation::ReservedFlags),
        10 => fixed(Kind::Unsubscribe, 0b0010, Violation::UnsubscribeFlags),
        11 => fixed(Kind::UnsubAck, 0b0000, Violation::ReservedFlags),
        12 => fixed(Kind::PingReq, 0b0000, Violation::ReservedFlags),
        13 => fixed(Kind::PingResp, 0b0000, Violation::ReservedFlags),
        14 => fixed(Kind::Disconnect, 0b0000, Violation::DisconnectFlags),
        // 0 and 15.
        _ => Err(Violation::ReservedPacketType),
    }
}

/// The PUBLISH flags: QoS 3 is malformed; DUP on QoS 0 is malformed under
/// 3.1.1 ([MQTT-3.3.1-2]) and dropped under 3.1, which gives DUP a
/// meaning only above QoS 0.
fn publish_kind(flags: u8, protocol: Protocol) -> Result<Kind, Violation> {
    let qos = QoS::from_bits((flags >> 1) & 0b11).ok_or(Violation::PublishQos)?;
    let mut dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        if protocol == Protocol::V311 {
            return Err(Violation::DupOnQos0);
        }
        dup = false;
    }
    Ok(Kind::Publish { dup, qos, retain: flags & 0b0001 != 0 })
}

/// A complete, checked fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FixedHeader {
    /// Type and (for PUBLISH) flags.
    pub(crate) kind: Kind,
    /// Bytes of the fixed header itself: 2 to 5.
    pub(crate) header_len: usize,
    /// The remaining length it declares.
    pub(crate) remaining_len: usize,
}

impl FixedHeader {
    /// Length of the whole frame; cannot overflow (at most 5 + 268,435,455).
    pub(crate) fn frame_len(&self) -> usize {
        self.header_len + self.remaining_len
    }
}

/// Parses the fixed header at the front of `buf`, with the flags table of
/// `protocol`, or `Ok(None)` if it has not fully arrived. The remaining
/// length takes at most four bytes; a fourth byte with the continuation
/// bit fails at once, without waiting for a fifth. Non-minimal encodings
/// (`80 00`) are accepted: the standard does not forbid them.
pub(crate) fn parse(buf: &[u8], protocol: Protocol) -> Result<Option<FixedHeader>, Violation> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let kind = parse_first_byte(first, protocol)?;
    let mut remaining_len = 0;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        remaining_len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some(FixedHeader { kind, header_len: 2 + i, remaining_len }));
        }
    }
    Err(Violation::RemainingLength)
}

/// The frame check: the fixed header at the front of `buf` if the whole
/// frame has arrived, `Ok(None)` if more bytes are needed. The size cap is
/// applied as soon as the header is complete, so an oversized packet is
/// refused before its body is buffered.
pub(crate) fn check_frame(
    buf: &[u8],
    max_packet_size: usize,
    protocol: Protocol,
) -> Result<Option<FixedHeader>, DecodeError> {
    let Some(header) = parse(buf, protocol)? else {
        return Ok(None);
    };
    let len = header.frame_len();
    if len > max_packet_size {
        return Err(DecodeError::TooLarge { len, max: max_packet_size });
    }
    Ok((buf.len() >= len).then_some(header))
}

/// Bytes the minimal encoding of remaining length `len` takes.
pub(crate) fn remaining_length_len(len: usize) -> usize {
    match len {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Bytes of a whole packet whose remaining length is `len`.
pub(crate) fn packet_len(len: usize) -> usize {
    1 + remaining_length_len(len) + len
}

/// Writes the first byte and the minimal remaining length, reserving room
/// for the whole packet. `len` must not exceed [`MAX_REMAINING_LENGTH`]:
/// our packet types only exceed it with payloads over 256 MiB, which the
/// caller must not pass.
pub(crate) fn put_header(out: &mut BytesMut, first: u8, len: usize) {
    debug_assert!(len <= MAX_REMAINING_LENGTH, "remaining length {len} too large");
    out.reserve(packet_len(len));
    out.put_u8(first);
    let mut rest = len;
    loop {
        // Truncation is the point: the low seven bits of what is left.
        let byte = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            out.put_u8(byte);
            break;
        }
        out.put_u8(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::testutil::assert_violation;

    #[test]
    fn remaining_length_boundaries_round_trip_minimally() {
        for (len, bytes) in [
            (0, &[0x00][..]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (MAX_REMAINING_LENGTH, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ] {
            let mut out = BytesMut::new();
            put_header(&mut out, PUBLISH, len);
            assert_eq!(&out[1..], bytes, "encoding {len}");
            assert_eq!(remaining_length_len(len), bytes.len());
            let header = parse(&out, Protocol::V311).unwrap().unwrap();
            assert_eq!(header.remaining_len, len);
            assert_eq!(header.header_len, 1 + bytes.len());
        }
    }

    #[test]
    fn remaining_length_non_minimal_encoding_is_accepted() {
        let header = parse(&[0xC0, 0x80, 0x00], Protocol::V311).unwrap().unwrap();
        assert_eq!(header.remaining_len, 0);
        assert_eq!(header.header_len, 3);
    }

    #[test]
    fn remaining_length_with_fifth_byte_is_malformed_before_it_arrives() {
        assert_eq!(parse(&[0x30, 0xFF, 0xFF, 0xFF], Protocol::V311), Ok(None));
        assert_eq!(parse(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF], Protocol::V311), Err(Violation::RemainingLength));
        assert_violation("30 80 80 80 80 01", Violation::RemainingLength);
    }

    #[test]
    fn packet_type_0_is_malformed() {
        assert_violation("00 00", Violation::ReservedPacketType);
    }

    #[test]
    fn packet_type_15_is_malformed() {
        assert_violation("F0 00", Violation::ReservedPacketType);
    }

    /// The first bytes `protocol` lets through to the body.
    fn legal_first_bytes(protocol: Protocol) -> Vec<u8> {
        (0..=255u8).filter(|&b| parse_first_byte(b, protocol).is_ok()).collect()
    }

    #[test]
    fn mqtt311_first_byte_table_accepts_exactly_the_legal_bytes() {
        let mut expected = vec![
            PUBACK,
            CONNACK,
            PUBREC,
            PUBREL,
            PUBCOMP,
            SUBSCRIBE,
            SUBACK,
            UNSUBSCRIBE,
            UNSUBACK,
            PINGREQ,
            PINGRESP,
            DISCONNECT,
        ];
        // CONNECT: any flags here; its body judges them once it names
        // the protocol (see `connect.rs`).
        expected.extend(0x10..=0x1F);
        // PUBLISH: retain free, QoS 0 without DUP, QoS 1 and 2 with or without.
        expected.extend([0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x3A, 0x3B, 0x3C, 0x3D]);
        expected.sort_unstable();
        assert_eq!(legal_first_bytes(Protocol::V311), expected);
    }

    #[test]
    fn mqtt31_first_byte_table_refuses_only_reserved_types_and_qos_3() {
        let refused: Vec<u8> = (0..=255u8).filter(|b| !legal_first_bytes(Protocol::V31).contains(b)).collect();
        let mut expected: Vec<u8> = (0x00..=0x0F).chain(0xF0..=0xFF).collect();
        // PUBLISH with both QoS bits set, whatever DUP and RETAIN say.
        expected.extend([0x36, 0x37, 0x3E, 0x3F]);
        expected.sort_unstable();
        assert_eq!(refused, expected);
    }

    #[test]
    fn mqtt31_accepts_every_first_byte_mqtt311_accepts() {
        let v31 = legal_first_bytes(Protocol::V31);
        assert!(legal_first_bytes(Protocol::V311).iter().all(|b| v31.contains(b)));
    }

    #[test]
    fn puback_with_flags_0010_is_malformed() {
        assert_violation("42 02 00 01", Violation::ReservedFlags);
    }

    #[test]
    fn pubrel_with_flags_0000_is_malformed() {
        assert_violation("60 02 00 01", Violation::PubRelFlags);
    }

    #[test]
    fn subscribe_with_flags_0000_is_malformed() {
        assert_violation("80 06 00 01 00 01 61 00", Violation::SubscribeFlags);
    }

    #[test]
    fn unsubscribe_with_flags_0011_is_malformed() {
        assert_violation("A3 05 00 01 00 01 61", Violation::UnsubscribeFlags);
    }

    #[test]
    fn disconnect_with_flags_1000_is_malformed() {
        assert_violation("E8 00", Violation::DisconnectFlags);
    }

    #[test]
    fn pingreq_with_flags_0001_is_malformed() {
        assert_violation("C1 00", Violation::ReservedFlags);
    }

    #[test]
    fn publish_with_qos_3_is_malformed() {
        assert_violation("36 05 00 01 61 00 01", Violation::PublishQos);
    }

    #[test]
    fn publish_qos0_with_dup_is_malformed() {
        assert_violation("38 03 00 01 61", Violation::DupOnQos0);
    }

    #[test]
    fn first_byte_is_checked_before_the_length_arrives() {
        assert_eq!(parse(&[0x60], Protocol::V311), Err(Violation::PubRelFlags));
    }

    #[test]
    fn mqtt31_pubrel_with_dup_decodes_as_pubrel() {
        // A 3.1 client resending its PUBREL sets DUP (1010).
        assert_eq!(parse_first_byte(0x6A, Protocol::V31), Ok(Kind::PubRel));
        assert_eq!(parse_first_byte(0x6A, Protocol::V311), Err(Violation::PubRelFlags));
    }

    #[test]
    fn mqtt31_subscribe_and_unsubscribe_with_dup_decode() {
        assert_eq!(parse_first_byte(0x8A, Protocol::V31), Ok(Kind::Subscribe));
        assert_eq!(parse_first_byte(0x8A, Protocol::V311), Err(Violation::SubscribeFlags));
        assert_eq!(parse_first_byte(0xAA, Protocol::V31), Ok(Kind::Unsubscribe));
        assert_eq!(parse_first_byte(0xAA, Protocol::V311), Err(Violation::UnsubscribeFlags));
    }

    #[test]
    fn mqtt31_publish_qos0_with_dup_drops_the_dup() {
        let kind = Kind::Publish { dup: false, qos: QoS::AtMostOnce, retain: true };
        assert_eq!(parse_first_byte(0x39, Protocol::V31), Ok(kind));
        assert_eq!(parse_first_byte(0x39, Protocol::V311), Err(Violation::DupOnQos0));
    }

    #[test]
    fn mqtt31_publish_with_qos_3_is_malformed() {
        assert_eq!(parse_first_byte(0x36, Protocol::V31), Err(Violation::PublishQos));
    }

    #[test]
    fn reserved_types_are_malformed_under_both_protocols() {
        for protocol in [Protocol::V31, Protocol::V311] {
            assert_eq!(parse_first_byte(0x02, protocol), Err(Violation::ReservedPacketType));
            assert_eq!(parse_first_byte(0xF2, protocol), Err(Violation::ReservedPacketType));
        }
    }
}
