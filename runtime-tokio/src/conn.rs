//! One task per connection on tokio (after a short-lived one for its
//! opening): reads go to the broker task as they come, writes come from
//! the core through the connection's outbox.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use culex_core::bridge::BridgeId;
use culex_core::{ConnId, Identity, Peer, Remote};
use culex_runtime::driver::Event;
use culex_runtime::link::OPEN_TIMEOUT;
use culex_runtime::shards::{PlacingSocket, Route, find_home};
use culex_runtime::ws::Deframed;
use culex_runtime::{Limits, Link, OpenStep, Opening, Out, OutboxReader, QueueOutbox};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::timeout;
use tracing::debug;

/// Bytes read per call; a frame may span reads, the core reassembles.
const READ_CHUNK: usize = 8 * 1024;

/// The core's handle to a connection on tokio.
pub(crate) type TokioOutbox = QueueOutbox;

/// A connected socket of a kind a listener accepts: TCP or Unix.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + Sync + 'static {
    /// Readiness to read, as [`TcpStream::poll_read_ready`].
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// A read that does not wait, as [`TcpStream::try_read`].
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

macro_rules! socket {
    ($stream:ty) => {
        impl Socket for $stream {
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }

            fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
                <$stream>::try_read(self, buf)
            }
        }
    };
}

socket!(TcpStream);
socket!(UnixStream);

/// Opens one accepted socket (TLS handshake, WebSocket upgrade, the broker
/// task's id for it), then serves it in a task of its own until either
/// side ends it. That task holds only [`Served`]: the opening's state and
/// waits would otherwise stay in every idle connection's task.
pub(crate) async fn serve<S: Socket>(
    mut stream: S,
    remote: Remote,
    conn: ConnId,
    limits: Limits,
    route: Route<mpsc::Sender<Event<TokioOutbox>>>,
    dialed: Option<(BridgeId, Link)>,
) {
    let (mut link, first, identity, bridge) = match (dialed, limits.transport.opening(&remote)) {
        // A bridge's socket, opened by the dialer.
        (Some((bridge, link)), _) => (link, Deframed::default(), Identity::Connect, Some(bridge)),
        (None, None) => (Link::raw(), Deframed::default(), Identity::Connect, None),
        (None, Some(opening)) => match open(&mut stream, opening).await {
            Some((link, first, identity)) => (link, first, identity, None),
            None => return,
        },
    };
    // With several shards, the connection goes to its client id's home
    // shard, once its CONNECT is whole; bridges and HTTP requests go to
    // shard 0.
    let placing = find_home(&route, &limits, (bridge, &identity), Placing(&mut stream), &mut link, first);
    let Some((home, first)) = Box::pin(placing).await else { return };
    let end = route.end(home);
    let events = end.events.clone();
    let (outbox, rx) = culex_runtime::outbox::channel(end.writers.clone());
    let peer = Peer { identity, ..Peer::new(remote, limits.listener) };
    if events.send(Event::opened(conn, peer, outbox, bridge)).await.is_err() {
        return;
    }
    let mut served = Served { conn, stream, link, rx, events, read_first: true, paused: false };
    if first != Deframed::default() && served.incoming(Box::new(first)).await == Flow::Stop {
        return;
    }
    // Run in place (`run` borrows it): moved into a local, `served` would
    // be held twice.
    tokio::spawn(async move { served.run().await });
}

/// A new connection's socket while its shard is found.
struct Placing<'a, S>(&'a mut S);

impl<S: Socket> PlacingSocket for Placing<'_, S> {
    async fn read(&mut self) -> Option<Bytes> {
        let mut chunk = vec![0u8; READ_CHUNK];
        let n = self.0.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        chunk.truncate(n);
        Some(Bytes::from(chunk))
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.0.write_all(bytes).await.is_ok()
    }

    async fn sleep(duration: std::time::Duration) {
        tokio::time::sleep(duration).await;
    }
}

/// A connection the broker task knows, as its task holds it while it waits.
struct Served<S> {
    conn: ConnId,
    stream: S,
    link: Link,
    rx: OutboxReader,
    events: mpsc::Sender<Event<TokioOutbox>>,
    /// Which of reading and writing is looked at first next time: they
    /// take turns, so that neither direction starves the other.
    read_first: bool,
    /// The core asked not to read the socket ([`Out::Pause`]).
    paused: bool,
}

/// What a waiting connection looks at, in what order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    SocketFirst,
    OutboxFirst,
    /// Its reads are paused: only the outbox.
    OutboxOnly,
}

/// What woke a waiting connection.
enum Wake {
    Readable(io::Result<()>),
    Out(Option<Out>),
}

/// What a read gave.
enum Read {
    /// MQTT bytes.
    Data(Bytes),
    /// MQTT bytes, then WebSocket replies to write or the end.
    WebSocket(Box<Deframed>),
    /// A spurious wake-up.
    Nothing,
    /// End of stream or a socket error.
    End,
}

/// Whether the connection goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// What a wake-up leads to: nothing to wait for, or a wait. Waits are
/// boxed: held in place, the largest of them would make every idle
/// connection's task that large. The common cases (bytes read and handed
/// to the broker task's queue) wait for nothing.
enum Step<'a> {
    Done(Flow),
    Wait(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

impl Future for Step<'_> {
    type Output = Flow;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Flow> {
        match self.get_mut() {
            Self::Done(flow) => Poll::Ready(*flow),
            Self::Wait(wait) => wait.as_mut().poll(cx),
        }
    }
}

impl<S: Socket> Served<S> {
    /// Serves the connection until either side ends it.
    async fn run(&mut self) {
        loop {
            let wake = self.next_wake().await;
            if self.on_wake(wake).await == Flow::Stop {
                return;
            }
        }
    }

    /// The socket is readable or the core queued something, whichever
    /// comes first (both in turn when both are ready). A paused socket is
    /// not looked at.
    async fn next_wake(&mut self) -> Wake {
        self.read_first = !self.read_first;
        // One byte for both flags: this future is part of every idle
        // connection's task.
        let watch = match (self.paused, self.read_first) {
            (true, _) => Watch::OutboxOnly,
            (false, true) => Watch::SocketFirst,
            (false, false) => Watch::OutboxFirst,
        };
        let (stream, rx) = (&self.stream, &mut self.rx);
        std::future::poll_fn(|cx| {
            if watch == Watch::SocketFirst
                && let Poll::Ready(ready) = stream.poll_read_ready(cx)
            {
                return Poll::Ready(Wake::Readable(ready));
            }
            if let Poll::Ready(out) = rx.poll_recv(cx) {
                return Poll::Ready(Wake::Out(out));
            }
            match watch {
                Watch::OutboxOnly => Poll::Pending,
                Watch::SocketFirst | Watch::OutboxFirst => stream.poll_read_ready(cx).map(Wake::Readable),
            }
        })
        .await
    }

    fn on_wake(&mut self, wake: Wake) -> Step<'_> {
        match wake {
            Wake::Readable(ready) => match self.read(ready) {
                Read::Data(data) => self.to_broker(Event::Data { conn: self.conn, data }, Flow::Continue),
                Read::WebSocket(got) => Step::Wait(Box::pin(self.incoming(got))),
                Read::Nothing => Step::Done(Flow::Continue),
                Read::End => self.closed(),
            },
            Wake::Out(Some(Out::Data(data))) => Step::Wait(Box::pin(self.write_queued(data))),
            Wake::Out(Some(Out::Abort)) => Step::Done(self.abort()),
            Wake::Out(Some(Out::Pause)) => self.pause(true),
            Wake::Out(Some(Out::Resume)) => self.pause(false),
            Wake::Out(Some(Out::Close) | None) => Step::Wait(Box::pin(self.finish())),
        }
    }

    /// Reads what the socket has into a buffer that lives only for the
    /// read (not in the task: an idle connection holds no read buffer).
    fn read(&mut self, ready: io::Result<()>) -> Read {
        let mut chunk = [0u8; READ_CHUNK];
        match ready.and_then(|()| self.stream.try_read(&mut chunk)) {
            Ok(0) => Read::End,
            // Raw TCP passes bytes through; TLS decrypts, WebSocket unframes.
            Ok(n) => match self.link.incoming(Bytes::copy_from_slice(&chunk[..n])) {
                Deframed { data, reply, end: None } if reply.is_empty() && data.is_empty() => Read::Nothing,
                Deframed { data, reply, end: None } if reply.is_empty() => Read::Data(data),
                got => Read::WebSocket(Box::new(got)),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Read::Nothing,
            Err(_) => Read::End,
        }
    }

    /// Hands `event` to the broker task, then goes on as `then` says
    /// (stops if the broker task is gone).
    fn to_broker(&self, event: Event<TokioOutbox>, then: Flow) -> Step<'_> {
        match self.events.try_send(event) {
            Ok(()) => Step::Done(then),
            Err(TrySendError::Full(event)) => {
                let events = &self.events;
                Step::Wait(Box::pin(async move { if events.send(event).await.is_ok() { then } else { Flow::Stop } }))
            }
            Err(TrySendError::Closed(_)) => Step::Done(Flow::Stop),
        }
    }

    /// The socket ended: tells the broker task.
    fn closed(&self) -> Step<'_> {
        self.to_broker(Event::Closed { conn: self.conn }, Flow::Stop)
    }

    /// Hands what was read to the broker task and writes the WebSocket
    /// replies.
    async fn incoming(&mut self, got: Box<Deframed>) -> Flow {
        let Deframed { data, reply, end } = *got;
        if !data.is_empty() && self.to_broker(Event::Data { conn: self.conn, data }, Flow::Continue).await == Flow::Stop
        {
            return Flow::Stop;
        }
        if !reply.is_empty() && self.stream.write_all(&reply).await.is_err() {
            return self.closed().await;
        }
        if let Some(end) = end {
            debug!(conn = %self.conn, ?end, "connection ended by the client");
            self.closed().await;
            return self.finish().await;
        }
        Flow::Continue
    }

    /// Stops or resumes reading the socket, as the core asks.
    fn pause(&mut self, paused: bool) -> Step<'_> {
        self.paused = paused;
        debug!(conn = %self.conn, paused, "reading the socket");
        Step::Done(Flow::Continue)
    }

    /// Writes `first` and whatever else is already queued; a write blocked
    /// on a client that does not read ends when the core drops that client.
    async fn write_queued(&mut self, first: Bytes) -> Flow {
        let mut data = first;
        loop {
            let len = data.len();
            let bytes = self.link.outgoing(data);
            let written = tokio::select! {
                written = self.stream.write_all(&bytes) => written,
                () = self.rx.aborted() => return self.abort(),
            };
            if written.is_err() {
                return self.closed().await;
            }
            if self.rx.written(self.conn, len) {
                // Never wait: a full queue means the broker task is busy
                // and takes the reports at its next turn.
                let _ = self.events.try_send(Event::WriterReports);
            }
            loop {
                match self.rx.try_recv() {
                    Some(Out::Data(next)) => {
                        data = next;
                        break;
                    }
                    Some(Out::Pause) => self.paused = true,
                    Some(Out::Resume) => self.paused = false,
                    Some(Out::Close) => return self.finish().await,
                    Some(Out::Abort) => return self.abort(),
                    None => return Flow::Continue,
                }
            }
        }
    }

    /// The core dropped the client for not reading: the socket closes as
    /// the task ends, with no wait for it to drain.
    fn abort(&self) -> Flow {
        debug!(conn = %self.conn, "connection dropped by the broker: the client is not reading");
        Flow::Stop
    }

    /// The broker closed the connection: what was written goes out (with
    /// TLS close_notify), then the end of the stream.
    async fn finish(&mut self) -> Flow {
        let _ = self.stream.write_all(&self.link.close()).await;
        let _ = self.stream.flush().await;
        let _ = self.stream.shutdown().await;
        debug!(conn = %self.conn, "connection closed by the broker");
        Flow::Stop
    }
}

/// The opening (TLS handshake, WebSocket upgrade) within
/// [`OPEN_TIMEOUT`]: the link, what was read with its end (through the
/// link already) and the client's identity, or `None` if the connection
/// is over (refused, answered from `http_dir`, timed out, gone).
async fn open(stream: &mut impl Socket, mut opening: Opening) -> Option<(Link, Deframed, Identity)> {
    let mut buf = vec![0; READ_CHUNK];
    let mut answered = false;
    let work = async {
        loop {
            let n = stream.read(&mut buf).await.ok().filter(|&n| n > 0)?;
            match opening.feed(&buf[..n]) {
                OpenStep::NeedMore { reply } => stream.write_all(&reply).await.ok()?,
                OpenStep::Open { reply, link, first, identity } => {
                    stream.write_all(&reply).await.ok()?;
                    return Some((link, first, identity));
                }
                OpenStep::Refuse { reply } => {
                    let _ = stream.write_all(&reply).await;
                    let _ = stream.shutdown().await;
                    return None;
                }
                OpenStep::Respond { reply } => {
                    stream.write_all(&reply).await.ok()?;
                    answered = true;
                    return None;
                }
            }
        }
    };
    let result = timeout(OPEN_TIMEOUT, work).await;
    if answered {
        // The file goes out past the opening's deadline, each chunk within
        // its own: a slow reader may take its time, a stalled one may not.
        while let Some(chunk) = opening.next_chunk() {
            if !matches!(timeout(OPEN_TIMEOUT, stream.write_all(&chunk)).await, Ok(Ok(()))) {
                break;
            }
        }
        let _ = stream.shutdown().await;
        return None;
    }
    result.unwrap_or_else(|_| {
        opening.timed_out();
        None
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use culex_runtime::{Thresholds, Writers};

    use super::*;

    /// Largest `Served` task future that keeps tokio's task cell (aligned
    /// to 128 bytes, about 100 bytes of its own) at 256 bytes.
    const TASK_FUTURE_MAX: usize = 152;

    /// Every idle connection holds one such task: its size is memory per
    /// connection (measured with heaptrack, docs/benchmarks.md).
    #[tokio::test]
    async fn an_idle_connections_task_stays_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (events, _events) = mpsc::channel(1);
        let (_outbox, rx) = culex_runtime::outbox::channel(Arc::new(Writers::new(Thresholds { budget: 0, limit: 1 })));
        let mut served =
            Served { conn: ConnId(1), stream, link: Link::raw(), rx, events, read_first: false, paused: false };
        let run = async move { served.run().await };
        let size = size_of_val(&run);
        assert!(size <= TASK_FUTURE_MAX, "a connection task's future is {size} bytes, over {TASK_FUTURE_MAX}");
    }
}
