//! The MQTT 3.1 / 3.1.1 wire format: every control packet, decoded
//! incrementally from a [`BytesMut`] and encoded into one.
//!
//! Decoding is strict: the whole first byte is checked against the flags
//! table ([MQTT-2.2.2-1]), the remaining length against the size cap before
//! the body is buffered, strings for UTF-8 ([MQTT-1.5.3-1], [MQTT-1.5.3-2]),
//! topics for their rules (section 4.7) and packet ids for zero
//! ([MQTT-2.3.1-1]). Every failure is a [`Violation`] naming its statement.
//! An incomplete frame is not a failure: [`decode`] returns `Ok(None)` and
//! leaves the buffer untouched.

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

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
