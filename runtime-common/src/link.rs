//! How a connection carries MQTT bytes, sans I/O: raw TCP, WebSocket
//! frames, either of them inside TLS.
//!
//! A plain MQTT connection starts at once ([`Link::raw`]). A WebSocket or
//! TLS one first goes through an [`Opening`]: the TLS handshake, then the
//! WebSocket upgrade, each fed the bytes read and answering with bytes to
//! write, within [`OPEN_TIMEOUT`]. Only then is the connection handed to
//! the core, with the TLS client's identity. A plain HTTP request on a
//! listener with `http_dir` is answered from its files instead
//! ([`OpenStep::Respond`]); that answer is the only I/O done here. Both runtimes run the same
//! loop around [`Opening::feed`], then pass every later read through
//! [`Link::incoming`] and every write through [`Link::outgoing`]. What
//! came with the opening's last read is handed over already through the
//! link ([`OpenStep::Open`]'s `first`): a client that sends CONNECT right
//! behind its TLS Finished puts both in one read.

use bytes::{Bytes, BytesMut};
use culex_core::{Identity, Remote};

use std::sync::Arc;

use crate::http_dir::{FileBody, HttpDir};
use crate::tls::{ClientSession, ListenerTls, TlsEnd, TlsRead, TlsSession};
use crate::ws::{self, Deframed, Deframer, End, Handshake, HandshakeRules, HandshakeStep, Wire};

#[cfg(test)]
mod prop_split;

/// How long a client has to complete the TLS handshake and the WebSocket
/// upgrade together.
pub const OPEN_TIMEOUT: std::time::Duration = ws::HANDSHAKE_TIMEOUT;

/// What a listener's connections speak below MQTT.
#[derive(Debug, Clone, Default)]
pub struct Transport {
    /// TLS, with the listener's settings.
    pub tls: Option<ListenerTls>,
    /// WebSocket, with the listener's settings.
    pub websocket: Option<WebSocket>,
}

/// A websockets listener's settings.
#[derive(Debug, Clone)]
pub struct WebSocket {
    /// Largest frame payload.
    pub max_frame: u64,
    /// What its handshake accepts.
    pub rules: Arc<HandshakeRules>,
    /// The files it serves to plain HTTP requests (`http_dir`).
    pub http_dir: Option<Arc<HttpDir>>,
}

impl WebSocket {
    /// Frames up to `max_frame` bytes, the default handshake rules, no
    /// files.
    pub fn new(max_frame: u64) -> Self {
        Self { max_frame, rules: Arc::default(), http_dir: None }
    }
}

impl Transport {
    /// The opening a new connection from `remote` goes through, or `None`
    /// when it speaks MQTT at once (plain TCP: nothing is allocated).
    pub fn opening(&self, remote: &Remote) -> Option<Opening> {
        if self.tls.is_none() && self.websocket.is_none() {
            return None;
        }
        let tls = match &self.tls {
            Some(listener) => match TlsSession::new(listener.config.clone()) {
                Ok(session) => Some((Box::new(session), listener.clone())),
                Err(error) => {
                    tracing::error!("TLS session for {remote} could not be created: {error}");
                    return Some(Opening::failed(remote.clone()));
                }
            },
            None => None,
        };
        let websocket = self.websocket.clone().map(|ws| (Handshake::with_rules(ws.rules.clone()), ws));
        Some(Opening { remote: remote.clone(), tls, websocket, body: None, failed: false })
    }
}

/// The start of a TLS or WebSocket connection.
#[derive(Debug)]
pub struct Opening {
    remote: Remote,
    tls: Option<(Box<TlsSession>, ListenerTls)>,
    websocket: Option<(Handshake, WebSocket)>,
    /// The file of an HTTP answer, being sent.
    body: Option<FileBody>,
    failed: bool,
}

/// What feeding an [`Opening`] decided. Each step's `reply` is written
/// before acting on it.
#[derive(Debug)]
pub enum OpenStep {
    /// Not done yet: write `reply`, read more.
    NeedMore {
        /// Bytes to write (TLS handshake records).
        reply: Bytes,
    },
    /// Done: write `reply`, then serve `link`, starting with `first`.
    Open {
        /// Bytes to write (the last handshake records, the 101 answer).
        reply: Bytes,
        /// The connection's way of carrying MQTT from now on.
        link: Link,
        /// What came in the same read as the end of the opening, already
        /// through the link (decrypted, unframed), as from
        /// [`Link::incoming`]: handled like any later read, never fed to
        /// the link again.
        first: Deframed,
        /// Where the client's user name comes from.
        identity: Identity,
    },
    /// Refused (already logged): write `reply`, then close.
    Refuse {
        /// Bytes to write (a TLS alert, an HTTP error).
        reply: Bytes,
    },
    /// A plain HTTP request answered from `http_dir`: write `reply`, then
    /// each [`Opening::next_chunk`] until it gives `None`, then close.
    Respond {
        /// The answer's head (and whole body for an error).
        reply: Bytes,
    },
}

impl Opening {
    fn failed(remote: Remote) -> Self {
        Self { remote, tls: None, websocket: None, body: None, failed: true }
    }

    /// Takes bytes as read from the socket.
    pub fn feed(&mut self, data: &[u8]) -> OpenStep {
        if self.failed {
            return OpenStep::Refuse { reply: Bytes::new() };
        }
        let mut reply = BytesMut::new();
        let plain = match &mut self.tls {
            None => Bytes::copy_from_slice(data),
            Some((session, _)) => {
                let read = session.incoming(data);
                reply.extend_from_slice(&read.reply);
                match read.end {
                    Some(TlsEnd::Failed(error)) => {
                        tracing::error!("TLS handshake with {} failed: {error}.", self.remote);
                        return self.refuse(reply);
                    }
                    Some(TlsEnd::Closed) => {
                        tracing::debug!("{} closed TLS during the opening handshake", self.remote);
                        return self.refuse(reply);
                    }
                    None if session.is_handshaking() => return OpenStep::NeedMore { reply: reply.freeze() },
                    None => read.plain,
                }
            }
        };
        let (wire, leftover) = match &mut self.websocket {
            None => (Wire::Raw, plain),
            Some(_) if plain.is_empty() => return OpenStep::NeedMore { reply: reply.freeze() },
            Some((handshake, ws)) => {
                let max_frame = ws.max_frame;
                let http_dir = ws.http_dir.clone();
                match handshake.feed(&plain) {
                    HandshakeStep::NeedMore => return OpenStep::NeedMore { reply: reply.freeze() },
                    HandshakeStep::Accept { response, leftover } => {
                        reply.extend_from_slice(&self.seal(&response));
                        (Wire::WebSocket(Box::new(Deframer::new(max_frame))), leftover)
                    }
                    HandshakeStep::Http(request) => {
                        self.failed = true;
                        let Some(dir) = http_dir else { return self.refuse(reply) };
                        let answer = dir.answer(&request);
                        self.body = answer.body;
                        reply.extend_from_slice(&self.seal(&answer.head));
                        return OpenStep::Respond { reply: reply.freeze() };
                    }
                    HandshakeStep::Refuse { response, reason } => {
                        tracing::debug!(remote = %self.remote, reason, "WebSocket handshake refused");
                        reply.extend_from_slice(&self.seal(&response));
                        return self.refuse(reply);
                    }
                }
            }
        };
        let (tls, identity) = match self.tls.take() {
            Some((session, listener)) => {
                let identity = listener.identity(&session);
                (Some(session), identity)
            }
            None => (None, Identity::Connect),
        };
        self.failed = true;
        let mut layers =
            Box::new(Layers { remote: self.remote.clone(), tls: tls.map(|session| Tls::Server(*session)), wire });
        // The bytes after the opening's end are out of TLS already: only
        // the wire is left to take them through.
        let mut first = layers.unframe(leftover);
        reply.extend_from_slice(&std::mem::take(&mut first.reply));
        OpenStep::Open { reply: reply.freeze(), link: Link { layers: Some(layers) }, first, identity }
    }

    /// The next bytes of an HTTP answer's file, as written on the socket;
    /// under TLS the last are its close_notify. `None` once all is out.
    pub fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(chunk) = self.body.as_mut().and_then(FileBody::next_chunk) {
            return Some(self.seal(&chunk));
        }
        self.body = None;
        let (session, _) = self.tls.as_mut()?;
        let close = session.close();
        self.tls = None;
        Some(close)
    }

    /// Logs that the client did not finish the opening in time.
    pub fn timed_out(&self) {
        let what = if self.tls.as_ref().is_some_and(|(s, _)| s.is_handshaking()) { "TLS" } else { "WebSocket" };
        tracing::debug!("{what} handshake with {} timed out", self.remote);
    }

    /// `data` as written on the socket (encrypted under TLS).
    fn seal(&mut self, data: &[u8]) -> Bytes {
        match &mut self.tls {
            Some((session, _)) => session.outgoing(data),
            None => Bytes::copy_from_slice(data),
        }
    }

    fn refuse(&mut self, reply: BytesMut) -> OpenStep {
        self.failed = true;
        OpenStep::Refuse { reply: reply.freeze() }
    }
}

/// How an open connection carries MQTT bytes: [`Wire`] (raw or
/// WebSocket), inside TLS or not.
#[derive(Debug)]
pub struct Link {
    /// `None` for plain MQTT on TCP, so that a plain connection's task
    /// pays one pointer for it.
    layers: Option<Box<Layers>>,
}

/// What lies under MQTT on a TLS or WebSocket connection.
#[derive(Debug)]
struct Layers {
    /// The peer's address, for the log line of a TLS failure.
    remote: Remote,
    tls: Option<Tls>,
    wire: Wire,
}

/// TLS as the server (a listener's connections) or as the client (a
/// bridge's: few, so boxed rather than making every listener's layers
/// larger).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
enum Tls {
    Server(TlsSession),
    Client(Box<ClientSession>),
}

impl Tls {
    fn incoming(&mut self, data: &[u8]) -> TlsRead {
        match self {
            Self::Server(session) => session.incoming(data),
            Self::Client(session) => session.incoming(data),
        }
    }

    fn outgoing(&mut self, plain: &[u8]) -> Bytes {
        match self {
            Self::Server(session) => session.outgoing(plain),
            Self::Client(session) => session.outgoing(plain),
        }
    }

    fn close(&mut self) -> Bytes {
        match self {
            Self::Server(session) => session.close(),
            Self::Client(session) => session.close(),
        }
    }
}

impl Layers {
    /// Plaintext out of TLS (or read, without TLS) through the wire: MQTT
    /// bytes, and the wire's replies as written on the socket.
    fn unframe(&mut self, plain: Bytes) -> Deframed {
        if plain.is_empty() {
            return Deframed::default();
        }
        let mut got = self.wire.incoming(plain);
        if let Some(session) = &mut self.tls
            && !got.reply.is_empty()
        {
            got.reply = BytesMut::from(session.outgoing(&got.reply));
        }
        got
    }
}

impl Link {
    /// Plain MQTT on TCP.
    pub fn raw() -> Self {
        Self { layers: None }
    }

    /// MQTT in TLS as the client, to `remote`, over a session whose
    /// handshake is done (a bridge's connection).
    pub fn tls_client(remote: Remote, session: ClientSession) -> Self {
        let tls = Some(Tls::Client(Box::new(session)));
        Self { layers: Some(Box::new(Layers { remote, tls, wire: Wire::Raw })) }
    }

    /// The bytes read, as MQTT bytes plus bytes to write and whether to
    /// end.
    pub fn incoming(&mut self, data: Bytes) -> Deframed {
        let Some(layers) = &mut self.layers else { return Deframed { data, ..Deframed::default() } };
        let Some(session) = &mut layers.tls else { return layers.unframe(data) };
        let direction = match session {
            Tls::Server(_) => "from",
            Tls::Client(_) => "to",
        };
        let read = session.incoming(&data);
        let mut got = layers.unframe(read.plain);
        // TLS replies (alerts, key updates) go out before the wire's.
        let mut reply = BytesMut::from(&read.reply[..]);
        reply.extend_from_slice(&got.reply);
        got.reply = reply;
        got.end = got.end.or(match read.end {
            None => None,
            Some(TlsEnd::Closed) => Some(End::Closed),
            Some(TlsEnd::Failed(error)) => {
                tracing::error!("TLS error on the connection {direction} {}: {error}.", layers.remote);
                Some(End::Error("TLS error"))
            }
        });
        got
    }

    /// Bytes to write for MQTT bytes from the core.
    pub fn outgoing(&mut self, data: Bytes) -> Bytes {
        let Some(layers) = &mut self.layers else { return data };
        let framed = layers.wire.outgoing(data);
        match &mut layers.tls {
            Some(session) => session.outgoing(&framed),
            None => framed,
        }
    }

    /// Bytes to write before the broker closes the socket (TLS
    /// close_notify); empty for plain connections.
    pub fn close(&mut self) -> Bytes {
        match self.layers.as_mut().and_then(|layers| layers.tls.as_mut()) {
            Some(session) => session.close(),
            None => Bytes::new(),
        }
    }
}
