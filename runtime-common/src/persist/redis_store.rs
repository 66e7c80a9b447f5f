//! The store in Redis: a cluster node's persistent sessions, their
//! messages and the retained messages, where they outlive the node's
//! machine (docs/cluster.md).
//!
//! One hash per kind of record, as the redb store has one table per kind,
//! all under the hash tag `{<cluster>:store:<node>}`: a Redis Cluster keeps
//! them on one member, and a commit changes them in one script, atomically.
//! Wills are not kept here: they reach Redis through the link
//! ([`crate::cluster`]), which sees that each is published once.
//!
//! The store keeps in memory what Redis holds once its writes are through
//! (a [`StoredState`]). A commit applies its batches there and writes the
//! final value of each row they touched; a row made and removed within
//! one commit never reaches Redis. Writes that failed stay pending and go
//! with the next try, so a retry after a reply that never came writes the
//! same values again.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use culex_core::persistence::{MessageId, Restore, SessionFields, StoreBatch, StoreOp, StoredState};
use culex_core::{ClientId, PacketId, TopicFilter, TopicName};
use redis::ConnectionLike;
use tracing::warn;

use super::codec;
use super::redb_store::{decode_error, packet_id, topic_name};
use super::{Store, StoreError, already_committed};
use crate::redis_conn::{KnownMembers, describe_error, open_blocking};
use crate::settings::RedisSettings;

/// The format written in the meta hash: a hash tag holding another is not
/// read.
const FORMAT_VERSION: u64 = 1;

/// Rows per script call when everything is written again: a call holds
/// Redis for the time it runs.
const REWRITE_CHUNK: usize = 512;

/// Entries asked for per `HSCAN` call when the store is read.
const SCAN_COUNT: usize = 1000;

/// Changes the store's hashes. `KEYS`: the tables, then the meta hash.
/// `ARGV[1]`: `clear` to empty every hash first; `ARGV[2]`: the last batch
/// now held, or empty to leave it; `ARGV[3]`: the format; `ARGV[4]`: the
/// last batch Redis must hold for the change to be made, or empty; then
/// `s<table> field value` to set a row and `d<table> field` to remove one.
/// Returns 0, changing nothing, when Redis holds another last batch than
/// `ARGV[4]` (it lost the store, or a reply was lost): the store is then
/// written whole.
const APPLY: &str = r"
local meta = KEYS[#KEYS]
if ARGV[4] ~= '' and (redis.call('HGET', meta, 'last_batch') or '0') ~= ARGV[4] then
  return 0
end
if ARGV[1] == 'clear' then
  for k = 1, #KEYS do redis.call('DEL', KEYS[k]) end
end
local i = 5
while i <= #ARGV do
  local key = KEYS[tonumber(string.sub(ARGV[i], 2))]
  if string.sub(ARGV[i], 1, 1) == 's' then
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2])
    i = i + 3
  else
    redis.call('HDEL', key, ARGV[i + 1])
    i = i + 2
  end
end
redis.call('HSET', meta, 'format', ARGV[3])
if ARGV[2] ~= '' then redis.call('HSET', meta, 'last_batch', ARGV[2]) end
return 1
";

/// Removes one session's rows, if its own row is still the one read.
/// `KEYS`: as [`APPLY`]'s; `ARGV[1]`: the session's field, `ARGV[2]` its
/// row's value as read; then `<table> field` for each of its other rows.
/// Returns 0, removing nothing, if the row changed or went.
const FORGET: &str = r"
local sessions = KEYS[3]
if redis.call('HGET', sessions, ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', sessions, ARGV[1])
for i = 3, #ARGV, 2 do redis.call('HDEL', KEYS[tonumber(ARGV[i])], ARGV[i + 1]) end
return 1
";

/// Removes every hash of the store if it holds no session. `KEYS`: as
/// [`APPLY`]'s. Returns 1 if it did.
const DESTROY: &str = r"
if redis.call('HLEN', KEYS[3]) ~= 0 then return 0 end
for k = 1, #KEYS do redis.call('DEL', KEYS[k]) end
return 1
";

/// The kinds of rows, one hash each, in the order a restore reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Messages,
    Retained,
    Sessions,
    Subscriptions,
    Copies,
    Incoming,
    Unreleased,
    InboxRead,
}

impl Table {
    const ALL: [Self; 8] = [
        Self::Messages,
        Self::Retained,
        Self::Sessions,
        Self::Subscriptions,
        Self::Copies,
        Self::Incoming,
        Self::Unreleased,
        Self::InboxRead,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Retained => "retained",
            Self::Sessions => "sessions",
            Self::Subscriptions => "subscriptions",
            Self::Copies => "copies",
            Self::Incoming => "incoming",
            Self::Unreleased => "unreleased",
            Self::InboxRead => "inbox_read",
        }
    }

    /// Its place in the script's `KEYS`, from 1.
    fn key_index(self) -> usize {
        self as usize + 1
    }
}

/// One row of one hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Message(MessageId),
    Retained(TopicName),
    Session(ClientId),
    Subscription(ClientId, TopicFilter),
    Copy(ClientId, u64),
    Incoming(ClientId, PacketId),
    Unreleased(ClientId, PacketId),
    /// By writing node and shard.
    InboxRead(String, u16),
}

impl Row {
    fn table(&self) -> Table {
        match self {
            Self::Message(_) => Table::Messages,
            Self::Retained(_) => Table::Retained,
            Self::Session(_) => Table::Sessions,
            Self::Subscription(..) => Table::Subscriptions,
            Self::Copy(..) => Table::Copies,
            Self::Incoming(..) => Table::Incoming,
            Self::Unreleased(..) => Table::Unreleased,
            Self::InboxRead(..) => Table::InboxRead,
        }
    }

    /// Its field in the table's hash: a client's rows start with its id,
    /// after the id's length.
    fn field(&self) -> Vec<u8> {
        match self {
            Self::Message(id) => id.0.to_be_bytes().to_vec(),
            Self::Retained(topic) => topic.as_str().as_bytes().to_vec(),
            Self::Session(client) => client.as_str().as_bytes().to_vec(),
            Self::Subscription(client, filter) => client_field(client, filter.as_str().as_bytes()),
            Self::Copy(client, seq) => client_field(client, &seq.to_be_bytes()),
            Self::Incoming(client, id) | Self::Unreleased(client, id) => client_field(client, &id.get().to_be_bytes()),
            Self::InboxRead(node, shard) => [&shard.to_be_bytes()[..], node.as_bytes()].concat(),
        }
    }

    /// Whether `state` holds it.
    fn is_in(&self, state: &StoredState) -> bool {
        let session = |client: &ClientId| state.sessions.get(client);
        match self {
            Self::Message(id) => state.messages.contains_key(id),
            Self::Retained(topic) => state.retained.contains_key(topic),
            Self::Session(client) => state.sessions.contains_key(client),
            Self::Subscription(client, filter) => session(client).is_some_and(|s| s.subscriptions.contains_key(filter)),
            Self::Copy(client, seq) => session(client).is_some_and(|s| s.copies.contains_key(seq)),
            Self::Incoming(client, id) => session(client).is_some_and(|s| s.incoming.contains_key(id)),
            Self::Unreleased(client, id) => state.unreleased.contains_key(&(client.clone(), *id)),
            Self::InboxRead(node, shard) => state.inbox_read.contains_key(&(node.clone(), *shard)),
        }
    }

    /// Its value in `state`, `None` if `state` does not hold it.
    fn value_in(&self, state: &StoredState) -> Option<Vec<u8>> {
        let session = |client: &ClientId| state.sessions.get(client);
        match self {
            Self::Message(id) => state.messages.get(id).map(|m| codec::encode_message(m)),
            Self::Retained(topic) => state.retained.get(topic).map(|id| codec::encode_id(*id).to_vec()),
            Self::Session(client) => session(client).map(|s| codec::encode_session(&SessionFields::from(s))),
            Self::Subscription(client, filter) => {
                session(client)?.subscriptions.get(filter).map(|qos| codec::encode_qos(*qos).to_vec())
            }
            Self::Copy(client, seq) => session(client)?.copies.get(seq).map(codec::encode_copy),
            Self::Incoming(client, id) => session(client)?.incoming.get(id).map(|m| codec::encode_incoming(*m)),
            Self::Unreleased(client, id) => {
                state.unreleased.get(&(client.clone(), *id)).map(|m| codec::encode_id(*m).to_vec())
            }
            Self::InboxRead(node, shard) => {
                state.inbox_read.get(&(node.clone(), *shard)).map(|mark| codec::encode_mark(*mark).to_vec())
            }
        }
    }
}

fn client_field(client: &ClientId, rest: &[u8]) -> Vec<u8> {
    let id = client.as_str().as_bytes();
    let len = u16::try_from(id.len()).unwrap_or(u16::MAX);
    let mut field = Vec::with_capacity(2 + id.len() + rest.len());
    field.extend_from_slice(&len.to_be_bytes());
    field.extend_from_slice(id);
    field.extend_from_slice(rest);
    field
}

/// The client id and the rest of a client's row's field.
fn split_client_field(table: Table, field: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let bad = || decode_error(table.name(), "a field without its client id".into());
    let (len, rest) = field.split_first_chunk::<2>().ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes(*len));
    let (client, rest) = rest.split_at_checked(len).ok_or_else(bad)?;
    let client = std::str::from_utf8(client).map_err(|_| bad())?;
    Ok((client, rest))
}

/// Calls `each` with every row `op` may change, as `state` is before it.
fn rows_of(op: &StoreOp, state: &StoredState, mut each: impl FnMut(Row)) {
    match op {
        StoreOp::Message { id, .. } | StoreOp::DropMessage { id } => each(Row::Message(*id)),
        StoreOp::Retain { topic, .. } | StoreOp::DropRetained { topic } => each(Row::Retained(topic.clone())),
        StoreOp::Session { client, .. } => each(Row::Session(client.clone())),
        StoreOp::DropSession { client } => {
            each(Row::Session(client.clone()));
            if let Some(session) = state.sessions.get(client) {
                session_rows(client, session, &mut each);
            }
        }
        StoreOp::Subscribe { client, filter, .. } | StoreOp::Unsubscribe { client, filter } => {
            each(Row::Subscription(client.clone(), filter.clone()));
        }
        StoreOp::Copy { client, seq, .. } => {
            each(Row::Copy(client.clone(), *seq));
            // The session's next packet id may move.
            each(Row::Session(client.clone()));
        }
        StoreOp::DropCopy { client, seq } => each(Row::Copy(client.clone(), *seq)),
        StoreOp::Incoming { client, packet_id, .. } | StoreOp::DropIncoming { client, packet_id } => {
            each(Row::Incoming(client.clone(), *packet_id));
            each(Row::Unreleased(client.clone(), *packet_id));
        }
        // Not kept here (see the module).
        StoreOp::Will { .. } | StoreOp::DropWill { .. } => {}
        StoreOp::InboxRead { node, shard, .. } => each(Row::InboxRead(node.clone(), *shard)),
    }
}

/// A session's rows other than its own.
fn session_rows(client: &ClientId, session: &culex_core::persistence::StoredSession, each: &mut impl FnMut(Row)) {
    for filter in session.subscriptions.keys() {
        each(Row::Subscription(client.clone(), filter.clone()));
    }
    for seq in session.copies.keys() {
        each(Row::Copy(client.clone(), *seq));
    }
    for id in session.incoming.keys() {
        each(Row::Incoming(client.clone(), *id));
    }
}

/// Every row `state` holds.
fn all_rows(state: &StoredState) -> Vec<Row> {
    let mut rows: Vec<Row> = state.messages.keys().map(|id| Row::Message(*id)).collect();
    rows.extend(state.retained.keys().map(|topic| Row::Retained(topic.clone())));
    for (client, session) in &state.sessions {
        rows.push(Row::Session(client.clone()));
        session_rows(client, session, &mut |row| rows.push(row));
    }
    rows.extend(state.unreleased.keys().map(|(client, id)| Row::Unreleased(client.clone(), *id)));
    rows.extend(state.inbox_read.keys().map(|(node, shard)| Row::InboxRead(node.clone(), *shard)));
    rows
}

/// How the store reaches Redis again after a failed call.
type Connect = Box<dyn FnMut() -> redis::RedisResult<Box<dyn ConnectionLike + Send>> + Send>;

/// A [`Store`] in Redis (see the module).
pub struct RedisStore {
    /// The tables' keys in [`Table::ALL`] order, then the meta hash's.
    keys: Vec<String>,
    connect: Connect,
    /// `None` after a failed call, until the next one connects again.
    conn: Option<Box<dyn ConnectionLike + Send>>,
    /// What Redis holds once `pending` is written.
    state: StoredState,
    /// Rows to write: their value, `None` to remove them.
    pending: BTreeMap<Row, Option<Vec<u8>>>,
    /// Redis may hold anything: everything is written again before the
    /// next change.
    rewrite: bool,
    /// The last batch Redis holds, as far as the store knows.
    written: u64,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("keys", &self.keys.last())
            .field("pending", &self.pending.len())
            .field("rewrite", &self.rewrite)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Node `node`'s store in cluster `cluster`, on the Redis `settings`
    /// name. Nothing is sent until it is read or written.
    pub fn new(settings: RedisSettings, cluster: &str, node: &str) -> Self {
        let mut known = KnownMembers::default();
        Self::with_connect(cluster, node, Box::new(move || Ok(Box::new(open_blocking(&settings, &mut known)?))))
    }

    fn with_connect(cluster: &str, node: &str, connect: Connect) -> Self {
        let tag = format!("{{{cluster}:store:{node}}}");
        let mut keys: Vec<String> = Table::ALL.iter().map(|t| format!("{tag}:{}", t.name())).collect();
        keys.push(format!("{tag}:meta"));
        Self {
            keys,
            connect,
            conn: None,
            state: StoredState::default(),
            pending: BTreeMap::new(),
            rewrite: false,
            written: 0,
        }
    }

    /// A store on the Redis server at `url` (tests).
    #[cfg(test)]
    pub(crate) fn at(url: &str, cluster: &str, node: &str) -> Self {
        let client = redis::Client::open(url).expect("a Redis URL");
        Self::with_connect(
            cluster,
            node,
            Box::new(move || Ok(Box::new(client.get_connection()?) as Box<dyn ConnectionLike + Send>)),
        )
    }

    /// Reads everything Redis holds, which the store then takes for its
    /// own (anything pending is forgotten).
    ///
    /// # Errors
    ///
    /// When Redis cannot be reached, or holds what this Culex cannot read.
    pub fn read(&mut self) -> Result<StoredState, StoreError> {
        let mut state = StoredState::default();
        if let Err(e) = self.read_into(&mut state) {
            self.conn = None;
            return Err(e);
        }
        self.state = state.clone();
        self.pending.clear();
        self.rewrite = false;
        self.written = state.last_batch;
        Ok(state)
    }

    /// Writes what is pending.
    ///
    /// # Errors
    ///
    /// When Redis failed; it stays pending.
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let result = if self.rewrite { self.write_all() } else { self.write_pending() };
        if !result? {
            warn!(
                "Redis does not hold this node's store as this node wrote it (batch {}): writing it again whole.",
                self.written
            );
            self.rewrite = true;
            return self.flush();
        }
        Ok(())
    }

    /// Removes `client`'s session from Redis, and from what the store
    /// holds, if Redis still holds it as [`read`](Self::read) found it
    /// (another writer may have changed it since): `false` if it did not.
    /// Message bodies stay until [`destroy`](Self::destroy).
    ///
    /// # Errors
    ///
    /// When Redis failed.
    pub fn forget_session(&mut self, client: &ClientId) -> Result<bool, StoreError> {
        let Some(session) = self.state.sessions.get(client) else { return Ok(false) };
        let own = Row::Session(client.clone());
        let mut call = redis::cmd("EVAL");
        call.arg(FORGET).arg(self.keys.len()).arg(&self.keys).arg(own.field());
        call.arg(own.value_in(&self.state).unwrap_or_default());
        session_rows(client, session, &mut |row: Row| {
            call.arg(row.table().key_index()).arg(row.field());
        });
        let forgotten: i64 = self.run(&call)?;
        if forgotten == 1 {
            self.state.sessions.remove(client);
        }
        Ok(forgotten == 1)
    }

    /// Removes the store from Redis if it holds no session (another
    /// writer may have added one): `true` if it did.
    ///
    /// # Errors
    ///
    /// When Redis failed.
    pub fn destroy(&mut self) -> Result<bool, StoreError> {
        let mut call = redis::cmd("EVAL");
        call.arg(DESTROY).arg(self.keys.len()).arg(&self.keys);
        let destroyed: i64 = self.run(&call)?;
        Ok(destroyed == 1)
    }

    /// The epochs of `clients`' sessions in Redis (`None`: no session).
    ///
    /// # Errors
    ///
    /// When Redis failed, or holds a session this Culex cannot read.
    pub fn session_epochs(&mut self, clients: &[ClientId]) -> Result<Vec<Option<u64>>, StoreError> {
        if clients.is_empty() {
            return Ok(Vec::new());
        }
        let mut call = redis::cmd("HMGET");
        call.arg(&self.keys[Table::Sessions as usize]);
        for client in clients {
            call.arg(client.as_str());
        }
        let rows: Vec<Option<Vec<u8>>> = self.run(&call)?;
        rows.into_iter()
            .map(|row| row.map(|bytes| codec::decode_session(&bytes).map(|s| s.epoch)).transpose())
            .collect()
    }

    /// Runs `call`, connecting again at the next call after a failure.
    fn run<T: redis::FromRedisValue>(&mut self, call: &redis::Cmd) -> Result<T, StoreError> {
        let result = call.query(self.conn()?).map_err(redis_error);
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn conn(&mut self) -> Result<&mut (dyn ConnectionLike + Send), StoreError> {
        match &mut self.conn {
            Some(conn) => Ok(conn.as_mut()),
            slot => Ok(slot.insert((self.connect)().map_err(redis_error)?).as_mut()),
        }
    }

    /// Writes the pending rows; `false` if Redis did not hold what the
    /// store last wrote (nothing was written then).
    fn write_pending(&mut self) -> Result<bool, StoreError> {
        let mut call = self.call(false, Some(self.state.last_batch), Some(self.written));
        for (row, value) in &self.pending {
            push_row(&mut call, row, value.as_deref());
        }
        let applied: i64 = self.run(&call)?;
        if applied == 0 {
            return Ok(false);
        }
        self.pending.clear();
        self.written = self.state.last_batch;
        Ok(true)
    }

    /// Empties the hashes and writes every row, in calls of
    /// [`REWRITE_CHUNK`] rows. The last batch is written by the last call:
    /// a store left half-written reads as holding none.
    fn write_all(&mut self) -> Result<bool, StoreError> {
        let rows = all_rows(&self.state);
        let mut chunks = rows.chunks(REWRITE_CHUNK).peekable();
        let mut first = true;
        loop {
            let chunk = chunks.next().unwrap_or_default();
            let last = chunks.peek().is_none();
            let mut call = self.call(first, last.then_some(self.state.last_batch), None);
            for row in chunk {
                push_row(&mut call, row, row.value_in(&self.state).as_deref());
            }
            self.run::<i64>(&call)?;
            first = false;
            if last {
                break;
            }
        }
        self.rewrite = false;
        self.pending.clear();
        self.written = self.state.last_batch;
        Ok(true)
    }

    /// A call of [`APPLY`] without rows yet.
    fn call(&self, clear: bool, last_batch: Option<u64>, expect: Option<u64>) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPLY).arg(self.keys.len()).arg(&self.keys);
        cmd.arg(if clear { "clear" } else { "" });
        cmd.arg(last_batch.map(|n| n.to_string()).unwrap_or_default());
        cmd.arg(FORMAT_VERSION);
        cmd.arg(expect.map(|n| n.to_string()).unwrap_or_default());
        cmd
    }

    fn read_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        let keys = self.keys.clone();
        let meta: BTreeMap<String, String> = self.run(redis::cmd("HGETALL").arg(&keys[Table::ALL.len()]))?;
        if let Some(format) = meta.get("format")
            && format != &FORMAT_VERSION.to_string()
        {
            return Err(decode_error("meta", format!("store format {format}, this Culex reads {FORMAT_VERSION}")));
        }
        let last_batch = meta.get("last_batch").map_or(Ok(0), |n| {
            n.parse::<u64>().map_err(|_| decode_error("meta", format!("last batch {n:?} is not a number")))
        })?;
        sink.last_batch(last_batch);
        let mut publishers = codec::Publishers::default();
        let conn = self.conn()?;
        for (table, key) in Table::ALL.into_iter().zip(&keys) {
            scan(conn, key, |field, value| read_row(table, field, value, &mut publishers, sink))?;
        }
        Ok(())
    }
}

/// Adds a row's change to a call of [`APPLY`].
fn push_row(call: &mut redis::Cmd, row: &Row, value: Option<&[u8]>) {
    let index = row.table().key_index();
    match value {
        Some(value) => call.arg(format!("s{index}")).arg(row.field()).arg(value),
        None => call.arg(format!("d{index}")).arg(row.field()),
    };
}

/// Hands one row read from `table` to `sink`.
fn read_row(
    table: Table,
    field: &[u8],
    value: &[u8],
    publishers: &mut codec::Publishers,
    sink: &mut dyn Restore,
) -> Result<(), StoreError> {
    let name = table.name();
    let text = |bytes| std::str::from_utf8(bytes).map_err(|_| decode_error(name, "a field that is not UTF-8".into()));
    match table {
        Table::Messages => {
            let id = field.try_into().map(u64::from_be_bytes).map_err(|_| decode_error(name, "a bad id".into()))?;
            sink.message(MessageId(id), Arc::new(publishers.share(codec::decode_message(value)?)));
        }
        Table::Retained => sink.retained(topic_name(name, text(field)?)?, codec::decode_id(name, value)?),
        Table::Sessions => sink.session(text(field)?, codec::decode_session(value)?),
        Table::Subscriptions => {
            let (client, filter) = split_client_field(table, field)?;
            let filter = text(filter)?;
            let filter =
                TopicFilter::new(filter).map_err(|e| decode_error(name, format!("invalid filter {filter:?}: {e}")))?;
            sink.subscription(client, filter, codec::decode_qos(value)?);
        }
        Table::Copies => {
            let (client, seq) = split_client_field(table, field)?;
            let seq =
                seq.try_into().map(u64::from_be_bytes).map_err(|_| decode_error(name, "a bad sequence".into()))?;
            sink.copy(client, seq, codec::decode_copy(value)?);
        }
        Table::Incoming | Table::Unreleased => {
            let (client, id) = split_client_field(table, field)?;
            let id = id.try_into().map(u16::from_be_bytes).map_err(|_| decode_error(name, "a bad packet id".into()))?;
            let id = packet_id(name, id)?;
            if table == Table::Incoming {
                sink.incoming(client, id, codec::decode_incoming(value)?);
            } else {
                sink.unreleased(client, id, codec::decode_id(name, value)?);
            }
        }
        Table::InboxRead => {
            let bad = || decode_error(name, "a field without its shard".into());
            let (shard, node) = field.split_first_chunk::<2>().ok_or_else(bad)?;
            sink.inbox_read(text(node)?, u16::from_be_bytes(*shard), codec::decode_mark(name, value)?);
        }
    }
    Ok(())
}

/// Calls `each` with every field and value of the hash `key`.
fn scan(
    conn: &mut (dyn ConnectionLike + Send),
    key: &str,
    mut each: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let mut cursor = "0".to_owned();
    loop {
        let (next, entries): (String, Vec<Vec<u8>>) =
            redis::cmd("HSCAN").arg(key).arg(&cursor).arg("COUNT").arg(SCAN_COUNT).query(conn).map_err(redis_error)?;
        for pair in entries.chunks_exact(2) {
            each(&pair[0], &pair[1])?;
        }
        if next == "0" {
            return Ok(());
        }
        cursor = next;
    }
}

fn redis_error(error: redis::RedisError) -> StoreError {
    StoreError::Redis(describe_error(&error))
}

impl Store for RedisStore {
    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.read()?.replay(sink);
        Ok(())
    }

    fn last_batch(&mut self) -> Result<u64, StoreError> {
        Ok(self.state.last_batch)
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        // Whether each row touched was there before: one made and removed
        // here is never written.
        let mut touched: BTreeMap<Row, bool> = BTreeMap::new();
        for batch in batches {
            if already_committed(self.state.last_batch, batch.seq) {
                continue;
            }
            for op in &batch.ops {
                if matches!(op, StoreOp::Will { .. } | StoreOp::DropWill { .. }) {
                    continue;
                }
                rows_of(op, &self.state, |row| {
                    let was = row.is_in(&self.state);
                    touched.entry(row).or_insert(was);
                });
                self.state.apply(op);
            }
            self.state.last_batch = self.state.last_batch.max(batch.seq);
        }
        for (row, was) in touched {
            let value = row.value_in(&self.state);
            if value.is_some() || was {
                self.pending.insert(row, value);
            }
        }
        self.flush()
    }

    /// Takes `state` (its wills left out) and writes Redis again whole;
    /// if that fails, it is written whole at the next try.
    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.state = StoredState { wills: BTreeMap::new(), ..state.clone() };
        self.pending.clear();
        self.rewrite = true;
        self.flush()
    }

    fn size(&self) -> Option<u64> {
        None
    }
}
