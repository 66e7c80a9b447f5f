//! A connection's outbox that keeps what the server writes to it, for
//! the tests that drive a [`Server`](culex_core::server::Server) as a
//! runtime would.

use std::cell::RefCell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use culex_core::CloseReason;
use culex_core::congestion::WriterProgress;
use culex_core::server::{Outbox, OutboxFull};

/// What a connection was sent and how it was closed.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    /// Written and not yet taken by the test.
    pub(crate) unread: BytesMut,
    /// Bytes written in all.
    pub(crate) bytes: u64,
    /// Why the server closed it, once it did.
    pub(crate) closed: Option<CloseReason>,
}

/// The outbox, shared with the test.
#[derive(Debug, Clone, Default)]
pub(crate) struct Recorder(pub(crate) Rc<RefCell<Sent>>);

impl Outbox for Recorder {
    fn send(&mut self, data: Bytes) -> Result<Option<WriterProgress>, OutboxFull> {
        let mut sent = self.0.borrow_mut();
        sent.bytes += data.len() as u64;
        sent.unread.extend_from_slice(&data);
        Ok(None)
    }

    fn close(&mut self, reason: CloseReason) {
        self.0.borrow_mut().closed = Some(reason);
    }

    fn pause_reading(&mut self, _: bool) {}
}
