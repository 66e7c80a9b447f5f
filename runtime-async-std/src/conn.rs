//! One task per connection on async-std: reads go to the broker task as
//! they come, writes come from the core through the connection's outbox.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_io::Async;
use async_std::channel::Sender;
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use bytes::Bytes;
use culex_core::bridge::BridgeId;
use culex_core::{ConnId, Identity, Peer, Remote};
use culex_runtime::driver::Event;
use culex_runtime::link::OPEN_TIMEOUT;
use culex_runtime::shards::{PlacingSocket, Route, find_home};
use culex_runtime::ws::Deframed;
use culex_runtime::{Limits, Link, OpenStep, Opening, Out, OutboxReader, QueueOutbox};
use futures_lite::{AsyncRead, AsyncWrite, FutureExt};
use tracing::debug;

/// Bytes read per call; a frame may span reads, the core reassembles.
const READ_CHUNK: usize = 8 * 1024;

/// The core's handle to a connection on async-std.
pub(crate) type AsyncStdOutbox = QueueOutbox;

/// What woke the connection task.
enum Wake {
    Read(io::Result<Vec<u8>>),
    Out(Option<Out>),
}

/// A connected socket of a kind a listener accepts: TCP or Unix. Clones
/// share the socket (one reads, one writes).
pub(crate) trait Socket: AsyncRead + AsyncWrite + Clone + Unpin + Send + Sync + 'static {
    /// Waits until a read would not block (data, the end, an error).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Shuts the socket down, as [`TcpStream::shutdown`].
    fn shutdown(&self, how: Shutdown) -> io::Result<()>;
}

impl Socket for TcpStream {
    async fn readable(&self) -> io::Result<()> {
        self.peek(&mut [0u8; 1]).await.map(drop)
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        Self::shutdown(self, how)
    }
}

/// A Unix socket connection on async-std's reactor (async-std's own
/// `UnixStream` cannot wait for readability without reading).
#[derive(Debug, Clone)]
pub(crate) struct UnixSocket(Arc<Async<UnixStream>>);

impl From<Async<UnixStream>> for UnixSocket {
    fn from(stream: Async<UnixStream>) -> Self {
        Self(Arc::new(stream))
    }
}

impl Socket for UnixSocket {
    async fn readable(&self) -> io::Result<()> {
        self.0.readable().await
    }

    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.0.get_ref().shutdown(how)
    }
}

impl AsyncRead for UnixSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for UnixSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut &*self.0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut &*self.0).poll_close(cx)
    }
}

/// A new connection's socket while its shard is found.
struct Placing<'a, S>(&'a mut S);

impl<S: Socket> PlacingSocket for Placing<'_, S> {
    async fn read(&mut self) -> Option<Bytes> {
        read_when_ready(self.0).await.ok().filter(|chunk| !chunk.is_empty()).map(Bytes::from)
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.0.write_all(bytes).await.is_ok()
    }

    async fn sleep(duration: std::time::Duration) {
        async_io::Timer::after(duration).await;
    }
}

/// Waits for the socket to be readable, then reads what is there into a
/// buffer made for this read: an idle connection holds no read buffer.
/// Empty at the end of the stream.
async fn read_when_ready(reader: &mut impl Socket) -> io::Result<Vec<u8>> {
    reader.readable().await?;
    let mut chunk = vec![0; READ_CHUNK];
    let n = reader.read(&mut chunk).await?;
    chunk.truncate(n);
    Ok(chunk)
}

/// Opens one accepted socket (TLS handshake, WebSocket upgrade, its
/// shard), hands it to its broker task, then serves it in a task of its
/// own until either side ends it: that task holds none of the opening's
/// state.
pub(crate) async fn serve(
    stream: impl Socket,
    remote: Remote,
    conn: ConnId,
    limits: Limits,
    route: Route<Sender<Event<AsyncStdOutbox>>>,
    dialed: Option<(BridgeId, Link)>,
) {
    let mut reader = stream.clone();
    let mut writer = stream;
    // The opening and the closing are boxed while they run: held in place
    // in this future, they would double every idle connection's task.
    let (mut link, first, identity, bridge) = match (dialed, limits.transport.opening(&remote)) {
        // A bridge's socket, opened by the dialer.
        (Some((bridge, link)), _) => (link, Deframed::default(), Identity::Connect, Some(bridge)),
        (None, None) => (Link::raw(), Deframed::default(), Identity::Connect, None),
        (None, Some(opening)) => match Box::pin(open(&mut reader, &mut writer, opening)).await {
            Some((link, first, identity)) => (link, first, identity, None),
            None => return,
        },
    };
    // With several shards, the connection goes to its client id's home
    // shard, once its CONNECT is whole; bridges and HTTP requests go to
    // shard 0.
    let placing = find_home(&route, &limits, (bridge, &identity), Placing(&mut reader), &mut link, first);
    let Some((home, first)) = Box::pin(placing).await else { return };
    let end = route.end(home);
    let events = end.events.clone();
    let (outbox, rx) = culex_runtime::outbox::channel(end.writers.clone());
    let peer = Peer { identity, ..Peer::new(remote, limits.listener) };
    if events.send(Event::opened(conn, peer, outbox, bridge)).await.is_err() {
        return;
    }
    async_std::task::spawn(run(Served { conn, reader, writer, link, rx, events }, first));
}

/// Reads handed to the broker task before the connection's task lets
/// the others on its thread run.
const READS_BEFORE_YIELDING: u32 = 16;

/// A connection its broker task knows: what its task holds.
struct Served<S> {
    conn: ConnId,
    reader: S,
    writer: S,
    link: Link,
    rx: OutboxReader,
    events: Sender<Event<AsyncStdOutbox>>,
}

/// Serves a connection until either side ends it, starting with what
/// its opening read (`first`).
async fn run<S: Socket>(served: Served<S>, first: Deframed) {
    let Served { conn, mut reader, mut writer, mut link, mut rx, events } = served;
    // What was read, through the link: MQTT bytes, replies, the end.
    let (mut got, mut gone, mut paused) = (first, false, false);
    let mut reads: u32 = 0;
    loop {
        if gone {
            let _ = events.send(Event::Closed { conn }).await;
            return;
        }
        let Deframed { data, reply, end } = std::mem::take(&mut got);
        if !data.is_empty() {
            if events.send(Event::Data { conn, data }).await.is_err() {
                return;
            }
            // async-std, unlike tokio, has no cooperative budget: a client
            // whose bytes are always there would keep this thread, and the
            // other clients it serves would wait behind it.
            reads = reads.wrapping_add(1);
            if reads.is_multiple_of(READS_BEFORE_YIELDING) {
                futures_lite::future::yield_now().await;
            }
        }
        if !reply.is_empty() && writer.write_all(&reply).await.is_err() {
            let _ = events.send(Event::Closed { conn }).await;
            return;
        }
        if let Some(end) = end {
            debug!(%conn, ?end, "connection ended by the client");
            let _ = events.send(Event::Closed { conn }).await;
            return Box::pin(finish(conn, writer, &mut link)).await;
        }
        let out = async { Wake::Out(rx.recv().await) };
        let wake = if paused {
            // The core asked not to read the socket: wait for it only.
            out.await
        } else {
            let read = async { Wake::Read(read_when_ready(&mut reader).await) };
            read.or(out).await
        };
        match wake {
            // Raw TCP passes bytes through; TLS decrypts, WebSocket unframes.
            Wake::Read(read) => match read {
                Ok(chunk) if !chunk.is_empty() => got = link.incoming(Bytes::from(chunk)),
                _ => gone = true,
            },
            Wake::Out(out) => match out {
                Some(Out::Data(data)) => {
                    match write_queued(conn, &mut writer, &mut rx, data, &mut link, &events).await {
                        Ok(Written::All) => {}
                        Ok(Written::Reading(reading)) => paused = !reading,
                        Ok(Written::ThenClose) => return Box::pin(finish(conn, writer, &mut link)).await,
                        Ok(Written::Aborted) => return abort(conn, &writer),
                        Err(_) => {
                            let _ = events.send(Event::Closed { conn }).await;
                            return;
                        }
                    }
                }
                Some(Out::Abort) => return abort(conn, &writer),
                Some(Out::Pause) => paused = true,
                Some(Out::Resume) => paused = false,
                Some(Out::Close) | None => return Box::pin(finish(conn, writer, &mut link)).await,
            },
        }
    }
}

/// How a round of writing ended.
enum Written {
    /// Everything queued is written.
    All,
    /// What was queued before it is written; then the core asked to read
    /// the socket (`true`) or not.
    Reading(bool),
    /// Everything queued is written and the core asked to close.
    ThenClose,
    /// The core dropped the client for not reading: close, don't drain.
    Aborted,
}

/// Writes `first` and whatever data is already queued, posting the
/// progress of `conn`'s writer for the broker task; a write blocked on a client that
/// does not read ends when the core drops that client. A pause or resume
/// that comes meanwhile ends the round, for the serving loop to apply.
async fn write_queued(
    conn: ConnId,
    writer: &mut impl Socket,
    rx: &mut OutboxReader,
    first: Bytes,
    link: &mut Link,
    events: &Sender<Event<AsyncStdOutbox>>,
) -> io::Result<Written> {
    let mut data = first;
    loop {
        let len = data.len();
        let bytes = link.outgoing(data);
        let wrote = async { writer.write_all(&bytes).await.map(|()| true) };
        let aborted = async {
            rx.aborted().await;
            Ok(false)
        };
        if !wrote.or(aborted).await? {
            return Ok(Written::Aborted);
        }
        if rx.written(conn, len) {
            // Never wait: a full queue means the broker task is busy and
            // takes the reports at its next turn.
            let _ = events.try_send(Event::WriterReports);
        }
        match rx.try_recv() {
            Some(Out::Data(next)) => data = next,
            Some(Out::Close) => return Ok(Written::ThenClose),
            Some(Out::Abort) => return Ok(Written::Aborted),
            Some(Out::Pause) => return Ok(Written::Reading(false)),
            Some(Out::Resume) => return Ok(Written::Reading(true)),
            None => return Ok(Written::All),
        }
    }
}

/// The core dropped the client for not reading: the socket closes at once,
/// with no wait for it to drain.
fn abort(conn: ConnId, writer: &impl Socket) {
    let _ = writer.shutdown(Shutdown::Both);
    debug!(%conn, "connection dropped by the broker: the client is not reading");
}

/// Ends the connection: TLS close_notify, flush, shut the socket.
async fn finish(conn: ConnId, mut writer: impl Socket, link: &mut Link) {
    let _ = writer.write_all(&link.close()).await;
    let _ = writer.flush().await;
    let _ = writer.shutdown(Shutdown::Both);
    debug!(%conn, "connection closed by the broker");
}

/// The opening (TLS handshake, WebSocket upgrade) within
/// [`OPEN_TIMEOUT`]: the link, what was read with its end (through the
/// link already) and the client's identity, or `None` if the connection
/// is over (refused, answered from `http_dir`, timed out, gone).
async fn open(
    reader: &mut impl Socket,
    writer: &mut impl Socket,
    mut opening: Opening,
) -> Option<(Link, Deframed, Identity)> {
    let mut buf = vec![0; READ_CHUNK];
    let mut answered = false;
    let work = async {
        loop {
            let n = reader.read(&mut buf).await.ok().filter(|&n| n > 0)?;
            match opening.feed(&buf[..n]) {
                OpenStep::NeedMore { reply } => writer.write_all(&reply).await.ok()?,
                OpenStep::Open { reply, link, first, identity } => {
                    writer.write_all(&reply).await.ok()?;
                    return Some((link, first, identity));
                }
                OpenStep::Refuse { reply } => {
                    let _ = writer.write_all(&reply).await;
                    let _ = writer.shutdown(Shutdown::Both);
                    return None;
                }
                OpenStep::Respond { reply } => {
                    writer.write_all(&reply).await.ok()?;
                    answered = true;
                    return None;
                }
            }
        }
    };
    let result = async_std::future::timeout(OPEN_TIMEOUT, work).await;
    if answered {
        // The file goes out past the opening's deadline, each chunk within
        // its own: a slow reader may take its time, a stalled one may not.
        while let Some(chunk) = opening.next_chunk() {
            if !matches!(async_std::future::timeout(OPEN_TIMEOUT, writer.write_all(&chunk)).await, Ok(Ok(()))) {
                break;
            }
        }
        let _ = writer.shutdown(Shutdown::Both);
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
    use culex_runtime::{Thresholds, Writers};

    use super::*;

    /// Largest task future of a connection. The opening and the closing
    /// are boxed, each while it runs: held in place, they made every idle
    /// connection's task 2,216 bytes. The opening (and finding the shard)
    /// runs in a task of its own before: 1,032 bytes when it was part of
    /// this one, 840 since.
    const TASK_FUTURE_MAX: usize = 848;

    /// Every idle connection holds one such task: its size is memory per
    /// connection (docs/benchmarks.md).
    #[test]
    fn an_idle_connections_task_stays_small() {
        async_std::task::block_on(async {
            let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let stream = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
            let (events, _events) = async_std::channel::bounded(1);
            let writers = Arc::new(Writers::new(Thresholds { budget: 0, limit: 1 }));
            let (_outbox, rx) = culex_runtime::outbox::channel(writers);
            let served =
                Served { conn: ConnId(1), reader: stream.clone(), writer: stream, link: Link::raw(), rx, events };
            let size = size_of_val(&run(served, Deframed::default()));
            assert!(size <= TASK_FUTURE_MAX, "a connection task's future is {size} bytes, over {TASK_FUTURE_MAX}");
        });
    }
}
