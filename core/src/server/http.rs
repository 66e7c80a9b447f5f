//! The server's side of the `http_api` listener (see
//! [`http_api`](crate::http_api)): a request is read, its credentials
//! checked (off the broker's thread, as a CONNECT's), its path checked
//! against the ACL, and the answer written through the connection's
//! outbox, which then closes.

use std::collections::HashMap;

use bytes::Bytes;
use serde_json::{Map, Value, json};
use tracing::{debug, info};

use super::{AuthRequest, Outbox, Server};
use crate::error::CloseReason;
use crate::http_api::clients::{self, Arrival, ClientRows, Query};
use crate::http_api::metrics::{self, PresenceFigures};
use crate::http_api::request::{Method, Read, Request};
use crate::http_api::response::{HTML, JSON, PROMETHEUS, Response, Status, TEXT};
use crate::http_api::{Endpoint, STATUS_PAGE, is_local};
use crate::peer::Peer;
use crate::policy::{AuthDecision, ClientInfo, Refusal};
use crate::shard::{ApiMessage, ShardId, ShardMessage, home_shard};
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
        // With shards, a list of clients or a kick may wait for others.
        let Some(response) = self.http_endpoint(now, conn, &endpoint, request) else { return };
        let response = if endpoint.is_api() { api(response) } else { response };
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

    /// The answer, or `None` when it waits for other shards.
    fn http_endpoint(&mut self, now: Now, conn: ConnId, endpoint: &Endpoint, request: &Request) -> Option<Response> {
        Some(match endpoint {
            Endpoint::Page => Response::ok(HTML, STATUS_PAGE)
                .with("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"),
            Endpoint::Version => Response::ok(TEXT, sys::VERSION),
            Endpoint::Systree | Endpoint::Metrics => return self.http_figures(now, conn, endpoint),
            Endpoint::Listeners => Response::ok(JSON, self.listeners_json().to_string()),
            Endpoint::Clients => match Query::of(request) {
                Ok(query) => return self.http_clients(conn, query),
                Err(reason) => Response::error(Status::BadRequest, reason),
            },
            Endpoint::Client(id) => return self.http_kick(now, conn, id),
        })
    }

    /// `/metrics` or `/api/v1/systree`: with shards, once every other
    /// shard sent its figures as they stand (the `$SYS` reports may be a
    /// `sys_interval` old).
    fn http_figures(&mut self, now: Now, conn: ConnId, endpoint: &Endpoint) -> Option<Response> {
        if self.broker.shard().is_none() {
            return Some(self.figures_page(now, endpoint));
        }
        self.ask_other_shards(conn, Gathering::Figures(endpoint.clone()), |request| ApiMessage::AskFigures { request });
        None
    }

    /// `/metrics` or `/api/v1/systree` from the figures at hand.
    fn figures_page(&self, now: Now, endpoint: &Endpoint) -> Response {
        if *endpoint == Endpoint::Metrics {
            return Response::ok(PROMETHEUS, self.metrics(now));
        }
        let figures: Map<String, Value> =
            self.systree(now).into_iter().map(|(topic, value)| (topic, Value::from(value))).collect();
        Response::ok(JSON, Value::Object(figures).to_string())
    }

    /// A page of clients: this shard's part, and with shards the others'
    /// once they answer.
    fn http_clients(&mut self, conn: ConnId, query: Query) -> Option<Response> {
        let (prefix, first) = query.part();
        let rows = self.client_rows(&prefix, first);
        if self.broker.shard().is_none() {
            return Some(Response::ok(JSON, rows.page(&query).to_string()));
        }
        self.ask_other_shards(conn, Gathering::Clients { query, rows }, |request| ApiMessage::ListClients {
            request,
            prefix: prefix.clone(),
            first,
        });
        None
    }

    /// Sends `message` (numbered as `conn`'s request) to every other shard.
    fn ask_other_shards(&mut self, conn: ConnId, gathering: Gathering, message: impl Fn(u64) -> ApiMessage) {
        let (shards, me) = (self.broker.shard_count(), self.broker.shard().unwrap_or_default());
        let request = self.asked.ask(conn, shards - 1, gathering);
        for to in (0..shards).map(ShardId).filter(|&shard| shard != me) {
            self.tell_shard(to, ShardMessage::Api(message(request)));
        }
    }

    /// Disconnects client `id`, here or at its home shard.
    fn http_kick(&mut self, now: Now, conn: ConnId, id: &str) -> Option<Response> {
        let home = home_shard(id, self.broker.shard_count());
        match self.broker.shard() {
            Some(me) if me != home => {
                let request = self.asked.ask(conn, 1, Gathering::Kick);
                self.tell_shard(home, ShardMessage::Api(ApiMessage::Kick { request, client: id.to_owned() }));
                None
            }
            _ => Some(kicked(self.kick_here(now, id))),
        }
    }

    /// Disconnects client `id` if it is connected here: whether it was.
    fn kick_here(&mut self, now: Now, id: &str) -> bool {
        let found = self.broker.kick(now, id);
        if found {
            // The close and the will go out now.
            self.drain(now);
        }
        found
    }

    /// An answer to `request` came (a `part` of a page of clients, or
    /// whether a kicked client was `found`): once it was the last, the
    /// request is answered.
    fn answered(&mut self, now: Now, request: u64, part: Option<ClientRows>, found: bool) {
        let Some(Waiting { conn, gathering, .. }) = self.asked.answered(request, part) else { return };
        let response = match gathering {
            Gathering::Clients { query, rows } => Response::ok(JSON, rows.page(&query).to_string()),
            Gathering::Figures(endpoint) => self.figures_page(now, &endpoint),
            Gathering::Kick => kicked(found),
        };
        // Every endpoint that waits is the API's.
        self.http_answer(conn, api(response));
    }

    /// What other shards ask for the HTTP API and answer.
    pub(super) fn http_shard_message(&mut self, now: Now, from: ShardId, message: ApiMessage) {
        match message {
            ApiMessage::AskFigures { request } => {
                let stats = Box::new(self.broker.stats());
                self.tell_shard(from, ShardMessage::Api(ApiMessage::Figures { request, stats }));
            }
            ApiMessage::Figures { request, stats } => {
                // Taken as the shard's report: the totals count it.
                self.broker.handle_shard_message(now, from, ShardMessage::Stats(stats));
                self.answered(now, request, None, false);
            }
            ApiMessage::ListClients { request, prefix, first } => {
                let rows = Box::new(self.client_rows(&prefix, first));
                self.tell_shard(from, ShardMessage::Api(ApiMessage::Clients { request, rows }));
            }
            ApiMessage::Kick { request, client } => {
                let found = self.kick_here(now, &client);
                self.tell_shard(from, ShardMessage::Api(ApiMessage::Kicked { request, found }));
            }
            ApiMessage::Clients { request, rows } => self.answered(now, request, Some(*rows), false),
            ApiMessage::Kicked { request, found } => self.answered(now, request, None, found),
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

    /// This shard's part of a page of clients: those whose id starts with
    /// `prefix`, the `first` of them in id order.
    fn client_rows(&self, prefix: &str, first: usize) -> ClientRows {
        let config = self.broker.config();
        let port = |c: &crate::broker::ConnectedClient<'_>| config.listener(c.listener).map_or(0, |l| l.port);
        let none = Default::default();
        let arrivals = self.arrivals.as_ref().unwrap_or(&none);
        ClientRows::of(self.broker.connected_clients(), (prefix, first), arrivals, port)
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

/// What the HTTP API asked other shards and waits for, by request number.
#[derive(Debug, Default)]
pub(super) struct Asked {
    next: u64,
    waiting: HashMap<u64, Waiting>,
}

/// A request waiting for other shards: the connection that made it, the
/// answers still to come and what they bring.
#[derive(Debug)]
struct Waiting {
    conn: ConnId,
    answers_left: u16,
    gathering: Gathering,
}

/// What a request gathers from other shards.
#[derive(Debug)]
enum Gathering {
    /// A page of clients: the parts that came.
    Clients { query: Query, rows: ClientRows },
    /// `/metrics` or `/api/v1/systree`: the figures, taken as the shards'
    /// reports.
    Figures(Endpoint),
    /// A kick, at the client's home shard.
    Kick,
}

impl Asked {
    /// Numbers a request of `conn` that waits for `answers`.
    fn ask(&mut self, conn: ConnId, answers: u16, gathering: Gathering) -> u64 {
        self.next += 1;
        self.waiting.insert(self.next, Waiting { conn, answers_left: answers, gathering });
        self.next
    }

    /// An answer to `request` came, with a `part` of its page of clients
    /// if that is what it asked: the request, once every answer came.
    fn answered(&mut self, request: u64, part: Option<ClientRows>) -> Option<Waiting> {
        let waiting = self.waiting.get_mut(&request)?;
        if let (Some(part), Gathering::Clients { rows, .. }) = (part, &mut waiting.gathering) {
            rows.absorb(part);
        }
        waiting.answers_left = waiting.answers_left.saturating_sub(1);
        if waiting.answers_left > 0 {
            return None;
        }
        self.waiting.remove(&request)
    }
}

/// An API answer: any page may read it.
fn api(response: Response) -> Response {
    response.with("Access-Control-Allow-Origin", "*")
}

/// The answer to a kick.
fn kicked(found: bool) -> Response {
    if found { Response::no_content() } else { Response::error(Status::NotFound, "no such client") }
}

fn unauthorised(reason: &str) -> Response {
    Response::error(Status::Unauthorized, reason).with("WWW-Authenticate", "Basic realm=\"culex\", charset=\"UTF-8\"")
}

fn remote(peer: &Peer) -> String {
    peer.remote.as_ref().map_or_else(|| "an unknown address".to_owned(), ToString::to_string)
}
