//! Why a connection is closed: peer violations named by their statement
//! in MQTT 3.1.1, and the other reasons a broker ends a connection.

use crate::codec::ConnectReturnCode;
use crate::types::{Ack, PacketId};

/// A protocol violation by the peer. Each variant names the normative
/// statement of MQTT 3.1.1 it breaks (or, where the standard gives no id,
/// the section), so logs and conformance reports can cite it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Violation {
    /// A string is not well-formed UTF-8.
    #[error("[MQTT-1.5.3-1] string is not well-formed UTF-8")]
    InvalidUtf8,
    /// A string contains U+0000.
    #[error("[MQTT-1.5.3-2] string contains the null character U+0000")]
    NullCharacter,
    /// Reserved fixed-header flags of a packet other than PUBREL,
    /// SUBSCRIBE, UNSUBSCRIBE and DISCONNECT are wrong.
    #[error("[MQTT-2.2.2-2] invalid fixed header flags")]
    ReservedFlags,
    /// The control packet type is 0 or 15, both reserved.
    #[error("[MQTT-2.2.2-2] reserved control packet type")]
    ReservedPacketType,
    /// The remaining length takes more than four bytes.
    #[error("[MQTT 2.2.3] remaining length longer than four bytes")]
    RemainingLength,
    /// The packet body ends before its fields do, or runs past them.
    #[error("[MQTT-4.8.0-1] packet length does not match its contents")]
    BadLength,
    /// A SUBSCRIBE, UNSUBSCRIBE or QoS > 0 PUBLISH carries packet id 0.
    #[error("[MQTT-2.3.1-1] packet identifier is zero")]
    ZeroPacketId,
    /// The first packet on a connection is not CONNECT.
    #[error("[MQTT-3.1.0-1] first packet is not CONNECT")]
    ConnectNotFirst,
    /// A second CONNECT arrived on a connection.
    #[error("[MQTT-3.1.0-2] second CONNECT on a connection")]
    SecondConnect,
    /// The CONNECT protocol name is neither `MQTT` nor `MQIsdp`.
    #[error("[MQTT-3.1.2-1] unknown protocol name")]
    ProtocolName,
    /// The protocol level does not go with the name (only `MQTT` 4 and
    /// `MQIsdp` 3 are served). Answered with CONNACK 0x01.
    #[error("[MQTT-3.1.2-2] unsupported protocol level")]
    ProtocolLevel,
    /// The reserved bit of the CONNECT flags is set.
    #[error("[MQTT-3.1.2-3] reserved CONNECT flag is set")]
    ConnectReservedFlag,
    /// Will QoS is not zero although the will flag is clear.
    #[error("[MQTT-3.1.2-13] will QoS set without a will")]
    WillQosWithoutWill,
    /// Will QoS is 3.
    #[error("[MQTT-3.1.2-14] will QoS is 3")]
    WillQos,
    /// Will retain is set although the will flag is clear.
    #[error("[MQTT-3.1.2-15] will retain set without a will")]
    WillRetainWithoutWill,
    /// The password flag is set without the user name flag.
    #[error("[MQTT-3.1.2-22] password without user name")]
    PasswordWithoutUsername,
    /// A PUBLISH has both QoS bits set.
    #[error("[MQTT-3.3.1-4] PUBLISH QoS is 3")]
    PublishQos,
    /// A QoS 0 PUBLISH has DUP set.
    #[error("[MQTT-3.3.1-2] DUP set on a QoS 0 PUBLISH")]
    DupOnQos0,
    /// A topic name contains `+` or `#`.
    #[error("[MQTT-3.3.2-2] wildcard in a topic name")]
    WildcardInTopicName,
    /// PUBREL fixed-header flags are not 0010.
    #[error("[MQTT-3.6.1-1] PUBREL flags are not 0010")]
    PubRelFlags,
    /// SUBSCRIBE fixed-header flags are not 0010.
    #[error("[MQTT-3.8.1-1] SUBSCRIBE flags are not 0010")]
    SubscribeFlags,
    /// A SUBSCRIBE carries no topic filter.
    #[error("[MQTT-3.8.3-3] SUBSCRIBE without a topic filter")]
    EmptySubscribe,
    /// Requested QoS in SUBSCRIBE is 3 or its reserved bits are set.
    #[error("[MQTT-3.8.3-4] SUBSCRIBE requested QoS is invalid")]
    SubscribeQos,
    /// UNSUBSCRIBE fixed-header flags are not 0010.
    #[error("[MQTT-3.10.1-1] UNSUBSCRIBE flags are not 0010")]
    UnsubscribeFlags,
    /// An UNSUBSCRIBE carries no topic filter.
    #[error("[MQTT-3.10.3-2] UNSUBSCRIBE without a topic filter")]
    EmptyUnsubscribe,
    /// DISCONNECT fixed-header flags are not zero.
    #[error("[MQTT-3.14.1-1] DISCONNECT flags are not zero")]
    DisconnectFlags,
    /// `#` is not alone in the last level of a topic filter.
    #[error("[MQTT-4.7.1-2] multi-level wildcard not alone at the end")]
    MultiLevelWildcard,
    /// `+` does not fill a whole level of a topic filter.
    #[error("[MQTT-4.7.1-3] single-level wildcard not a whole level")]
    SingleLevelWildcard,
    /// A topic name or filter is empty.
    #[error("[MQTT-4.7.3-1] empty topic")]
    EmptyTopic,
    /// A packet only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP)
    /// arrived from a client.
    #[error("[MQTT-4.8.0-1] packet type only a server may send")]
    ServerOnlyPacket,
    /// An acknowledgement that breaks the QoS flow of the message in flight
    /// under its packet id: PUBREC or PUBCOMP for QoS 1, PUBACK for QoS 2,
    /// PUBCOMP before the broker sent PUBREL. A receiver answers QoS 1
    /// with PUBACK, QoS 2 with PUBREC and PUBREL with PUBCOMP
    /// ([MQTT-4.3.2-2], [MQTT-4.3.3-2]).
    #[error("[MQTT-4.8.0-1] {received} for packet id {id}, which awaits {awaited}")]
    WrongAck {
        /// The packet id acknowledged.
        id: PacketId,
        /// The acknowledgement the client sent.
        received: Ack,
        /// The acknowledgement the message in flight awaits.
        awaited: Ack,
    },
}

impl Violation {
    /// The statement id, e.g. `MQTT-3.1.2-3`, or the section for
    /// violations the standard did not number.
    pub fn statement(self) -> &'static str {
        match self {
            Self::InvalidUtf8 => "MQTT-1.5.3-1",
            Self::NullCharacter => "MQTT-1.5.3-2",
            Self::ReservedFlags | Self::ReservedPacketType => "MQTT-2.2.2-2",
            Self::RemainingLength => "MQTT 2.2.3",
            Self::BadLength | Self::ServerOnlyPacket | Self::WrongAck { .. } => "MQTT-4.8.0-1",
            Self::ZeroPacketId => "MQTT-2.3.1-1",
            Self::ConnectNotFirst => "MQTT-3.1.0-1",
            Self::SecondConnect => "MQTT-3.1.0-2",
            Self::ProtocolName => "MQTT-3.1.2-1",
            Self::ProtocolLevel => "MQTT-3.1.2-2",
            Self::ConnectReservedFlag => "MQTT-3.1.2-3",
            Self::WillQosWithoutWill => "MQTT-3.1.2-13",
            Self::WillQos => "MQTT-3.1.2-14",
            Self::WillRetainWithoutWill => "MQTT-3.1.2-15",
            Self::PasswordWithoutUsername => "MQTT-3.1.2-22",
            Self::PublishQos => "MQTT-3.3.1-4",
            Self::DupOnQos0 => "MQTT-3.3.1-2",
            Self::WildcardInTopicName => "MQTT-3.3.2-2",
            Self::PubRelFlags => "MQTT-3.6.1-1",
            Self::SubscribeFlags => "MQTT-3.8.1-1",
            Self::EmptySubscribe => "MQTT-3.8.3-3",
            Self::SubscribeQos => "MQTT-3.8.3-4",
            Self::UnsubscribeFlags => "MQTT-3.10.1-1",
            Self::EmptyUnsubscribe => "MQTT-3.10.3-2",
            Self::DisconnectFlags => "MQTT-3.14.1-1",
            Self::MultiLevelWildcard => "MQTT-4.7.1-2",
            Self::SingleLevelWildcard => "MQTT-4.7.1-3",
            Self::EmptyTopic => "MQTT-4.7.3-1",
        }
    }

    /// The CONNACK code to send before closing, if the violation is in a
    /// CONNECT and the standard asks for one (h11's `error_status_hint`).
    pub fn connack_code(self) -> Option<ConnectReturnCode> {
        match self {
            Self::ProtocolLevel => Some(ConnectReturnCode::UnacceptableProtocolVersion),
            _ => None,
        }
    }
}

/// Why the broker closed, or saw the end of, a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum CloseReason {
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Violation(#[from] Violation),
    /// A packet declared a length above the configured limit.
    #[error("packet of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Declared packet length (fixed header included).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The CONNECT was refused with this non-zero return code.
    #[error("connection refused: {0}")]
    Refused(ConnectReturnCode),
    /// Nothing arrived within 1.5 times the keepalive [MQTT-3.1.2-24].
    #[error("[MQTT-3.1.2-24] keepalive expired")]
    KeepAliveTimeout,
    /// No CONNECT arrived within the connect timeout.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// The client sent DISCONNECT.
    #[error("client disconnected")]
    Disconnected,
    /// A new connection with the same client id took over [MQTT-3.1.4-2].
    #[error("[MQTT-3.1.4-2] session taken over")]
    TakenOver,
    /// The cluster counted this node gone while it was paused or cut off
    /// (another node published the client's will): closed without it.
    #[error("this node was counted gone by the other nodes")]
    CountedGone,
    /// The network connection ended (reported by the runtime).
    #[error("connection closed by peer or network")]
    ConnectionLost,
    /// The client did not read what it was sent and the runtime's limit on
    /// bytes waiting for it was reached; the runtime closes the socket
    /// without writing what is still queued.
    #[error("not reading its messages")]
    NotReading,
    /// A retained PUBLISH, or a will to be retained, with
    /// `retain_available false`: Mosquitto closes such a 3.1.1 connection.
    #[error("retained messages are not available (retain_available false)")]
    RetainNotAvailable,
    /// A PUBLISH or will above its listener's `max_qos`: Mosquitto closes
    /// such a 3.1.1 connection.
    #[error("QoS above the listener's max_qos")]
    QosNotSupported,
    /// The process held more heap than `memory_limit` allows.
    #[error("out of memory (memory_limit)")]
    OutOfMemory,
    /// A new client came when `global_max_clients` clients were known.
    #[error("global_max_clients reached")]
    TooManyClients,
    /// `max_connections` was reached when the connection arrived.
    #[error("max_connections reached")]
    TooManyConnections,
    /// The broker is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// A reloaded policy no longer accepts the client's credentials.
    #[error("not authorised any more")]
    NotAuthorised,
    /// Disconnected through the HTTP API (`DELETE /api/v1/clients/ID`).
    #[error("disconnected by the HTTP API")]
    Kicked,
}
