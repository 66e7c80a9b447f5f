//! A connection to the Redis that presence and the nodes share: one
//! server, or a Redis Cluster (`redis_cluster`). Callers say what to send
//! in [`Commands`], each command with the key it acts on; this module
//! alone knows that a Redis Cluster takes a pipeline only within one hash
//! slot.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisConnectionInfo,
    RedisFuture, RedisResult, Value,
};

use crate::settings::RedisSettings;

/// Redis calls that take longer than this count as failed.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a Redis Cluster request is tried again (after a lost
/// connection or a member moving slots), and the bounds of the wait before
/// each try, in milliseconds.
const CLUSTER_RETRIES: u32 = 2;
const CLUSTER_RETRY_WAIT_MS: (u64, u64) = (50, 500);

/// Where and how to connect. AUTH (user and password) and SELECT are sent
/// by the client library on every connection, and their replies checked.
pub fn connection_info(settings: &RedisSettings) -> RedisResult<ConnectionInfo> {
    connection_info_at(settings, &settings.host, settings.port)
}

/// [`connection_info`] for the Redis at `host`:`port`.
fn connection_info_at(settings: &RedisSettings, host: &str, port: u16) -> RedisResult<ConnectionInfo> {
    let mut redis = RedisConnectionInfo::default().set_db(settings.db);
    if let Some(user) = &settings.user {
        redis = redis.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    Ok(ConnectionAddr::Tcp(host.to_owned(), port).into_connection_info()?.set_redis_settings(redis))
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

/// The members of a Redis Cluster as the last connection found them:
/// connecting again goes through any of them as well as `redis_host`,
/// which may be the member that failed (its replica serving its slots).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KnownMembers(Vec<(String, u16)>);

impl KnownMembers {
    /// The members a `CLUSTER SLOTS` reply names, masters and replicas.
    fn from_slots(reply: &Value) -> Self {
        let mut members = Vec::new();
        let Value::Array(ranges) = reply else { return Self(members) };
        for range in ranges {
            let Value::Array(parts) = range else { continue };
            for node in parts.iter().skip(2) {
                let Value::Array(fields) = node else { continue };
                let host = match fields.first() {
                    Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                    Some(Value::SimpleString(host)) => host.clone(),
                    _ => continue,
                };
                let Some(Value::Int(port)) = fields.get(1) else { continue };
                let Ok(port) = u16::try_from(*port) else { continue };
                if !host.is_empty() && !members.contains(&(host.clone(), port)) {
                    members.push((host, port));
                }
            }
        }
        Self(members)
    }
}

/// One multiplexed connection: to the server, or to every master of a
/// Redis Cluster (the members are learnt from the one at `redis_host`, or
/// from those known).
pub enum RedisConnection {
    /// One Redis server.
    Server(MultiplexedConnection),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server(_) => "RedisConnection::Server",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl RedisConnection {
    /// Opens a connection as `settings` say, whose replies count as
    /// failed after `reply_within` (a blocking read needs longer than the
    /// library's default). A Redis Cluster request is tried again twice,
    /// soon (the library's default waits over a second before each of 16
    /// tries): the callers retry on their own, and a member down should be
    /// noticed as soon as on one server.
    /// A Redis Cluster is reached through `redis_host` or any of `known`,
    /// which this updates.
    pub async fn open(settings: &RedisSettings, reply_within: Duration, known: &mut KnownMembers) -> RedisResult<Self> {
        let info = connection_info(settings)?;
        if settings.redis_cluster {
            let mut conn = cluster_client(settings, info, known, reply_within)?.get_async_connection().await?;
            let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut conn).await?;
            *known = KnownMembers::from_slots(&slots);
            return Ok(Self::Cluster(conn));
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(reply_within));
        Ok(Self::Server(redis::Client::open(info)?.get_multiplexed_async_connection_with_config(&config).await?))
    }

    /// Runs `commands` and returns the replies of those asked for, in
    /// order. One server gets them in one pipeline; a Redis Cluster one
    /// pipeline per key's slot, all at once: the order holds among the
    /// commands on one key, not across keys.
    pub async fn run(&mut self, commands: &Commands) -> RedisResult<Vec<Value>> {
        if commands.list.is_empty() {
            return Ok(Vec::new());
        }
        let replies = match self {
            Self::Server(conn) => commands.pipeline(0..commands.list.len()).query_async(conn).await?,
            Self::Cluster(conn) => {
                let groups = commands.by_slot();
                let runs = groups.iter().map(|group| {
                    let mut conn = conn.clone();
                    let pipe = commands.pipeline(group.iter().copied());
                    async move { pipe.query_async::<Vec<Value>>(&mut conn).await }
                });
                let mut replies = vec![Value::Nil; commands.list.len()];
                for (group, answers) in groups.iter().zip(join_all(runs).await) {
                    for (&index, reply) in group.iter().zip(answers?) {
                        replies[index] = reply;
                    }
                }
                replies
            }
        };
        Ok(commands.kept(replies))
    }
}

/// A blocking connection as `settings` say, for a thread of its own (the
/// store's committer): to the server, or through `redis_host` or any of
/// `known` to a Redis Cluster, which routes each command by its first key.
/// Replies count as failed after [`REDIS_TIMEOUT`].
///
/// # Errors
///
/// When no connection could be made.
pub fn open_blocking(settings: &RedisSettings, known: &mut KnownMembers) -> RedisResult<BlockingConnection> {
    let info = connection_info(settings)?;
    if settings.redis_cluster {
        let mut conn = cluster_client(settings, info, known, REDIS_TIMEOUT)?.get_connection()?;
        let slots: Value = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn)?;
        *known = KnownMembers::from_slots(&slots);
        return Ok(BlockingConnection::Cluster(Box::new(conn)));
    }
    let conn = redis::Client::open(info)?.get_connection_with_timeout(REDIS_TIMEOUT)?;
    conn.set_read_timeout(Some(REDIS_TIMEOUT))?;
    conn.set_write_timeout(Some(REDIS_TIMEOUT))?;
    Ok(BlockingConnection::Server(conn))
}

/// A blocking connection: to one server, or to a Redis Cluster.
pub enum BlockingConnection {
    /// One Redis server.
    Server(redis::Connection),
    /// A Redis Cluster.
    Cluster(Box<redis::cluster::ClusterConnection>),
}

impl std::fmt::Debug for BlockingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Server(_) => "BlockingConnection::Server",
            Self::Cluster(_) => "BlockingConnection::Cluster",
        })
    }
}

impl BlockingConnection {
    /// Runs `commands` and returns the replies of those asked for, in
    /// order: in one pipeline on one server; on a Redis Cluster in one
    /// pipeline per member, each command to the member holding its key's
    /// slot. The order holds among the commands on one key.
    pub fn run(&mut self, commands: &Commands) -> RedisResult<Vec<Value>> {
        if commands.list.is_empty() {
            return Ok(Vec::new());
        }
        let replies = match self {
            Self::Server(conn) => commands.pipeline(0..commands.list.len()).query(conn)?,
            Self::Cluster(conn) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for command in &commands.list {
                    pipe.add_command(command.cmd.clone());
                }
                pipe.query(conn)?
            }
        };
        Ok(commands.kept(replies))
    }
}

impl redis::ConnectionLike for BlockingConnection {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands(&mut self, cmd: &[u8], offset: usize, count: usize) -> RedisResult<Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Server(conn) => conn.req_command(cmd),
            Self::Cluster(conn) => conn.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Self::Server(conn) => conn.check_connection(),
            Self::Cluster(conn) => conn.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Self::Server(conn) => conn.is_open(),
            Self::Cluster(conn) => conn.is_open(),
        }
    }
}

/// A Redis Cluster client reaching the cluster through `info` (the
/// member at `redis_host`) or any of `known`, whose replies count as
/// failed after `reply_within`; see [`RedisConnection::open`] for its
/// retries.
fn cluster_client(
    settings: &RedisSettings,
    info: ConnectionInfo,
    known: &KnownMembers,
    reply_within: Duration,
) -> RedisResult<redis::cluster::ClusterClient> {
    let mut seeds = vec![info];
    for (host, port) in &known.0 {
        seeds.push(connection_info_at(settings, host, *port)?);
    }
    ClusterClientBuilder::new(seeds)
        .connection_timeout(REDIS_TIMEOUT)
        .response_timeout(reply_within)
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(CLUSTER_RETRY_WAIT_MS.0)
        .max_retry_wait(CLUSTER_RETRY_WAIT_MS.1)
        .build()
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Server(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Server(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Server(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Commands sent together, each naming the one key it acts on.
#[derive(Debug, Default)]
pub struct Commands {
    list: Vec<Keyed>,
}

#[derive(Debug)]
struct Keyed {
    /// The part of the key Redis Cluster hashes to a slot.
    tag: String,
    cmd: Cmd,
    /// Whether its reply is returned.
    keep: bool,
}

impl Commands {
    /// No commands yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name key`, whose reply is returned; more arguments go on the
    /// command returned.
    pub fn ask(&mut self, name: &str, key: &str) -> &mut Cmd {
        self.push(key, redis::cmd(name), true).arg(key)
    }

    /// Adds `name key`, whose reply is not returned.
    pub fn send(&mut self, name: &str, key: &str) -> &mut Cmd {
        self.push(key, redis::cmd(name), false).arg(key)
    }

    /// Adds `cmd`, acting on `key` though not naming it first (`XREAD`),
    /// whose reply is returned.
    pub fn ask_on(&mut self, key: &str, cmd: Cmd) -> &mut Cmd {
        self.push(key, cmd, true)
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    fn push(&mut self, key: &str, cmd: Cmd, keep: bool) -> &mut Cmd {
        self.list.push(Keyed { tag: hash_tag(key).to_owned(), cmd, keep });
        let last = self.list.len() - 1;
        &mut self.list[last].cmd
    }

    /// The replies of the commands asked for, of `replies` to them all.
    fn kept(&self, replies: Vec<Value>) -> Vec<Value> {
        replies.into_iter().zip(&self.list).filter(|(_, command)| command.keep).map(|(reply, _)| reply).collect()
    }

    /// The commands at `indices`, every reply kept.
    fn pipeline(&self, indices: impl Iterator<Item = usize>) -> Pipeline {
        let mut pipe = redis::pipe();
        for index in indices {
            pipe.add_command(self.list[index].cmd.clone());
        }
        pipe
    }

    /// The commands' indices, grouped by the slot their keys hash to, each
    /// group in the order given.
    fn by_slot(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_tag: HashMap<&str, usize> = HashMap::new();
        for (index, command) in self.list.iter().enumerate() {
            let group = *by_tag.entry(&command.tag).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[group].push(index);
        }
        groups
    }
}

/// What Redis Cluster hashes of `key`: the text inside its first `{...}`
/// when that is not empty, else the whole key. Keys with the same tag share
/// a slot.
fn hash_tag(key: &str) -> &str {
    key.split_once('{')
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(tag, _)| tag)
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_members_are_those_cluster_slots_names_once_each() {
        let node = |host: &str, port: i64| {
            Value::Array(vec![Value::BulkString(host.into()), Value::Int(port), Value::BulkString(b"id".to_vec())])
        };
        let range =
            |first, last, nodes: Vec<Value>| Value::Array([vec![Value::Int(first), Value::Int(last)], nodes].concat());
        let reply = Value::Array(vec![
            range(0, 5460, vec![node("10.0.0.1", 7000), node("10.0.0.4", 7003)]),
            range(5461, 10922, vec![node("10.0.0.2", 7001)]),
            // A second range of the same master; a node without an address.
            range(10923, 11000, vec![node("10.0.0.2", 7001), node("", 7009)]),
            Value::Int(3),
        ]);
        let expected = [("10.0.0.1", 7000), ("10.0.0.4", 7003), ("10.0.0.2", 7001)];
        let expected = expected.iter().map(|&(host, port)| (host.to_owned(), port)).collect();
        assert_eq!(KnownMembers::from_slots(&reply), KnownMembers(expected));
        assert_eq!(KnownMembers::from_slots(&Value::Nil), KnownMembers::default());
    }

    #[test]
    fn the_hash_tag_is_what_redis_cluster_hashes() {
        assert_eq!(hash_tag("mqtt"), "mqtt");
        assert_eq!(hash_tag("{mqtt}:lease:h:1883"), "mqtt");
        assert_eq!(hash_tag("a{b}c{d}"), "b");
        assert_eq!(hash_tag("{}x"), "{}x");
        assert_eq!(hash_tag("a{b"), "a{b");
        assert_eq!(hash_tag("fleet:inbox:h:1883"), "fleet:inbox:h:1883");
    }

    #[test]
    fn commands_group_by_slot_keeping_their_order() {
        let mut commands = Commands::new();
        commands.send("HSET", "{mqtt}:a").arg("f").arg("v");
        commands.ask("XADD", "c:inbox:x").arg("*");
        commands.ask("HGETALL", "{mqtt}:b");
        commands.ask_on("c:inbox:x", redis::cmd("XREAD"));
        assert_eq!(commands.by_slot(), vec![vec![0, 2], vec![1, 3]]);
        assert_eq!(commands.pipeline(0..commands.list.len()).len(), 4);
    }
}
