//! One TLS connection, sans I/O: bytes read from the socket go in,
//! plaintext and bytes to write come out. Both runtimes drive it the same
//! way through [`Link`](crate::link::Link).
//!
//! Built on rustls' unbuffered API so that the only buffer kept between
//! reads is the unfinished record, if any: an idle TLS connection holds no
//! read buffer (rustls' buffered connection keeps 4 KiB per connection).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, InsufficientSizeError};

/// Most bytes of unfinished TLS data kept between reads: a handshake
/// message of rustls' largest size (64 KiB) plus one largest record.
const MAX_PENDING: usize = 0xffff + 5 + (1 << 14) + 2048;

/// Record overhead allowed for when sizing an output buffer (header, tag,
/// padding); a larger need is met by the retry on `InsufficientSize`.
const RECORD_OVERHEAD: usize = 64;

/// How a TLS connection ended while reading.
#[derive(Debug)]
pub enum TlsEnd {
    /// The client sent close_notify.
    Closed,
    /// The client broke TLS or failed verification; an alert saying so is
    /// in [`TlsRead::reply`] when rustls has one to send.
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
pub struct TlsSession {
    conn: UnbufferedServerConnection,
    /// Bytes of an unfinished record; empty (no allocation) between
    /// complete records.
    pending: Vec<u8>,
    /// The client closed or broke the connection: nothing more is read.
    ended: bool,
    /// It broke it: nothing more is written either.
    failed: bool,
}

impl std::fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSession")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl TlsSession {
    /// A session waiting for the client's hello.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self { conn: UnbufferedServerConnection::new(config)?, pending: Vec::new(), ended: false, failed: false })
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
    pub fn incoming(&mut self, data: &[u8]) -> TlsRead {
        let mut out = TlsRead::default();
        if self.ended {
            return out;
        }
        self.pending.extend_from_slice(data);
        let mut plain = BytesMut::new();
        let mut failed = false;
        loop {
            let status = self.conn.process_tls_records(&mut self.pending);
            let discard = status.discard;
            let mut done = false;
            match status.state {
                Ok(ConnectionState::EncodeTlsData(mut encode)) => {
                    encode_into(&mut encode, &mut out.reply);
                    // After an error rustls queues one alert, and asking
                    // for more would make it process the bad bytes again.
                    done = failed;
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    while let Some(record) = traffic.next_record() {
                        match record {
                            // Plaintext after a fault is dropped.
                            Ok(_) if failed => {}
                            Ok(record) => plain.extend_from_slice(record.payload),
                            Err(_) if failed => break,
                            Err(error) => {
                                out.end = Some(TlsEnd::Failed(error));
                                failed = true;
                                break;
                            }
                        }
                    }
                }
                Ok(_) | Err(_) if failed => done = true,
                Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                    out.end = Some(TlsEnd::Closed);
                    done = true;
                }
                // Waiting for more bytes (nothing else to do until then).
                Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => done = true,
                // Early data is off (rustls' default); anything new: stop.
                Ok(_) => done = true,
                Err(error) => {
                    out.end = Some(TlsEnd::Failed(error));
                    failed = true;
                }
            }
            self.pending.drain(..discard.min(self.pending.len()));
            if done {
                break;
            }
        }
        if self.pending.is_empty() {
            self.pending = Vec::new();
        } else if self.pending.len() > MAX_PENDING && out.end.is_none() {
            out.end = Some(TlsEnd::Failed(rustls::Error::General("unfinished TLS data over 82 KiB".to_owned())));
        }
        self.ended = out.end.is_some();
        self.failed = failed || matches!(out.end, Some(TlsEnd::Failed(_)));
        if self.ended {
            self.pending = Vec::new();
        }
        out.plain = plain.freeze();
        out
    }

    /// TLS records carrying `plain`, to write to the socket; empty before
    /// the handshake is done or after the connection failed.
    pub fn outgoing(&mut self, plain: &[u8]) -> Bytes {
        self.write(|traffic, out| traffic.encrypt(plain, out), plain.len() + plain.len() / 256 + RECORD_OVERHEAD)
    }

    /// A close_notify alert to write before closing the socket.
    pub fn close(&mut self) -> Bytes {
        self.write(|traffic, out| traffic.queue_close_notify(out), RECORD_OVERHEAD)
    }

    /// Runs `encrypt` in the write state, into a buffer of `size` bytes
    /// (grown once if rustls asks for more).
    fn write(
        &mut self,
        mut encrypt: impl FnMut(
            &mut rustls::unbuffered::WriteTraffic<'_, ServerConnectionData>,
            &mut [u8],
        ) -> Result<usize, EncryptError>,
        size: usize,
    ) -> Bytes {
        if self.failed {
            return Bytes::new();
        }
        let status = self.conn.process_tls_records(&mut self.pending);
        // `incoming` left no whole record unread, so this is 0; were it
        // not, keeping those bytes would have them read twice.
        let discard = status.discard;
        let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state else {
            self.pending.drain(..discard.min(self.pending.len()));
            return Bytes::new();
        };
        let mut out = vec![0; size];
        let written = match encrypt(&mut traffic, &mut out) {
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                out.resize(required_size, 0);
                encrypt(&mut traffic, &mut out)
            }
            other => other,
        };
        self.pending.drain(..discard.min(self.pending.len()));
        match written {
            Ok(n) => {
                out.truncate(n);
                Bytes::from(out)
            }
            Err(error) => {
                tracing::debug!("TLS write failed: {error}");
                Bytes::new()
            }
        }
    }
}

/// Appends a handshake record (or alert) rustls has ready.
fn encode_into(encode: &mut EncodeTlsData<'_, ServerConnectionData>, out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + 1024, 0);
    let written = match encode.encode(&mut out[start..]) {
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => {
            out.resize(start + required_size, 0);
            encode.encode(&mut out[start..])
        }
        other => other,
    };
    out.truncate(start + written.unwrap_or(0));
}
