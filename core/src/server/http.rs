//! The server's side of the `http_api` listener (see
//! [`http_api`](crate::http_api)): a request is read, its credentials
//! checked (off the broker's thread, as a CONNECT's), its path checked
//! against the ACL, and the answer written through the connection's
//! outbox, which then closes.

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tracing::{debug, info};

use super::{AuthRequest, Outbox, Server};
use crate::error::CloseReason;
use crate::http_api::clients::{self, Arrival, Query};
use crate::http_api::metrics::{self, PresenceFigures};
use crate::http_api::request::{Method, Read, Request};
use crate::http_api::response::{HTML, JSON, PROMETHEUS, Response, Status, TEXT};
use crate::http_api::{Endpoint, STATUS_PAGE, is_local};
use crate::peer::Peer;
use crate::policy::{AuthDecision, ClientInfo, Refusal};
use crate::sys;
use crate::time::Now;
use crate::topic::TopicName;
use crate::types::{ClientId, ConnId};

impl<O: Outbox> Server<O> {
    /// A connection on an `http_api` listener: refused at once (503) when
    /// the listener's `max_connections` is reached.
    pub(super) fn http_open(&mut self, now: Now, conn: ConnId, peer: Peer, mut outbox: O) {
        let full = self.broker.config().listener_max_connections.get(&peer.listener);
        if full.is_some_and(|&max| self.http.on(peer.listener) >= max) {
            let _ = outbox.send(Response::error(Status::Unavailable, "too many connections").encode());
            outbox.close(CloseReason::TooManyConnections);
            return;
        }
        self.http.open(now.instant, conn, peer);
        self.outboxes.insert(conn, outbox);
    }

    /// Bytes read from an HTTP connection.
    pub(super) fn http_received(&mut self, now: Now, conn: ConnId, data: &[u8]) {
        match self.http.feed(conn, data) {
            Some((peer, Read::Done(request))) => self.http_admit(now, conn, &peer, request),
            Some((_, Read::Failed(status, reason))) => {
                debug!(conn = %conn, "HTTP request refused: {reason}");
                self.http_answer(conn, Response::error(status, reason));
            }
            None | Some((_, Read::More)) => {}
        }
    }

    /// The HTTP connections whose request did not arrive in time.
    pub(super) fn http_timeout(&mut self, now: Now) {
        for conn in self.http.expired(now.instant) {
            self.http_answer(conn, Response::error(Status::RequestTimeout, "request head not received in time"));
        }
    }

    /// The password check of an HTTP request came back.
    pub(super) fn http_authenticated(&mut self, now: Now, conn: ConnId, result: Result<(), Refusal>) {
        let Some((peer, request)) = self.http.checked(conn) else { return };
        match result {
            Ok(()) => self.http_authorised(now, conn, &peer, &request),
            Err(_) => self.http_refuse_credentials(conn, &peer, &request),
        }
    }

    /// Who may ask: credentials from the password file where there is
    /// one, the loopback addresses where there is not.
    fn http_admit(&mut self, now: Now, conn: ConnId, peer: &Peer, request: Box<Request>) {
        let policy = self.broker.policy();
        if !policy.checks_passwords(peer.listener) {
            if is_local(peer) {
                self.http_authorised(now, conn, peer, &request);
            } else {
                info!(
                    "HTTP API request from {} refused: no password file, so only this machine may ask.",
                    remote(peer)
                );
                self.http_answer(conn, Response::error(Status::Forbidden, "only local clients may ask"));
            }
            return;
        }
        let Some(credentials) = &request.credentials else {
            return self.http_answer(conn, unauthorised("credentials required"));
        };
        let client = ClientId::new("");
        let info = ClientInfo { client_id: &client, username: Some(&credentials.username), listener: peer.listener };
        let password = Bytes::copy_from_slice(credentials.password.as_bytes());
        match policy.authenticate(info, Some(&password)) {
            AuthDecision::Allow => self.http_authorised(now, conn, peer, &request),
            AuthDecision::Refuse(_) => self.http_refuse_credentials(conn, peer, &request),
            AuthDecision::Defer => {
                self.auth_requests.push(AuthRequest {
                    conn,
                    client,
                    username: Some(credentials.username.as_str().into()),
                    password: Some(credentials.password.clone()),
                    listener: peer.listener,
                });
                self.http.check(conn, request);
            }
        }
    }

    fn http_refuse_credentials(&mut self, conn: ConnId, peer: &Peer, request: &Request) {
        let user = request.credentials.as_ref().map_or("", |c| c.username.as_str());
        info!("HTTP API request from {} refused: bad user name or password for {user}.", remote(peer));
        self.http_answer(conn, unauthorised("bad user name or password"));
    }

    /// The client is who it says (or local): the ACL decides the path,
    /// then the endpoint answers.
    fn http_authorised(&mut self, now: Now, conn: ConnId, peer: &Peer, request: &Request) {
        let Some(endpoint) = Endpoint::at(&request.path) else {
            return self.http_answer(conn, Response::error(Status::NotFound, "no such path"));
        };
        if request.method != endpoint.method() {
            let allow = if endpoint.method() == Method::Delete { "DELETE" } else { "GET" };
            let refused = Response::error(Status::MethodNotAllowed, "method not allowed").with("Allow", allow);
            return self.http_answer(conn, refused);
        }
        if let Some(credentials) = &request.credentials
            && self.broker.policy().checks_passwords(peer.listener)
            && !self.http_path_allowed(peer, &credentials.username, request)
        {
            info!("HTTP API request for {} denied to {} by the ACL.", request.path, credentials.username);
            return self.http_answer(conn, Response::error(Status::Forbidden, "not allowed"));
        }
        let mut response = self.http_endpoint(now, &endpoint, request);
        if endpoint.is_api() {
            response = response.with("Access-Control-Allow-Origin", "*");
        }
        self.http_answer(conn, response);
    }

    /// The ACL's word on the path, as a topic: GET needs read access,
    /// DELETE write access. A path that is no topic name is refused.
    fn http_path_allowed(&self, peer: &Peer, username: &str, request: &Request) -> bool {
        let Ok(path) = crate::http_api::request::decode(&request.path) else { return false };
        let Ok(topic) = TopicName::new(path) else { return false };
        let client = ClientId::new("");
        let info = ClientInfo { client_id: &client, username: Some(username), listener: peer.listener };
        match request.method {
            Method::Get => self.broker.policy().may_read(info, &topic),
            Method::Delete => self.broker.policy().may_publish(info, &topic),
            Method::Other => false,
        }
    }

    fn http_endpoint(&mut self, now: Now, endpoint: &Endpoint, request: &Request) -> Response {
        match endpoint {
            Endpoint::Page => Response::ok(HTML, STATUS_PAGE)
                .with("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"),
            Endpoint::Version => Response::ok(TEXT, sys::VERSION),
            Endpoint::Systree => {
                let figures: Map<String, Value> =
                    self.systree(now).into_iter().map(|(topic, value)| (topic, Value::from(value))).collect();
                Response::ok(JSON, Value::Object(figures).to_string())
            }
            Endpoint::Listeners => Response::ok(JSON, self.listeners_json().to_string()),
            Endpoint::Metrics => Response::ok(PROMETHEUS, self.metrics(now)),
            Endpoint::Clients => match Query::of(request) {
                Ok(query) => Response::ok(JSON, self.clients_json(&query).to_string()),
                Err(reason) => Response::error(Status::BadRequest, reason),
            },
            Endpoint::Client(id) => {
                if self.broker.kick(now, id) {
                    // The close and the will go out now.
                    self.drain(now);
                    Response::no_content()
                } else {
                    Response::error(Status::NotFound, "no such client")
                }
            }
        }
    }

    fn listeners_json(&self) -> Value {
        let listeners: Vec<Value> = self
            .broker
            .config()
            .listeners
            .iter()
            .map(|l| {
                let mut entry = json!({
                    "protocol": match l.protocol {
                        crate::conf::ListenerProtocol::Mqtt => "mqtt",
                        crate::conf::ListenerProtocol::WebSockets => "websockets",
                        crate::conf::ListenerProtocol::HttpApi => "httpapi",
                    },
                    "tls": l.tls,
                    "mtls": l.mtls,
                    "allow_anonymous": l.allow_anonymous,
                });
                match &l.path {
                    Some(path) => entry["path"] = json!(path),
                    None => entry["port"] = json!(l.port),
                }
                entry
            })
            .collect();
        json!({ "listeners": listeners })
    }

    fn clients_json(&self, query: &Query) -> Value {
        let config = self.broker.config();
        let port = |c: &crate::broker::ConnectedClient<'_>| config.listener(c.listener).map_or(0, |l| l.port);
        let none = Default::default();
        clients::page(self.broker.connected_clients(), query, self.arrivals.as_ref().unwrap_or(&none), port)
    }

    fn metrics(&self, now: Now) -> String {
        let presence = self.presence.as_ref().map(|p| PresenceFigures {
            connected: p.is_connected(),
            pending: p.pending_changes(),
            failed: p.failed_writes(),
        });
        metrics::render(&self.broker.totals(), sys::uptime(now.instant), presence)
    }

    /// Writes `response` to `conn` and closes it.
    fn http_answer(&mut self, conn: ConnId, response: Response) {
        self.http.close(conn);
        if let Some(mut outbox) = self.outboxes.remove(&conn) {
            // An outbox too full for one answer belongs to a client that
            // does not read: it is closed all the same.
            let _ = outbox.send(response.encode());
            outbox.close(CloseReason::Disconnected);
        }
    }

    /// Where and when MQTT clients connected, for the clients' list: kept
    /// only while an `http_api` listener is configured.
    pub(super) fn note_arrival(&mut self, conn: ConnId, peer: &Peer) {
        if let Some(arrivals) = &mut self.arrivals {
            arrivals.insert(conn, Arrival { remote: peer.remote.clone(), since: None });
        }
    }

    /// `conn`'s CONNECT was accepted at `now`.
    pub(super) fn note_online(&mut self, now: Now, conn: ConnId) {
        if let Some(arrival) = self.arrivals.as_mut().and_then(|a| a.get_mut(&conn)) {
            arrival.since = Some(now.unix.as_secs_f64() as u64);
        }
    }

    /// `conn` ended.
    pub(super) fn note_departure(&mut self, conn: ConnId) {
        clients::forget(&mut self.arrivals, conn);
    }
}

fn unauthorised(reason: &str) -> Response {
    Response::error(Status::Unauthorized, reason).with("WWW-Authenticate", "Basic realm=\"culex\", charset=\"UTF-8\"")
}

fn remote(peer: &Peer) -> String {
    peer.remote.as_ref().map_or_else(|| "an unknown address".to_owned(), ToString::to_string)
}
