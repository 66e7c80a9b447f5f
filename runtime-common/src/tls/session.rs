//! One TLS connection, sans I/O: bytes read from the socket go in,
//! plaintext and bytes to write come out. Both runtimes drive it the same
//! way through [`Link`](crate::link::Link).

use std::io::{Read as _, Write as _};

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::CertificateDer;
use rustls::{ServerConfig, ServerConnection};

/// How a TLS connection ended while reading.
#[derive(Debug)]
pub enum TlsEnd {
    /// The client sent close_notify.
    Closed,
    /// The client broke TLS or failed verification; an alert saying so is
    /// in [`TlsRead::reply`].
    Failed(rustls::Error),
}

/// What one [`TlsSession::incoming`] produced.
#[derive(Debug, Default)]
pub struct TlsRead {
    /// Decrypted application data, in order.
    pub plain: Bytes,
    /// TLS records to write back (handshake messages, alerts).
    pub reply: Vec<u8>,
    /// Set when the connection must end once `reply` is written.
    pub end: Option<TlsEnd>,
}

/// The server side of one TLS connection over caller-owned byte buffers.
#[derive(Debug)]
pub struct TlsSession {
    conn: ServerConnection,
    ended: bool,
}

impl TlsSession {
    /// A session waiting for the client's hello.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self { conn: ServerConnection::new(config)?, ended: false })
    }

    /// Whether the handshake is still going on.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The client's certificate (the end-entity one), once verified.
    pub fn peer_certificate(&self) -> Option<&CertificateDer<'static>> {
        self.conn.peer_certificates().and_then(<[_]>::first)
    }

    /// Takes bytes as read from the socket. After an end, further bytes
    /// are ignored.
    pub fn incoming(&mut self, mut data: &[u8]) -> TlsRead {
        let mut out = TlsRead::default();
        if self.ended {
            return out;
        }
        let mut plain = BytesMut::new();
        while !data.is_empty() && out.end.is_none() {
            if let Err(error) = self.conn.read_tls(&mut data) {
                // Only a full plaintext buffer makes this fail, and it is
                // drained below after every record: treat it as a fault.
                out.end = Some(TlsEnd::Failed(rustls::Error::General(error.to_string())));
                break;
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    let ready = state.plaintext_bytes_to_read();
                    let closed = state.peer_has_closed();
                    if ready > 0 {
                        let start = plain.len();
                        plain.resize(start + ready, 0);
                        if self.conn.reader().read_exact(&mut plain[start..]).is_err() {
                            plain.truncate(start);
                        }
                    }
                    if closed {
                        out.end = Some(TlsEnd::Closed);
                    }
                }
                Err(error) => out.end = Some(TlsEnd::Failed(error)),
            }
        }
        self.ended = out.end.is_some();
        out.plain = plain.freeze();
        self.flush(&mut out.reply);
        out
    }

    /// TLS records carrying `plain`, to write to the socket.
    pub fn outgoing(&mut self, plain: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(plain.len() + plain.len() / 256 + 64);
        let mut rest = plain;
        // rustls buffers at most its buffer limit (64 KiB) at a time:
        // write what it takes, move the records out, repeat.
        while !rest.is_empty() {
            match self.conn.writer().write(rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => rest = &rest[n..],
            }
            self.flush(&mut out);
        }
        self.flush(&mut out);
        Bytes::from(out)
    }

    /// A close_notify alert to write before closing the socket.
    pub fn close(&mut self) -> Bytes {
        self.conn.send_close_notify();
        let mut out = Vec::new();
        self.flush(&mut out);
        Bytes::from(out)
    }

    /// Moves every pending TLS record into `out`.
    fn flush(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
