//! Tests of the codec as a whole: empty packets, framing, size cap and the
//! quickcheck properties.

use bytes::{Bytes, BytesMut};
use quickcheck::{Gen, QuickCheck, TestResult};

use super::arbitrary::ArbPacket;
use super::testutil::{assert_decodes, assert_golden, assert_refused, assert_violation, hex};
use super::*;

fn encode_all(packets: &[Packet]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for p in packets {
        p.encode(&mut out);
    }
    out.to_vec()
}

#[test]
fn empty_packets_golden() {
    assert_golden("C0 00", &Packet::PingReq);
    assert_golden("D0 00", &Packet::PingResp);
    assert_golden("E0 00", &Packet::Disconnect);
}

#[test]
fn pingreq_with_body_is_bad_length() {
    assert_violation("C0 01 00", Violation::BadLength);
}

#[test]
fn pingresp_with_body_is_bad_length() {
    assert_violation("D0 01 00", Violation::BadLength);
}

#[test]
fn disconnect_with_body_is_bad_length() {
    assert_violation("E0 02 00 00", Violation::BadLength);
}

#[test]
fn mqtt31_pubrel_subscribe_unsubscribe_with_dup_decode() {
    let id = PacketId::new(1).unwrap();
    let filter = TopicFilter::new("a").unwrap();
    for (frame, packet) in [
        ("6A 02 00 01", Packet::PubRel(id)),
        (
            "8A 06 00 01 00 01 61 01",
            Packet::Subscribe(Subscribe { packet_id: id, filters: vec![(filter.clone(), QoS::AtLeastOnce)] }),
        ),
        ("AA 05 00 01 00 01 61", Packet::Unsubscribe(Unsubscribe { packet_id: id, filters: vec![filter] })),
    ] {
        assert_decodes(Protocol::V31, frame, &packet);
    }
    assert_violation("6A 02 00 01", Violation::PubRelFlags);
    assert_violation("8A 06 00 01 00 01 61 01", Violation::SubscribeFlags);
    assert_violation("AA 05 00 01 00 01 61", Violation::UnsubscribeFlags);
}

#[test]
fn mqtt31_pubrel_with_flags_0000_decodes() {
    // MQTT V3, which 3.1 clients share a name and level with, left them unused.
    assert_decodes(Protocol::V31, "60 02 00 01", &Packet::PubRel(PacketId::new(1).unwrap()));
}

#[test]
fn mqtt31_flags_of_other_client_packets_are_ignored() {
    let id = PacketId::new(1).unwrap();
    for (frame, packet) in [
        ("41 02 00 01", Packet::PubAck(id)),
        ("58 02 00 01", Packet::PubRec(id)),
        ("72 02 00 01", Packet::PubComp(id)),
        ("C8 00", Packet::PingReq),
        ("E2 00", Packet::Disconnect),
    ] {
        assert_decodes(Protocol::V31, frame, &packet);
    }
}

#[test]
fn mqtt31_publish_qos0_with_dup_decodes_without_dup() {
    let publish = Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: TopicName::new("a").unwrap(),
        packet_id: None,
        payload: Bytes::from_static(b"x"),
    };
    assert_decodes(Protocol::V31, "38 04 00 01 61 78", &Packet::Publish(publish));
    assert_violation("38 04 00 01 61 78", Violation::DupOnQos0);
}

#[test]
fn mqtt31_body_rules_are_those_of_mqtt311() {
    assert_refused(Protocol::V31, "6A 02 00 00", Violation::ZeroPacketId);
    assert_refused(Protocol::V31, "8A 02 00 01", Violation::EmptySubscribe);
    assert_refused(Protocol::V31, "AA 02 00 01", Violation::EmptyUnsubscribe);
    assert_refused(Protocol::V31, "36 05 00 01 61 00 01", Violation::PublishQos);
    assert_refused(Protocol::V31, "8A 06 00 01 00 01 61 03", Violation::SubscribeQos);
}

/// One valid frame of every type.
const FRAMES: &[&str] = &[
    "10 1F 00 04 4D 51 54 54 04 EC 00 0A 00 02 63 31 00 03 61 2F 62 00 03 62 79 65 00 01 75 00 02 00 FF",
    "20 02 01 00",
    "3B 08 00 03 61 2F 62 00 0A 78",
    "40 02 00 01",
    "50 02 00 01",
    "62 02 00 01",
    "70 02 00 01",
    "82 14 00 01 00 03 61 2F 2B 00 00 01 23 01 00 05 61 2F 62 2F 63 02",
    "90 03 00 01 80",
    "A2 05 00 01 00 01 61",
    "B0 02 00 01",
    "C0 00",
    "D0 00",
    "E0 00",
];

#[test]
fn every_proper_prefix_needs_more_and_leaves_the_buffer_alone() {
    for frame in FRAMES {
        let bytes = hex(frame);
        for end in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..end]);
            assert_eq!(decode(&mut buf, usize::MAX, Protocol::V311), Ok(None), "{frame} cut at {end}");
            assert_eq!(buf.as_ref(), &bytes[..end], "{frame} cut at {end}");
        }
        let mut buf = BytesMut::from(bytes.as_slice());
        assert!(matches!(decode(&mut buf, usize::MAX, Protocol::V311), Ok(Some(_))), "{frame}");
        assert!(buf.is_empty());
    }
}

#[test]
fn back_to_back_frames_decode_one_at_a_time() {
    let mut buf = BytesMut::from(hex("C0 00 40 02 00 01 E0").as_slice());
    assert_eq!(decode(&mut buf, 100, Protocol::V311), Ok(Some(Packet::PingReq)));
    assert_eq!(decode(&mut buf, 100, Protocol::V311), Ok(Some(Packet::PubAck(PacketId::new(1).unwrap()))));
    assert_eq!(decode(&mut buf, 100, Protocol::V311), Ok(None));
    assert_eq!(buf.as_ref(), &[0xE0]);
}

#[test]
fn header_over_the_cap_is_too_large_before_the_body_arrives() {
    // Remaining length 16,383: the packet would be 16,386 bytes.
    let mut buf = BytesMut::from(hex("30 FF 7F").as_slice());
    assert_eq!(decode(&mut buf, 1024, Protocol::V311), Err(DecodeError::TooLarge { len: 16_386, max: 1024 }));
}

#[test]
fn packet_exactly_at_the_cap_is_accepted_and_one_over_is_too_large() {
    let bytes = hex("30 07 00 03 61 2F 62 68 69");
    let mut buf = BytesMut::from(bytes.as_slice());
    assert!(matches!(decode(&mut buf, 9, Protocol::V311), Ok(Some(Packet::Publish(_)))));
    let mut buf = BytesMut::from(bytes.as_slice());
    assert_eq!(decode(&mut buf, 8, Protocol::V311), Err(DecodeError::TooLarge { len: 9, max: 8 }));
}

#[test]
fn remaining_length_of_five_bytes_is_rejected_after_five_bytes() {
    let bytes = hex("30 80 80 80 80");
    let mut buf = BytesMut::from(&bytes[..4]);
    assert_eq!(decode(&mut buf, usize::MAX, Protocol::V311), Ok(None));
    let mut buf = BytesMut::from(bytes.as_slice());
    assert_eq!(decode(&mut buf, usize::MAX, Protocol::V311), Err(DecodeError::Malformed(Violation::RemainingLength)));
}

#[test]
fn maximum_remaining_length_is_too_large_not_malformed() {
    let mut buf = BytesMut::from(hex("30 FF FF FF 7F").as_slice());
    assert_eq!(
        decode(&mut buf, 1 << 20, Protocol::V311),
        Err(DecodeError::TooLarge { len: 5 + MAX_REMAINING_LENGTH, max: 1 << 20 })
    );
}

fn quickcheck(tests: u64) -> QuickCheck {
    QuickCheck::new().tests(tests).rng(Gen::new(64))
}

/// (1) Every valid packet survives encode then decode, and
/// `encoded_len` is exact.
#[test]
fn round_trip_property() {
    fn prop(p: ArbPacket) -> bool {
        let mut out = BytesMut::new();
        p.0.encode(&mut out);
        let len = out.len();
        len == p.0.encoded_len() && decode(&mut out, len, Protocol::V311) == Ok(Some(p.0)) && out.is_empty()
    }
    quickcheck(2000).quickcheck(prop as fn(ArbPacket) -> bool);
}

/// (2) A stream of packets fed in arbitrary chunks decodes to the same
/// packets.
#[test]
fn chunked_stream_property() {
    fn prop(packets: Vec<ArbPacket>, cuts: Vec<u8>) -> bool {
        let packets: Vec<Packet> = packets.into_iter().map(|p| p.0).collect();
        let stream = encode_all(&packets);
        let mut chunks = cuts.iter().map(|&c| 1 + usize::from(c) % 40).cycle();
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut fed = 0;
        while fed < stream.len() {
            let end = (fed + chunks.next().unwrap_or(stream.len())).min(stream.len());
            buf.extend_from_slice(&stream[fed..end]);
            fed = end;
            loop {
                match decode(&mut buf, usize::MAX, Protocol::V311) {
                    Ok(Some(p)) => decoded.push(p),
                    Ok(None) => break,
                    Err(_) => return false,
                }
            }
        }
        buf.is_empty() && decoded == packets
    }
    quickcheck(500).quickcheck(prop as fn(Vec<ArbPacket>, Vec<u8>) -> bool);
}

/// Decodes `bytes` with cap `cap` by the rules of `protocol` until it
/// needs more or fails, checking the cap is honoured: no decoded packet
/// re-encodes above it, and a "need more" never waits for a frame above it.
fn honours_cap(bytes: &[u8], cap: usize, protocol: Protocol) -> bool {
    let mut buf = BytesMut::from(bytes);
    loop {
        let before = buf.clone();
        match decode(&mut buf, cap, protocol) {
            Ok(Some(p)) => {
                let consumed = before.len() - buf.len();
                // Equal unless the peer used a non-minimal length.
                if p.encoded_len() > consumed || consumed > cap {
                    return false;
                }
            }
            Ok(None) => {
                return buf == before
                    && match fixed_header::parse(&buf, protocol) {
                        Ok(Some(header)) => header.frame_len() <= cap && header.frame_len() > buf.len(),
                        // Only the fixed header itself is still missing.
                        Ok(None) => buf.len() < 5,
                        Err(_) => false,
                    };
            }
            Err(_) => return true,
        }
    }
}

/// (3) Arbitrary bytes never panic, and the cap holds, under both rule
/// sets.
#[test]
fn arbitrary_bytes_property() {
    fn prop(bytes: Vec<u8>, cap: u16) -> bool {
        let cap = usize::from(cap % 512);
        honours_cap(&bytes, cap, Protocol::V311) && honours_cap(&bytes, cap, Protocol::V31)
    }
    quickcheck(5000).quickcheck(prop as fn(Vec<u8>, u16) -> bool);
}

/// (4) 3.1's rules accept every packet 3.1.1's accept, as the same packet.
#[test]
fn mqtt31_accepts_what_mqtt311_accepts_property() {
    fn prop(bytes: Vec<u8>, first: u8) -> bool {
        // A legal-looking first byte half the time, so bodies are reached.
        let mut bytes = bytes;
        if let Some(b) = bytes.first_mut() {
            *b = if first & 1 == 0 { *b } else { (first & 0xF0) | 0x02 };
        }
        let mut strict = BytesMut::from(&bytes[..]);
        let mut lax = strict.clone();
        loop {
            match decode(&mut strict, usize::MAX, Protocol::V311) {
                Ok(Some(p)) => {
                    if decode(&mut lax, usize::MAX, Protocol::V31) != Ok(Some(p)) || lax != strict {
                        return false;
                    }
                }
                Ok(None) | Err(_) => return true,
            }
        }
    }
    quickcheck(5000).quickcheck(prop as fn(Vec<u8>, u8) -> bool);
}

/// (3) again, on bytes close to valid: a legal first byte, or a valid
/// stream with one byte changed and the tail cut, so the checks past the
/// first byte are reached.
#[test]
fn near_valid_bytes_property() {
    fn prop(packets: Vec<ArbPacket>, at: usize, xor: u8, cut: usize, cap: u16) -> TestResult {
        let packets: Vec<Packet> = packets.into_iter().map(|p| p.0).collect();
        let mut bytes = encode_all(&packets);
        if bytes.is_empty() {
            return TestResult::discard();
        }
        let at = at % bytes.len();
        bytes[at] ^= xor;
        bytes.truncate(bytes.len() - cut % bytes.len());
        let cap = usize::from(cap % 1024);
        TestResult::from_bool(
            honours_cap(&bytes, cap, Protocol::V311)
                && honours_cap(&bytes, usize::MAX, Protocol::V311)
                && honours_cap(&bytes, cap, Protocol::V31),
        )
    }
    quickcheck(3000).quickcheck(prop as fn(Vec<ArbPacket>, usize, u8, usize, u16) -> TestResult);
}
