//! The core's handle to a connection's writer, shared by both runtimes: a
//! queue from the broker task to the connection task, bounded by the
//! [`Backlog`], and the core's word on whether to read the socket.
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
use culex_core::congestion::WriterProgress;
use culex_core::server::{Outbox, OutboxFull};
use culex_core::{CloseReason, ConnId};
use tracing::debug;

use crate::backlog::{Admit, Backlog, Thresholds};
use crate::reports::WriterReports;
use crate::sync::{Arc, Mutex, MutexGuard};

/// What the core asks of a connection's writer.
#[derive(Debug)]
pub enum Out {
    /// Write these bytes.
    Data(Bytes),
    /// Write what came before, then close.
    Close,
    /// Close now, writing nothing more: the client does not read what it
    /// is sent ([`CloseReason::NotReading`]).
    Abort,
    /// Stop reading the socket until [`Out::Resume`]: a subscriber this
    /// client publishes to cannot keep up.
    Pause,
    /// Read the socket again.
    Resume,
}

/// What the outboxes of all connections share, held once rather than in
/// each of them.
#[derive(Debug)]
pub struct Writers {
    /// When a writer is behind, and when its connection is closed.
    pub thresholds: Thresholds,
    /// Where the writers post their progress for the broker task.
    pub reports: WriterReports,
}

impl Writers {
    /// Writers held to `thresholds`, with an empty board.
    pub fn new(thresholds: Thresholds) -> Self {
        Self { thresholds, reports: WriterReports::default() }
    }
}

/// A new connection's queue: the core's end and the connection task's end.
pub fn channel(writers: Arc<Writers>) -> (QueueOutbox, OutboxReader) {
    let shared = Arc::new(Shared {
        writers,
        state: Mutex::new(State {
            queue: VecDeque::new(),
            backlog: Backlog::default(),
            waker: None,
            outbox_gone: false,
            reader_gone: false,
            aborted: false,
            paused: false,
            paused_told: false,
        }),
    });
    (QueueOutbox { shared: shared.clone() }, OutboxReader { shared })
}

/// One connection's outbox, within 104 bytes with the `Arc`'s counts, so
/// that it takes a 112-byte heap chunk: what is the same for every
/// connection is behind `writers`, and the connection task passes its own
/// id when it reports (see [`OutboxReader::written`]).
#[derive(Debug)]
struct Shared {
    writers: Arc<Writers>,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    queue: VecDeque<Out>,
    /// Bytes queued and not yet written.
    backlog: Backlog,
    /// The reader, waiting for the queue to fill.
    waker: Option<Waker>,
    /// The core dropped its end: once the queue is read, nothing follows.
    outbox_gone: bool,
    /// The connection task is gone: pushes are dropped.
    reader_gone: bool,
    /// The core dropped the client for not reading: the queue is gone,
    /// pushes are dropped, the reader is to close at once.
    aborted: bool,
    /// The core wants the socket left unread.
    paused: bool,
    /// What the reader was last told of `paused`.
    paused_told: bool,
}

impl State {
    /// What the reader is to do next: abort, a change of reading, or the
    /// next item queued.
    fn next(&mut self) -> Option<Out> {
        if self.aborted {
            return Some(Out::Abort);
        }
        if self.paused != self.paused_told {
            self.paused_told = self.paused;
            return Some(if self.paused { Out::Pause } else { Out::Resume });
        }
        self.pop()
    }

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
            if state.reader_gone || state.aborted {
                return;
            }
            state.queue.push_back(out);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Queues bytes within the backlog's limit, then wakes the reader.
    fn push_data(&self, data: Bytes) -> Admit {
        let (admit, waker) = {
            let mut state = self.lock();
            if state.reader_gone || state.aborted {
                return Admit::Drop;
            }
            let admit = state.backlog.admit(data.len(), self.writers.thresholds);
            if let Admit::Queue(_) = admit {
                state.queue.push_back(Out::Data(data));
            }
            (admit, state.waker.take())
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        admit
    }

    /// Asks the reader to stop or resume reading the socket.
    fn set_paused(&self, paused: bool) {
        let waker = {
            let mut state = self.lock();
            if state.paused == paused {
                return;
            }
            state.paused = paused;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Drops what is queued and tells the reader to close at once, even
    /// if it is blocked writing to a client that does not read.
    fn abort(&self) {
        let (queued, waker) = {
            let mut state = self.lock();
            state.aborted = true;
            (std::mem::take(&mut state.queue), state.waker.take())
        };
        drop(queued);
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
    fn send(&mut self, data: Bytes) -> Result<Option<WriterProgress>, OutboxFull> {
        match self.shared.push_data(data) {
            Admit::Queue(progress) => Ok(progress),
            // The core closes the connection with `NotReading`.
            Admit::Close => Err(OutboxFull),
            Admit::Drop => Ok(None),
        }
    }

    fn pause_reading(&mut self, paused: bool) {
        self.shared.set_paused(paused);
    }

    fn close(&mut self, reason: CloseReason) {
        debug!(%reason, "closing connection");
        match reason {
            CloseReason::NotReading => self.shared.abort(),
            _ => self.shared.push(Out::Close),
        }
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
        if let Some(out) = state.next() {
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
        self.shared.lock().next()
    }

    /// Completes once the core dropped the client for not reading; a
    /// connection task races its socket writes against it.
    pub async fn aborted(&self) {
        poll_fn(|cx| {
            let mut state = self.shared.lock();
            if state.aborted {
                return Poll::Ready(());
            }
            if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                state.waker = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// Reports `len` queued bytes of connection `conn` as written, posting
    /// to the broker's [`WriterReports`] what the core is to hear (see
    /// [`Backlog::written`]); whether the broker task is to be woken.
    pub fn written(&self, conn: ConnId, len: usize) -> bool {
        let writers = &self.shared.writers;
        let progress = self.shared.lock().backlog.written(len, writers.thresholds);
        progress.is_some_and(|progress| writers.reports.post((conn, progress)))
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

/// Writers held to `limit` and `budget`.
#[cfg(test)]
fn writers(limit: usize, budget: usize) -> Arc<Writers> {
    Arc::new(Writers::new(Thresholds { budget, limit }))
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

    fn test_channel(limit: usize, budget: usize) -> (QueueOutbox, OutboxReader) {
        channel(writers(limit, budget))
    }

    #[test]
    fn the_shared_state_fits_a_112_byte_heap_chunk() {
        // glibc serves requests of up to 104 bytes from 112-byte chunks;
        // the `Arc` puts its two counts before the state. One more byte
        // and every connection takes a 128-byte chunk.
        assert!(2 * size_of::<usize>() + size_of::<Shared>() <= 104, "{} bytes", size_of::<Shared>());
    }

    #[test]
    fn items_arrive_in_order_and_a_waiting_reader_is_woken() {
        let (mut outbox, mut reader) = test_channel(100, 0);
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(reader.poll_recv(&mut cx).is_pending());
        assert!(outbox.send(data(b"ab")).is_ok());
        assert!(outbox.send(data(b"cd")).is_ok());
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
    fn past_the_limit_the_core_is_told_once_and_its_close_aborts() {
        let (mut outbox, mut reader) = test_channel(3, 0);
        assert!(outbox.send(data(b"ab")).is_ok());
        assert_eq!(outbox.send(data(b"cd")), Err(OutboxFull));
        assert!(outbox.send(data(b"ef")).is_ok(), "dropped once the limit was crossed");
        // A writer blocked on the socket is woken by the abort.
        let wakes = Arc::new(CountWakes::default());
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        {
            let mut aborted = std::pin::pin!(reader.aborted());
            assert!(aborted.as_mut().poll(&mut cx).is_pending());
            outbox.close(CloseReason::NotReading);
            assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
            assert!(aborted.as_mut().poll(&mut cx).is_ready());
        }
        assert!(matches!(reader.try_recv(), Some(Out::Abort)), "what was queued is dropped");
        assert!(matches!(reader.poll_recv(&mut cx), Poll::Ready(Some(Out::Abort))));
        assert!(outbox.shared.lock().queue.is_empty());
    }

    #[test]
    fn the_reader_is_told_of_pauses_before_the_data_and_only_of_changes() {
        let (mut outbox, mut reader) = test_channel(100, 0);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(reader.poll_recv(&mut cx).is_pending());
        assert!(outbox.send(data(b"ab")).is_ok());
        outbox.pause_reading(true);
        outbox.pause_reading(true);
        assert!(matches!(reader.poll_recv(&mut cx), Poll::Ready(Some(Out::Pause))));
        assert!(matches!(reader.try_recv(), Some(Out::Data(d)) if d == "ab"));
        // Paused and resumed before the reader looked: nothing to tell.
        outbox.pause_reading(false);
        outbox.pause_reading(true);
        assert!(reader.try_recv().is_none());
        outbox.pause_reading(false);
        assert!(matches!(reader.try_recv(), Some(Out::Resume)));
    }

    #[test]
    fn past_the_budget_the_core_is_told_and_the_writer_posts_the_rest() {
        let (mut outbox, reader) = test_channel(1000, 10);
        assert_eq!(outbox.send(data(b"abcdef")), Ok(None));
        assert_eq!(outbox.send(data(b"ghijkl")), Ok(Some(WriterProgress::Behind { episode: 1 })));
        assert!(reader.written(ConnId(1), 4), "the first report wakes the broker");
        assert!(!reader.written(ConnId(1), 4), "the second waits on the board with it");
        assert!(!reader.written(ConnId(1), 4), "nothing to report");
        let posted = reader.shared.writers.reports.take();
        let progress = [WriterProgress::Progressed, WriterProgress::CaughtUp { episode: 1 }];
        assert_eq!(posted, progress.map(|p| (ConnId(1), p)));
    }

    #[test]
    fn after_the_reader_is_gone_sends_are_dropped() {
        let (mut outbox, reader) = test_channel(100, 0);
        assert!(outbox.send(data(b"ab")).is_ok());
        drop(reader);
        assert!(outbox.send(data(b"cd")).is_ok());
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
            let (mut outbox, mut reader) = channel(writers(100, 0));
            let core = loom::thread::spawn(move || {
                let _ = outbox.send(Bytes::from_static(b"a"));
                let _ = outbox.send(Bytes::from_static(b"b"));
                outbox.close(CloseReason::Shutdown);
            });
            let got = loom::future::block_on(async {
                let mut got = Vec::new();
                while let Some(out) = reader.recv().await {
                    got.push(match out {
                        Out::Data(d) => d,
                        Out::Close | Out::Abort => Bytes::from_static(b"close"),
                        Out::Pause | Out::Resume => Bytes::from_static(b"reading"),
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
            let (mut outbox, reader) = channel(writers(100, 0));
            let shared = outbox.shared.clone();
            let conn = loom::thread::spawn(move || drop(reader));
            let _ = outbox.send(Bytes::from_static(b"a"));
            let _ = conn.join();
            let _ = outbox.send(Bytes::from_static(b"b"));
            assert!(shared.lock().queue.is_empty());
        });
    }

    /// The core pauses and resumes reading while the connection task
    /// waits: the task is always woken, and the last word it gets is the
    /// core's last (a pause and resume it missed are told as nothing).
    #[test]
    fn pause_and_resume_while_the_reader_waits() {
        loom::model(|| {
            let (mut outbox, mut reader) = channel(writers(100, 0));
            let core = loom::thread::spawn(move || {
                outbox.pause_reading(true);
                outbox.pause_reading(false);
                outbox.pause_reading(true);
                outbox.close(CloseReason::Shutdown);
            });
            let paused = loom::future::block_on(async {
                let mut paused = false;
                while let Some(out) = reader.recv().await {
                    match out {
                        Out::Pause => paused = true,
                        Out::Resume => paused = false,
                        Out::Close => break,
                        Out::Data(_) | Out::Abort => unreachable!("nothing else was queued"),
                    }
                }
                paused
            });
            let _ = core.join();
            assert!(paused, "the last word was a pause");
        });
    }

    /// The broker task queues past the budget while the connection task
    /// writes: the reports of both sides, put in order of their episodes,
    /// agree with the backlog at the end.
    #[test]
    fn budget_reports_while_queueing_and_writing() {
        loom::model(|| {
            let (mut outbox, reader) = channel(writers(1000, 4));
            assert_eq!(outbox.send(Bytes::from_static(b"abcde")), Ok(Some(WriterProgress::Behind { episode: 1 })));
            let writer = loom::thread::spawn(move || {
                let _ = reader.written(ConnId(1), 5);
                reader
            });
            let second = outbox.send(Bytes::from_static(b"fghij"));
            let reader = writer.join().unwrap_or_else(|_| unreachable!("the writer does not panic"));
            assert_eq!(reader.shared.lock().backlog.queued(), 5);
            let written: Vec<WriterProgress> =
                reader.shared.writers.reports.take().into_iter().map(|(_, p)| p).collect();
            match (second, &written[..]) {
                // Written first: the episode ended, the second send began another.
                (Ok(Some(WriterProgress::Behind { episode: 2 })), [WriterProgress::CaughtUp { episode: 1 }]) => {}
                // Queued first: still behind after the write.
                (Ok(None), [WriterProgress::Progressed]) => {}
                other => unreachable!("inconsistent reports {other:?}"),
            }
        });
    }

    /// The core drops a client that does not read while its connection
    /// task waits (as when blocked writing): the task is always woken and
    /// finds nothing left to write.
    #[test]
    fn abort_while_the_writer_waits() {
        loom::model(|| {
            let (mut outbox, reader) = channel(writers(100, 0));
            let _ = outbox.send(Bytes::from_static(b"a"));
            let core = loom::thread::spawn(move || outbox.close(CloseReason::NotReading));
            loom::future::block_on(reader.aborted());
            let _ = core.join();
            assert!(reader.shared.lock().queue.is_empty());
        });
    }
}
