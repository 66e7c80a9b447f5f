//! One task per connection: reads go to the driver as they come, writes
//! come from the core through the connection's outbox.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use async_std::channel::{self, Receiver, Sender};
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use bytes::Bytes;
use culex_core::server::Outbox;
use culex_core::{CloseReason, ConnId};
use culex_runtime::{Admit, Backlog};
use futures_lite::FutureExt;
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
pub(crate) struct AsyncStdOutbox {
    tx: Sender<Out>,
    backlog: Arc<Backlog>,
}

impl Outbox for AsyncStdOutbox {
    fn send(&mut self, data: Bytes) {
        match self.backlog.admit(data.len()) {
            Admit::Queue => {
                let _ = self.tx.try_send(Out::Data(data));
            }
            Admit::Close => {
                warn!(queued = self.backlog.queued(), "Client is not reading its messages, disconnecting.");
                let _ = self.tx.try_send(Out::Close);
            }
            Admit::Drop => {}
        }
    }

    fn close(&mut self, reason: CloseReason) {
        debug!(%reason, "closing connection");
        let _ = self.tx.try_send(Out::Close);
    }
}

/// What woke the connection task.
enum Wake {
    Read(std::io::Result<usize>),
    Out(Option<Out>),
}

/// Serves one accepted socket until either side ends it.
pub(crate) async fn serve(stream: TcpStream, remote: SocketAddr, backlog_limit: usize, events: Sender<Event>) {
    let _ = stream.set_nodelay(true);
    let (tx, rx) = channel::unbounded();
    let backlog = Arc::new(Backlog::new(backlog_limit));
    let outbox = AsyncStdOutbox { tx, backlog: backlog.clone() };
    let (reply, id) = channel::bounded(1);
    if events.send(Event::Accepted { remote, outbox, reply }).await.is_err() {
        return;
    }
    let Ok(conn) = id.recv().await else { return };
    let mut reader = stream.clone();
    let mut writer = stream;
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let read = async { Wake::Read(reader.read(&mut buf).await) };
        let out = async { Wake::Out(rx.recv().await.ok()) };
        match read.or(out).await {
            Wake::Read(read) => {
                let gone = !matches!(read, Ok(n) if n > 0);
                let event = match read {
                    Ok(n) if n > 0 => Event::Data { conn, data: Bytes::copy_from_slice(&buf[..n]) },
                    _ => Event::Closed { conn },
                };
                if events.send(event).await.is_err() || gone {
                    return;
                }
            }
            Wake::Out(out) => match out {
                Some(Out::Data(data)) => match write_all_queued(&mut writer, &rx, data, &backlog).await {
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
    writer: &mut TcpStream,
    rx: &Receiver<Out>,
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

async fn finish(conn: ConnId, mut writer: TcpStream) {
    let _ = writer.flush().await;
    let _ = writer.shutdown(Shutdown::Both);
    debug!(%conn, "connection closed by the broker");
}
