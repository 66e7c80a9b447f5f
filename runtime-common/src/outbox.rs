//! The core's handle to a connection's writer, shared by both runtimes: a
//! queue from the broker task to the connection task, bounded by the
//! [`Backlog`].
//!
//! Design: one allocation per connection (the shared state below), and no
//! buffer while the connection is idle. The queue is a `VecDeque` under a
//! mutex: the broker task's first push allocates it, the reader frees it
//! when it takes the last item. A runtime's channel would cost more per
//! idle client (tokio's unbounded mpsc allocates a block of 32 slots up
//! front, about 1 KiB, plus 0.5 KiB of padded counters). The lock is held
//! only to push, to pop and to store a waker; each item is one
//! [`Action::Send`](culex_core::Action::Send), all the bytes of a turn of
//! the broker for that connection.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::PoisonError;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use culex_core::CloseReason;
use culex_core::server::Outbox;
use tracing::{debug, warn};

use crate::backlog::{Admit, Backlog};
use crate::sync::{Arc, Mutex, MutexGuard};

/// What the core asks of a connection's writer.
#[derive(Debug)]
pub enum Out {
    /// Write these bytes.
    Data(Bytes),
    /// Write what came before, then close.
    Close,
}

/// A new connection's queue: the core's end and the connection task's end.
/// Past `limit` bytes queued and not yet written, the connection is closed.
pub fn channel(limit: usize) -> (QueueOutbox, OutboxReader) {
    let shared = Arc::new(Shared {
        backlog: Backlog::new(limit),
        state: Mutex::new(State { queue: VecDeque::new(), waker: None, outbox_gone: false, reader_gone: false }),
    });
    (QueueOutbox { shared: shared.clone() }, OutboxReader { shared })
}

#[derive(Debug)]
struct Shared {
    backlog: Backlog,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Out>,
    /// The reader, waiting for the queue to fill.
    waker: Option<Waker>,
    /// The core dropped its end: once the queue is read, nothing follows.
    outbox_gone: bool,
    /// The connection task is gone: pushes are dropped.
    reader_gone: bool,
}

impl State {
    fn pop(&mut self) -> Option<Out> {
        let out = self.queue.pop_front();
        if out.is_some() && self.queue.is_empty() {
            // An idle connection keeps no queue buffer.
            self.queue = VecDeque::new();
        }
        out
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is as good.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `out` unless the reader is gone, then wakes the reader.
    fn push(&self, out: Out) {
        let waker = {
            let mut state = self.lock();
            if state.reader_gone {
                return;
            }
            state.queue.push_back(out);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// An [`Outbox`] over a connection's queue, held by the broker task.
#[derive(Debug)]
pub struct QueueOutbox {
    shared: Arc<Shared>,
}

impl Outbox for QueueOutbox {
    fn send(&mut self, data: Bytes) {
        match self.shared.backlog.admit(data.len()) {
            Admit::Queue => self.shared.push(Out::Data(data)),
            Admit::Close => {
                warn!(queued = self.shared.backlog.queued(), "Client is not reading its messages, disconnecting.");
                self.shared.push(Out::Close);
            }
            Admit::Drop => {}
        }
    }

    fn close(&mut self, reason: CloseReason) {
        debug!(%reason, "closing connection");
        self.shared.push(Out::Close);
    }
}

impl Drop for QueueOutbox {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.outbox_gone = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The connection task's end of the queue.
#[derive(Debug)]
pub struct OutboxReader {
    shared: Arc<Shared>,
}

impl OutboxReader {
    /// The next item; `None` once the core dropped its end and everything
    /// queued was read.
    pub async fn recv(&mut self) -> Option<Out> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The next item, waking `cx` when one comes.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Out>> {
        let mut state = self.shared.lock();
        if let Some(out) = state.pop() {
            return Poll::Ready(Some(out));
        }
        if state.outbox_gone {
            return Poll::Ready(None);
        }
        if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// The next item if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Option<Out> {
        self.shared.lock().pop()
    }

    /// Reports `len` queued bytes as written (see [`Backlog::written`]).
    pub fn written(&self, len: usize) {
        self.shared.backlog.written(len);
    }
}

impl Drop for OutboxReader {
    fn drop(&mut self) {
        let queued = {
            let mut state = self.shared.lock();
            state.reader_gone = true;
            state.waker = None;
            std::mem::take(&mut state.queue)
        };
        // Dropped outside the lock: the bytes may be the last reference
        // to a large buffer.
        drop(queued);
    }
}

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn data(b: &'static [u8]) -> Bytes {
        Bytes::from_static(b)
    }

    #[test]
    fn items_arrive_in_order_and_a_waiting_reader_is_woken() {
        let (mut outbox, mut reader) = channel(100);
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(reader.poll_recv(&mut cx).is_pending());
        outbox.send(data(b"ab"));
        outbox.send(data(b"cd"));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(matches!(reader.poll_recv(&mut cx), Poll::Ready(Some(Out::Data(d))) if d == "ab"));
        assert!(matches!(reader.try_recv(), Some(Out::Data(d)) if d == "cd"));
        assert!(reader.try_recv().is_none());
        assert_eq!(reader.shared.lock().queue.capacity(), 0, "an emptied queue is freed");
        outbox.close(CloseReason::Shutdown);
        drop(outbox);
        assert!(matches!(reader.poll_recv(&mut cx), Poll::Ready(Some(Out::Close))));
        assert!(matches!(reader.poll_recv(&mut cx), Poll::Ready(None)));
    }

    #[test]
    fn past_the_limit_the_reader_is_told_to_close_once() {
        let (mut outbox, mut reader) = channel(3);
        outbox.send(data(b"ab"));
        outbox.send(data(b"cd"));
        outbox.send(data(b"ef"));
        assert!(matches!(reader.try_recv(), Some(Out::Data(d)) if d == "ab"));
        assert!(matches!(reader.try_recv(), Some(Out::Close)));
        assert!(reader.try_recv().is_none());
        reader.written(2);
        outbox.send(data(b"gh"));
        assert!(reader.try_recv().is_none(), "dropped after the close");
    }

    #[test]
    fn after_the_reader_is_gone_sends_are_dropped() {
        let (mut outbox, reader) = channel(100);
        outbox.send(data(b"ab"));
        drop(reader);
        outbox.send(data(b"cd"));
        assert!(outbox.shared.lock().queue.is_empty());
    }
}

#[cfg(all(test, culex_loom))]
mod loom_outbox {
    use super::*;

    /// The broker task queues and then drops its end while the connection
    /// task reads: every item arrives once, in order, the reader is never
    /// left waiting without a wake-up, and it sees the end.
    #[test]
    fn queue_then_drop_while_reading() {
        loom::model(|| {
            let (mut outbox, mut reader) = channel(100);
            let core = loom::thread::spawn(move || {
                outbox.send(Bytes::from_static(b"a"));
                outbox.send(Bytes::from_static(b"b"));
                outbox.close(CloseReason::Shutdown);
            });
            let got = loom::future::block_on(async {
                let mut got = Vec::new();
                while let Some(out) = reader.recv().await {
                    got.push(match out {
                        Out::Data(d) => d,
                        Out::Close => Bytes::from_static(b"close"),
                    });
                }
                got
            });
            let _ = core.join();
            assert_eq!(got, [&b"a"[..], b"b", b"close"]);
        });
    }

    /// The connection task ends while the broker task queues: nothing is
    /// left queued once both are done.
    #[test]
    fn reader_gone_while_queueing() {
        loom::model(|| {
            let (mut outbox, reader) = channel(100);
            let shared = outbox.shared.clone();
            let conn = loom::thread::spawn(move || drop(reader));
            outbox.send(Bytes::from_static(b"a"));
            let _ = conn.join();
            outbox.send(Bytes::from_static(b"b"));
            assert!(shared.lock().queue.is_empty());
        });
    }
}
