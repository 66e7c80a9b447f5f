//! The Redis side of presence: how a batch from
//! [`PresenceSync`](culex_core::presence::PresenceSync) becomes one
//! pipeline. Opening the connection is the runtime's part; everything said
//! to Redis is decided here, once for both runtimes.

use culex_core::presence::{
    CLEAR_STALE_SCRIPT, OFFLINE_SCRIPT, ONLINE_SCRIPT, PresenceCommand, PresenceKeys, RENEW_SCRIPT,
};

use crate::driver::{StoreEvent, StoreRequest};
use std::time::Duration;

use redis::{Cmd, Script};

use crate::redis_conn::{KnownMembers, REDIS_TIMEOUT, RedisConnection, describe_error};
use crate::settings::RedisSettings;

/// The presence scripts, with their SHA-1 for `EVALSHA`.
#[derive(Debug, Clone)]
pub struct Scripts {
    renew: Script,
    online: Script,
    offline: Script,
    clear_stale: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            renew: Script::new(RENEW_SCRIPT),
            online: Script::new(ONLINE_SCRIPT),
            offline: Script::new(OFFLINE_SCRIPT),
            clear_stale: Script::new(CLEAR_STALE_SCRIPT),
        }
    }
}

impl Scripts {
    /// `SCRIPT LOAD` for each script, run once per connection so the
    /// batches can use `EVALSHA`. Each goes alone: a Redis Cluster sends it
    /// to every master.
    pub fn load_commands(&self) -> impl Iterator<Item = Cmd> {
        [RENEW_SCRIPT, ONLINE_SCRIPT, OFFLINE_SCRIPT, CLEAR_STALE_SCRIPT].into_iter().map(|source| {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(source);
            cmd
        })
    }

    /// One pipeline running `batch` in order. A batch succeeds or fails
    /// as a whole; every command in it is safe to run again. Its one
    /// reply is the renewal's, if it has one. Every key of a batch hashes
    /// to one slot ([`PresenceKeys::prefix`]), so a Redis Cluster takes it
    /// as one pipeline too.
    pub fn batch_pipeline(&self, keys: &PresenceKeys, batch: &[PresenceCommand]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for command in batch {
            let (script, arg) = match command {
                PresenceCommand::Renew(lease) => (&self.renew, lease.as_millis().to_string()),
                PresenceCommand::ClearStale => (&self.clear_stale, String::new()),
                PresenceCommand::Online(client) => (&self.online, client.as_str().to_owned()),
                PresenceCommand::Offline(client) => (&self.offline, client.as_str().to_owned()),
            };
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(script.get_hash())
                .arg(4)
                .arg(&keys.hash)
                .arg(&keys.brokers)
                .arg(&keys.index)
                .arg(&keys.lease)
                .arg(&keys.broker_id)
                .arg(&keys.prefix)
                .arg(arg);
            if !matches!(command, PresenceCommand::Renew(_)) {
                cmd.ignore();
            }
        }
        pipe
    }
}

/// How long a presence call may wait for its reply: the batches are small,
/// and a stalled Redis is noticed soon (the client library's default).
const PRESENCE_REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// One multiplexed Redis connection, reopened after any failure. `sleep`
/// is the runtime's timer, for timeouts; the client library finds the
/// runtime's reactor by itself.
pub struct RedisLink<S> {
    conn: Option<RedisConnection>,
    sleep: S,
    /// A Redis Cluster's members, to connect through again.
    members: KnownMembers,
}

impl<S> std::fmt::Debug for RedisLink<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink").field("connected", &self.conn.is_some()).finish()
    }
}

impl<S, F> RedisLink<S>
where
    S: Fn(Duration) -> F,
    F: Future<Output = ()>,
{
    /// A link that is not connected yet.
    pub fn new(sleep: S) -> Self {
        Self { conn: None, sleep, members: KnownMembers::default() }
    }

    /// `work`, or `None` after [`REDIS_TIMEOUT`].
    async fn within<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let timer = async {
            (self.sleep)(REDIS_TIMEOUT).await;
            None
        };
        futures_lite::future::or(async { Some(work.await) }, timer).await
    }

    /// Opens a new connection (dropping any old one), which sends AUTH and
    /// SELECT, then loads the scripts.
    async fn connect(&mut self, settings: &RedisSettings, scripts: &Scripts) -> Result<(), String> {
        self.conn = None;
        let host = format!("{}:{}", settings.host, settings.port);
        let mut members = std::mem::take(&mut self.members);
        let attempt = async {
            let mut conn = RedisConnection::open(settings, PRESENCE_REPLY_TIMEOUT, &mut members).await?;
            for load in scripts.load_commands() {
                load.query_async::<()>(&mut conn).await?;
            }
            Ok::<_, redis::RedisError>(conn)
        };
        let attempted = self.within(attempt).await;
        self.members = members;
        match attempted {
            Some(Ok(conn)) => {
                self.conn = Some(conn);
                Ok(())
            }
            Some(Err(error)) => Err(describe_error(&error)),
            None => Err(format!("connecting to Redis at {host} timed out")),
        }
    }

    /// Runs one pipeline, returning its replies that are not ignored; on
    /// failure the connection is dropped.
    async fn run(&mut self, pipe: redis::Pipeline) -> Result<Vec<i64>, String> {
        let Some(mut conn) = self.conn.take() else { return Err("not connected".to_owned()) };
        match self.within(pipe.query_async::<Vec<i64>>(&mut conn)).await {
            Some(Ok(replies)) => {
                self.conn = Some(conn);
                Ok(replies)
            }
            Some(Err(error)) => Err(describe_error(&error)),
            None => Err("Redis did not answer in time".to_owned()),
        }
    }

    /// Carries out one request of the broker task.
    pub async fn answer(&mut self, settings: &RedisSettings, scripts: &Scripts, request: StoreRequest) -> StoreEvent {
        match request {
            StoreRequest::Connect => {
                self.connect(settings, scripts).await.map_or_else(StoreEvent::Failed, |()| StoreEvent::Connected)
            }
            StoreRequest::Batch(batch) => match self.run(scripts.batch_pipeline(&settings.keys, &batch)).await {
                // The renewal's reply: 0 when the lease had lapsed.
                Ok(replies) => StoreEvent::BatchDone { lease_lapsed: replies.first() == Some(&0) },
                Err(error) => StoreEvent::Failed(error),
            },
        }
    }
}
