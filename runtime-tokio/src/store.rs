//! The presence store task: one Redis connection, one pipeline at a time.
//! What to send is decided by the core and `culex-runtime`; this file only
//! talks to Redis on tokio.

use std::time::Duration;

use culex_core::presence::PresenceCommand;
use culex_runtime::RedisSettings;
use culex_runtime::store::{Scripts, connection_info, describe_error};
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::driver::Event;

/// A Redis call that takes longer than this counts as failed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// What the broker task asks of the store task.
#[derive(Debug)]
pub(crate) enum StoreRequest {
    /// (Re)connect, authenticate and load the scripts.
    Connect,
    /// Run a batch as one pipeline.
    Batch(Vec<PresenceCommand>),
}

/// Serves requests until the broker task goes away.
pub(crate) async fn run(
    settings: RedisSettings,
    mut requests: mpsc::UnboundedReceiver<StoreRequest>,
    events: mpsc::Sender<Event>,
) {
    let scripts = Scripts::default();
    let mut conn: Option<MultiplexedConnection> = None;
    while let Some(request) = requests.recv().await {
        let reply = match request {
            StoreRequest::Connect => match connect(&settings, &scripts).await {
                Ok(c) => {
                    conn = Some(c);
                    Event::StoreConnected
                }
                Err(error) => Event::StoreFailed(error),
            },
            StoreRequest::Batch(batch) => match conn.as_mut() {
                None => Event::StoreFailed("not connected".to_owned()),
                Some(c) => {
                    let pipe = scripts.batch_pipeline(&settings.keys, &batch);
                    match timeout(REDIS_TIMEOUT, pipe.query_async::<()>(c)).await {
                        Ok(Ok(())) => Event::StoreBatchDone,
                        Ok(Err(error)) => {
                            conn = None;
                            Event::StoreFailed(describe_error(&error))
                        }
                        Err(_) => {
                            conn = None;
                            Event::StoreFailed("Redis did not answer in time".to_owned())
                        }
                    }
                }
            },
        };
        if events.send(reply).await.is_err() {
            return;
        }
    }
}

async fn connect(settings: &RedisSettings, scripts: &Scripts) -> Result<MultiplexedConnection, String> {
    let attempt = async {
        let client = redis::Client::open(connection_info(settings)?)?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        scripts.load_pipeline().query_async::<()>(&mut conn).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match timeout(REDIS_TIMEOUT, attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(error)) => Err(describe_error(&error)),
        Err(_) => Err(format!("connecting to Redis at {}:{} timed out", settings.host, settings.port)),
    }
}
