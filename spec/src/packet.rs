//! Packets as scenarios write them: what a client sends (encoded here,
//! leniently, so that a scenario can send exactly the malformed packet it
//! needs) and what a client expects (fields left out are not checked).

use std::fmt::{self, Write as _};

use crate::text::{Env, Text};

/// A packet identifier in a scenario: a number, or a variable (`$name`)
/// bound by the first expectation that meets it and reused afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdSpec {
    /// This exact value (0 allowed, to send malformed packets).
    Lit(u16),
    /// A variable, e.g. `$m1`.
    Var(String),
}

impl fmt::Display for IdSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lit(n) => write!(f, "{n}"),
            Self::Var(v) => write!(f, "${v}"),
        }
    }
}

/// The fields of a CONNECT. Flags are computed from the fields unless
/// `flags` overrides the whole byte.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConnectSpec {
    /// Protocol name; `MQTT` by default.
    pub protocol: Option<Text>,
    /// Protocol level; 4 by default (3 for `MQIsdp`).
    pub level: Option<u8>,
    /// The connect flags byte, overriding what the fields imply.
    pub flags: Option<u8>,
    /// Clean session; true by default.
    pub clean: Option<bool>,
    /// Keepalive in seconds; 60 by default.
    pub keep_alive: Option<u16>,
    /// Client identifier; empty by default.
    pub client_id: Option<Text>,
    /// Will topic.
    pub will_topic: Option<Text>,
    /// Will payload.
    pub will_payload: Option<Text>,
    /// Will QoS.
    pub will_qos: Option<u8>,
    /// Will retain.
    pub will_retain: Option<bool>,
    /// User name.
    pub username: Option<Text>,
    /// Password.
    pub password: Option<Text>,
}

/// The fields of a PUBLISH.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PublishSpec {
    /// DUP flag.
    pub dup: Option<bool>,
    /// QoS bits (3 is sendable, and malformed).
    pub qos: Option<u8>,
    /// RETAIN flag.
    pub retain: Option<bool>,
    /// Packet identifier.
    pub id: Option<IdSpec>,
    /// Topic name.
    pub topic: Option<Text>,
    /// Payload.
    pub payload: Option<Text>,
    /// Payload of this many bytes (`x` repeated), instead of `payload`.
    pub size: Option<usize>,
}

/// One MQTT control packet as a scenario writes it.
#[derive(Debug, Clone, PartialEq)]
pub enum PacketSpec {
    /// CONNECT.
    Connect(Box<ConnectSpec>),
    /// CONNACK with its session present flag and return code.
    ConnAck {
        /// Session present.
        session_present: Option<bool>,
        /// Return code.
        code: Option<u8>,
    },
    /// PUBLISH.
    Publish(PublishSpec),
    /// PUBACK.
    PubAck(Option<IdSpec>),
    /// PUBREC.
    PubRec(Option<IdSpec>),
    /// PUBREL.
    PubRel(Option<IdSpec>),
    /// PUBCOMP.
    PubComp(Option<IdSpec>),
    /// SUBSCRIBE: filters with the requested QoS byte (reserved bits may be set).
    Subscribe {
        /// Packet identifier.
        id: Option<IdSpec>,
        /// Filters and requested QoS bytes.
        filters: Vec<(Text, u8)>,
    },
    /// SUBACK with its return codes (0, 1, 2 or 0x80).
    SubAck {
        /// Packet identifier.
        id: Option<IdSpec>,
        /// Return codes, in order; empty means not checked.
        codes: Vec<u8>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet identifier.
        id: Option<IdSpec>,
        /// Filters.
        filters: Vec<Text>,
    },
    /// UNSUBACK.
    UnsubAck(Option<IdSpec>),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect,
}

/// A packet to send: the packet and, optionally, the low four bits of its
/// first byte replacing the ones the standard prescribes.
#[derive(Debug, Clone, PartialEq)]
pub struct SendSpec {
    /// The packet.
    pub packet: PacketSpec,
    /// Fixed-header flags overriding the standard ones.
    pub header_flags: Option<u8>,
}

impl PacketSpec {
    /// The packet type's name as the standard writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connect(_) => "CONNECT",
            Self::ConnAck { .. } => "CONNACK",
            Self::Publish(_) => "PUBLISH",
            Self::PubAck(_) => "PUBACK",
            Self::PubRec(_) => "PUBREC",
            Self::PubRel(_) => "PUBREL",
            Self::PubComp(_) => "PUBCOMP",
            Self::Subscribe { .. } => "SUBSCRIBE",
            Self::SubAck { .. } => "SUBACK",
            Self::Unsubscribe { .. } => "UNSUBSCRIBE",
            Self::UnsubAck(_) => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
        }
    }

    /// Variables this packet uses (in ids).
    pub fn variables(&self) -> Vec<&str> {
        let id = match self {
            Self::Publish(p) => p.id.as_ref(),
            Self::PubAck(id) | Self::PubRec(id) | Self::PubRel(id) | Self::PubComp(id) | Self::UnsubAck(id) => {
                id.as_ref()
            }
            Self::Subscribe { id, .. } | Self::SubAck { id, .. } | Self::Unsubscribe { id, .. } => id.as_ref(),
            _ => None,
        };
        match id {
            Some(IdSpec::Var(v)) => vec![v.as_str()],
            _ => Vec::new(),
        }
    }
}

/// Error raised while encoding: an id variable that has no value yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("variable ${0} is used before an expectation binds it")]
pub struct UnboundVariable(pub String);

impl SendSpec {
    /// The bytes of this packet, with placeholders filled from `env` and
    /// id variables looked up with `var`.
    pub fn encode(&self, env: &Env, var: &dyn Fn(&str) -> Option<u16>) -> Result<Vec<u8>, UnboundVariable> {
        let id = |spec: &Option<IdSpec>| -> Result<Option<u16>, UnboundVariable> {
            match spec {
                None => Ok(None),
                Some(IdSpec::Lit(n)) => Ok(Some(*n)),
                Some(IdSpec::Var(v)) => var(v).map(Some).ok_or_else(|| UnboundVariable(v.clone())),
            }
        };
        let mut body = Vec::new();
        let (kind, flags) = match &self.packet {
            PacketSpec::Connect(c) => {
                encode_connect(c, env, &mut body);
                (1, 0)
            }
            PacketSpec::ConnAck { session_present, code } => {
                body.push(u8::from(session_present.unwrap_or(false)));
                body.push(code.unwrap_or(0));
                (2, 0)
            }
            PacketSpec::Publish(p) => {
                let qos = p.qos.unwrap_or(0);
                put_string(&mut body, &p.topic.as_ref().map(|t| t.render(env)).unwrap_or_default());
                if let Some(pid) = id(&p.id)? {
                    body.extend_from_slice(&pid.to_be_bytes());
                }
                match (p.size, &p.payload) {
                    (Some(n), _) => body.resize(body.len() + n, b'x'),
                    (None, Some(payload)) => body.extend_from_slice(&payload.render(env)),
                    (None, None) => {}
                }
                let flags =
                    (u8::from(p.dup.unwrap_or(false)) << 3) | ((qos & 3) << 1) | u8::from(p.retain.unwrap_or(false));
                (3, flags)
            }
            PacketSpec::PubAck(pid) => (4, put_id(&mut body, id(pid)?)),
            PacketSpec::PubRec(pid) => (5, put_id(&mut body, id(pid)?)),
            PacketSpec::PubRel(pid) => (6, put_id(&mut body, id(pid)?) | 0b0010),
            PacketSpec::PubComp(pid) => (7, put_id(&mut body, id(pid)?)),
            PacketSpec::Subscribe { id: pid, filters } => {
                put_id(&mut body, id(pid)?);
                for (filter, qos) in filters {
                    put_string(&mut body, &filter.render(env));
                    body.push(*qos);
                }
                (8, 0b0010)
            }
            PacketSpec::SubAck { id: pid, codes } => {
                put_id(&mut body, id(pid)?);
                body.extend_from_slice(codes);
                (9, 0)
            }
            PacketSpec::Unsubscribe { id: pid, filters } => {
                put_id(&mut body, id(pid)?);
                for filter in filters {
                    put_string(&mut body, &filter.render(env));
                }
                (10, 0b0010)
            }
            PacketSpec::UnsubAck(pid) => (11, put_id(&mut body, id(pid)?)),
            PacketSpec::PingReq => (12, 0),
            PacketSpec::PingResp => (13, 0),
            PacketSpec::Disconnect => (14, 0),
        };
        let first = (kind << 4) | self.header_flags.unwrap_or(flags);
        let mut out = vec![first];
        put_remaining_length(&mut out, body.len());
        out.extend_from_slice(&body);
        Ok(out)
    }
}

fn encode_connect(c: &ConnectSpec, env: &Env, body: &mut Vec<u8>) {
    let protocol = c.protocol.as_ref().map(|p| p.render(env)).unwrap_or_else(|| b"MQTT".to_vec());
    let level = c.level.unwrap_or(if protocol == b"MQIsdp" { 3 } else { 4 });
    let will = c.will_topic.is_some() || c.will_payload.is_some();
    let flags = c.flags.unwrap_or_else(|| {
        (u8::from(c.username.is_some()) << 7)
            | (u8::from(c.password.is_some()) << 6)
            | (u8::from(c.will_retain.unwrap_or(false)) << 5)
            | ((c.will_qos.unwrap_or(0) & 3) << 3)
            | (u8::from(will) << 2)
            | (u8::from(c.clean.unwrap_or(true)) << 1)
    });
    put_string(body, &protocol);
    body.push(level);
    body.push(flags);
    body.extend_from_slice(&c.keep_alive.unwrap_or(60).to_be_bytes());
    put_string(body, &c.client_id.as_ref().map(|t| t.render(env)).unwrap_or_default());
    if will {
        put_string(body, &c.will_topic.as_ref().map(|t| t.render(env)).unwrap_or_default());
        put_string(body, &c.will_payload.as_ref().map(|t| t.render(env)).unwrap_or_default());
    }
    for field in [&c.username, &c.password].into_iter().flatten() {
        put_string(body, &field.render(env));
    }
}

/// Writes a packet id if there is one; returns 0 (no extra header flags).
fn put_id(body: &mut Vec<u8>, id: Option<u16>) -> u8 {
    if let Some(id) = id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    0
}

/// A two-byte length and the bytes, truncated to 65,535 bytes.
fn put_string(body: &mut Vec<u8>, s: &[u8]) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(&s[..usize::from(len)]);
}

fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

impl fmt::Display for PacketSpec {
    /// The packet in the scenario language.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name().to_owned();
        let id = |s: &mut String, id: &Option<IdSpec>| {
            if let Some(id) = id {
                let _ = write!(s, " id={id}");
            }
        };
        match self {
            Self::Connect(c) => {
                let text = |s: &mut String, key: &str, t: &Option<Text>| {
                    if let Some(t) = t {
                        let _ = write!(s, " {key}={t}");
                    }
                };
                let num = |s: &mut String, key: &str, n: Option<u32>| {
                    if let Some(n) = n {
                        let _ = write!(s, " {key}={n}");
                    }
                };
                text(&mut s, "proto", &c.protocol);
                num(&mut s, "level", c.level.map(u32::from));
                if let Some(flags) = c.flags {
                    let _ = write!(s, " flags=0x{flags:02x}");
                }
                text(&mut s, "id", &c.client_id);
                num(&mut s, "clean", c.clean.map(u32::from));
                num(&mut s, "keepalive", c.keep_alive.map(u32::from));
                text(&mut s, "will", &c.will_topic);
                text(&mut s, "will_payload", &c.will_payload);
                num(&mut s, "will_qos", c.will_qos.map(u32::from));
                num(&mut s, "will_retain", c.will_retain.map(u32::from));
                text(&mut s, "user", &c.username);
                text(&mut s, "password", &c.password);
            }
            Self::ConnAck { session_present, code } => {
                if let Some(sp) = session_present {
                    let _ = write!(s, " sp={}", u8::from(*sp));
                }
                if let Some(rc) = code {
                    let _ = write!(s, " rc={rc}");
                }
            }
            Self::Publish(p) => {
                for (letter, value) in [('d', p.dup.map(u8::from)), ('q', p.qos), ('r', p.retain.map(u8::from))] {
                    if let Some(v) = value {
                        let _ = write!(s, " {letter}{v}");
                    }
                }
                id(&mut s, &p.id);
                if let Some(t) = &p.topic {
                    let _ = write!(s, " {t}");
                }
                if let Some(t) = &p.payload {
                    let _ = write!(s, " {t}");
                }
                if let Some(n) = p.size {
                    let _ = write!(s, " size={n}");
                }
            }
            Self::PubAck(pid) | Self::PubRec(pid) | Self::PubRel(pid) | Self::PubComp(pid) | Self::UnsubAck(pid) => {
                id(&mut s, pid)
            }
            Self::Subscribe { id: pid, filters } => {
                id(&mut s, pid);
                for (filter, qos) in filters {
                    let _ = write!(s, " {filter} q{qos}");
                }
            }
            Self::SubAck { id: pid, codes } => {
                id(&mut s, pid);
                for code in codes {
                    let _ = if *code == 0x80 { write!(s, " 0x80") } else { write!(s, " q{code}") };
                }
            }
            Self::Unsubscribe { id: pid, filters } => {
                id(&mut s, pid);
                for filter in filters {
                    let _ = write!(s, " {filter}");
                }
            }
            Self::PingReq | Self::PingResp | Self::Disconnect => {}
        }
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Env {
        Env { prefix: "cx".into(), unix_now: 0.0 }
    }

    fn no_vars(_: &str) -> Option<u16> {
        None
    }

    #[test]
    fn connect_defaults_match_the_standard_example() {
        let spec = SendSpec {
            packet: PacketSpec::Connect(Box::new(ConnectSpec {
                client_id: Some(Text::literal("a")),
                ..ConnectSpec::default()
            })),
            header_flags: None,
        };
        let bytes = spec.encode(&env(), &no_vars);
        assert_eq!(bytes, Ok(vec![0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a']));
    }

    #[test]
    fn publish_with_variable_id_and_override_flags() {
        let spec = SendSpec {
            packet: PacketSpec::Publish(PublishSpec {
                qos: Some(1),
                id: Some(IdSpec::Var("m".into())),
                topic: Some(Text::literal("t")),
                payload: Some(Text::literal("x")),
                ..PublishSpec::default()
            }),
            header_flags: None,
        };
        let bytes = spec.encode(&env(), &|v| (v == "m").then_some(7));
        assert_eq!(bytes, Ok(vec![0x32, 6, 0, 1, b't', 0, 7, b'x']));
        assert_eq!(spec.encode(&env(), &no_vars), Err(UnboundVariable("m".into())));
    }

    #[test]
    fn long_remaining_length_uses_continuation_bytes() {
        let mut out = Vec::new();
        put_remaining_length(&mut out, 321);
        assert_eq!(out, [0xC1, 0x02]);
    }
}
