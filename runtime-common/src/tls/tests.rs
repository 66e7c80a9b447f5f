//! The TLS layer against an in-memory rustls client: the opening
//! handshake (with and without client certificates, under WebSocket),
//! the identity handed to the core, and data both ways through [`Link`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use bytes::Bytes;
use culex_core::Identity;
use culex_core::conf::{CertUsername, TlsConf, TlsVersion};
use rustls::ClientConnection;

use super::ListenerTls;
use crate::link::{Link, OpenStep, Transport};
use crate::testing::{DATA, at, client, client_with, conf, from_client, listener, path, remote, to_client, with_ca};

/// How an opening ended.
enum Opened {
    Open { link: Link, leftover: Bytes, identity: Identity, client_error: Option<rustls::Error> },
    Refused { client_error: Option<rustls::Error> },
}

/// Runs the opening: the client's bytes in `chunk`-sized pieces, the
/// server's replies back, `then` sent once the client's handshake is done.
fn open(transport: &Transport, client: &mut ClientConnection, then: &[u8], chunk: usize) -> Opened {
    let mut opening = transport.opening(&remote()).expect("TLS needs an opening");
    let mut sent_then = false;
    let mut client_error = None;
    for _ in 0..50 {
        let mut out = from_client(client);
        if !client.is_handshaking() && !sent_then {
            sent_then = true;
            client.writer().write_all(then).unwrap();
            out.extend(from_client(client));
        }
        if out.is_empty() {
            break;
        }
        let pieces: Vec<&[u8]> = out.chunks(chunk).collect();
        for (i, piece) in pieces.iter().enumerate() {
            match opening.feed(piece) {
                OpenStep::NeedMore { reply } => {
                    if let Err(e) = to_client(client, &reply) {
                        client_error = Some(e);
                    }
                }
                OpenStep::Open { reply, mut link, first, identity } => {
                    let client_error = to_client(client, &reply).err();
                    // What the client sent after the opening's end is the link's.
                    let rest = pieces[i + 1..].concat();
                    let leftover = [&first.data[..], &link.incoming(Bytes::from(rest)).data[..]].concat();
                    return Opened::Open { link, leftover: Bytes::from(leftover), identity, client_error };
                }
                OpenStep::Refuse { reply } | OpenStep::Respond { reply } => {
                    let error = to_client(client, &reply).err().or(client_error);
                    return Opened::Refused { client_error: error };
                }
            }
        }
    }
    panic!("the opening neither finished nor failed");
}

fn tls_only(listener: ListenerTls) -> Transport {
    Transport { tls: Some(listener), websocket: None }
}

const CONNECT: &[u8] = &[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'a'];

#[test]
fn plain_transport_needs_no_opening() {
    assert!(Transport::default().opening(&remote()).is_none());
}

#[test]
fn mqtt_over_tls_both_ways_in_any_chunking() {
    for chunk in [1, 7, 100, usize::MAX] {
        let transport = tls_only(listener(|_| {}));
        let mut client = client(None);
        let Opened::Open { mut link, leftover, identity, client_error: None } =
            open(&transport, &mut client, CONNECT, chunk)
        else {
            panic!("handshake failed at chunk {chunk}");
        };
        assert_eq!(identity, Identity::Connect);
        // The CONNECT came with the client's Finished or right after it.
        let mut got = leftover.to_vec();
        let rest = from_client(&mut client);
        got.extend_from_slice(&link.incoming(Bytes::from(rest)).data);
        assert_eq!(got, CONNECT);
        // Large writes go out whole (more than rustls buffers at once).
        let big = Bytes::from(vec![7u8; 200_000]);
        let sealed = link.outgoing(big.clone());
        assert_eq!(to_client(&mut client, &sealed).unwrap(), big);
        // close_notify from the client ends the link.
        client.send_close_notify();
        let end = link.incoming(Bytes::from(from_client(&mut client)));
        assert_eq!(end.end, Some(crate::ws::End::Closed));
        assert!(!link.close().is_empty());
    }
}

#[test]
fn identity_is_the_common_name_or_the_subject() {
    let common = tls_only(listener(|t| {
        with_ca(t);
        t.username = CertUsername::CommonName;
    }));
    let Opened::Open { identity, .. } = open(&common, &mut client(Some("dev1")), b"", usize::MAX) else {
        panic!("dev1 refused");
    };
    assert_eq!(identity, Identity::Certificate(Some("dev1".into())));
    // Not required: a client without a certificate gets through TLS, and
    // the core refuses it at CONNECT.
    let Opened::Open { identity, .. } = open(&common, &mut client(None), b"", usize::MAX) else {
        panic!("client without a certificate refused at the handshake");
    };
    assert_eq!(identity, Identity::Certificate(None));
    let subject = tls_only(listener(|t| {
        with_ca(t);
        t.username = CertUsername::Subject;
    }));
    let Opened::Open { identity, .. } = open(&subject, &mut client(Some("dev1")), b"", usize::MAX) else {
        panic!("dev1 refused");
    };
    assert_eq!(identity, Identity::Certificate(Some("CN=dev1,O=Culex Test,C=DE".into())));
}

#[test]
fn require_certificate_refuses_missing_and_foreign_certificates() {
    let transport = tls_only(listener(|t| {
        with_ca(t);
        t.require_certificate = true;
    }));
    for cert in [None, Some("rogue")] {
        assert!(matches!(open(&transport, &mut client(cert), b"", usize::MAX), Opened::Refused { .. }), "{cert:?}");
    }
    assert!(matches!(open(&transport, &mut client(Some("dev1")), b"", usize::MAX), Opened::Open { .. }));
}

#[test]
fn tls13_only_listener_refuses_a_tls12_client() {
    let transport = tls_only(listener(|t| t.version = Some(TlsVersion::Tls13)));
    let mut old = client_with(None, &[&rustls::version::TLS12]);
    let Opened::Refused { client_error: Some(error) } = open(&transport, &mut old, b"", usize::MAX) else {
        panic!("a TLS 1.2 client got through");
    };
    assert!(error.to_string().contains("alert"), "{error}");
    let both = tls_only(listener(|_| {}));
    assert!(matches!(open(&both, &mut client_with(None, &[&rustls::version::TLS12]), b"", 5), Opened::Open { .. }));
}

#[test]
fn plain_mqtt_on_a_tls_listener_is_refused() {
    let mut opening = tls_only(listener(|_| {})).opening(&remote()).unwrap();
    assert!(matches!(opening.feed(CONNECT), OpenStep::Refuse { .. }));
    // Anything after the refusal is refused too, without panicking.
    assert!(matches!(opening.feed(b"more"), OpenStep::Refuse { .. }));
}

#[test]
fn websocket_over_tls() {
    let transport = Transport { tls: Some(listener(|_| {})), websocket: Some(crate::link::WebSocket::new(1 << 20)) };
    let request = "GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";
    let mut client = client(None);
    let mut opening = transport.opening(&remote()).unwrap();
    let mut answer = Vec::new();
    let mut opened = None;
    for _ in 0..10 {
        let mut out = from_client(&mut client);
        if !client.is_handshaking() && answer.is_empty() && opened.is_none() {
            client.writer().write_all(request.as_bytes()).unwrap();
            out.extend(from_client(&mut client));
        }
        match opening.feed(&out) {
            OpenStep::NeedMore { reply } => answer.extend(to_client(&mut client, &reply).unwrap()),
            OpenStep::Open { reply, link, .. } => {
                answer.extend(to_client(&mut client, &reply).unwrap());
                opened = Some(link);
                break;
            }
            OpenStep::Refuse { .. } | OpenStep::Respond { .. } => panic!("refused"),
        }
    }
    let mut link = opened.expect("opened");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    // A masked binary frame carrying CONNECT, then the server's frame back.
    let mask = [1, 2, 3, 4];
    let mut frame = vec![0x82, 0x80 | CONNECT.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(CONNECT.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    client.writer().write_all(&frame).unwrap();
    assert_eq!(link.incoming(Bytes::from(from_client(&mut client))).data, CONNECT);
    let sealed = link.outgoing(Bytes::from_static(&[0x20, 2, 0, 0]));
    assert_eq!(to_client(&mut client, &sealed).unwrap(), [0x82, 4, 0x20, 2, 0, 0]);
}

#[test]
fn load_errors_name_the_file_the_line_and_the_reason() {
    let missing = ListenerTls::load(&conf(|t| t.certfile = at("/nowhere/server.crt", 7))).unwrap_err().to_string();
    assert!(missing.starts_with("t.conf:7: Unable to load server certificate \"/nowhere/server.crt\": "), "{missing}");
    let key = ListenerTls::load(&conf(|t| t.keyfile = at(&path("ca.crt"), 8))).unwrap_err().to_string();
    assert!(key.starts_with("t.conf:8: Unable to load server key file"), "{key}");
    let mismatch = ListenerTls::load(&conf(|t| t.keyfile = at(&path("dev1.key"), 9))).unwrap_err().to_string();
    assert!(mismatch.starts_with("t.conf:9: Server certificate"), "{mismatch}");
    let no_ca = ListenerTls::load(&conf(|t| t.capath = at(DATA.trim_end_matches("/tls"), 5))).unwrap_err().to_string();
    assert!(no_ca.contains("no certificate found in the directory"), "{no_ca}");
    assert!(ListenerTls::load(&conf(|t| t.capath = at(DATA, 5))).is_ok());
    assert!(ListenerTls::load(&TlsConf::default()).unwrap().is_none());
}

#[test]
fn arbitrary_bytes_in_any_chunking_never_panic() {
    static TRANSPORT: std::sync::OnceLock<Transport> = std::sync::OnceLock::new();
    fn prop(chunks: Vec<Vec<u8>>) -> bool {
        let transport = TRANSPORT.get_or_init(|| tls_only(listener(with_ca)));
        let mut opening = transport.opening(&remote()).unwrap();
        for chunk in &chunks {
            if let OpenStep::Refuse { .. } = opening.feed(chunk) {
                return true;
            }
        }
        true
    }
    quickcheck::QuickCheck::new().tests(300).quickcheck(prop as fn(Vec<Vec<u8>>) -> bool);
}

#[test]
fn corrupted_handshake_bytes_are_refused_without_panicking() {
    let transport = tls_only(listener(|t| {
        with_ca(t);
        t.require_certificate = true;
    }));
    // The client's first flight, then a byte changed at every position in
    // turn (a record header, a length, the hello's contents).
    let hello = from_client(&mut client(Some("dev1")));
    for at in 0..hello.len() {
        let mut bad = hello.clone();
        bad[at] ^= 0x5a;
        let mut opening = transport.opening(&remote()).unwrap();
        let first = opening.feed(&bad);
        // More bytes after whatever happened are taken quietly too.
        let _ = opening.feed(&hello);
        if let OpenStep::Open { .. } = first {
            panic!("a corrupted hello opened the connection (byte {at})");
        }
    }
}

#[test]
fn corrupted_record_after_the_handshake_ends_the_link_with_an_alert() {
    let transport = tls_only(listener(|_| {}));
    let mut client = client(None);
    let Opened::Open { mut link, .. } = open(&transport, &mut client, b"", usize::MAX) else {
        panic!("handshake failed");
    };
    client.writer().write_all(CONNECT).unwrap();
    let mut record = from_client(&mut client);
    let last = record.len() - 1;
    record[last] ^= 1;
    let got = link.incoming(Bytes::from(record));
    assert!(got.data.is_empty());
    assert_eq!(got.end, Some(crate::ws::End::Error("TLS error")));
    // The alert reaches the client, which sees why.
    let error = to_client(&mut client, &got.reply).unwrap_err();
    assert!(error.to_string().contains("BadRecordMac"), "{error}");
    // Nothing more is read or written on a failed link.
    assert!(link.incoming(Bytes::from_static(b"more")).data.is_empty());
    assert!(link.outgoing(Bytes::from_static(b"x")).is_empty());
    assert!(link.close().is_empty());
}

#[test]
fn an_idle_link_keeps_no_read_buffer_and_a_partial_record_is_bounded() {
    let transport = tls_only(listener(|_| {}));
    let mut client = client(None);
    let Opened::Open { mut link, .. } = open(&transport, &mut client, b"", usize::MAX) else {
        panic!("handshake failed");
    };
    client.writer().write_all(CONNECT).unwrap();
    let record = from_client(&mut client);
    // Half a record waits; the rest completes it.
    let (head, tail) = record.split_at(record.len() / 2);
    assert!(link.incoming(Bytes::copy_from_slice(head)).data.is_empty());
    assert_eq!(link.incoming(Bytes::copy_from_slice(tail)).data, CONNECT);
    assert!(format!("{link:?}").contains("pending: 0"), "{link:?}");
    // A record header announcing more than TLS allows is refused at once.
    let got = link.incoming(Bytes::from_static(&[0x17, 0x03, 0x03, 0xff, 0xff]));
    assert!(got.end.is_some());
}

/// The keys of a bridge that trusts `ca`, with `extra`.
fn bridge_keys(ca: &str, extra: impl FnOnce(&mut culex_core::conf::BridgeTls)) -> culex_core::conf::BridgeTls {
    let mut keys = culex_core::conf::BridgeTls { cafile: Some(path(ca)), ..Default::default() };
    extra(&mut keys);
    keys
}

/// A bridge's client session for `host` against a listener's (`server`
/// keys), each side's writes cut by `cut`: the two links once the
/// handshake is done, or why it failed.
fn bridge_handshake(
    keys: &culex_core::conf::BridgeTls,
    host: &str,
    server: impl FnOnce(&mut TlsConf),
    cut: &dyn Fn(&[u8]) -> Vec<Vec<u8>>,
) -> Result<(Link, Link), String> {
    let mut session = super::ClientSession::new(super::client_config(keys)?, host)?;
    let transport = Transport { tls: Some(listener(server)), websocket: None };
    let mut opening = transport.opening(&remote()).expect("TLS needs an opening");
    let mut to_server = session.pending().to_vec();
    let mut server_link = None;
    for _ in 0..20 {
        let mut reply = Vec::new();
        for piece in cut(&std::mem::take(&mut to_server)) {
            match opening.feed(&piece) {
                OpenStep::NeedMore { reply: r } => reply.extend_from_slice(&r),
                OpenStep::Open { reply: r, link, .. } => {
                    reply.extend_from_slice(&r);
                    server_link = Some(link);
                }
                OpenStep::Refuse { reply: r } | OpenStep::Respond { reply: r } => {
                    let read = session.incoming(&r);
                    return Err(format!("refused by the listener ({:?})", read.end));
                }
            }
        }
        for piece in cut(&reply) {
            let read = session.incoming(&piece);
            if let Some(end) = read.end {
                return Err(format!("{end:?}"));
            }
            to_server.extend_from_slice(&read.reply);
        }
        to_server.extend_from_slice(&session.pending());
        if !session.is_handshaking()
            && to_server.is_empty()
            && let Some(server_link) = server_link.take()
        {
            return Ok((Link::tls_client(remote(), session), server_link));
        }
    }
    Err("the handshake did not finish".to_owned())
}

/// MQTT bytes both ways between a bridge's link and a listener's, cut.
fn both_ways(client: &mut Link, server: &mut Link, cut: &dyn Fn(&[u8]) -> Vec<Vec<u8>>) -> bool {
    let (connect, connack) = (Bytes::from_static(b"\x10\x0cCONNECT....."), Bytes::from_static(b"\x20\x02\x00\x00"));
    let mut got = Vec::new();
    for piece in cut(&client.outgoing(connect.clone())) {
        got.extend_from_slice(&server.incoming(Bytes::from(piece)).data);
    }
    let mut back = Vec::new();
    for piece in cut(&server.outgoing(connack.clone())) {
        back.extend_from_slice(&client.incoming(Bytes::from(piece)).data);
    }
    got == connect && back == connack
}

fn whole(data: &[u8]) -> Vec<Vec<u8>> {
    vec![data.to_vec()]
}

#[test]
fn a_bridge_speaks_tls_to_a_listener_cut_at_every_point() {
    let keys = bridge_keys("ca.crt", |_| {});
    let (mut client, mut server) = bridge_handshake(&keys, "localhost", |_| {}, &whole).unwrap();
    assert!(both_ways(&mut client, &mut server, &whole));
    for at in 1..64 {
        let cut = move |data: &[u8]| data.chunks(at).map(<[u8]>::to_vec).collect::<Vec<_>>();
        let (mut client, mut server) = bridge_handshake(&keys, "localhost", |_| {}, &cut).unwrap();
        assert!(both_ways(&mut client, &mut server, &cut), "cut every {at} bytes");
    }
    // Every write in two reads, cut at each point of the longest (the
    // listener's certificate flight).
    let longest = std::cell::Cell::new(0);
    let measure = |data: &[u8]| {
        longest.set(longest.get().max(data.len()));
        whole(data)
    };
    bridge_handshake(&keys, "localhost", |_| {}, &measure).unwrap();
    assert!(longest.get() > 500, "the certificate flight is {} bytes", longest.get());
    for at in 1..longest.get() {
        let cut = move |data: &[u8]| {
            let (head, tail) = data.split_at(at.min(data.len()));
            [head, tail].into_iter().filter(|piece| !piece.is_empty()).map(<[u8]>::to_vec).collect::<Vec<_>>()
        };
        let (mut client, mut server) = bridge_handshake(&keys, "localhost", |_| {}, &cut).unwrap();
        assert!(both_ways(&mut client, &mut server, &cut), "cut at {at}");
    }
}

quickcheck::quickcheck! {
    fn a_bridge_handshake_survives_random_chunks(sizes: Vec<u8>) -> bool {
        let sizes: Vec<usize> = sizes.iter().map(|s| usize::from(*s).max(1)).collect();
        let cut = move |data: &[u8]| {
            let mut pieces = Vec::new();
            let (mut rest, mut n) = (data, 0);
            while !rest.is_empty() {
                let size = sizes.get(n % sizes.len().max(1)).copied().unwrap_or(rest.len()).min(rest.len());
                pieces.push(rest[..size].to_vec());
                rest = &rest[size..];
                n += 1;
            }
            pieces
        };
        let keys = bridge_keys("ca.crt", |_| {});
        bridge_handshake(&keys, "localhost", |_| {}, &cut)
            .is_ok_and(|(mut client, mut server)| both_ways(&mut client, &mut server, &cut))
    }
}

#[test]
fn a_bridge_refuses_a_remote_its_cas_do_not_vouch_for_or_named_otherwise() {
    let stranger = bridge_keys("other-ca.crt", |_| {});
    let error = bridge_handshake(&stranger, "localhost", |_| {}, &whole).unwrap_err();
    assert!(error.contains("UnknownIssuer"), "{error}");
    let keys = bridge_keys("ca.crt", |_| {});
    let error = bridge_handshake(&keys, "elsewhere.example", |_| {}, &whole).unwrap_err();
    assert!(error.contains("NotValidForName"), "{error}");
    // bridge_insecure: the name is not checked, the issuer still is.
    let insecure = bridge_keys("ca.crt", |k| k.insecure = true);
    assert!(bridge_handshake(&insecure, "elsewhere.example", |_| {}, &whole).is_ok());
    let insecure_stranger = bridge_keys("other-ca.crt", |k| k.insecure = true);
    assert!(bridge_handshake(&insecure_stranger, "elsewhere.example", |_| {}, &whole).is_err());
}

#[test]
fn a_bridge_shows_its_certificate_to_a_listener_that_requires_one() {
    let require = |t: &mut TlsConf| {
        with_ca(t);
        t.require_certificate = true;
    };
    let anonymous = bridge_keys("ca.crt", |_| {});
    assert!(bridge_handshake(&anonymous, "localhost", require, &whole).is_err());
    let with_cert = bridge_keys("ca.crt", |k| {
        k.certfile = Some(path("dev1.crt"));
        k.keyfile = Some(path("dev1.key"));
    });
    let (mut client, mut server) = bridge_handshake(&with_cert, "localhost", require, &whole).unwrap();
    assert!(both_ways(&mut client, &mut server, &whole));
}

#[test]
fn a_bridges_missing_tls_file_is_named() {
    let missing = bridge_keys("nope.crt", |_| {});
    let error = super::client_config(&missing).unwrap_err();
    assert!(error.starts_with("Unable to load bridge_cafile"), "{error}");
}

#[test]
fn a_bridge_sends_and_receives_more_than_rustls_buffers_at_once() {
    let keys = bridge_keys("ca.crt", |_| {});
    let (mut client, mut server) = bridge_handshake(&keys, "localhost", |_| {}, &whole).unwrap();
    let big: Bytes = (0..300_000u32).map(|i| i as u8).collect::<Vec<_>>().into();
    let got = server.incoming(client.outgoing(big.clone()));
    assert_eq!(got.data.len(), big.len());
    assert!(got.data == big);
    let back = client.incoming(server.outgoing(big.clone()));
    assert!(back.data == big);
}

#[test]
fn a_bridge_handshake_ends_at_its_deadline_however_the_remote_trickles() {
    use std::io::Write as _;
    use std::time::{Duration, Instant};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let trickler = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        // A record header promising 16 KiB, then its body a byte at a time.
        for byte in [0x16, 0x03, 0x03, 0x40, 0x00].into_iter().chain(std::iter::repeat_n(0, 40)) {
            if socket.write_all(&[byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let config = super::client_config(&bridge_keys("ca.crt", |_| {})).unwrap();
    let mut session = super::ClientSession::new(config, "localhost").unwrap();
    let start = Instant::now();
    let error = session.handshake(&mut stream, Duration::from_millis(300)).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
    assert_eq!(error.to_string(), "the TLS handshake timed out");
    assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
    drop(stream);
    trickler.join().unwrap();
}
