//! Where a connection came from: its address, the listener that accepted
//! it, and what its transport proved about the client.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytestring::ByteString;

/// A listener, by its place in the configuration: 0 for the first (or
/// only) one. Policies that differ per listener (`per_listener_settings`)
/// are keyed by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(pub u16);

impl ListenerId {
    /// Where the broker's own bridges come in: their local side is an
    /// in-memory connection, trusted as Mosquitto trusts its bridges (no
    /// password, no ACL).
    pub const BRIDGES: Self = Self(u16::MAX);

    /// The listener at `index` of the configuration's list (beyond 65534,
    /// the last id before [`BRIDGES`](Self::BRIDGES): no configuration
    /// opens that many).
    pub fn at(index: usize) -> Self {
        Self(u16::try_from(index).unwrap_or(u16::MAX - 1).min(u16::MAX - 1))
    }
}

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {}", self.0)
    }
}

/// Where a connection's user name comes from, as its listener decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Identity {
    /// From CONNECT, checked by the policy (`password_file`): plain TCP,
    /// WebSocket, and TLS listeners without `use_identity_as_username`.
    #[default]
    Connect,
    /// From the client's TLS certificate (`use_identity_as_username`,
    /// `use_subject_as_username`): the name it proved, or `None` when the
    /// client sent no certificate. CONNECT's user name and password are
    /// ignored and the password file is not consulted; without a name the
    /// client is refused with CONNACK 4, as Mosquitto 2 does.
    Certificate(Option<ByteString>),
}

/// The address a connection came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A client of a Unix socket listener (`listener 0 PATH`), known by
    /// the listener's path.
    Unix(Arc<str>),
}

impl fmt::Display for Remote {
    /// As Mosquitto logs them: `address:port`, and a Unix socket's path
    /// with port 0.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => addr.fmt(f),
            Self::Unix(path) => write!(f, "{path}:0"),
        }
    }
}

impl From<SocketAddr> for Remote {
    fn from(addr: SocketAddr) -> Self {
        Self::Tcp(addr)
    }
}

/// A new connection as the runtime accepted it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address, if known.
    pub remote: Option<Remote>,
    /// The listener it came in on.
    pub listener: ListenerId,
    /// Where its user name comes from: CONNECT, or the TLS client
    /// certificate (`use_identity_as_username`).
    pub identity: Identity,
}

impl Peer {
    /// The local side of one of the broker's bridges.
    pub fn bridge() -> Self {
        Self { remote: None, listener: ListenerId::BRIDGES, identity: Identity::Connect }
    }

    /// A connection from `remote` on `listener`, whose user name comes
    /// from CONNECT.
    pub fn new(remote: impl Into<Remote>, listener: ListenerId) -> Self {
        Self { remote: Some(remote.into()), listener, identity: Identity::Connect }
    }
}
