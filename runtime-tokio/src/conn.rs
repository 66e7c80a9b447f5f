//! One task per connection on tokio: reads go to the broker task as they
//! come, writes come from the core through the connection's outbox.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use culex_core::ConnId;
use culex_runtime::driver::Event;
use culex_runtime::{Backlog, Out, OutQueue, QueueOutbox};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Bytes read per call; a frame may span reads, the core reassembles.
const READ_CHUNK: usize = 8 * 1024;

/// The channel from the core to a connection task.
#[derive(Debug)]
pub(crate) struct Queue(mpsc::UnboundedSender<Out>);

impl OutQueue for Queue {
    fn push(&self, out: Out) {
        let _ = self.0.send(out);
    }
}

/// The core's handle to a connection on tokio.
pub(crate) type TokioOutbox = QueueOutbox<Queue>;

/// Serves one accepted socket until either side ends it.
pub(crate) async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    backlog_limit: usize,
    events: mpsc::Sender<Event<TokioOutbox>>,
) {
    let _ = stream.set_nodelay(true);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog::new(backlog_limit));
    let outbox = QueueOutbox::new(Queue(tx), backlog.clone());
    let (reply, id) = oneshot::channel();
    let reply = Box::new(move |conn: ConnId| {
        let _ = reply.send(conn);
    });
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
                Some(Out::Data(data)) => match write_queued(&mut writer, &mut rx, data, &backlog).await {
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
    writer: &mut OwnedWriteHalf,
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

async fn finish(conn: ConnId, mut writer: OwnedWriteHalf) {
    let _ = writer.flush().await;
    let _ = writer.shutdown().await;
    debug!(%conn, "connection closed by the broker");
}
