//! The presence store task on tokio: the Redis connection and the loop
//! answering the broker task. What is said to Redis is decided in
//! `culex-runtime`.

use culex_runtime::RedisSettings;
use culex_runtime::driver::{Event, StoreRequest};
use culex_runtime::store::{REDIS_TIMEOUT, RedisLink, Scripts, answer, describe_error};
use redis::ConnectionInfo;
use redis::aio::MultiplexedConnection;
use tokio::sync::mpsc;
use tokio::time::timeout;

use crate::conn::TokioOutbox;

/// One multiplexed Redis connection, reopened after any failure.
#[derive(Default)]
struct TokioRedis {
    conn: Option<MultiplexedConnection>,
}

impl RedisLink for TokioRedis {
    async fn connect(&mut self, info: ConnectionInfo, load: redis::Pipeline) -> Result<(), String> {
        self.conn = None;
        let host = info.addr().to_string();
        let attempt = async {
            let mut conn = redis::Client::open(info)?.get_multiplexed_async_connection().await?;
            load.query_async::<()>(&mut conn).await?;
            Ok::<_, redis::RedisError>(conn)
        };
        match timeout(REDIS_TIMEOUT, attempt).await {
            Ok(Ok(conn)) => {
                self.conn = Some(conn);
                Ok(())
            }
            Ok(Err(error)) => Err(describe_error(&error)),
            Err(_) => Err(format!("connecting to Redis at {host} timed out")),
        }
    }

    async fn run(&mut self, pipe: redis::Pipeline) -> Result<(), String> {
        let Some(conn) = self.conn.as_mut() else { return Err("not connected".to_owned()) };
        let result = match timeout(REDIS_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => describe_error(&error),
            Err(_) => "Redis did not answer in time".to_owned(),
        };
        self.conn = None;
        Err(result)
    }
}

/// Answers the broker task's requests until it goes away.
pub(crate) async fn run(
    settings: RedisSettings,
    mut requests: mpsc::UnboundedReceiver<StoreRequest>,
    events: mpsc::Sender<Event<TokioOutbox>>,
) {
    let scripts = Scripts::default();
    let mut link = TokioRedis::default();
    while let Some(request) = requests.recv().await {
        let reply = answer(&mut link, &settings, &scripts, request).await;
        if events.send(Event::Store(reply)).await.is_err() {
            return;
        }
    }
}
