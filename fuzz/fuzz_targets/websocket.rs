//! Feeds arbitrary bytes to a WebSocket listener's link (the upgrade
//! request, then frames) as both runtimes drive it, once in one read and
//! once cut into reads of the sizes the input picks, and checks that both
//! give the same MQTT bytes, the same bytes back, and the same end.
#![no_main]

use bytes::Bytes;
use culex_runtime::link::{Link, OpenStep, Transport, WebSocket};
use culex_runtime::ws::{Deframed, End};
use libfuzzer_sys::fuzz_target;

/// A small frame cap, so that the size check is exercised too.
const MAX_FRAME: u64 = 4096;

/// What a connection made of the bytes it read.
#[derive(Debug, Default, PartialEq, Eq)]
struct Outcome {
    mqtt: Vec<u8>,
    written: Vec<u8>,
    end: Option<End>,
    refused: bool,
}

/// The server side, as a runtime drives it: the opening, then the link.
#[derive(Default)]
struct Server {
    link: Option<Link>,
    got: Outcome,
}

impl Server {
    fn read(&mut self, opening: &mut Option<culex_runtime::Opening>, data: &[u8]) {
        if self.got.refused || self.got.end.is_some() {
            return;
        }
        if let Some(link) = &mut self.link {
            let got = link.incoming(Bytes::copy_from_slice(data));
            return self.take(got);
        }
        let Some(open) = opening.as_mut() else { return };
        match open.feed(data) {
            OpenStep::NeedMore { reply } => self.got.written.extend_from_slice(&reply),
            OpenStep::Open { reply, link, first, .. } => {
                self.got.written.extend_from_slice(&reply);
                self.link = Some(link);
                self.take(first);
            }
            OpenStep::Refuse { reply } | OpenStep::Respond { reply } => {
                self.got.written.extend_from_slice(&reply);
                self.got.refused = true;
            }
        }
    }

    fn take(&mut self, got: Deframed) {
        self.got.mqtt.extend_from_slice(&got.data);
        self.got.written.extend_from_slice(&got.reply);
        self.got.end = got.end;
    }
}

fn play(transport: &Transport, reads: &[&[u8]]) -> Outcome {
    let remote = culex_core::Remote::from(std::net::SocketAddr::from(([127, 0, 0, 1], 40000)));
    let mut opening = transport.opening(&remote);
    let mut server = Server::default();
    for read in reads {
        server.read(&mut opening, read);
    }
    server.got
}

fuzz_target!(|data: &[u8]| {
    // The first bytes pick read sizes (1 to 64), the rest is the stream.
    let Some((&count, rest)) = data.split_first() else { return };
    let count = usize::from(count % 8);
    if rest.len() < count {
        return;
    }
    let (sizes, stream) = rest.split_at(count);
    let transport = Transport { tls: None, websocket: Some(WebSocket::new(MAX_FRAME)) };
    let whole = play(&transport, &[stream]);
    let mut reads = Vec::new();
    let mut left = stream;
    for size in sizes.iter().cycle() {
        if left.is_empty() || sizes.is_empty() {
            break;
        }
        let (read, tail) = left.split_at(usize::from(size % 64 + 1).min(left.len()));
        reads.push(read);
        left = tail;
    }
    if !left.is_empty() {
        reads.push(left);
    }
    let split = play(&transport, &reads);
    assert_eq!(split, whole, "reads of {:?}", reads.iter().map(|r| r.len()).collect::<Vec<_>>());
});
