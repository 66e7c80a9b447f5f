//! One task per connection on async-std: reads go to the broker task as
//! they come, writes come from the core through the connection's outbox.

use std::net::{Shutdown, SocketAddr};

use async_std::channel::{self, Sender};
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use bytes::Bytes;
use culex_core::{ConnId, ListenerId, Peer};
use culex_runtime::driver::Event;
use culex_runtime::ws::{self, Deframer, Handshake, HandshakeStep, Wire};
use culex_runtime::{Out, OutboxReader, QueueOutbox};
use futures_lite::FutureExt;
use tracing::debug;

/// Bytes read per call; a frame may span reads, the core reassembles.
const READ_CHUNK: usize = 8 * 1024;

/// The core's handle to a connection on async-std.
pub(crate) type AsyncStdOutbox = QueueOutbox;

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
            Some(leftover) => (Wire::WebSocket(Box::new(Deframer::new(max_frame))), leftover),
            None => return,
        },
    };
    let (outbox, mut rx) = culex_runtime::outbox::channel(limits.backlog);
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
        let out = async { Wake::Out(rx.recv().await) };
        match read.or(out).await {
            Wake::Read(read) => match read {
                Ok(chunk) if !chunk.is_empty() => data = Bytes::from(chunk),
                _ => gone = true,
            },
            Wake::Out(out) => match out {
                Some(Out::Data(data)) => match write_queued(&mut writer, &mut rx, data, &wire).await {
                    Ok(Written::All) => {}
                    Ok(Written::ThenClose) => return finish(conn, writer).await,
                    Err(_) => {
                        let _ = events.send(Event::Closed { conn }).await;
                        return;
                    }
                },
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
}

/// Writes `first` and whatever else is already queued.
async fn write_queued(
    writer: &mut TcpStream,
    rx: &mut OutboxReader,
    first: Bytes,
    wire: &Wire,
) -> std::io::Result<Written> {
    let mut data = first;
    loop {
        let len = data.len();
        writer.write_all(&wire.outgoing(data)).await?;
        rx.written(len);
        match rx.try_recv() {
            Some(Out::Data(next)) => data = next,
            Some(Out::Close) => return Ok(Written::ThenClose),
            None => return Ok(Written::All),
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
