//! The MQTT 3.1 / 3.1.1 wire format: every control packet, decoded
//! incrementally from a [`BytesMut`] and encoded into one.
//!
//! Decoding is strict: the whole first byte is checked against the flags
//! table of the connection's protocol ([MQTT-2.2.2-1]), the remaining
//! length against the size cap before the body is buffered, strings for
//! UTF-8 ([MQTT-1.5.3-1], [MQTT-1.5.3-2]), topics for their rules (section
//! 4.7) and packet ids for zero ([MQTT-2.3.1-1]). Every failure is a
//! [`Violation`] naming its statement. An incomplete frame is not a
//! failure: [`decode`] returns `Ok(None)` and leaves the buffer untouched.
//!
//! # MQTT 3.1 clients
//!
//! A connection's packets are judged by the protocol its CONNECT named
//! (`decode`'s `protocol`). MQTT 3.1 (`MQIsdp`, level 3) has no rule that
//! a receiver refuse a packet for its fixed-header flags, and its clients
//! set bits that 3.1.1 later fixed, so a 3.1 client gets 3.1's rules:
//!
//! - PUBREL, SUBSCRIBE and UNSUBSCRIBE pass whatever their flags. 3.1
//!   sends them with QoS 1, sets DUP when it resends one (a device that
//!   reconnects and resends its PUBREL) and does not use RETAIN; MQTT V3,
//!   which shares the name and level, did not use any of the four bits.
//!   3.1.1 allows only 0010 ([MQTT-3.6.1-1], [MQTT-3.8.1-1],
//!   [MQTT-3.10.1-1]).
//! - The flags of every other type but PUBLISH (CONNECT, PUBACK, PUBREC,
//!   PUBCOMP, PINGREQ, DISCONNECT and the server's packets) are ignored:
//!   3.1 marks them unused. 3.1.1 allows only 0000 ([MQTT-2.2.2-2]).
//! - DUP on a QoS 0 PUBLISH is dropped: 3.1 gives DUP a meaning only above
//!   QoS 0. 3.1.1 forbids it ([MQTT-3.3.1-2]).
//! - In the CONNECT flags, the reserved bit is ignored, and so are will
//!   QoS and will retain when the will flag is clear: 3.1 leaves the first
//!   unused and has the will QoS disregarded without a will. 3.1.1 forbids
//!   all three ([MQTT-3.1.2-3], [MQTT-3.1.2-13], [MQTT-3.1.2-15]).
//!
//! Mosquitto 2.0 does the same: it checks these rules for 3.1.1 and 5
//! only. It differs in one corner: it refuses will QoS 3 without the will
//! flag, which 3.1 says to disregard; Culex follows 3.1. Everything else
//! (PUBLISH QoS 3, packet ids, strings, topics, lengths, the user name and
//! password fields, non-empty SUBSCRIBE and UNSUBSCRIBE) is judged alike
//! for both versions; the crate documentation lists where Mosquitto is
//! laxer with 3.1 clients there. 3.1 accepts everything 3.1.1 accepts.

// Tests may unwrap; the library itself never does (checked by clippy on
// the non-test build).
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod ack;
mod connack;
mod connect;
mod fixed_header;
mod publish;
mod strings;
mod suback;
mod subscribe;
mod unsubscribe;

#[cfg(test)]
mod arbitrary;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use self::fixed_header::Kind;
pub use self::publish::encode_publish;
use self::strings::Reader;
use crate::error::Violation;
use crate::topic::{TopicFilter, TopicName};
use crate::types::{PacketId, Protocol, QoS};

/// The largest remaining length four bytes can encode: 268,435,455.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes break the protocol.
    #[error(transparent)]
    Malformed(#[from] Violation),
    /// The fixed header declares a packet larger than the cap.
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared length of the whole packet, fixed header included.
        len: usize,
        /// The cap it exceeds.
        max: usize,
    },
}

/// One MQTT control packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT: a client asks to connect.
    Connect(Box<Connect>),
    /// CONNACK: the answer to CONNECT.
    ConnAck(ConnAck),
    /// PUBLISH: an application message.
    Publish(Publish),
    /// PUBACK: QoS 1 acknowledgement.
    PubAck(PacketId),
    /// PUBREC: QoS 2, part 1.
    PubRec(PacketId),
    /// PUBREL: QoS 2, part 2.
    PubRel(PacketId),
    /// PUBCOMP: QoS 2, part 3.
    PubComp(PacketId),
    /// SUBSCRIBE: add subscriptions.
    Subscribe(Subscribe),
    /// SUBACK: the answer to SUBSCRIBE.
    SubAck(SubAck),
    /// UNSUBSCRIBE: remove subscriptions.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK: the answer to UNSUBSCRIBE.
    UnsubAck(PacketId),
    /// PINGREQ: keepalive probe.
    PingReq,
    /// PINGRESP: the answer to PINGREQ.
    PingResp,
    /// DISCONNECT: the client leaves cleanly.
    Disconnect,
}

/// The CONNECT packet.
#[derive(Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol name and level.
    pub protocol: Protocol,
    /// Discard any previous session and keep none after this connection.
    pub clean_session: bool,
    /// Keepalive in seconds; 0 turns it off.
    pub keep_alive: u16,
    /// The client identifier; may be empty.
    pub client_id: ByteString,
    /// The will, if the will flag is set.
    pub will: Option<LastWill>,
    /// User name, if the user name flag is set.
    pub username: Option<ByteString>,
    /// Password, if the password flag is set (binary data).
    pub password: Option<Bytes>,
    /// The client is a bridge: its protocol level had the high bit set
    /// (Mosquitto's `try_private`). It is not sent back what it publishes,
    /// and gets messages with the RETAIN flag they were published with.
    pub bridge: bool,
}

impl std::fmt::Debug for Connect {
    // The password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("protocol", &self.protocol)
            .field("clean_session", &self.clean_session)
            .field("keep_alive", &self.keep_alive)
            .field("client_id", &self.client_id)
            .field("will", &self.will)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("bridge", &self.bridge)
            .finish()
    }
}

/// A will message carried in CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastWill {
    /// Topic to publish the will on.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// QoS to publish it with.
    pub qos: QoS,
    /// Publish it as a retained message.
    pub retain: bool,
}

/// Return codes of CONNACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectReturnCode {
    /// 0x00: connection accepted.
    Accepted = 0,
    /// 0x01: the protocol level is not supported.
    UnacceptableProtocolVersion = 1,
    /// 0x02: the client identifier is not allowed.
    IdentifierRejected = 2,
    /// 0x03: the service is unavailable.
    ServerUnavailable = 3,
    /// 0x04: bad user name or password.
    BadUserNameOrPassword = 4,
    /// 0x05: not authorised.
    NotAuthorized = 5,
}

impl std::fmt::Display for ConnectReturnCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Self::Accepted => "accepted",
            Self::UnacceptableProtocolVersion => "unacceptable protocol version",
            Self::IdentifierRejected => "identifier rejected",
            Self::ServerUnavailable => "server unavailable",
            Self::BadUserNameOrPassword => "bad user name or password",
            Self::NotAuthorized => "not authorised",
        };
        write!(f, "{} ({})", *self as u8, text)
    }
}

/// The CONNACK packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    /// The server kept a session for this client (3.1.1 only; always
    /// false on the wire for 3.1).
    pub session_present: bool,
    /// The outcome.
    pub code: ConnectReturnCode,
}

/// The PUBLISH packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// This is a re-delivery.
    pub dup: bool,
    /// Delivery QoS.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// Topic name.
    pub topic: TopicName,
    /// Packet id: present exactly when `qos` is above 0.
    pub packet_id: Option<PacketId>,
    /// Application payload; shares the receive buffer, no copy.
    pub payload: Bytes,
}

/// The SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet id.
    pub packet_id: PacketId,
    /// Filters with their requested QoS, in packet order; never empty.
    pub filters: Vec<(TopicFilter, QoS)>,
}

/// One return code of SUBACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscribeReturnCode {
    /// The subscription was made with this maximum QoS.
    Granted(QoS),
    /// 0x80: the subscription was refused.
    Failure,
}

/// The SUBACK packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// Packet id of the SUBSCRIBE answered.
    pub packet_id: PacketId,
    /// One code per filter, in order.
    pub return_codes: Vec<SubscribeReturnCode>,
}

/// The UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet id.
    pub packet_id: PacketId,
    /// Filters to remove, in packet order; never empty.
    pub filters: Vec<TopicFilter>,
}

/// The length of the first frame of `buf` once it is all there (see
/// [`decode`] for the errors), without decoding or copying it.
pub(crate) fn whole_frame(
    buf: &[u8],
    max_packet_size: usize,
    protocol: Protocol,
) -> Result<Option<usize>, DecodeError> {
    Ok(fixed_header::check_frame(buf, max_packet_size, protocol)?.map(|header| header.frame_len()))
}

/// Decodes one packet from the front of `buf`, by the rules of
/// `protocol`.
///
/// `protocol` is the version the connection's accepted CONNECT named; it
/// decides the fixed-header flags of every packet but CONNECT, which names
/// its own (see the module documentation). Until a CONNECT is accepted,
/// pass [`Protocol::V311`], the stricter rules: nothing else may come
/// first anyway. Everything 3.1.1 accepts, 3.1 accepts too.
///
/// - `Ok(None)`: the frame is incomplete; `buf` is untouched. Read more
///   and call again.
/// - `Ok(Some(packet))`: the frame was split off `buf`. Payloads, strings
///   and topics are slices of that frame, not copies.
/// - `Err`: the frame is malformed, or its fixed header declares more than
///   `max_packet_size` bytes (the whole packet, fixed header included);
///   the latter is reported as soon as the header has arrived, before the
///   body is buffered. After an error the content of `buf` is unspecified:
///   the caller closes the connection.
///
/// Decoding is strict; see the module documentation.
pub fn decode(buf: &mut BytesMut, max_packet_size: usize, protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = fixed_header::check_frame(buf, max_packet_size, protocol)? else {
        return Ok(None);
    };
    let mut frame = buf.split_to(header.frame_len());
    frame.advance(header.header_len);
    let r = Reader::new(frame.freeze());
    let packet = match header.kind {
        Kind::Connect { flags } => Packet::Connect(Box::new(connect::decode(flags, r)?)),
        Kind::ConnAck => Packet::ConnAck(connack::decode(r)?),
        Kind::Publish { dup, qos, retain } => Packet::Publish(publish::decode(dup, qos, retain, r)?),
        Kind::PubAck => Packet::PubAck(ack::decode(r)?),
        Kind::PubRec => Packet::PubRec(ack::decode(r)?),
        Kind::PubRel => Packet::PubRel(ack::decode(r)?),
        Kind::PubComp => Packet::PubComp(ack::decode(r)?),
        Kind::Subscribe => Packet::Subscribe(subscribe::decode(r)?),
        Kind::SubAck => Packet::SubAck(suback::decode(r)?),
        Kind::Unsubscribe => Packet::Unsubscribe(unsubscribe::decode(r)?),
        Kind::UnsubAck => Packet::UnsubAck(ack::decode(r)?),
        Kind::PingReq => empty(r, Packet::PingReq)?,
        Kind::PingResp => empty(r, Packet::PingResp)?,
        Kind::Disconnect => empty(r, Packet::Disconnect)?,
    };
    Ok(Some(packet))
}

/// PINGREQ, PINGRESP and DISCONNECT have no body at all.
fn empty(r: Reader, packet: Packet) -> Result<Packet, Violation> {
    r.finish()?;
    Ok(packet)
}

impl Packet {
    /// The packet type's name, as the standard writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::ConnAck(_) => "CONNACK",
            Self::Publish(_) => "PUBLISH",
            Self::PubAck(_) => "PUBACK",
            Self::PubRec(_) => "PUBREC",
            Self::PubRel(_) => "PUBREL",
            Self::PubComp(_) => "PUBCOMP",
            Self::Subscribe(_) => "SUBSCRIBE",
            Self::SubAck(_) => "SUBACK",
            Self::Unsubscribe(_) => "UNSUBSCRIBE",
            Self::UnsubAck(_) => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
        }
    }

    /// Appends the wire form to `out`, with the minimal remaining length.
    ///
    /// Infallible for every packet [`decode`] can return. Beyond that the
    /// caller must respect the limits the types cannot express: strings
    /// and binary fields (client id, user name, password, will payload) of
    /// at most 65,535 bytes, a PUBLISH packet id present exactly when QoS
    /// is above 0, non-empty filter and return code lists, and a body of at
    /// most [`MAX_REMAINING_LENGTH`] bytes. Debug builds assert them.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Connect(connect) => connect.encode(out),
            Self::ConnAck(connack) => connack.encode(out),
            Self::Publish(publish) => publish.encode(out),
            Self::PubAck(id) => ack::encode(out, fixed_header::PUBACK, *id),
            Self::PubRec(id) => ack::encode(out, fixed_header::PUBREC, *id),
            Self::PubRel(id) => ack::encode(out, fixed_header::PUBREL, *id),
            Self::PubComp(id) => ack::encode(out, fixed_header::PUBCOMP, *id),
            Self::Subscribe(subscribe) => subscribe.encode(out),
            Self::SubAck(suback) => suback.encode(out),
            Self::Unsubscribe(unsubscribe) => unsubscribe.encode(out),
            Self::UnsubAck(id) => ack::encode(out, fixed_header::UNSUBACK, *id),
            Self::PingReq => fixed_header::put_header(out, fixed_header::PINGREQ, 0),
            Self::PingResp => fixed_header::put_header(out, fixed_header::PINGRESP, 0),
            Self::Disconnect => fixed_header::put_header(out, fixed_header::DISCONNECT, 0),
        }
    }

    /// Exact number of bytes [`Packet::encode`] appends.
    pub fn encoded_len(&self) -> usize {
        let remaining_len = match self {
            Self::Publish(publish) => return publish.encoded_len(),
            Self::Connect(connect) => connect.remaining_len(),
            Self::ConnAck(_)
            | Self::PubAck(_)
            | Self::PubRec(_)
            | Self::PubRel(_)
            | Self::PubComp(_)
            | Self::UnsubAck(_) => 2,
            Self::Subscribe(subscribe) => subscribe.remaining_len(),
            Self::SubAck(suback) => suback.remaining_len(),
            Self::Unsubscribe(unsubscribe) => unsubscribe.remaining_len(),
            Self::PingReq | Self::PingResp | Self::Disconnect => 0,
        };
        fixed_header::packet_len(remaining_len)
    }
}
