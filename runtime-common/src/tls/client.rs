//! The client side of TLS, for bridges (`bridge_cafile`, `bridge_capath`,
//! `bridge_certfile`, `bridge_keyfile`, `bridge_insecure`,
//! `bridge_tls_version`, `bridge_alpn`): the rustls configuration, the
//! handshake, and the session a bridge's [`Link`](crate::link::Link)
//! carries afterwards. As Mosquitto's bridges: the remote's certificate is
//! always checked against the CAs, its name against the host unless
//! `bridge_insecure`, SNI names the host, and `bridge_tls_version` is the
//! oldest version accepted.
//!
//! Bridges are few, so this side uses rustls' buffered connection; the
//! listeners' [`TlsSession`](super::TlsSession) keeps idle connections
//! free of buffers instead.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use culex_core::conf::{BridgeConf, BridgeTls, TlsVersion};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::load::{ca_directory, pem_reason, read_certificates};
use super::session::{TlsEnd, TlsRead};

/// The most plaintext one TLS record carries.
const MAX_RECORD: usize = 1 << 14;

/// Record overhead allowed for when sizing an output buffer (header, tag,
/// padding); the buffer grows if it was not enough.
const RECORD_OVERHEAD: usize = 64;

/// The rustls configuration a bridge's keys describe.
///
/// # Errors
///
/// A file that cannot be read or holds no certificate or key, a key that
/// does not go with its certificate, in words fit for the log.
pub fn client_config(tls: &BridgeTls) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    let mut cas = Vec::new();
    if let Some(cafile) = &tls.cafile {
        cas.extend(read_certificates(cafile).map_err(|e| format!("Unable to load bridge_cafile \"{cafile}\": {e}."))?);
    }
    if let Some(capath) = &tls.capath {
        cas.extend(ca_directory(capath).map_err(|e| format!("Unable to load bridge_capath \"{capath}\": {e}."))?);
    }
    let (added, _) = roots.add_parsable_certificates(cas);
    if added == 0 {
        return Err("No usable CA certificate in bridge_cafile or bridge_capath.".to_owned());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.version {
        Some(TlsVersion::Tls13) => &[&rustls::version::TLS13],
        Some(TlsVersion::Tls12) | None => &[&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("No usable TLS version: {e}."))?;
    let roots = Arc::new(roots);
    let builder = match tls.insecure {
        false => builder.with_root_certificates(roots),
        true => {
            let checked = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| format!("Unable to use the bridge's CA certificates: {e}."))?;
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyName(checked)))
        }
    };
    let mut config = match (&tls.certfile, &tls.keyfile) {
        (Some(certfile), Some(keyfile)) => {
            let chain = read_certificates(certfile)
                .map_err(|e| format!("Unable to load bridge_certfile \"{certfile}\": {e}."))?;
            let key = PrivateKeyDer::from_pem_file(keyfile)
                .map_err(|e| format!("Unable to load bridge_keyfile \"{keyfile}\": {}.", pem_reason(&e)))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!("bridge_certfile \"{certfile}\" and bridge_keyfile \"{keyfile}\" do not go together: {e}.")
            })?
        }
        _ => builder.with_no_client_auth(),
    };
    if let Some(alpn) = &tls.alpn {
        config.alpn_protocols = vec![alpn.as_bytes().to_vec()];
    }
    Ok(Arc::new(config))
}

/// The bridges' TLS configurations, read at start-up, before the broker
/// becomes its `user` (who may not read the keys, as the listeners' keys
/// are read then too). A bridge added by a reload has its files read when
/// it connects.
#[derive(Debug, Clone, Default)]
pub struct ClientConfigs(Arc<Vec<(BridgeTls, Arc<ClientConfig>)>>);

impl ClientConfigs {
    /// Reads the TLS files of every bridge that has them.
    ///
    /// # Errors
    ///
    /// As [`client_config`], prefixed with the bridge's `connection` line
    /// (`file:line:`).
    pub fn load(bridges: &[BridgeConf]) -> Result<Self, String> {
        let mut loaded = Vec::new();
        for bridge in bridges {
            if let Some(tls) = &bridge.tls {
                let config = client_config(tls).map_err(|e| format!("{}:{}: {e}", bridge.file, bridge.line))?;
                loaded.push((tls.clone(), config));
            }
        }
        Ok(Self(Arc::new(loaded)))
    }

    /// The configuration for `tls`: the one read at start-up, or read now.
    ///
    /// # Errors
    ///
    /// As [`client_config`].
    pub fn get(&self, tls: &BridgeTls) -> Result<Arc<ClientConfig>, String> {
        match self.0.iter().find(|(keys, _)| keys == tls) {
            Some((_, config)) => Ok(config.clone()),
            None => client_config(tls),
        }
    }
}

fn handshake_timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake timed out")
}

/// A blocking socket's timeout (EAGAIN on Unix) in words.
fn timed_out(error: io::Error) -> io::Error {
    match error.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => handshake_timed_out(),
        _ => error,
    }
}

/// `bridge_insecure`: the chain is checked as always, the name in the
/// certificate is not.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The client side of one TLS connection over caller-owned bytes, once
/// its handshake is done.
#[derive(Debug)]
pub struct ClientSession {
    conn: ClientConnection,
}

impl ClientSession {
    /// A session for `host`, handshake not started: feed it with
    /// [`incoming`](Self::incoming) after writing [`pending`](Self::pending).
    ///
    /// # Errors
    ///
    /// `host` is not a name or an address rustls can check.
    pub fn new(config: Arc<ClientConfig>, host: &str) -> Result<Self, String> {
        let name = ServerName::try_from(host.to_owned()).map_err(|e| format!("{host}: {e}"))?;
        let conn = ClientConnection::new(config, name).map_err(|e| e.to_string())?;
        Ok(Self { conn })
    }

    /// Runs the handshake on a blocking socket, all of it within
    /// `timeout` (a remote sending a byte at a time cannot stretch it),
    /// and leaves the socket without timeouts.
    ///
    /// # Errors
    ///
    /// The socket failed, the time ran out, the remote closed, or the
    /// remote failed verification (the error says why; the alert saying
    /// so is sent).
    pub fn handshake(&mut self, stream: &mut TcpStream, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        // The last flight, if any, goes out before the socket is handed on.
        while self.conn.is_handshaking() || self.conn.wants_write() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(handshake_timed_out());
            }
            stream.set_read_timeout(Some(left))?;
            stream.set_write_timeout(Some(left))?;
            if self.conn.wants_write() {
                self.conn.write_tls(stream).map_err(timed_out)?;
                continue;
            }
            if self.conn.read_tls(stream).map_err(timed_out)? == 0 {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the remote closed during the TLS handshake"));
            }
            if let Err(error) = self.conn.process_new_packets() {
                // The alert, if the socket takes it.
                let _ = self.conn.write_tls(stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok(())
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// TLS records waiting to be written (the ClientHello at first).
    pub fn pending(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.drain(&mut out);
        Bytes::from(out)
    }

    /// Appends the TLS records waiting to be written to `out`.
    fn drain(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            // Writing to a Vec cannot fail.
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Takes bytes as read from the socket.
    pub fn incoming(&mut self, mut data: &[u8]) -> TlsRead {
        let mut out = TlsRead::default();
        let mut plain = BytesMut::new();
        while !data.is_empty() && out.end.is_none() {
            if let Err(error) = self.conn.read_tls(&mut data) {
                out.end = Some(TlsEnd::Failed(rustls::Error::General(error.to_string())));
                break;
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    let mut buf = vec![0; state.plaintext_bytes_to_read()];
                    if self.conn.reader().read_exact(&mut buf).is_ok() {
                        plain.extend_from_slice(&buf);
                    }
                    if state.peer_has_closed() {
                        out.end = Some(TlsEnd::Closed);
                    }
                }
                Err(error) => out.end = Some(TlsEnd::Failed(error)),
            }
        }
        // Alerts and key updates to send back.
        out.reply = self.pending().to_vec();
        out.plain = plain.freeze();
        out
    }

    /// TLS records carrying `plain`. It goes to rustls a record at a
    /// time, each taken out at once: rustls keeps at most 64 KiB of
    /// records waiting, and a larger write would be cut short.
    pub fn outgoing(&mut self, plain: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 256 + RECORD_OVERHEAD);
        for record in plain.chunks(MAX_RECORD) {
            if self.conn.writer().write_all(record).is_err() {
                break;
            }
            self.drain(&mut out);
        }
        Bytes::from(out)
    }

    /// A close_notify alert to write before closing the socket.
    pub fn close(&mut self) -> Bytes {
        self.conn.send_close_notify();
        self.pending()
    }
}
