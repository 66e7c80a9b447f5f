//! One task per connection on async-std: reads go to the broker task as
//! they come, writes come from the core through the connection's outbox.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use async_std::channel::{self, Receiver, Sender};
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use bytes::Bytes;
use culex_core::{ConnId, ListenerId, Peer};
use culex_runtime::driver::Event;
use culex_runtime::ws::{self, Deframer, Handshake, HandshakeStep, Wire};
use culex_runtime::{Backlog, Out, OutQueue, QueueOutbox};
use futures_lite::FutureExt;
use tracing::debug;

/// Bytes read per call; a frame may span reads, the core reassembles.
const READ_CHUNK: usize = 8 * 1024;

/// The channel from the core to a connection task.
#[derive(Debug)]
pub(crate) struct Queue(Sender<Out>);

impl OutQueue for Queue {
    fn push(&self, out: Out) {
        let _ = self.0.try_send(out);
    }
}

/// The core's handle to a connection on async-std.
pub(crate) type AsyncStdOutbox = QueueOutbox<Queue>;

/// What woke the connection task.
enum Wake {
    Read(std::io::Result<Vec<u8>>),
    Out(Option<Out>),
}

/// Waits for the socket to be readable (a one-byte peek), then reads what
/// is there into a buffer made for this read: an idle connection holds no
/// read buffer. Empty at the end of the stream.
async fn read_when_ready(reader: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    if reader.peek(&mut [0u8; 1]).await? == 0 {
        return Ok(Vec::new());
    }
    let mut chunk = vec![0; READ_CHUNK];
    let n = reader.read(&mut chunk).await?;
    chunk.truncate(n);
    Ok(chunk)
}

/// What a listener's connections are allowed and speak.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The listener its connections come in on.
    pub(crate) listener: ListenerId,
    /// Bytes queued for the writer before the client is dropped.
    pub(crate) backlog: usize,
    /// MQTT over WebSocket, with this largest frame payload.
    pub(crate) websocket: Option<u64>,
}

/// Serves one accepted socket until either side ends it.
pub(crate) async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    limits: Limits,
    events: Sender<Event<AsyncStdOutbox>>,
) {
    let _ = stream.set_nodelay(true);
    let mut reader = stream.clone();
    let mut writer = stream;
    let (mut wire, leftover) = match limits.websocket {
        None => (Wire::Raw, Bytes::new()),
        Some(max_frame) => match handshake(&mut reader, &mut writer, remote).await {
            Some(leftover) => (Wire::WebSocket(Deframer::new(max_frame)), leftover),
            None => return,
        },
    };
    let (tx, rx) = channel::unbounded();
    let backlog = Arc::new(Backlog::new(limits.backlog));
    let outbox = QueueOutbox::new(Queue(tx), backlog.clone());
    let (reply, id) = channel::bounded(1);
    let reply = Box::new(move |conn: ConnId| {
        let _ = reply.try_send(conn);
    });
    let peer = Peer::new(remote, limits.listener);
    if events.send(Event::Accepted { peer, outbox, reply }).await.is_err() {
        return;
    }
    let Ok(conn) = id.recv().await else { return };
    let (mut data, mut gone) = (leftover, false);
    loop {
        if gone {
            let _ = events.send(Event::Closed { conn }).await;
            return;
        }
        if !data.is_empty() {
            // Raw TCP passes bytes through; WebSocket unframes them.
            let got = wire.incoming(std::mem::take(&mut data));
            if !got.data.is_empty() && events.send(Event::Data { conn, data: got.data }).await.is_err() {
                return;
            }
            if !got.reply.is_empty() && writer.write_all(&got.reply).await.is_err() {
                let _ = events.send(Event::Closed { conn }).await;
                return;
            }
            if let Some(end) = got.end {
                debug!(%conn, ?end, "WebSocket connection ended by the client");
                let _ = events.send(Event::Closed { conn }).await;
                return finish(conn, writer).await;
            }
        }
        let read = async { Wake::Read(read_when_ready(&mut reader).await) };
        let out = async { Wake::Out(rx.recv().await.ok()) };
        match read.or(out).await {
            Wake::Read(read) => match read {
                Ok(chunk) if !chunk.is_empty() => data = Bytes::from(chunk),
                _ => gone = true,
            },
            Wake::Out(out) => match out {
                Some(Out::Data(data)) => {
                    let aborted = async {
                        backlog.aborted().await;
                        Ok(Written::Aborted)
                    };
                    match write_queued(&mut writer, &rx, data, &backlog, &wire).or(aborted).await {
                        Ok(Written::All) => {}
                        Ok(Written::ThenClose) => return finish(conn, writer).await,
                        // The client is not reading: close the socket at once,
                        // with no wait for it to drain.
                        Ok(Written::Aborted) => {
                            let _ = writer.shutdown(Shutdown::Both);
                            return;
                        }
                        Err(_) => {
                            let _ = events.send(Event::Closed { conn }).await;
                            return;
                        }
                    }
                }
                Some(Out::Close) | None => return finish(conn, writer).await,
            },
        }
    }
}

/// How a round of writing ended.
enum Written {
    /// Everything queued is written.
    All,
    /// Everything queued is written and the core asked to close.
    ThenClose,
    /// The core dropped the client for not reading: close, don't drain.
    Aborted,
}

/// Writes `first` and whatever else is already queued.
async fn write_queued(
    writer: &mut TcpStream,
    rx: &Receiver<Out>,
    first: Bytes,
    backlog: &Backlog,
    wire: &Wire,
) -> std::io::Result<Written> {
    let mut data = first;
    loop {
        let len = data.len();
        writer.write_all(&wire.outgoing(data)).await?;
        backlog.written(len);
        match rx.try_recv() {
            Ok(Out::Data(next)) => data = next,
            Ok(Out::Close) => return Ok(Written::ThenClose),
            Err(_) => return Ok(Written::All),
        }
    }
}

async fn finish(conn: ConnId, mut writer: TcpStream) {
    let _ = writer.flush().await;
    let _ = writer.shutdown(Shutdown::Both);
    debug!(%conn, "connection closed by the broker");
}

/// The WebSocket opening handshake, within [`ws::HANDSHAKE_TIMEOUT`]:
/// the frame bytes read after the request, or `None` if the connection
/// is over (refused, timed out, gone).
async fn handshake(reader: &mut TcpStream, writer: &mut TcpStream, remote: SocketAddr) -> Option<Bytes> {
    let mut handshake = Handshake::new();
    let mut buf = vec![0; 2048];
    let work = async {
        loop {
            let n = reader.read(&mut buf).await.ok().filter(|&n| n > 0)?;
            match handshake.feed(&buf[..n]) {
                HandshakeStep::NeedMore => {}
                HandshakeStep::Accept { response, leftover } => {
                    writer.write_all(&response).await.ok()?;
                    return Some(leftover);
                }
                HandshakeStep::Refuse { response, reason } => {
                    debug!(%remote, reason, "WebSocket handshake refused");
                    let _ = writer.write_all(&response).await;
                    let _ = writer.shutdown(Shutdown::Both);
                    return None;
                }
            }
        }
    };
    let result = async_std::future::timeout(ws::HANDSHAKE_TIMEOUT, work).await;
    if result.is_err() {
        debug!(%remote, "WebSocket handshake timed out");
    }
    result.ok().flatten()
}
