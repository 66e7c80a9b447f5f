//! The `http_api` listener through the [`Server`], as a runtime drives it:
//! requests in as bytes, answers out through the outbox, password checks
//! handed out and answered.

mod recorder;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use culex_core::auth::FilePolicy;
use culex_core::auth::acl::AclFile;
use culex_core::auth::password_file::PasswordFile;
use culex_core::conf::ListenerProtocol;
use culex_core::http_api::REQUEST_TIMEOUT;
use culex_core::policy::{AccessPolicy, Refusal};
use culex_core::server::Server;
use culex_core::{Broker, CloseReason, Config, ConnId, Instant, ListenerId, ListenerSummary, Now, Peer, UnixTime};
use recorder::Recorder;

trait Answer {
    fn text(&self) -> String;
    fn status(&self) -> u16;
    fn closed(&self) -> bool;
    fn body(&self) -> String;
}

impl Answer for Recorder {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.borrow().unread).into_owned()
    }

    fn status(&self) -> u16 {
        self.text().get(9..12).and_then(|code| code.parse().ok()).unwrap_or(0)
    }

    fn closed(&self) -> bool {
        self.0.borrow().closed.is_some()
    }

    fn body(&self) -> String {
        self.text().split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
    }
}

const MQTT: ListenerId = ListenerId(0);
const HTTP: ListenerId = ListenerId(1);

/// `bob`'s password is `hunter2`.
const PASSWORDS: &str = "bob:$7$101$vwPGlJ7sh3J6tCWZ$Ts6NNQ0BGUvYk5i9+K327JkXVeJ6USTiMxhU1RF2xLM0f5PNQCWJliFuxcWSiJPvZ+tJvxwzjk9qvh1FvXVk3w==\n\
    eve:$7$101$vwPGlJ7sh3J6tCWZ$Ts6NNQ0BGUvYk5i9+K327JkXVeJ6USTiMxhU1RF2xLM0f5PNQCWJliFuxcWSiJPvZ+tJvxwzjk9qvh1FvXVk3w==\n";

fn now(secs: u64) -> Now {
    Now::new(Instant::ZERO + Duration::from_secs(secs), UnixTime::from_secs_f64(1_700_000_000.0 + secs as f64))
}

fn config() -> Config {
    let listener = |id, port, protocol| ListenerSummary {
        id,
        port,
        path: None,
        protocol,
        tls: false,
        mtls: false,
        allow_anonymous: true,
    };
    let mut config = Config {
        listeners: vec![listener(MQTT, 1883, ListenerProtocol::Mqtt), listener(HTTP, 9883, ListenerProtocol::HttpApi)],
        ..Config::default()
    };
    config.listener_max_connections.insert(HTTP, 3);
    config
}

fn server(policy: Option<FilePolicy>) -> Server<Recorder> {
    let broker = match policy {
        Some(policy) => Broker::with_policy(config(), Box::new(policy) as Box<dyn AccessPolicy>),
        None => Broker::new(config()),
    };
    Server::new(broker, None)
}

/// bob and eve from the password file; eve may read only `/metrics`.
fn with_passwords() -> Server<Recorder> {
    let passwords = PasswordFile::parse("passwd", PASSWORDS).ok().map(Arc::new);
    let acl = AclFile::parse("acl", "user bob\ntopic readwrite /#\nuser eve\ntopic read /metrics\n").ok().map(Arc::new);
    server(Some(FilePolicy::new(passwords, acl, true)))
}

fn peer(ip: [u8; 4], listener: ListenerId) -> Peer {
    Peer::new(SocketAddr::from((ip, 40000)), listener)
}

/// Sends `request` from `ip` and returns what came back.
fn ask(server: &mut Server<Recorder>, ip: [u8; 4], request: &str) -> (ConnId, Recorder) {
    let out = Recorder::default();
    let conn = server.accept(now(1), peer(ip, HTTP), out.clone());
    server.received(now(1), conn, request.as_bytes());
    (conn, out)
}

fn get(path: &str, auth: Option<&str>) -> String {
    let auth = auth.map(|a| format!("Authorization: Basic {a}\r\n")).unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n")
}

/// Answers the password checks the server asked for, as a runtime would.
fn check_passwords(server: &mut Server<Recorder>) {
    let file = PasswordFile::parse("passwd", PASSWORDS).ok();
    for request in server.poll_auth_requests() {
        let username = request.username.as_deref().unwrap_or_default();
        let password = request.password.as_ref().map_or(&b""[..], |p| p.as_bytes());
        let ok = file.as_ref().is_some_and(|f| f.verify(username, password));
        server.authenticated(now(1), request.conn, if ok { Ok(()) } else { Err(Refusal::NotAuthorized) });
    }
}

fn connect_mqtt(server: &mut Server<Recorder>, id: &str, will: Option<&str>) -> Recorder {
    let out = Recorder::default();
    let conn = server.accept(now(1), peer([10, 0, 0, 9], MQTT), out.clone());
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, if will.is_some() { 0x06 } else { 0x02 }, 0, 60];
    for field in [Some(id), will, will.map(|_| "bye")].into_iter().flatten() {
        body.extend_from_slice(&u16::try_from(field.len()).unwrap_or(0).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap_or(0)];
    packet.extend_from_slice(&body);
    server.received(now(1), conn, &packet);
    out
}

#[test]
fn version_from_loopback_in_any_split() {
    let request = get("/api/v1/version", None);
    let mut server = server(None);
    let (_, whole) = ask(&mut server, [127, 0, 0, 1], &request);
    assert_eq!(whole.status(), 200);
    assert_eq!(whole.body(), format!("culex version {}", env!("CARGO_PKG_VERSION")));
    assert!(whole.closed() && whole.text().contains("Access-Control-Allow-Origin: *\r\n"));
    for cut in 0..request.len() {
        let out = Recorder::default();
        let conn = server.accept(now(1), peer([127, 0, 0, 1], HTTP), out.clone());
        server.received(now(1), conn, &request.as_bytes()[..cut]);
        assert!(!out.closed(), "answered before the head was complete (cut {cut})");
        server.received(now(1), conn, &request.as_bytes()[cut..]);
        assert_eq!(out.text(), whole.text(), "cut at {cut}");
    }
}

#[test]
fn without_a_password_file_only_this_machine_is_served() {
    let mut server = server(None);
    assert_eq!(ask(&mut server, [192, 168, 1, 7], &get("/metrics", None)).1.status(), 403);
    assert_eq!(ask(&mut server, [127, 0, 0, 1], &get("/metrics", None)).1.status(), 200);
}

#[test]
fn with_a_password_file_credentials_and_the_acl_decide() {
    let mut server = with_passwords();
    let (_, anonymous) = ask(&mut server, [127, 0, 0, 1], &get("/metrics", None));
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.text().contains("WWW-Authenticate: Basic realm=\"culex\""));
    // bob:hunter2, from anywhere; checked off the broker's thread.
    let (_, bob) = ask(&mut server, [192, 168, 1, 7], &get("/api/v1/clients", Some("Ym9iOmh1bnRlcjI=")));
    assert!(!bob.closed(), "answered before its password was checked");
    check_passwords(&mut server);
    assert_eq!(bob.status(), 200, "{}", bob.text());
    // bob:wrong.
    let (_, wrong) = ask(&mut server, [127, 0, 0, 1], &get("/metrics", Some("Ym9iOndyb25n")));
    check_passwords(&mut server);
    assert_eq!(wrong.status(), 401);
    assert!(!wrong.body().contains("hunter"));
    // eve:hunter2 may read /metrics, nothing else.
    let (_, metrics) = ask(&mut server, [127, 0, 0, 1], &get("/metrics", Some("ZXZlOmh1bnRlcjI=")));
    let (_, clients) = ask(&mut server, [127, 0, 0, 1], &get("/api/v1/clients", Some("ZXZlOmh1bnRlcjI=")));
    check_passwords(&mut server);
    assert_eq!((metrics.status(), clients.status()), (200, 403));
}

#[test]
fn clients_listed_and_kicked_with_their_will() {
    let mut server = server(None);
    let watcher = connect_mqtt(&mut server, "watcher", None);
    // SUBSCRIBE to "gone" at QoS 0.
    let watcher_conn = ConnId(1);
    server.received(now(1), watcher_conn, &[0x82, 9, 0, 1, 0, 4, b'g', b'o', b'n', b'e', 0]);
    let device = connect_mqtt(&mut server, "dev/1", Some("gone"));
    let (_, list) = ask(&mut server, [127, 0, 0, 1], &get("/api/v1/clients?prefix=dev", None));
    let page: serde_json::Value = serde_json::from_str(&list.body()).unwrap_or_default();
    assert_eq!(page["meta"]["count"], 1, "{page}");
    assert_eq!(page["data"][0]["id"], "dev/1");
    assert_eq!(page["data"][0]["address"], "10.0.0.9:40000");
    assert_eq!(page["data"][0]["listener"], 1883);
    assert_eq!(page["data"][0]["connected_at"], 1_700_000_001);
    let (_, kicked) = ask(&mut server, [127, 0, 0, 1], "DELETE /api/v1/clients/dev%2F1 HTTP/1.1\r\n\r\n");
    assert_eq!(kicked.status(), 204);
    assert_eq!(device.0.borrow().closed, Some(CloseReason::Kicked));
    assert!(watcher.0.borrow().unread.ends_with(&[0x30, 9, 0, 4, b'g', b'o', b'n', b'e', b'b', b'y', b'e'][..]));
    let (_, again) = ask(&mut server, [127, 0, 0, 1], "DELETE /api/v1/clients/dev%2F1 HTTP/1.1\r\n\r\n");
    assert_eq!(again.status(), 404);
}

#[test]
fn wrong_methods_paths_and_heads() {
    let mut server = server(None);
    let (_, post) = ask(&mut server, [127, 0, 0, 1], "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(post.status(), 405);
    assert!(post.text().contains("Allow: GET\r\n"));
    assert_eq!(ask(&mut server, [127, 0, 0, 1], &get("/nothing", None)).1.status(), 404);
    assert_eq!(ask(&mut server, [127, 0, 0, 1], "GET / HTTP/1.1\r\nX: \x01\r\n\r\n").1.status(), 400);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "y".repeat(10_000));
    assert_eq!(ask(&mut server, [127, 0, 0, 1], &huge).1.status(), 431);
    let (_, page) = ask(&mut server, [127, 0, 0, 1], &get("/", None));
    assert!(page.status() == 200 && page.text().contains("Content-Type: text/html"));
}

#[test]
fn slow_heads_time_out_and_listeners_have_a_limit() {
    let mut server = server(None);
    let (conn, slow) = ask(&mut server, [127, 0, 0, 1], "GET /metr");
    assert_eq!(server.next_deadline(), Some(Instant::ZERO + Duration::from_secs(1) + REQUEST_TIMEOUT));
    server.timeout(now(1 + REQUEST_TIMEOUT.as_secs()));
    assert_eq!(slow.status(), 408);
    server.closed(now(12), conn);
    // At most 3 at once on this listener.
    let idle: Vec<_> = (0..3).map(|_| ask(&mut server, [127, 0, 0, 1], "G").1).collect();
    let (_, refused) = ask(&mut server, [127, 0, 0, 1], &get("/metrics", None));
    assert_eq!(refused.status(), 503);
    assert!(idle.iter().all(|out| !out.closed()));
}
