//! One task per connection: reads go to the driver as they come, writes
//! come from the core through the connection's outbox.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use culex_core::server::Outbox;
use culex_core::{CloseReason, ConnId};
use culex_runtime::{Admit, Backlog};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::driver::Event;

/// Bytes read per call; a frame may span reads, the core reassembles.
const READ_CHUNK: usize = 8 * 1024;

/// What the core asks of a connection's writer.
#[derive(Debug)]
pub(crate) enum Out {
    Data(Bytes),
    Close,
}

/// The core's non-blocking handle to a connection's writer.
#[derive(Debug)]
pub(crate) struct TokioOutbox {
    tx: mpsc::UnboundedSender<Out>,
    backlog: Arc<Backlog>,
}

impl Outbox for TokioOutbox {
    fn send(&mut self, data: Bytes) {
        match self.backlog.admit(data.len()) {
            Admit::Queue => {
                let _ = self.tx.send(Out::Data(data));
            }
            Admit::Close => {
                warn!(queued = self.backlog.queued(), "Client is not reading its messages, disconnecting.");
                let _ = self.tx.send(Out::Close);
            }
            Admit::Drop => {}
        }
    }

    fn close(&mut self, reason: CloseReason) {
        debug!(%reason, "closing connection");
        let _ = self.tx.send(Out::Close);
    }
}

/// Serves one accepted socket until either side ends it.
pub(crate) async fn serve(stream: TcpStream, remote: SocketAddr, backlog_limit: usize, events: mpsc::Sender<Event>) {
    let _ = stream.set_nodelay(true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::new(backlog_limit));
    let outbox = TokioOutbox { tx, backlog: backlog.clone() };
    let (reply, id) = oneshot::channel();
    if events.send(Event::Accepted { remote, outbox, reply }).await.is_err() {
        return;
    }
    let Ok(conn) = id.await else { return };
    let (mut reader, mut writer) = stream.into_split();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        tokio::select! {
            read = reader.read_buf(&mut buf) => {
                let gone = !matches!(read, Ok(n) if n > 0);
                let event = if gone { Event::Closed { conn } } else { Event::Data { conn, data: buf.split().freeze() } };
                if events.send(event).await.is_err() || gone {
                    return;
                }
                buf.reserve(READ_CHUNK);
            }
            out = rx.recv() => match out {
                Some(Out::Data(data)) => match write_all_queued(&mut writer, &mut rx, data, &backlog).await {
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
async fn write_all_queued(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    first: Bytes,
    backlog: &Backlog,
) -> std::io::Result<Written> {
    let mut data = first;
    loop {
        writer.write_all(&data).await?;
        backlog.written(data.len());
        match rx.try_recv() {
            Ok(Out::Data(next)) => data = next,
            Ok(Out::Close) => return Ok(Written::ThenClose),
            Err(_) => return Ok(Written::All),
        }
    }
}

async fn finish(conn: ConnId, mut writer: tokio::net::tcp::OwnedWriteHalf) {
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    debug!(%conn, "connection closed by the broker");
}
