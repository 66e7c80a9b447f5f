//! Answers: a status, a body and its type, written as one HTTP/1.1
//! response that closes the connection.

use std::fmt::Write;

use bytes::Bytes;

/// The statuses the API answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 200.
    Ok,
    /// 204: done, nothing to say (a client kicked).
    NoContent,
    /// 400.
    BadRequest,
    /// 401: credentials missing or wrong.
    Unauthorized,
    /// 403: not for this user, or not from this address.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408: the head did not arrive in time.
    RequestTimeout,
    /// 431.
    HeadTooLarge,
    /// 503: the listener's `max_connections` is reached.
    Unavailable,
}

impl Status {
    /// The code and reason phrase.
    pub fn line(self) -> (u16, &'static str) {
        match self {
            Self::Ok => (200, "OK"),
            Self::NoContent => (204, "No Content"),
            Self::BadRequest => (400, "Bad Request"),
            Self::Unauthorized => (401, "Unauthorized"),
            Self::Forbidden => (403, "Forbidden"),
            Self::NotFound => (404, "Not Found"),
            Self::MethodNotAllowed => (405, "Method Not Allowed"),
            Self::RequestTimeout => (408, "Request Timeout"),
            Self::HeadTooLarge => (431, "Request Header Fields Too Large"),
            Self::Unavailable => (503, "Service Unavailable"),
        }
    }
}

/// JSON, as every `/api/` answer is.
pub const JSON: &str = "application/json";
/// Plain text.
pub const TEXT: &str = "text/plain; charset=utf-8";
/// The status page.
pub const HTML: &str = "text/html; charset=utf-8";
/// Prometheus' text format, version 0.0.4.
pub const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Its status.
    pub status: Status,
    /// Its body's `Content-Type`.
    pub content_type: &'static str,
    /// Its body.
    pub body: Bytes,
    /// Headers beyond the usual ones.
    pub headers: Vec<(&'static str, String)>,
}

impl Response {
    /// A 200 with `body` of `content_type`.
    pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self { status: Status::Ok, content_type, body: body.into(), headers: Vec::new() }
    }

    /// A JSON `{"error": reason}` with `status`.
    pub fn error(status: Status, reason: &str) -> Self {
        let body = serde_json::json!({ "error": reason }).to_string();
        Self { status, content_type: JSON, body: body.into(), headers: Vec::new() }
    }

    /// 204.
    pub fn no_content() -> Self {
        Self { status: Status::NoContent, content_type: TEXT, body: Bytes::new(), headers: Vec::new() }
    }

    /// Adds a header.
    #[must_use]
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The response as it goes on the wire. Every answer closes the
    /// connection; none may be cached, sniffed or framed by another site
    /// (the page has a kick button).
    pub fn encode(&self) -> Bytes {
        let (code, reason) = self.status.line();
        let mut head = format!("HTTP/1.1 {code} {reason}\r\n");
        if self.status != Status::NoContent {
            let _ = write!(head, "Content-Type: {}\r\nContent-Length: {}\r\n", self.content_type, self.body.len());
        }
        head.push_str(
            "Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
             X-Frame-Options: DENY\r\n",
        );
        for (name, value) in &self.headers {
            let _ = write!(head, "{name}: {value}\r\n");
        }
        head.push_str("\r\n");
        let mut wire = Vec::with_capacity(head.len() + self.body.len());
        wire.extend_from_slice(head.as_bytes());
        if self.status != Status::NoContent {
            wire.extend_from_slice(&self.body);
        }
        wire.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded() {
        let wire = Response::ok(TEXT, "culex").with("Access-Control-Allow-Origin", "*").encode();
        assert_eq!(
            std::str::from_utf8(&wire).ok(),
            Some(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\
                 Connection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
                 X-Frame-Options: DENY\r\nAccess-Control-Allow-Origin: *\r\n\r\nculex"
            )
        );
        let wire = Response::no_content().encode();
        assert!(wire.starts_with(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n"));
        assert!(wire.ends_with(b"\r\n\r\n"));
    }
}
