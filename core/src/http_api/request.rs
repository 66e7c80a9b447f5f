//! One request head, read from any split of the stream.
//!
//! The head is gathered until its blank line and parsed once, by
//! `httparse`. It is bounded in size ([`MAX_HEAD`]); a body, if one is
//! sent, is not read: no endpoint takes one.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use percent_encoding::percent_decode_str;

use super::response::Status;
use crate::policy::Password;

/// The largest request head read: request line and headers.
pub const MAX_HEAD: usize = 8 * 1024;

/// Headers read per request; more is answered 431.
const MAX_HEADERS: usize = 32;

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `DELETE`.
    Delete,
    /// Any other: answered 405.
    Other,
}

/// A request head, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its method.
    pub method: Method,
    /// Its path as sent, still percent-encoded, without the query.
    pub path: String,
    /// Its query's `name=value` pairs, decoded, in order.
    pub query: Vec<(String, String)>,
    /// HTTP Basic credentials, if it carried any.
    pub credentials: Option<Credentials>,
}

impl Request {
    /// The value of query parameter `name`, if given.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A user name and password from an `Authorization: Basic` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name: the text before the first `:`.
    pub username: String,
    /// The rest.
    pub password: Password,
}

/// What feeding a [`RequestReader`] gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// The head is not complete yet.
    More,
    /// The head is complete.
    Done(Box<Request>),
    /// The head is malformed or too large: answer with this status.
    Failed(Status, &'static str),
}

/// Gathers a request head.
#[derive(Debug, Default)]
pub struct RequestReader {
    head: BytesMut,
}

impl RequestReader {
    /// Takes the next bytes read. Once it has said [`Read::Done`] or
    /// [`Read::Failed`], what follows is not looked at.
    pub fn feed(&mut self, data: &[u8]) -> Read {
        // The blank line may straddle this read and the last one.
        let from = self.head.len().saturating_sub(3);
        let room = MAX_HEAD.saturating_sub(self.head.len());
        self.head.extend_from_slice(&data[..data.len().min(room + 4)]);
        let Some(end) = memchr::memmem::find(&self.head[from..], b"\r\n\r\n").map(|at| from + at + 4) else {
            if self.head.len() > MAX_HEAD {
                return Read::Failed(Status::HeadTooLarge, "request head too large");
            }
            return Read::More;
        };
        if end > MAX_HEAD {
            return Read::Failed(Status::HeadTooLarge, "request head too large");
        }
        match parse(&self.head[..end]) {
            Ok(request) => Read::Done(Box::new(request)),
            Err(reason) => Read::Failed(Status::BadRequest, reason),
        }
    }
}

fn parse(head: &[u8]) -> Result<Request, &'static str> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err("incomplete request head"),
        Err(httparse::Error::TooManyHeaders) => return Err("too many headers"),
        Err(_) => return Err("malformed request head"),
    }
    let method = match parsed.method {
        Some("GET") => Method::Get,
        Some("DELETE") => Method::Delete,
        _ => Method::Other,
    };
    let target = parsed.path.ok_or("no request target")?;
    // Origin form only: no proxy requests, no `*`.
    if !target.starts_with('/') {
        return Err("request target is not a path");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut credentials = None;
    for header in parsed.headers.iter() {
        if header.name.eq_ignore_ascii_case("authorization") {
            credentials = Some(basic(header.value).ok_or("malformed Authorization header")?);
        }
    }
    Ok(Request { method, path: path.to_owned(), query: decode_query(query)?, credentials })
}

/// `Basic base64(user:password)`; the user name must be UTF-8.
fn basic(value: &[u8]) -> Option<Credentials> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let username = std::str::from_utf8(&decoded[..colon]).ok()?.to_owned();
    let password = Password::new(Bytes::copy_from_slice(&decoded[colon + 1..]));
    Some(Credentials { username, password })
}

/// `a=1&b=x%20y` (a `+` is a space, as forms send it).
fn decode_query(query: &str) -> Result<Vec<(String, String)>, &'static str> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((decode(&name.replace('+', " "))?, decode(&value.replace('+', " "))?))
        })
        .collect()
}

/// Percent-decodes `text`, which must decode to UTF-8.
pub fn decode(text: &str) -> Result<String, &'static str> {
    percent_decode_str(text).decode_utf8().map(String::from).map_err(|_| "percent-encoded text is not UTF-8")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use quickcheck::{QuickCheck, TestResult};

    use super::*;

    const GET: &[u8] = b"GET /api/v1/clients?prefix=dev%2D&limit=5&x HTTP/1.1\r\nHost: localhost\r\n\
        Authorization: Basic YWxpY2U6czNjcjp0\r\nUser-Agent: test\r\n\r\n";

    fn done(read: Read) -> Request {
        match read {
            Read::Done(request) => *request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_whole_head() {
        let request = done(RequestReader::default().feed(GET));
        assert_eq!(request.method, Method::Get);
        assert_eq!(request.path, "/api/v1/clients");
        assert_eq!(request.param("prefix"), Some("dev-"));
        assert_eq!(request.param("limit"), Some("5"));
        assert_eq!(request.param("x"), Some(""));
        let credentials = request.credentials.unwrap();
        assert_eq!(credentials.username, "alice");
        assert_eq!(credentials.password.as_bytes(), b"s3cr:t");
    }

    /// Any split of the stream into reads gives the same request.
    #[test]
    fn every_split_gives_the_same_request() {
        let whole = done(RequestReader::default().feed(GET));
        for cut in 0..=GET.len() {
            let mut reader = RequestReader::default();
            let first = reader.feed(&GET[..cut]);
            let read = if cut == GET.len() { first } else { reader.feed(&GET[cut..]) };
            assert_eq!(done(read), whole, "cut at {cut}");
        }
        fn prop(sizes: Vec<u8>) -> TestResult {
            let whole = done(RequestReader::default().feed(GET));
            let mut reader = RequestReader::default();
            let mut rest = GET;
            let mut sizes = sizes.into_iter().map(|s| usize::from(s).max(1));
            loop {
                let take = sizes.next().unwrap_or(rest.len()).min(rest.len());
                let read = reader.feed(&rest[..take]);
                rest = &rest[take..];
                match read {
                    Read::More if !rest.is_empty() => continue,
                    Read::Done(request) => return TestResult::from_bool(rest.is_empty() && *request == whole),
                    _ => return TestResult::failed(),
                }
            }
        }
        QuickCheck::new().quickcheck(prop as fn(Vec<u8>) -> TestResult);
    }

    #[test]
    fn bounded_and_malformed_heads() {
        let mut reader = RequestReader::default();
        let mut read = Read::More;
        for _ in 0..MAX_HEAD {
            read = reader.feed(b"GET / HTTP/1.1\r\nX: y\r\n");
            if read != Read::More {
                break;
            }
        }
        assert_eq!(read, Read::Failed(Status::HeadTooLarge, "request head too large"));
        let failed = |head: &[u8]| match RequestReader::default().feed(head) {
            Read::Failed(status, _) => status,
            other => panic!("{other:?}"),
        };
        assert_eq!(failed(b"GET http://x/ HTTP/1.1\r\n\r\n"), Status::BadRequest);
        assert_eq!(failed(b"GET / HTTP/1.1\r\nAuthorization: Basic !!\r\n\r\n"), Status::BadRequest);
        assert_eq!(failed(b"GET /?a=%ff HTTP/1.1\r\n\r\n"), Status::BadRequest);
        assert_eq!(failed(b"\x00\x01 / HTTP/1.1\r\n\r\n"), Status::BadRequest);
        let many: Vec<u8> = [&b"GET / HTTP/1.1\r\n"[..], &b"A: b\r\n".repeat(MAX_HEADERS + 1), b"\r\n"].concat();
        assert_eq!(failed(&many), Status::BadRequest);
        assert_eq!(done(RequestReader::default().feed(b"PUT / HTTP/1.0\r\n\r\n")).method, Method::Other);
    }
}
