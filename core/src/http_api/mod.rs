//! The `http_api` listener: Mosquitto 2.1's HTTP API (`/api/v1/systree`,
//! `/api/v1/listeners`, `/api/v1/version`), Prometheus metrics
//! (`/metrics`), the connected clients (`/api/v1/clients`, and `DELETE
//! /api/v1/clients/ID` to disconnect one) and a status page at `/`.
//!
//! Its connections are the core's like any other: the runtime hands over
//! their bytes and the [`Server`](crate::server::Server) answers through
//! their outbox. Each connection carries one request: its head must
//! arrive within [`REQUEST_TIMEOUT`] and fit in
//! [`MAX_HEAD`](request::MAX_HEAD); the answer closes it.
//!
//! Who may ask: on a listener with a password file, every request needs
//! HTTP Basic credentials from that file, and the ACL file then decides
//! each path as a topic (GET needs read access, DELETE write access).
//! Without a password file only loopback peers are served.

pub mod clients;
pub(crate) mod metrics;
pub mod request;
pub mod response;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::peer::{ListenerId, Peer, Remote};
use crate::time::Instant;
use crate::types::{ConnId, ConnIdMap};

use self::request::{Read, Request, RequestReader};

/// Time a connection has to send its whole request head.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The status page: one self-contained file.
pub(crate) const STATUS_PAGE: &str = include_str!("status.html");

/// The HTTP connections being served.
#[derive(Debug, Default)]
pub(crate) struct Exchanges {
    open: ConnIdMap<Exchange>,
    deadlines: BTreeSet<(Instant, ConnId)>,
    per_listener: BTreeMap<ListenerId, usize>,
}

/// One connection, until it is answered.
#[derive(Debug)]
struct Exchange {
    peer: Peer,
    deadline: Instant,
    reader: RequestReader,
    /// Its request, once read: later bytes are not looked at.
    read: bool,
    /// Its request while its credentials are checked.
    checking: Option<Box<Request>>,
}

impl Exchanges {
    /// A new connection from `peer`.
    pub(crate) fn open(&mut self, now: Instant, conn: ConnId, peer: Peer) {
        let deadline = now + REQUEST_TIMEOUT;
        *self.per_listener.entry(peer.listener).or_default() += 1;
        self.deadlines.insert((deadline, conn));
        self.open
            .insert(conn, Exchange { peer, deadline, reader: RequestReader::default(), read: false, checking: None });
    }

    /// Whether `conn` is an HTTP connection still open.
    pub(crate) fn contains(&self, conn: ConnId) -> bool {
        self.open.contains_key(&conn)
    }

    /// Connections open on `listener`.
    pub(crate) fn on(&self, listener: ListenerId) -> usize {
        self.per_listener.get(&listener).copied().unwrap_or(0)
    }

    /// Bytes read from `conn`: its request once the head is complete
    /// (once only), with the peer that sent it.
    pub(crate) fn feed(&mut self, conn: ConnId, data: &[u8]) -> Option<(Peer, Read)> {
        let exchange = self.open.get_mut(&conn).filter(|e| !e.read)?;
        let read = exchange.reader.feed(data);
        if read == Read::More {
            return None;
        }
        exchange.read = true;
        Some((exchange.peer.clone(), read))
    }

    /// `request` waits for its credentials to be checked.
    pub(crate) fn check(&mut self, conn: ConnId, request: Box<Request>) {
        if let Some(exchange) = self.open.get_mut(&conn) {
            exchange.checking = Some(request);
        }
    }

    /// The request of `conn` whose credentials were checked, with its peer.
    pub(crate) fn checked(&mut self, conn: ConnId) -> Option<(Peer, Box<Request>)> {
        let exchange = self.open.get_mut(&conn)?;
        Some((exchange.peer.clone(), exchange.checking.take()?))
    }

    /// `conn` is answered or gone.
    pub(crate) fn close(&mut self, conn: ConnId) {
        let Some(exchange) = self.open.remove(&conn) else { return };
        self.deadlines.remove(&(exchange.deadline, conn));
        if let Some(count) = self.per_listener.get_mut(&exchange.peer.listener) {
            *count = count.saturating_sub(1);
        }
    }

    /// When the next connection runs out of time.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|(at, _)| *at)
    }

    /// The connections whose time ran out by `now`, taken out of the
    /// deadlines (they stay open until [`close`](Self::close)d).
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<ConnId> {
        let mut expired = Vec::new();
        while let Some(&(at, conn)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.pop_first();
            expired.push(conn);
        }
        expired
    }
}

/// Whether `peer` is on this machine: a loopback address or a Unix socket.
pub(crate) fn is_local(peer: &Peer) -> bool {
    match &peer.remote {
        Some(Remote::Tcp(addr)) => addr.ip().to_canonical().is_loopback(),
        Some(Remote::Unix(_)) => true,
        None => false,
    }
}

/// What a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Page,
    Version,
    Systree,
    Listeners,
    Metrics,
    Clients,
    /// One client, by its id (percent-decoded).
    Client(String),
}

impl Endpoint {
    /// The endpoint at `path` (as sent, percent-encoded).
    pub(crate) fn at(path: &str) -> Option<Self> {
        Some(match path {
            "/" | "/index.html" => Self::Page,
            "/api/v1/version" => Self::Version,
            "/api/v1/systree" => Self::Systree,
            "/api/v1/listeners" => Self::Listeners,
            "/metrics" => Self::Metrics,
            "/api/v1/clients" => Self::Clients,
            _ => {
                let id = path.strip_prefix("/api/v1/clients/").filter(|id| !id.is_empty())?;
                Self::Client(request::decode(id).ok()?)
            }
        })
    }

    /// The one method it answers.
    pub(crate) fn method(&self) -> request::Method {
        match self {
            Self::Client(_) => request::Method::Delete,
            _ => request::Method::Get,
        }
    }

    /// Its answers are for scripts, from any origin (as Mosquitto's).
    pub(crate) fn is_api(&self) -> bool {
        !matches!(self, Self::Page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::at("/"), Some(Endpoint::Page));
        assert_eq!(Endpoint::at("/api/v1/clients/a%2Fb%20c"), Some(Endpoint::Client("a/b c".into())));
        assert_eq!(Endpoint::at("/api/v1/clients/"), None);
        assert_eq!(Endpoint::at("/api/v1/clients/%ff"), None);
        assert_eq!(Endpoint::at("/api/v2/systree"), None);
        assert_eq!(Endpoint::at("/metrics").map(|e| e.method()), Some(request::Method::Get));
    }

    #[test]
    fn deadlines_and_counts() {
        let mut exchanges = Exchanges::default();
        let peer = Peer::new(std::net::SocketAddr::from(([127, 0, 0, 1], 5000)), ListenerId(1));
        exchanges.open(Instant::ZERO, ConnId(1), peer.clone());
        exchanges.open(Instant::ZERO + Duration::from_secs(1), ConnId(2), peer);
        assert_eq!(exchanges.on(ListenerId(1)), 2);
        assert_eq!(exchanges.next_deadline(), Some(Instant::ZERO + REQUEST_TIMEOUT));
        assert_eq!(exchanges.expired(Instant::ZERO + REQUEST_TIMEOUT), vec![ConnId(1)]);
        exchanges.close(ConnId(1));
        exchanges.close(ConnId(2));
        assert_eq!((exchanges.on(ListenerId(1)), exchanges.next_deadline()), (0, None));
        assert!(!exchanges.contains(ConnId(2)));
    }

    #[test]
    fn only_this_machine_is_local() {
        let at = |ip: [u8; 4]| Peer::new(std::net::SocketAddr::from((ip, 1)), ListenerId(0));
        assert!(is_local(&at([127, 0, 0, 1])));
        assert!(!is_local(&at([10, 0, 0, 1])));
        let mapped =
            std::net::SocketAddr::new("::ffff:127.0.0.1".parse().unwrap_or(std::net::Ipv6Addr::LOCALHOST).into(), 1);
        assert!(is_local(&Peer::new(mapped, ListenerId(0))));
        assert!(!is_local(&Peer::bridge()));
    }
}
