//! One task per connection on async-std: reads go to the broker task as
//! they come, writes come from the core through the connection's outbox.

use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;

use async_std::channel::{self, Receiver, Sender};
use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;
use bytes::Bytes;
use culex_core::ConnId;
use culex_runtime::driver::Event;
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
    Read(std::io::Result<usize>),
    Out(Option<Out>),
}

/// Serves one accepted socket until either side ends it.
pub(crate) async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    backlog_limit: usize,
    events: Sender<Event<AsyncStdOutbox>>,
) {
    let _ = stream.set_nodelay(true);
    let (tx, rx) = channel::unbounded();
    let backlog = Arc::new(Backlog::new(backlog_limit));
    let outbox = QueueOutbox::new(Queue(tx), backlog.clone());
    let (reply, id) = channel::bounded(1);
    let reply = Box::new(move |conn: ConnId| {
        let _ = reply.try_send(conn);
    });
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
                Some(Out::Data(data)) => match write_queued(&mut writer, &rx, data, &backlog).await {
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
