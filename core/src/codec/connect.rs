//! CONNECT (section 3.1).

use bytes::{BufMut, BytesMut};

use super::fixed_header::{self, CONNECT};
use super::strings::{Reader, field_len, put_binary, put_string};
use super::{Connect, LastWill};
use crate::error::Violation;
use crate::topic::TopicName;
use crate::types::{Protocol, QoS};

const RESERVED: u8 = 0x01;
const CLEAN_SESSION: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_SHIFT: u8 = 3;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USERNAME: u8 = 0x80;
/// The bit a bridge sets in the protocol level.
const BRIDGE: u8 = 0x80;

/// Decodes a CONNECT body; `header_flags` are the low four bits of its
/// first byte. The protocol name and level come first and are judged
/// before anything else, so a client speaking another version is told so
/// (CONNACK 0x01) even if the rest would not parse. The flags are then
/// judged by the rules of the protocol it named (see the module
/// documentation of [`codec`](super)).
pub(crate) fn decode(header_flags: u8, mut r: Reader) -> Result<Connect, Violation> {
    let (protocol, bridge) = protocol(&mut r)?;
    // 3.1 leaves these bits unused; 3.1.1 wants them clear ([MQTT-2.2.2-2]).
    if protocol == Protocol::V311 && header_flags != 0 {
        return Err(Violation::ReservedFlags);
    }
    let flags = Flags::parse(r.read_u8()?, protocol)?;
    let keep_alive = r.read_u16()?;

    // The payload, in the order of section 3.1.3. An empty client id is
    // legal here; whether to accept it is the broker's call.
    let client_id = r.string()?;
    let will = match flags.will {
        Some((qos, retain)) => {
            let topic = TopicName::new(r.string()?)?;
            let payload = r.binary()?;
            Some(LastWill { topic, payload, qos, retain })
        }
        None => None,
    };
    let username = if flags.username { Some(r.string()?) } else { None };
    let password = if flags.password { Some(r.binary()?) } else { None };
    r.finish()?;

    Ok(Connect {
        protocol,
        clean_session: flags.clean_session,
        keep_alive,
        client_id,
        will,
        username,
        password,
        bridge,
    })
}

/// The protocol name and level, and whether the level carries the bridge
/// bit: Mosquitto's bridges (`try_private`) send it with its high bit set
/// (131 for 3.1, 132 for 3.1.1), and Mosquitto accepts it.
fn protocol(r: &mut Reader) -> Result<(Protocol, bool), Violation> {
    // Compared as bytes: anything that is not one of the two names is an
    // unknown name, whether or not it is UTF-8.
    let name = r.binary()?;
    let level = r.read_u8()?;
    let bridge = level & BRIDGE != 0;
    match (name.as_ref(), level & !BRIDGE) {
        (b"MQTT", 4) => Ok((Protocol::V311, bridge)),
        (b"MQIsdp", 3) => Ok((Protocol::V31, bridge)),
        (b"MQTT" | b"MQIsdp", _) => Err(Violation::ProtocolLevel),
        _ => Err(Violation::ProtocolName),
    }
}

/// The connect flags byte, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    clean_session: bool,
    /// QoS and retain of the will, if the will flag is set.
    will: Option<(QoS, bool)>,
    username: bool,
    password: bool,
}

impl Flags {
    /// Checks `flags` by the rules of `protocol`. Under both a will QoS of
    /// 3 is malformed and a password needs a user name. 3.1.1 also wants
    /// the reserved bit clear, and will QoS and retain clear without a
    /// will; 3.1 leaves the first unused and disregards the others.
    fn parse(flags: u8, protocol: Protocol) -> Result<Self, Violation> {
        let strict = protocol == Protocol::V311;
        if strict && flags & RESERVED != 0 {
            return Err(Violation::ConnectReservedFlag);
        }
        let will_qos_bits = (flags >> WILL_QOS_SHIFT) & 0b11;
        let will_retain = flags & WILL_RETAIN != 0;
        let will = if flags & WILL != 0 {
            Some((QoS::from_bits(will_qos_bits).ok_or(Violation::WillQos)?, will_retain))
        } else if strict && will_qos_bits != 0 {
            return Err(Violation::WillQosWithoutWill);
        } else if strict && will_retain {
            return Err(Violation::WillRetainWithoutWill);
        } else {
            None
        };
        let username = flags & USERNAME != 0;
        let password = flags & PASSWORD != 0;
        if password && !username {
            return Err(Violation::PasswordWithoutUsername);
        }
        Ok(Self { clean_session: flags & CLEAN_SESSION != 0, will, username, password })
    }
}

impl Connect {
    /// Remaining length of the encoded packet.
    pub(crate) fn remaining_len(&self) -> usize {
        field_len(self.protocol.name().len())
            + 1 // level
            + 1 // flags
            + 2 // keepalive
            + field_len(self.client_id.len())
            + self.will.as_ref().map_or(0, |w| {
                field_len(w.topic.as_str().len()) + field_len(w.payload.len())
            })
            + self.username.as_ref().map_or(0, |u| field_len(u.len()))
            + self.password.as_ref().map_or(0, |p| field_len(p.len()))
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_session {
            flags |= CLEAN_SESSION;
        }
        if let Some(will) = &self.will {
            flags |= WILL | (will.qos.bits() << WILL_QOS_SHIFT);
            if will.retain {
                flags |= WILL_RETAIN;
            }
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    /// Writes the packet. The client id, user name, password and will
    /// payload must each fit in 65,535 bytes, and a password needs a user
    /// name ([MQTT-3.1.2-22]); the caller must not pass anything else.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        debug_assert!(self.password.is_none() || self.username.is_some(), "[MQTT-3.1.2-22] password without user name");
        fixed_header::put_header(out, CONNECT, self.remaining_len());
        put_string(out, self.protocol.name());
        out.put_u8(self.protocol.level() | if self.bridge { BRIDGE } else { 0 });
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        put_string(out, &self.client_id);
        if let Some(will) = &self.will {
            put_string(out, will.topic.as_str());
            put_binary(out, &will.payload);
        }
        if let Some(username) = &self.username {
            put_string(out, username);
        }
        if let Some(password) = &self.password {
            put_binary(out, password);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use bytestring::ByteString;

    use super::*;
    use crate::codec::Packet;
    use crate::codec::testutil::{assert_decodes, assert_golden, assert_refused, assert_violation};

    fn minimal(protocol: Protocol) -> Connect {
        Connect {
            protocol,
            clean_session: true,
            keep_alive: 60,
            client_id: ByteString::from_static("c1"),
            will: None,
            username: None,
            password: None,
            bridge: false,
        }
    }

    #[test]
    fn connect_v311_minimal_golden() {
        assert_golden(
            "10 0E 00 04 4D 51 54 54 04 02 00 3C 00 02 63 31",
            &Packet::Connect(Box::new(minimal(Protocol::V311))),
        );
    }

    #[test]
    fn connect_v311_with_will_username_password_golden() {
        let connect = Connect {
            clean_session: false,
            keep_alive: 10,
            will: Some(LastWill {
                topic: TopicName::new("a/b").unwrap(),
                payload: Bytes::from_static(b"bye"),
                qos: QoS::AtLeastOnce,
                retain: true,
            }),
            username: Some(ByteString::from_static("u")),
            password: Some(Bytes::from_static(&[0x00, 0xFF])),
            ..minimal(Protocol::V311)
        };
        assert_golden(
            "10 1F 00 04 4D 51 54 54 04 EC 00 0A 00 02 63 31 \
             00 03 61 2F 62 00 03 62 79 65 00 01 75 00 02 00 FF",
            &Packet::Connect(Box::new(connect)),
        );
    }

    #[test]
    fn connect_v31_with_will_username_password_golden() {
        let connect = Connect {
            will: Some(LastWill {
                topic: TopicName::new("t").unwrap(),
                payload: Bytes::new(),
                qos: QoS::ExactlyOnce,
                retain: false,
            }),
            username: Some(ByteString::from_static("user")),
            password: Some(Bytes::from_static(b"pw")),
            ..minimal(Protocol::V31)
        };
        assert_golden(
            "10 1F 00 06 4D 51 49 73 64 70 03 D6 00 3C 00 02 63 31 \
             00 01 74 00 00 00 04 75 73 65 72 00 02 70 77",
            &Packet::Connect(Box::new(connect)),
        );
    }

    #[test]
    fn connect_with_empty_client_id_is_accepted() {
        let connect = Connect { client_id: ByteString::new(), ..minimal(Protocol::V311) };
        assert_golden("10 0C 00 04 4D 51 54 54 04 02 00 3C 00 00", &Packet::Connect(Box::new(connect)));
    }

    #[test]
    fn connect_with_unknown_protocol_name_is_malformed() {
        assert_violation("10 0E 00 04 4D 51 54 58 04 02 00 3C 00 02 63 31", Violation::ProtocolName);
    }

    #[test]
    fn connect_mqtt_level_3_is_unsupported_level() {
        assert_violation("10 0E 00 04 4D 51 54 54 03 02 00 3C 00 02 63 31", Violation::ProtocolLevel);
    }

    #[test]
    fn connect_mqisdp_level_4_is_unsupported_level() {
        assert_violation("10 10 00 06 4D 51 49 73 64 70 04 02 00 3C 00 02 63 31", Violation::ProtocolLevel);
    }

    #[test]
    fn connect_level_5_with_odd_rest_is_unsupported_level() {
        // An MQTT 5 CONNECT: the properties make the rest unparseable
        // for 3.1.1, but the level is what gets reported.
        assert_violation("10 0A 00 04 4D 51 54 54 05 C3 00 3C", Violation::ProtocolLevel);
    }

    #[test]
    fn connect_with_reserved_flag_is_malformed() {
        assert_violation("10 0E 00 04 4D 51 54 54 04 03 00 3C 00 02 63 31", Violation::ConnectReservedFlag);
    }

    #[test]
    fn connect_will_qos_without_will_is_malformed() {
        assert_violation("10 0E 00 04 4D 51 54 54 04 0A 00 3C 00 02 63 31", Violation::WillQosWithoutWill);
    }

    #[test]
    fn connect_will_qos_3_is_malformed() {
        assert_violation("10 14 00 04 4D 51 54 54 04 1E 00 3C 00 02 63 31 00 01 74 00 01 78", Violation::WillQos);
    }

    #[test]
    fn connect_will_retain_without_will_is_malformed() {
        assert_violation("10 0E 00 04 4D 51 54 54 04 22 00 3C 00 02 63 31", Violation::WillRetainWithoutWill);
    }

    #[test]
    fn connect_password_without_username_is_malformed() {
        assert_violation(
            "10 12 00 04 4D 51 54 54 04 42 00 3C 00 02 63 31 00 02 70 77",
            Violation::PasswordWithoutUsername,
        );
    }

    #[test]
    fn connect_with_wildcard_will_topic_is_malformed() {
        assert_violation(
            "10 14 00 04 4D 51 54 54 04 06 00 3C 00 02 63 31 00 01 23 00 01 78",
            Violation::WildcardInTopicName,
        );
    }

    #[test]
    fn connect_with_trailing_byte_is_bad_length() {
        assert_violation("10 0F 00 04 4D 51 54 54 04 02 00 3C 00 02 63 31 FF", Violation::BadLength);
    }

    #[test]
    fn connect_missing_username_is_bad_length() {
        assert_violation("10 0E 00 04 4D 51 54 54 04 82 00 3C 00 02 63 31", Violation::BadLength);
    }

    #[test]
    fn connect_client_id_with_null_is_malformed() {
        assert_violation("10 0E 00 04 4D 51 54 54 04 02 00 3C 00 02 63 00", Violation::NullCharacter);
    }

    #[test]
    fn connect_username_with_invalid_utf8_is_malformed() {
        assert_violation("10 11 00 04 4D 51 54 54 04 82 00 3C 00 02 63 31 00 01 FF", Violation::InvalidUtf8);
    }

    /// A 3.1 CONNECT, clean session, keepalive 60, client id "c1", with
    /// first byte `first` and connect flags `flags`.
    fn v31_frame(first: u8, flags: u8) -> String {
        format!("{first:02X} 10 00 06 4D 51 49 73 64 70 03 {flags:02X} 00 3C 00 02 63 31")
    }

    #[test]
    fn connect_v311_with_header_flags_is_malformed() {
        assert_violation("11 0E 00 04 4D 51 54 54 04 02 00 3C 00 02 63 31", Violation::ReservedFlags);
        assert_refused(Protocol::V31, "12 0E 00 04 4D 51 54 54 04 02 00 3C 00 02 63 31", Violation::ReservedFlags);
    }

    #[test]
    fn connect_header_flags_are_judged_after_the_protocol() {
        // An MQTT 5 CONNECT with flags is told its level is not served.
        assert_violation("11 0A 00 04 4D 51 54 54 05 C3 00 3C", Violation::ProtocolLevel);
    }

    #[test]
    fn connect_v31_with_header_flags_is_accepted() {
        let expected = Packet::Connect(Box::new(minimal(Protocol::V31)));
        for first in [0x11, 0x12, 0x18, 0x1A, 0x1F] {
            // Whatever rules the connection had so far: CONNECT names its own.
            for protocol in [Protocol::V311, Protocol::V31] {
                assert_decodes(protocol, &v31_frame(first, 0x02), &expected);
            }
        }
    }

    #[test]
    fn connect_v31_reserved_flag_is_ignored() {
        assert_decodes(Protocol::V311, &v31_frame(0x10, 0x03), &Packet::Connect(Box::new(minimal(Protocol::V31))));
    }

    #[test]
    fn connect_v31_will_qos_and_retain_without_will_are_ignored() {
        let expected = Packet::Connect(Box::new(minimal(Protocol::V31)));
        // Will QoS 1, will retain, both, and will QoS 3: no will in any.
        for flags in [0x0A, 0x22, 0x2A, 0x1A] {
            assert_decodes(Protocol::V311, &v31_frame(0x10, flags), &expected);
        }
    }

    #[test]
    fn connect_v31_will_qos_3_with_will_is_malformed() {
        assert_violation("10 16 00 06 4D 51 49 73 64 70 03 1E 00 3C 00 02 63 31 00 01 74 00 01 78", Violation::WillQos);
    }

    #[test]
    fn connect_v31_password_without_username_is_malformed() {
        assert_violation(
            "10 14 00 06 4D 51 49 73 64 70 03 42 00 3C 00 02 63 31 00 02 70 77",
            Violation::PasswordWithoutUsername,
        );
    }

    #[test]
    fn connect_v31_missing_username_is_bad_length() {
        assert_violation(&v31_frame(0x10, 0x82), Violation::BadLength);
    }

    #[test]
    fn connect_debug_redacts_the_password() {
        let connect = Connect {
            username: Some(ByteString::from_static("u")),
            password: Some(Bytes::from_static(b"hunter2")),
            ..minimal(Protocol::V311)
        };
        assert!(!format!("{connect:?}").contains("hunter2"));
    }
}
