//! Feeds arbitrary bytes to an `http_api` connection of a [`Server`], as
//! both runtimes drive it, once in one read and once cut into reads of
//! the sizes the input picks: both must give the same answer and the same
//! end, and nothing may panic.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::Bytes;
use culex_core::conf::ListenerProtocol;
use culex_core::congestion::WriterProgress;
use culex_core::server::{Outbox, OutboxFull, Server};
use culex_core::{Broker, CloseReason, Config, Instant, ListenerId, ListenerSummary, Now, Peer, UnixTime};
use libfuzzer_sys::fuzz_target;

/// What the connection was sent, and how it ended.
#[derive(Debug, Clone, Default)]
struct Recorder(Rc<RefCell<(Vec<u8>, Option<CloseReason>)>>);

impl Outbox for Recorder {
    fn send(&mut self, data: Bytes) -> Result<Option<WriterProgress>, OutboxFull> {
        self.0.borrow_mut().0.extend_from_slice(&data);
        Ok(None)
    }

    fn close(&mut self, reason: CloseReason) {
        self.0.borrow_mut().1 = Some(reason);
    }

    fn pause_reading(&mut self, _: bool) {}
}

fn answer(reads: &[&[u8]]) -> (Vec<u8>, Option<CloseReason>) {
    let config = Config {
        listeners: vec![ListenerSummary {
            id: ListenerId(0),
            port: 9883,
            path: None,
            protocol: ListenerProtocol::HttpApi,
            tls: false,
            mtls: false,
            allow_anonymous: true,
        }],
        ..Config::default()
    };
    let mut server = Server::new(Broker::new(config), None);
    let now = Now::new(Instant::ZERO, UnixTime::from_secs_f64(0.0));
    let out = Recorder::default();
    let conn = server.accept(now, Peer::new(SocketAddr::from(([127, 0, 0, 1], 1)), ListenerId(0)), out.clone());
    for read in reads {
        server.received(now, conn, read);
    }
    let got = out.0.borrow().clone();
    got
}

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, data)) = data.split_first() else { return };
    let whole = answer(&[data]);
    let size = usize::from(cuts % 16) + 1;
    let pieces: Vec<&[u8]> = data.chunks(size).collect();
    let cut = answer(&pieces);
    // The uptime in /metrics is the same (no time passes), so the two
    // answers are byte for byte the same.
    assert_eq!(whole, cut);
    if whole.1.is_some() {
        assert!(whole.0.starts_with(b"HTTP/1.1 "));
    }
});
