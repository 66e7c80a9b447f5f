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
