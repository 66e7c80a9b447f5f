//! TLS listeners with rustls (the `ring` provider; no OpenSSL), configured
//! by Mosquitto's per-listener keys (`certfile`, `keyfile`, `cafile`,
//! `capath`, `crlfile`, `require_certificate`, `use_identity_as_username`,
//! `use_subject_as_username`, `tls_version`, `ciphers`, `ciphers_tls1.3`).
//!
//! [`ListenerTls::load`] reads the files once at start-up; each
//! connection then runs a [`TlsSession`] under its
//! [`Link`](crate::link::Link), below raw MQTT or WebSocket. The
//! handshake completes before the connection is handed to the core, so
//! the client certificate's name is known at accept ([`ListenerTls::identity`]).

mod client;
mod load;
mod session;
pub mod subject;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use bytestring::ByteString;
use culex_core::Identity;
use culex_core::conf::{CertUsername, TlsConf};
use rustls::ServerConfig;

pub use client::{ClientConfigs, ClientSession, client_config};
pub use load::LoadError;
pub use session::{TlsEnd, TlsRead, TlsSession};

/// A TLS listener's settings, loaded.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The rustls configuration shared by the listener's connections.
    pub config: Arc<ServerConfig>,
    /// Where the user name of its clients comes from.
    pub username: CertUsername,
}

impl PartialEq for ListenerTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config) && self.username == other.username
    }
}

impl Eq for ListenerTls {}

impl ListenerTls {
    /// Reads the files `tls` names; `Ok(None)` for a listener without
    /// TLS.
    pub fn load(tls: &TlsConf) -> Result<Option<Self>, LoadError> {
        if !tls.is_enabled() {
            return Ok(None);
        }
        Ok(Some(Self { config: load::server_config(tls)?, username: tls.username }))
    }

    /// What the core is told about the user name of a client whose
    /// handshake `session` completed.
    pub fn identity(&self, session: &TlsSession) -> Identity {
        let cert = session.peer_certificate();
        let name = match self.username {
            CertUsername::Connect => return Identity::Connect,
            CertUsername::CommonName => cert.and_then(|c| subject::common_name(c)),
            CertUsername::Subject => cert.and_then(|c| subject::rfc2253(c)),
        };
        Identity::Certificate(name.map(ByteString::from))
    }
}
