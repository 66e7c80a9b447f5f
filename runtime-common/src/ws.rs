//! MQTT over WebSocket (RFC 6455, MQTT 3.1.1 section 6), sans I/O.
//!
//! A `protocol websockets` connection first completes a [`Handshake`]
//! (the HTTP/1.1 upgrade, within the listener's [`HandshakeRules`]: head
//! size, allowed origins; a plain HTTP request is handed back for
//! `http_dir` to answer), then every byte read goes through a
//! [`Deframer`], which hands back the MQTT bytes carried by binary frames
//! and the control replies (pong, close) to write. The core reassembles
//! MQTT packets whatever the framing [MQTT-6.0.0-2]. Everything the broker
//! writes goes out as one unmasked binary frame per write
//! ([`frame_binary`]).
//!
//! Nothing here does I/O or panics on peer input; every buffer is bounded.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};

/// How long a client has to complete the opening handshake.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Largest request head (request line and headers) accepted when
/// `websockets_headers_size` does not say.
pub const MAX_HEADERS: usize = 8 * 1024;

/// The GUID of RFC 6455 section 1.3, appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Subprotocols accepted, in order of preference: `mqtt` [MQTT-6.0.0-4],
/// and `mqttv3.1` as Mosquitto does.
const SUBPROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];

/// What feeding a [`Handshake`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeStep {
    /// The request head is not complete yet.
    NeedMore,
    /// Upgrade accepted: write `response`, then treat `leftover` (bytes
    /// after the request head) as frame data.
    Accept {
        /// The `101 Switching Protocols` answer.
        response: Bytes,
        /// Frame bytes already read.
        leftover: Bytes,
    },
    /// Refused: write `response`, then close.
    Refuse {
        /// The HTTP error answer.
        response: Bytes,
        /// Why, for the log.
        reason: &'static str,
    },
    /// A plain HTTP request (no upgrade) on a listener with `http_dir`:
    /// answer it (see [`crate::http_dir`]), then close.
    Http(HttpRequest),
}

/// What a listener's handshake accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeRules {
    /// Largest request head, request line and headers with their line
    /// ends (`websockets_headers_size`; [`MAX_HEADERS`] without it).
    pub max_head: usize,
    /// `Origin` values an upgrade may carry (`websockets_origin`); empty
    /// lets any request in, with or without `Origin`.
    pub origins: Vec<String>,
    /// Plain GET and HEAD requests are handed back as
    /// [`HandshakeStep::Http`] (the listener has `http_dir`); without it
    /// they are refused (400).
    pub http: bool,
}

impl Default for HandshakeRules {
    fn default() -> Self {
        Self { max_head: MAX_HEADERS, origins: Vec::new(), http: false }
    }
}

/// A plain HTTP request for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// GET or HEAD.
    pub method: HttpMethod,
    /// The target's path, as sent (percent-encoded), without its query.
    pub path: String,
}

/// The methods `http_dir` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// `GET`: head and file.
    Get,
    /// `HEAD`: the head only.
    Head,
}

/// The server side of the opening handshake: accumulates bytes until the
/// request head is complete, then accepts or refuses the upgrade.
#[derive(Debug, Default)]
pub struct Handshake {
    buf: Vec<u8>,
    done: bool,
    rules: std::sync::Arc<HandshakeRules>,
}

impl Handshake {
    /// A handshake waiting for the client's request, under the default
    /// rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handshake under a listener's `rules`.
    pub fn with_rules(rules: std::sync::Arc<HandshakeRules>) -> Self {
        Self { rules, ..Self::default() }
    }

    /// Takes bytes as read. Once it returned `Accept` or `Refuse`, later
    /// calls refuse.
    pub fn feed(&mut self, data: &[u8]) -> HandshakeStep {
        if self.done {
            return refuse(400, "handshake already finished", "");
        }
        // Look for the end of the head only where it can have appeared.
        let from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(data);
        let max_head = self.rules.max_head;
        let Some(end) = find(&self.buf[from..], b"\r\n\r\n").map(|at| from + at + 4) else {
            if self.buf.len() > max_head {
                self.done = true;
                return refuse(431, "request headers too large", "");
            }
            return HandshakeStep::NeedMore;
        };
        self.done = true;
        if end > max_head {
            return refuse(431, "request headers too large", "");
        }
        let leftover = Bytes::copy_from_slice(&self.buf[end..]);
        let head = std::mem::take(&mut self.buf);
        match parse_request(&head[..end], &self.rules) {
            Ok(Request::Http(request)) => HandshakeStep::Http(request),
            Ok(Request::Upgrade(Upgrade { key, protocol })) => {
                let response = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
                    accept_key(key)
                );
                HandshakeStep::Accept { response: Bytes::from(response), leftover }
            }
            Err(Refusal { status, reason, extra }) => refuse(status, reason, extra),
        }
    }
}

/// A request the handshake goes on with.
enum Request<'a> {
    /// A valid WebSocket upgrade.
    Upgrade(Upgrade<'a>),
    /// A plain GET or HEAD for `http_dir`.
    Http(HttpRequest),
}

/// A valid upgrade request.
struct Upgrade<'a> {
    key: &'a str,
    protocol: &'static str,
}

/// Why an upgrade request is refused.
struct Refusal {
    status: u16,
    reason: &'static str,
    extra: &'static str,
}

const fn bad(reason: &'static str) -> Refusal {
    Refusal { status: 400, reason, extra: "" }
}

fn refuse(status: u16, reason: &'static str, extra: &str) -> HandshakeStep {
    let text = match status {
        403 => "Forbidden",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let response = format!("HTTP/1.1 {status} {text}\r\nConnection: close\r\n{extra}Content-Length: 0\r\n\r\n");
    HandshakeStep::Refuse { response: Bytes::from(response), reason }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// True if the comma-separated `list` holds `token` (case-insensitive).
fn has_token(list: &str, token: &str) -> bool {
    list.split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn parse_request<'a>(head: &'a [u8], rules: &HandshakeRules) -> Result<Request<'a>, Refusal> {
    let head = std::str::from_utf8(head).map_err(|_| bad("request is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(' ');
    let (method, target, http) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target)) = (method, target) else { return Err(bad("not an HTTP request")) };
    if target.is_empty()
        || target.bytes().any(|b| b.is_ascii_control())
        || !matches!(http, Some("HTTP/1.1" | "HTTP/1.0"))
        || parts.next().is_some()
    {
        return Err(bad("not an HTTP/1.1 GET request"));
    }
    let (mut upgrade, mut connection, mut version, mut key, mut origin) = (false, false, None, None, None);
    let mut offered: Vec<&str> = Vec::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade |= has_token(value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection |= has_token(value, "upgrade");
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            version = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            key = Some(value);
        } else if name.eq_ignore_ascii_case("sec-websocket-protocol") {
            offered.extend(value.split(',').map(str::trim));
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value);
        }
    }
    if !upgrade && rules.http {
        return plain_request(method, target);
    }
    if method != "GET" || http != Some("HTTP/1.1") {
        return Err(bad("not an HTTP/1.1 GET request"));
    }
    if !upgrade || !connection {
        return Err(bad("not a WebSocket upgrade request"));
    }
    if version != Some("13") {
        return Err(Refusal {
            status: 426,
            reason: "unsupported WebSocket version",
            extra: "Sec-WebSocket-Version: 13\r\n",
        });
    }
    let key = key.ok_or(bad("no Sec-WebSocket-Key"))?;
    if STANDARD.decode(key).map(|k| k.len()) != Ok(16) {
        return Err(bad("invalid Sec-WebSocket-Key"));
    }
    if !rules.origins.is_empty() && !origin.is_some_and(|o| rules.origins.iter().any(|allowed| allowed == o)) {
        return Err(Refusal { status: 403, reason: "origin not allowed (websockets_origin)", extra: "" });
    }
    let protocol = SUBPROTOCOLS
        .iter()
        .find(|p| offered.iter().any(|o| o.eq_ignore_ascii_case(p)))
        .ok_or(bad("client does not offer the mqtt subprotocol"))?;
    Ok(Request::Upgrade(Upgrade { key, protocol }))
}

/// A request without upgrade on a listener with `http_dir`: GET and HEAD
/// go to the files, other methods are refused (405).
fn plain_request(method: &str, target: &str) -> Result<Request<'static>, Refusal> {
    let method = match method {
        "GET" => HttpMethod::Get,
        "HEAD" => HttpMethod::Head,
        _ => return Err(Refusal { status: 405, reason: "HTTP method not allowed", extra: "Allow: GET, HEAD\r\n" }),
    };
    // Only the path names a file: the query and a fragment do not.
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') {
        return Err(bad("HTTP request target is not a path"));
    }
    Ok(Request::Http(HttpRequest { method, path: path.to_owned() }))
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.digest().bytes())
}

/// Why the [`Deframer`] ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The client sent a close frame; the reply is in [`Deframed::reply`].
    Closed,
    /// The client broke the protocol; a close frame saying so is in
    /// [`Deframed::reply`].
    Error(&'static str),
}

/// What one [`Deframer::feed`] produced.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Deframed {
    /// MQTT bytes, unmasked, in order.
    pub data: Bytes,
    /// Frames to write back (pong, close), in order.
    pub reply: BytesMut,
    /// Set when the connection must end once `reply` is written.
    pub end: Option<End>,
}

/// Where the deframer is within the current frame.
#[derive(Debug)]
enum State {
    /// Reading a frame header (at most 14 bytes).
    Header,
    /// Reading a payload.
    Payload {
        /// The frame's opcode.
        opcode: u8,
        /// Payload bytes still to come.
        remaining: u64,
        /// The masking key.
        mask: [u8; 4],
        /// Payload bytes already read (for the mask position).
        done: u64,
    },
    /// The connection is over.
    Ended,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Largest control frame payload (RFC 6455 section 5.5).
const MAX_CONTROL: u64 = 125;

/// Turns client frames into MQTT bytes and control replies, incrementally
/// over arbitrary chunks. Data payloads stream through without being
/// buffered; only a frame header and a control payload (125 bytes) are.
#[derive(Debug)]
pub struct Deframer {
    state: State,
    header: Vec<u8>,
    control: Vec<u8>,
    /// A fragmented data message is in progress (continuations allowed).
    fragmented: bool,
    max_frame: u64,
}

impl Deframer {
    /// A deframer refusing frames whose payload is over `max_frame` bytes.
    pub fn new(max_frame: u64) -> Self {
        Self { state: State::Header, header: Vec::with_capacity(14), control: Vec::new(), fragmented: false, max_frame }
    }

    /// Takes bytes as read. After an [`End`], further bytes are ignored.
    pub fn feed(&mut self, mut input: &[u8]) -> Deframed {
        let mut out = Deframed::default();
        let mut data = BytesMut::new();
        while out.end.is_none() {
            match &mut self.state {
                State::Ended => break,
                State::Header => {
                    if input.is_empty() {
                        break;
                    }
                    let need = header_len(&self.header).saturating_sub(self.header.len()).max(1);
                    let take = need.min(input.len());
                    self.header.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.header.get(1).is_some_and(|b| b & 0x80 == 0) {
                        // Refuse at once rather than wait for a mask that
                        // will not come.
                        self.fail(&mut out, "client frame not masked");
                    } else if self.header.len() >= header_len(&self.header)
                        && let Err(reason) = self.start_frame(&mut out)
                    {
                        self.fail(&mut out, reason);
                    }
                }
                State::Payload { opcode, remaining, mask, done } => {
                    let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(input.len());
                    let opcode = *opcode;
                    let chunk = &input[..take];
                    input = &input[take..];
                    let start = *done;
                    let unmask = chunk.iter().enumerate().map(|(i, b)| b ^ mask[((start + i as u64) % 4) as usize]);
                    if is_control(opcode) {
                        self.control.extend(unmask);
                    } else {
                        data.extend(unmask);
                    }
                    *done += take as u64;
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Header;
                        if is_control(opcode) {
                            self.control_frame(opcode, &mut out);
                        }
                    } else if input.is_empty() {
                        break;
                    }
                }
            }
        }
        out.data = data.freeze();
        out
    }

    /// A complete header is in `self.header`: checks it and moves to the
    /// payload.
    fn start_frame(&mut self, out: &mut Deframed) -> Result<(), &'static str> {
        let h = std::mem::take(&mut self.header);
        let (first, second) = (h[0], h[1]);
        let fin = first & 0x80 != 0;
        let opcode = first & 0x0F;
        if first & 0x70 != 0 {
            return Err("reserved bits set");
        }
        if second & 0x80 == 0 {
            return Err("client frame not masked");
        }
        let length = match second & 0x7F {
            126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
            127 => u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
            n => u64::from(n),
        };
        if length >> 63 != 0 {
            return Err("invalid payload length");
        }
        let m = h.len() - 4;
        let mask = [h[m], h[m + 1], h[m + 2], h[m + 3]];
        match opcode {
            OP_TEXT => return Err("text frame (MQTT needs binary frames)"),
            OP_BINARY if self.fragmented => return Err("new message inside a fragmented one"),
            OP_CONTINUATION if !self.fragmented => return Err("continuation without a message"),
            OP_BINARY | OP_CONTINUATION => {
                if length > self.max_frame {
                    return Err("frame too large");
                }
                self.fragmented = !fin;
            }
            OP_CLOSE | OP_PING | OP_PONG => {
                if !fin {
                    return Err("fragmented control frame");
                }
                if length > MAX_CONTROL {
                    return Err("control frame too large");
                }
            }
            _ => return Err("reserved opcode"),
        }
        self.header = h;
        self.header.clear();
        self.control.clear();
        self.state = State::Payload { opcode, remaining: length, mask, done: 0 };
        if length == 0 {
            self.state = State::Header;
            if is_control(opcode) {
                self.control_frame(opcode, out);
            }
        }
        Ok(())
    }

    /// A control frame's payload is complete in `self.control`.
    fn control_frame(&mut self, opcode: u8, out: &mut Deframed) {
        match opcode {
            OP_PING => put_frame(&mut out.reply, OP_PONG, &self.control),
            OP_CLOSE => {
                // Echo the status code, if any (RFC 6455 section 5.5.1).
                let code = self.control.get(..2).unwrap_or_default();
                put_frame(&mut out.reply, OP_CLOSE, code);
                out.end = Some(End::Closed);
                self.state = State::Ended;
            }
            _ => {}
        }
    }

    /// Ends the connection on a protocol error, with a close frame saying
    /// so (1003 for text frames, 1009 for too large, 1002 otherwise).
    fn fail(&mut self, out: &mut Deframed, reason: &'static str) {
        let code: u16 = if reason.starts_with("text") {
            1003
        } else if reason.contains("too large") {
            1009
        } else {
            1002
        };
        put_frame(&mut out.reply, OP_CLOSE, &code.to_be_bytes());
        out.end = Some(End::Error(reason));
        self.state = State::Ended;
    }
}

fn is_control(opcode: u8) -> bool {
    opcode & 0x8 != 0
}

/// Length of the frame header starting in `h` (2 until the length byte is
/// known), mask included.
fn header_len(h: &[u8]) -> usize {
    match h.get(1).map(|b| b & 0x7F) {
        None => 2,
        Some(126) => 2 + 2 + 4,
        Some(127) => 2 + 8 + 4,
        Some(_) => 2 + 4,
    }
}

/// Appends an unmasked, final server frame.
fn put_frame(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 10);
    out.put_u8(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.put_u8(n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(payload);
}

/// MQTT bytes as one unmasked binary server frame.
pub fn frame_binary(data: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    put_frame(&mut out, OP_BINARY, data);
    out.freeze()
}

/// How a connection carries MQTT bytes: raw TCP, or WebSocket frames
/// after the handshake. The connection tasks of both runtimes pass every
/// read and write through it.
#[derive(Debug)]
pub enum Wire {
    /// MQTT straight on TCP.
    Raw,
    /// MQTT in WebSocket binary frames (boxed: a raw connection's task
    /// then holds one word for it).
    WebSocket(Box<Deframer>),
}

impl Wire {
    /// The read bytes, as MQTT bytes plus replies to write and whether to
    /// end.
    pub fn incoming(&mut self, data: Bytes) -> Deframed {
        match self {
            Self::Raw => Deframed { data, ..Deframed::default() },
            Self::WebSocket(deframer) => deframer.feed(&data),
        }
    }

    /// Bytes to write for MQTT bytes from the core.
    pub fn outgoing(&self, data: Bytes) -> Bytes {
        match self {
            Self::Raw => data,
            Self::WebSocket(_) => frame_binary(&data),
        }
    }
}

/// Largest WebSocket frame payload accepted, for a broker whose largest
/// MQTT packet is `max_packet_size`.
pub fn max_frame(max_packet_size: usize) -> u64 {
    (max_packet_size as u64).saturating_add(4096)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quickcheck::{QuickCheck, TestResult};

    const REQUEST: &str = "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n";

    fn masked(opcode: u8, fin: bool, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn rfc_accept_key() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn handshake_accepts_in_pieces_with_leftover() {
        let mut hs = Handshake::new();
        let mut input = REQUEST.as_bytes().to_vec();
        input.extend_from_slice(b"\x82\x80abcd");
        let (a, b) = input.split_at(40);
        assert_eq!(hs.feed(a), HandshakeStep::NeedMore);
        let HandshakeStep::Accept { response, leftover } = hs.feed(b) else { panic!("refused") };
        let text = std::str::from_utf8(&response).unwrap();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: mqtt\r\n"));
        assert_eq!(&leftover[..], b"\x82\x80abcd");
    }

    #[test]
    fn handshake_subprotocols() {
        let v31 = REQUEST.replace("Protocol: mqtt", "protocol: foo, mqttv3.1");
        let HandshakeStep::Accept { response, .. } = Handshake::new().feed(v31.as_bytes()) else { panic!() };
        assert!(std::str::from_utf8(&response).unwrap().contains("Sec-WebSocket-Protocol: mqttv3.1\r\n"));
        for bad in [
            REQUEST.replace("Protocol: mqtt", "Protocol: chat"),
            REQUEST.replace("Sec-WebSocket-Protocol: mqtt\r\n", ""),
            REQUEST.replace("Upgrade: websocket", "Upgrade: h2c"),
            REQUEST.replace("keep-alive, Upgrade", "keep-alive"),
            REQUEST.replace("dGhlIHNhbXBsZSBub25jZQ==", "short"),
            REQUEST.replace("GET", "POST"),
        ] {
            let step = Handshake::new().feed(bad.as_bytes());
            assert!(matches!(&step, HandshakeStep::Refuse { response, .. } if response.starts_with(b"HTTP/1.1 400")));
        }
        let step = Handshake::new().feed(REQUEST.replace("Version: 13", "Version: 8").as_bytes());
        assert!(matches!(&step, HandshakeStep::Refuse { response, .. } if response.starts_with(b"HTTP/1.1 426")));
    }

    fn with(rules: HandshakeRules) -> Handshake {
        Handshake::with_rules(std::sync::Arc::new(rules))
    }

    fn status(step: &HandshakeStep) -> &str {
        match step {
            HandshakeStep::Accept { response, .. } | HandshakeStep::Refuse { response, .. } => {
                std::str::from_utf8(&response[..12]).unwrap()
            }
            HandshakeStep::NeedMore => "need more",
            HandshakeStep::Http(_) => "http",
        }
    }

    #[test]
    fn origins_when_given_must_match_exactly() {
        let origins = || HandshakeRules {
            origins: vec!["https://example.com".to_owned(), "http://localhost:8080".to_owned()],
            ..HandshakeRules::default()
        };
        let from = |origin: &str| REQUEST.replace("Host: localhost\r\n", &format!("Host: localhost\r\n{origin}"));
        assert_eq!(status(&with(origins()).feed(from("Origin: https://example.com\r\n").as_bytes())), "HTTP/1.1 101");
        assert_eq!(status(&with(origins()).feed(from("origin: http://localhost:8080\r\n").as_bytes())), "HTTP/1.1 101");
        for refused in [
            "Origin: https://example.com.evil\r\n",
            "Origin: https://EXAMPLE.com\r\n",
            "Origin: https://example\r\n",
            "",
        ] {
            let step = with(origins()).feed(from(refused).as_bytes());
            assert_eq!(status(&step), "HTTP/1.1 403", "{refused:?}");
            assert!(matches!(step, HandshakeStep::Refuse { reason: "origin not allowed (websockets_origin)", .. }));
        }
        // Without websockets_origin any origin, or none, is let in.
        assert_eq!(status(&Handshake::new().feed(from("Origin: http://x\r\n").as_bytes())), "HTTP/1.1 101");
    }

    #[test]
    fn head_size_follows_the_rules_and_counts_the_whole_head() {
        let size = REQUEST.len();
        let exact = HandshakeRules { max_head: size, ..HandshakeRules::default() };
        assert_eq!(status(&with(exact).feed(REQUEST.as_bytes())), "HTTP/1.1 101");
        let short = HandshakeRules { max_head: size - 1, ..HandshakeRules::default() };
        assert_eq!(status(&with(short.clone()).feed(REQUEST.as_bytes())), "HTTP/1.1 431");
        // Refused as soon as the limit is passed, before the head ends.
        let mut hs = with(short);
        assert_eq!(hs.feed(&REQUEST.as_bytes()[..size - 4]), HandshakeStep::NeedMore);
        assert_eq!(status(&hs.feed(b"X-More: yes\r\n")), "HTTP/1.1 431");
    }

    /// Requests of every kind the handshake tells apart, with the rules
    /// each is judged by: upgrades accepted and refused (origin, size),
    /// and plain requests for `http_dir`.
    fn requests() -> Vec<(String, HandshakeRules)> {
        let http = HandshakeRules { http: true, ..HandshakeRules::default() };
        let origins = HandshakeRules { origins: vec!["https://example.com".to_owned()], ..HandshakeRules::default() };
        let small = HandshakeRules { max_head: REQUEST.len() - 1, ..HandshakeRules::default() };
        let with_origin = REQUEST.replace("Host: localhost\r\n", "Host: localhost\r\nOrigin: https://example.com\r\n");
        vec![
            (REQUEST.to_owned(), HandshakeRules::default()),
            (with_origin.clone(), origins.clone()),
            (REQUEST.to_owned(), origins),
            (REQUEST.to_owned(), small),
            ("GET /app/index.html?v=2 HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), http.clone()),
            ("HEAD / HTTP/1.0\r\n\r\n".to_owned(), http.clone()),
            ("PUT / HTTP/1.1\r\n\r\n".to_owned(), http),
            ("GET / HTTP/1.1\r\n\r\n".to_owned(), HandshakeRules::default()),
        ]
    }

    /// The first answer when `input` comes in `chunks` (sizes of at least
    /// 1, cycled).
    fn answer_in_chunks(rules: &HandshakeRules, input: &[u8], chunks: &[usize]) -> HandshakeStep {
        let mut hs = with(rules.clone());
        let mut rest = input;
        for size in chunks.iter().cycle() {
            let (now, later) = rest.split_at((*size).min(rest.len()));
            rest = later;
            match hs.feed(now) {
                HandshakeStep::NeedMore if !rest.is_empty() => {}
                step => return step,
            }
        }
        HandshakeStep::NeedMore
    }

    #[test]
    fn every_split_of_a_request_gets_the_same_answer() {
        for (request, rules) in requests() {
            let whole = with(rules.clone()).feed(request.as_bytes());
            assert_ne!(whole, HandshakeStep::NeedMore, "{request:?}");
            for cut in 1..request.len() {
                let got = answer_in_chunks(&rules, request.as_bytes(), &[cut, request.len()]);
                assert_eq!(got, whole, "{request:?} cut at {cut}");
            }
        }
        fn prop(chunks: Vec<u8>) -> bool {
            let chunks: Vec<usize> = chunks.into_iter().map(|c| usize::from(c % 16) + 1).collect();
            requests().into_iter().all(|(request, rules)| {
                let whole = with(rules.clone()).feed(request.as_bytes());
                chunks.is_empty() || answer_in_chunks(&rules, request.as_bytes(), &chunks) == whole
            })
        }
        QuickCheck::new().quickcheck(prop as fn(Vec<u8>) -> bool);
    }

    #[test]
    fn plain_requests_go_to_http_dir_when_there_is_one() {
        let http = || with(HandshakeRules { http: true, ..HandshakeRules::default() });
        let get = "GET /app/index.html?v=2 HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let expected = HttpRequest { method: HttpMethod::Get, path: "/app/index.html".to_owned() };
        assert_eq!(http().feed(get.as_bytes()), HandshakeStep::Http(expected));
        let head = "HEAD / HTTP/1.0\r\n\r\n";
        let expected = HttpRequest { method: HttpMethod::Head, path: "/".to_owned() };
        assert_eq!(http().feed(head.as_bytes()), HandshakeStep::Http(expected));
        for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
            let step = http().feed(format!("{method} / HTTP/1.1\r\n\r\n").as_bytes());
            assert_eq!(status(&step), "HTTP/1.1 405", "{method}");
            let HandshakeStep::Refuse { response, .. } = step else { panic!() };
            assert!(std::str::from_utf8(&response).unwrap().contains("Allow: GET, HEAD\r\n"));
        }
        assert_eq!(status(&http().feed(b"GET http://host/ HTTP/1.1\r\n\r\n")), "HTTP/1.1 400");
        assert_eq!(status(&http().feed(b"GET /a\x01b HTTP/1.1\r\n\r\n")), "HTTP/1.1 400");
        // An upgrade on the same listener is still an upgrade.
        assert_eq!(status(&http().feed(REQUEST.as_bytes())), "HTTP/1.1 101");
        // Without http_dir a plain request is refused, as before.
        assert_eq!(status(&Handshake::new().feed(get.as_bytes())), "HTTP/1.1 400");
    }

    #[test]
    fn handshake_bounded() {
        let mut hs = Handshake::new();
        let filler = vec![b'a'; 1000];
        let mut refused = false;
        for _ in 0..10 {
            if let HandshakeStep::Refuse { response, .. } = hs.feed(&filler) {
                assert!(response.starts_with(b"HTTP/1.1 431"));
                refused = true;
                break;
            }
        }
        assert!(refused);
    }

    #[test]
    fn frames() {
        let mut d = Deframer::new(1 << 20);
        let mut input = masked(OP_BINARY, false, b"\x10\x0c", [1, 2, 3, 4]);
        input.extend(masked(OP_PING, true, b"hi", [9, 9, 9, 9]));
        input.extend(masked(OP_CONTINUATION, true, b"rest", [5, 6, 7, 8]));
        let out = d.feed(&input);
        assert_eq!(&out.data[..], b"\x10\x0crest");
        assert_eq!(&out.reply[..], b"\x8a\x02hi");
        assert_eq!(out.end, None);
        let out = d.feed(&masked(OP_CLOSE, true, &[0x03, 0xe8, b'x'], [0, 1, 0, 1]));
        assert_eq!(&out.reply[..], b"\x88\x02\x03\xe8");
        assert_eq!(out.end, Some(End::Closed));
        assert_eq!(d.feed(b"more").end, None);
    }

    #[test]
    fn long_lengths() {
        let payload = vec![7u8; 70_000];
        let mut d = Deframer::new(1 << 20);
        let mut input = masked(OP_BINARY, true, &payload[..300], [1, 2, 3, 4]);
        input.extend(masked(OP_BINARY, true, &payload, [4, 3, 2, 1]));
        assert_eq!(d.feed(&input).data.len(), 70_300);
        let mut small = Deframer::new(1000);
        assert_eq!(small.feed(&masked(OP_BINARY, true, &payload, [0; 4])).end, Some(End::Error("frame too large")));
    }

    #[test]
    fn errors() {
        let cases: &[(Vec<u8>, &str)] = &[
            (masked(OP_TEXT, true, b"x", [1; 4]), "text frame (MQTT needs binary frames)"),
            (b"\x82\x01x".to_vec(), "client frame not masked"),
            (masked(OP_PING, false, b"", [1; 4]), "fragmented control frame"),
            (masked(OP_PING, true, &[0; 126], [1; 4]), "control frame too large"),
            (masked(OP_CONTINUATION, true, b"x", [1; 4]), "continuation without a message"),
            (masked(0x3, true, b"x", [1; 4]), "reserved opcode"),
            (vec![0xC2, 0x80, 0, 0, 0, 0], "reserved bits set"),
            ([0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4].to_vec(), "invalid payload length"),
        ];
        for (input, reason) in cases {
            let out = Deframer::new(1 << 20).feed(input);
            assert_eq!(out.end, Some(End::Error(reason)), "{reason}");
            assert_eq!(out.reply[0], 0x88);
        }
        let mut d = Deframer::new(1 << 20);
        let mut input = masked(OP_BINARY, false, b"a", [1; 4]);
        input.extend(masked(OP_BINARY, true, b"b", [1; 4]));
        assert_eq!(d.feed(&input).end, Some(End::Error("new message inside a fragmented one")));
    }

    #[test]
    fn server_frames() {
        assert_eq!(&frame_binary(b"\xe0\x00")[..], b"\x82\x02\xe0\x00");
        let big = frame_binary(&[0; 300]);
        assert_eq!(&big[..4], &[0x82, 126, 1, 44]);
        let huge = frame_binary(&[0; 70_000]);
        assert_eq!(&huge[..2], &[0x82, 127]);
        assert_eq!(huge.len(), 70_010);
    }

    /// One generated frame: (kind, payload, fin, mask).
    type Spec = (u8, Vec<u8>, bool, [u8; 4]);

    /// Encodes a valid frame stream from arbitrary specs; returns it and
    /// the data and replies it must produce.
    fn stream(specs: &[Spec]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (mut input, mut data, mut reply) = (Vec::new(), Vec::new(), BytesMut::new());
        let mut fragmented = false;
        for (kind, payload, fin, mask) in specs {
            if kind % 4 == 0 {
                let payload = &payload[..payload.len().min(125)];
                input.extend(masked(OP_PING, true, payload, *mask));
                put_frame(&mut reply, OP_PONG, payload);
            } else if kind % 4 == 1 {
                input.extend(masked(OP_PONG, true, &payload[..payload.len().min(125)], *mask));
            } else {
                let opcode = if fragmented { OP_CONTINUATION } else { OP_BINARY };
                input.extend(masked(opcode, *fin, payload, *mask));
                data.extend_from_slice(payload);
                fragmented = !fin;
            }
        }
        (input, data, reply.to_vec())
    }

    #[test]
    fn any_chunking_gives_the_same_bytes() {
        fn prop(specs: Vec<Spec>, cuts: Vec<usize>) -> TestResult {
            let (input, data, reply) = stream(&specs);
            let mut d = Deframer::new(1 << 20);
            let (mut got_data, mut got_reply) = (Vec::new(), Vec::new());
            let mut rest = &input[..];
            let sizes = cuts.iter().map(|c| c % 20).chain(std::iter::once(usize::MAX));
            for size in sizes {
                let (chunk, tail) = rest.split_at(size.min(rest.len()));
                rest = tail;
                let out = d.feed(chunk);
                assert_eq!(out.end, None);
                got_data.extend_from_slice(&out.data);
                got_reply.extend_from_slice(&out.reply);
            }
            TestResult::from_bool(got_data == data && got_reply == reply)
        }
        QuickCheck::new().tests(500).quickcheck(prop as fn(Vec<Spec>, Vec<usize>) -> TestResult);
    }

    #[test]
    fn arbitrary_input_never_panics() {
        fn prop(chunks: Vec<Vec<u8>>, max: u16) -> bool {
            let mut d = Deframer::new(u64::from(max));
            let mut hs = Handshake::new();
            for chunk in &chunks {
                let out = d.feed(chunk);
                assert!(out.data.len() <= chunk.len());
                let _ = hs.feed(chunk);
            }
            true
        }
        QuickCheck::new().tests(1000).quickcheck(prop as fn(Vec<Vec<u8>>, u16) -> bool);
    }
}
