//! Small value types shared by the codec and the broker.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::num::NonZeroU16;

use smol_str::SmolStr;

/// Quality of service of a PUBLISH or a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum QoS {
    /// QoS 0: fire and forget.
    AtMostOnce = 0,
    /// QoS 1: acknowledged by PUBACK, may be duplicated.
    AtLeastOnce = 1,
    /// QoS 2: four-way handshake, delivered exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for the two-bit value `bits`, or `None` for 3.
    pub fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }

    /// The two-bit wire value.
    pub fn bits(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for QoS {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.bits())
    }
}

/// An acknowledgement a client sends for a QoS 1 or 2 PUBLISH the broker
/// sent it (section 4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ack {
    /// PUBACK: a QoS 1 message received.
    PubAck,
    /// PUBREC: a QoS 2 message received, PUBREL expected next.
    PubRec,
    /// PUBCOMP: a released QoS 2 message completed.
    PubComp,
}

impl fmt::Display for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubComp => "PUBCOMP",
        })
    }
}

/// A packet identifier: never zero ([MQTT-2.3.1-1]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// The first id: 1.
    pub const MIN: Self = Self(NonZeroU16::MIN);

    /// The id `n`, or `None` for zero.
    pub fn new(n: u16) -> Option<Self> {
        NonZeroU16::new(n).map(Self)
    }

    /// The wire value.
    pub fn get(self) -> u16 {
        self.0.get()
    }

    /// The id after this one, wrapping from 65535 back to 1.
    pub fn next(self) -> Self {
        Self(self.0.checked_add(1).unwrap_or(NonZeroU16::MIN))
    }
}

impl fmt::Display for PacketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A network connection as the core knows it. Allocated by
/// [`Broker::accept`](crate::Broker::accept) and never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

impl ConnId {
    /// Ids from here up name the local sides of bridges, which the core
    /// opens itself; runtimes name their sockets below it.
    pub const FIRST_BRIDGE: u64 = 1 << 63;

    /// Whether this names a bridge's local side.
    pub fn is_bridge(self) -> bool {
        self.0 >= Self::FIRST_BRIDGE
    }
}

/// A map keyed by ids the core hands out itself, hashed with [`IdHasher`].
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A map keyed by [`ConnId`].
pub type ConnIdMap<V> = IdMap<ConnId, V>;

/// Hashes an id the core hands out in sequence ([`ConnId`], the keys of
/// stored messages) with one multiplication. Such ids are never chosen by
/// a peer, so SipHash's defence against crafted keys buys nothing here; it
/// cost a fifth of the instructions of routing (`scripts/callgrind.sh`).
/// The odd multiplier keeps the low bits (the bucket) distinct for ids
/// that differ there and spreads the high bits (the hash map's tag byte):
/// keys must vary in their low bits, as sequence numbers do.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
}

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(Self::K);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(Self::K);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.0)
    }
}

/// An MQTT client identifier, as sent in CONNECT or assigned by the broker.
///
/// It owns its text rather than slicing the CONNECT packet, which would
/// keep the whole packet alive as long as the session. Ids of up to
/// [`ClientId::INLINE`] bytes (MQTT 3.1 allows 23; `mosquitto_pub`'s own
/// are 21) are held inline, longer ones in one shared allocation: cloning
/// copies 24 bytes or increments a reference count. Reading the text
/// checks nothing (it was checked once, as a `&str`): ids are compared
/// and hashed on every session lookup and in the store.
#[derive(Clone)]
pub struct ClientId(SmolStr);

impl ClientId {
    /// The longest id held without an allocation.
    pub const INLINE: usize = 23;

    /// Copies an identifier; the codec has already checked it is UTF-8.
    pub fn new(id: impl AsRef<str>) -> Self {
        Self(SmolStr::new(id))
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Equality, order and hash are the text's, as `Borrow<str>` requires.
impl PartialEq for ClientId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ClientId {}

impl PartialOrd for ClientId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ClientId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl std::hash::Hash for ClientId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

/// The protocol a client speaks, from the CONNECT protocol name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
}

impl Protocol {
    /// The protocol name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::V31 => "MQIsdp",
            Self::V311 => "MQTT",
        }
    }

    /// The protocol level on the wire.
    pub fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_conn_ids_land_in_distinct_buckets_with_spread_tags() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=4096).map(|n| build.hash_one(ConnId(n))).collect();
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        assert_eq!(buckets.len(), 4096);
        let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 128, "every 7-bit tag is used");
    }

    /// Inline or shared, an id is its text: same text, same order, equal,
    /// and hashed as the `str` it borrows as.
    #[test]
    fn a_client_id_is_its_text_whether_inline_or_shared() {
        fn prop(a: String, b: String) -> bool {
            let (x, y) = (ClientId::new(&a), ClientId::new(&b));
            let hasher = std::hash::RandomState::new();
            x.as_str() == a
                && y.as_str() == b
                && (x == y) == (a == b)
                && x.cmp(&y) == a.cmp(&b)
                && hasher.hash_one(&x) == hasher.hash_one(a.as_str())
                && x.to_string() == a
        }
        quickcheck::QuickCheck::new().tests(500).quickcheck(prop as fn(String, String) -> bool);
        let long = "x".repeat(ClientId::INLINE + 1);
        assert_eq!(ClientId::new(&long).as_str(), long);
        assert_eq!(ClientId::new("é".repeat(11)).as_str(), "é".repeat(11));
        assert_eq!(size_of::<ClientId>(), 24);
    }
}
