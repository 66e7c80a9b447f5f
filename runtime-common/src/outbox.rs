//! The core's handle to a connection's writer, shared by both runtimes:
//! bytes go into the runtime's channel, bounded by the [`Backlog`].

use std::sync::Arc;

use bytes::Bytes;
use culex_core::CloseReason;
use culex_core::server::{Outbox, OutboxFull};
use tracing::debug;

use crate::backlog::{Admit, Backlog};

/// What the core asks of a connection's writer.
#[derive(Debug)]
pub enum Out {
    /// Write these bytes.
    Data(Bytes),
    /// Write what came before, then close.
    Close,
}

/// A runtime's unbounded, non-blocking channel to a connection task.
pub trait OutQueue {
    /// Queues `out`; a closed channel drops it (the connection is gone).
    fn push(&self, out: Out);
}

/// An [`Outbox`] over a runtime's channel.
#[derive(Debug)]
pub struct QueueOutbox<Q> {
    queue: Q,
    backlog: Arc<Backlog>,
}

impl<Q> QueueOutbox<Q> {
    /// An outbox writing into `queue`, counting bytes in `backlog`, which
    /// the connection task decrements as it writes.
    pub fn new(queue: Q, backlog: Arc<Backlog>) -> Self {
        Self { queue, backlog }
    }
}

impl<Q: OutQueue> Outbox for QueueOutbox<Q> {
    fn send(&mut self, data: Bytes) -> Result<(), OutboxFull> {
        match self.backlog.admit(data.len()) {
            Admit::Queue => self.queue.push(Out::Data(data)),
            Admit::Close => {
                debug!(queued = self.backlog.queued(), "backlog limit reached");
                return Err(OutboxFull);
            }
            Admit::Drop => {}
        }
        Ok(())
    }

    fn close(&mut self, reason: CloseReason) {
        debug!(%reason, "closing connection");
        if reason == CloseReason::NotReading {
            self.backlog.abort();
        }
        self.queue.push(Out::Close);
    }
}
