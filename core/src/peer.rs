//! Where a connection came from: its address, the listener that accepted
//! it, and what its transport proved about the client.

use std::fmt;
use std::net::SocketAddr;

use bytestring::ByteString;

/// A listener, by its place in the configuration: 0 for the first (or
/// only) one. Policies that differ per listener (`per_listener_settings`)
/// are keyed by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerId(pub u16);

impl fmt::Display for ListenerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "listener {}", self.0)
    }
}

/// A new connection as the runtime accepted it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The client's address, if known.
    pub remote: Option<SocketAddr>,
    /// The listener it came in on.
    pub listener: ListenerId,
    /// The identity a TLS client certificate proved, when the listener
    /// uses it as the user name (`use_identity_as_username`).
    pub identity: Option<ByteString>,
}

impl Peer {
    /// A connection from `remote` on `listener`, with no transport identity.
    pub fn new(remote: SocketAddr, listener: ListenerId) -> Self {
        Self { remote: Some(remote), listener, identity: None }
    }
}
