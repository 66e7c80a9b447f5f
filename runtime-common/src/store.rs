//! The Redis side of presence: how a batch from
//! [`PresenceSync`](culex_core::presence::PresenceSync) becomes one
//! pipeline. Opening the connection is the runtime's part; everything said
//! to Redis is decided here, once for both runtimes.

use culex_core::presence::{CLEAR_STALE_SCRIPT, OFFLINE_SCRIPT, ONLINE_SCRIPT, PresenceCommand, PresenceKeys};

use crate::driver::{StoreEvent, StoreRequest};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, Script};

use crate::settings::RedisSettings;

/// The three presence scripts, with their SHA-1 for `EVALSHA`.
#[derive(Debug, Clone)]
pub struct Scripts {
    online: Script,
    offline: Script,
    clear_stale: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            online: Script::new(ONLINE_SCRIPT),
            offline: Script::new(OFFLINE_SCRIPT),
            clear_stale: Script::new(CLEAR_STALE_SCRIPT),
        }
    }
}

impl Scripts {
    /// `SCRIPT LOAD` for each script, run once per connection so the
    /// batches can use `EVALSHA`.
    pub fn load_pipeline(&self) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for source in [ONLINE_SCRIPT, OFFLINE_SCRIPT, CLEAR_STALE_SCRIPT] {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
        pipe
    }

    /// One pipeline running `batch` in order. A batch succeeds or fails
    /// as a whole; every command in it is safe to run again.
    pub fn batch_pipeline(&self, keys: &PresenceKeys, batch: &[PresenceCommand]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for command in batch {
            let (script, arg) = match command {
                PresenceCommand::ClearStale => (&self.clear_stale, None),
                PresenceCommand::Online(client) => (&self.online, Some(client.as_str())),
                PresenceCommand::Offline(client) => (&self.offline, Some(client.as_str())),
            };
            let cmd =
                pipe.cmd("EVALSHA").arg(script.get_hash()).arg(3).arg(&keys.hash).arg(&keys.owners).arg(&keys.index);
            if let Some(client) = arg {
                cmd.arg(client);
            }
            cmd.arg(&keys.broker_id).ignore();
        }
        pipe
    }
}

/// Where and how to connect. AUTH (user and password) and SELECT are sent
/// by the client library on every connection, and their replies checked.
pub fn connection_info(settings: &RedisSettings) -> redis::RedisResult<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default().set_db(settings.db);
    if let Some(user) = &settings.user {
        redis = redis.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    Ok(ConnectionAddr::Tcp(settings.host.clone(), settings.port).into_connection_info()?.set_redis_settings(redis))
}

/// A Redis error as it may be logged: the library's text never carries the
/// password, and a refused AUTH is said plainly.
pub fn describe_error(error: &redis::RedisError) -> String {
    let text = error.to_string();
    let refused = error.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("invalid password")
        || text.contains("NOAUTH");
    if refused { format!("authentication to Redis failed (check redis_user / redis_auth): {text}") } else { text }
}

/// A runtime's connection to Redis.
pub trait RedisLink {
    /// Opens a new connection (dropping any old one), which sends AUTH and
    /// SELECT, then runs `load` on it.
    fn connect(
        &mut self,
        info: ConnectionInfo,
        load: redis::Pipeline,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// Runs one pipeline; on failure the connection is dropped.
    fn run(&mut self, pipe: redis::Pipeline) -> impl Future<Output = Result<(), String>> + Send;
}

/// Carries out one request of the broker task on `link`.
pub async fn answer(
    link: &mut impl RedisLink,
    settings: &RedisSettings,
    scripts: &Scripts,
    request: StoreRequest,
) -> StoreEvent {
    let (outcome, done) = match request {
        StoreRequest::Connect => {
            let outcome = match connection_info(settings) {
                Ok(info) => link.connect(info, scripts.load_pipeline()).await,
                Err(error) => Err(describe_error(&error)),
            };
            (outcome, StoreEvent::Connected)
        }
        StoreRequest::Batch(batch) => {
            (link.run(scripts.batch_pipeline(&settings.keys, &batch)).await, StoreEvent::BatchDone)
        }
    };
    outcome.map_or_else(StoreEvent::Failed, |()| done)
}

/// Redis calls that take longer than this count as failed.
pub const REDIS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
