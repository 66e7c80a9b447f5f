//! The store on redb: one file, one table per kind of record, one write
//! transaction (one `fdatasync`) per group of batches.

use std::collections::{BTreeMap, HashMap, btree_map, hash_map};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use culex_core::persistence::{
    InboxMark, MessageId, Restore, SessionFields, StoreBatch, StoreOp, StoredCopy, StoredState,
};
use culex_core::{ClientId, PacketId, TopicFilter, TopicName};
use redb::{
    Builder, Database, DatabaseError, ReadableDatabase, ReadableTable, StorageBackend, Table, TableDefinition,
    TableError, WriteTransaction,
};

use super::codec;
use super::{Store, StoreError, panic_text};

/// Message bodies: id → topic, payload, QoS, RETAIN, `expires_at`.
const MESSAGES: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("messages");
/// Retained messages: topic → message id.
const RETAINED: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("retained");
/// Persistent sessions' own fields: client → user name, offline since,
/// next packet id.
const SESSIONS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("sessions");
/// (client, filter) → granted QoS.
const SUBSCRIPTIONS: TableDefinition<'static, (&str, &str), &[u8]> = TableDefinition::new("subscriptions");
/// (client, sequence number) → copy.
const COPIES: TableDefinition<'static, (&str, u64), &[u8]> = TableDefinition::new("copies");
/// (client, packet id) → message id or none: incoming QoS 2 messages of
/// stored sessions.
const INCOMING: TableDefinition<'static, (&str, u16), &[u8]> = TableDefinition::new("incoming");
/// (client, packet id) → message id: incoming QoS 2 messages of clients
/// without a stored session.
const UNRELEASED: TableDefinition<'static, (&str, u16), &[u8]> = TableDefinition::new("unreleased");
/// Client → will.
const WILLS: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("wills");
/// In a cluster, how far the inbox is read: (writing node, shard) to
/// `[1][run: u64][seq: u64]`.
const INBOX_READ: TableDefinition<'static, (&str, u16), &[u8]> = TableDefinition::new("inbox_read");
/// [`FORMAT`] and [`LAST_BATCH`].
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");

/// Meta key: the store's format, written when it is created. A redb file
/// without it was not made by Culex.
const FORMAT: &str = "format";
/// Meta key: the sequence number of the last batch committed.
const LAST_BATCH: &str = "last_batch";
/// The format this code writes and reads.
const FORMAT_VERSION: u64 = 1;

/// redb's page cache. Its default is 1 GiB; a broker's store is small and
/// mostly written, and Culex also runs on devices with little memory.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// How the store (re)opens its database: after a failed commit redb
/// refuses further transactions until the database is opened again.
type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send>;

/// The store on redb 5. Create it with [`RedbStore::create`] or
/// [`RedbStore::open`] (or through [`open`](super::open), which also deals
/// with damaged and Mosquitto files).
pub struct RedbStore {
    /// `None` after a failed commit, until the next one opens it again.
    db: Option<Database>,
    open: Opener,
    path: Option<PathBuf>,
}

impl fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedbStore").field("path", &self.path).field("open", &self.db.is_some()).finish()
    }
}

/// The builder every open uses: integrity checked on open, so that a file
/// changed behind redb's back fails to open instead of panicking later.
fn builder() -> Builder {
    let mut builder = Database::builder();
    builder.set_check_integrity_on_open(true).set_cache_size(CACHE_BYTES);
    builder
}

impl RedbStore {
    /// Opens the existing store at `path`, checking every page, and reads
    /// its format.
    ///
    /// # Errors
    ///
    /// When the file cannot be opened, is not a redb database, is damaged,
    /// or is a redb database Culex did not make.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let owned = path.to_path_buf();
        let mut store = Self::with_opener(Box::new(move || builder().open(&owned)), Some(path.to_path_buf()))?;
        store.check_format()?;
        Ok(store)
    }

    /// Creates a new, empty store at `path` (which must not exist, or be
    /// empty) and makes it durable. The directory is not synced here: see
    /// [`open`](super::open).
    ///
    /// # Errors
    ///
    /// When the file cannot be created or written.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        let owned = path.to_path_buf();
        let db = builder().create(path)?;
        let mut store = Self { db: Some(db), open: Box::new(move || builder().open(&owned)), path: Some(path.into()) };
        store.initialise()?;
        Ok(store)
    }

    /// A store on any redb backend (tests use one that simulates crashes).
    /// It is created if empty; the backend is cloned to open it again after
    /// a failed commit.
    ///
    /// # Errors
    ///
    /// When redb cannot open it or it was not made by Culex.
    pub fn with_backend<B: StorageBackend + Clone>(backend: B) -> Result<Self, StoreError> {
        let mut store = Self::with_opener(Box::new(move || builder().create_with_backend(backend.clone())), None)?;
        if store.format()?.is_none() {
            store.initialise()?;
        }
        store.check_format()?;
        Ok(store)
    }

    fn with_opener(open: Opener, path: Option<PathBuf>) -> Result<Self, StoreError> {
        let db = open()?;
        Ok(Self { db: Some(db), open, path })
    }

    /// The open database, opening it again after a failed commit.
    fn db(&mut self) -> Result<&Database, StoreError> {
        match &mut self.db {
            Some(db) => Ok(db),
            slot => Ok(slot.insert((self.open)()?)),
        }
    }

    /// Writes the format and creates every table, in one durable commit.
    fn initialise(&mut self) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut tables = Tables::open(&txn)?;
            tables.meta.insert(FORMAT, codec::encode_u64(FORMAT_VERSION).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The format recorded in the meta table, `None` if there is none.
    fn format(&mut self) -> Result<Option<u64>, StoreError> {
        let txn = self.db()?.begin_read()?;
        let meta = match txn.open_table(META) {
            Ok(meta) => meta,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let format = meta.get(FORMAT)?.map(|v| codec::decode_u64(v.value())).transpose()?;
        Ok(format)
    }

    fn check_format(&mut self) -> Result<(), StoreError> {
        match self.format()? {
            Some(FORMAT_VERSION) => Ok(()),
            Some(other) => Err(StoreError::Decode {
                table: "meta",
                detail: format!("store format {other}, this Culex reads {FORMAT_VERSION}"),
            }),
            None => {
                Err(StoreError::Decode { table: "meta", detail: "a redb database that is not a Culex store".into() })
            }
        }
    }

    /// Replaces everything with `state` in one durable commit (an import
    /// writes a new store this way).
    ///
    /// # Errors
    ///
    /// When the commit fails.
    pub fn write_state(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.guarded(|store| store.write_state_inner(state))
    }

    fn write_state_inner(&mut self, state: &StoredState) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            t.clear()?;
            for (id, message) in &state.messages {
                t.messages.insert(id.0, codec::encode_message(message).as_slice())?;
            }
            for (topic, id) in &state.retained {
                t.retained.insert(topic.as_str(), codec::encode_id(*id).as_slice())?;
            }
            for (client, session) in &state.sessions {
                let c = client.as_str();
                t.sessions.insert(c, codec::encode_session(&SessionFields::from(session)).as_slice())?;
                for (filter, qos) in &session.subscriptions {
                    t.subscriptions.insert((c, filter.as_str()), codec::encode_qos(*qos).as_slice())?;
                }
                for (seq, copy) in &session.copies {
                    t.copies.insert((c, *seq), codec::encode_copy(copy).as_slice())?;
                }
                for (id, message) in &session.incoming {
                    t.incoming.insert((c, id.get()), codec::encode_incoming(*message).as_slice())?;
                }
            }
            for ((client, id), message) in &state.unreleased {
                t.unreleased.insert((client.as_str(), id.get()), codec::encode_id(*message).as_slice())?;
            }
            for (client, will) in &state.wills {
                t.wills.insert(client.as_str(), codec::encode_will(will).as_slice())?;
            }
            t.meta.insert(FORMAT, codec::encode_u64(FORMAT_VERSION).as_slice())?;
            t.meta.insert(LAST_BATCH, codec::encode_u64(state.last_batch).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn commit_inner(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        let txn = self.db()?.begin_write()?;
        {
            let mut t = Tables::open(&txn)?;
            let mut last = t.last_batch()?;
            for batch in batches {
                // Already committed: a retry after a commit that failed late
                // may find it there. Applying it twice is not always a no-op.
                if super::already_committed(last, batch.seq) {
                    continue;
                }
                for op in &batch.ops {
                    t.apply(op)?;
                }
                last = last.max(batch.seq);
            }
            t.flush()?;
            t.meta.insert(LAST_BATCH, codec::encode_u64(last).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Runs `f`, turning a panic in redb into an error. After any failure
    /// the database is opened again (and its integrity checked) before the
    /// next call: redb refuses writes after a failed one until then.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let result = panic::catch_unwind(AssertUnwindSafe(|| f(self)))
            .unwrap_or_else(|payload| Err(StoreError::Panic(panic_text(&*payload))));
        if result.is_err() {
            self.db = None;
        }
        result
    }

    fn stored_last_batch(txn: &redb::ReadTransaction) -> Result<u64, StoreError> {
        let meta = txn.open_table(META)?;
        Ok(meta.get(LAST_BATCH)?.map(|v| codec::decode_u64(v.value())).transpose()?.unwrap_or(0))
    }

    fn load_inner(db: &Database, sink: &mut dyn Restore) -> Result<(), StoreError> {
        let txn = db.begin_read()?;
        sink.last_batch(Self::stored_last_batch(&txn)?);
        let mut publishers = codec::Publishers::default();
        for entry in txn.open_table(MESSAGES)?.iter()? {
            let (id, value) = entry?;
            let message = publishers.share(codec::decode_message(value.value())?);
            sink.message(MessageId(id.value()), Arc::new(message));
        }
        for entry in txn.open_table(RETAINED)?.iter()? {
            let (topic, value) = entry?;
            sink.retained(topic_name("retained", topic.value())?, codec::decode_id("retained", value.value())?);
        }
        for entry in txn.open_table(SESSIONS)?.iter()? {
            let (client, value) = entry?;
            sink.session(client.value(), codec::decode_session(value.value())?);
        }
        // Rows of a session that is not stored cannot be written (ops for
        // one are ignored, dropping one drops its rows); the sink skips
        // any anyway.
        for entry in txn.open_table(SUBSCRIPTIONS)?.iter()? {
            let (key, value) = entry?;
            let (client, filter) = key.value();
            let filter = TopicFilter::new(filter)
                .map_err(|e| decode_error("subscriptions", format!("invalid filter {filter:?}: {e}")))?;
            sink.subscription(client, filter, codec::decode_qos(value.value())?);
        }
        for entry in txn.open_table(COPIES)?.iter()? {
            let (key, value) = entry?;
            let (client, seq) = key.value();
            sink.copy(client, seq, codec::decode_copy(value.value())?);
        }
        for entry in txn.open_table(INCOMING)?.iter()? {
            let (key, value) = entry?;
            let (client, id) = key.value();
            sink.incoming(client, packet_id("incoming", id)?, codec::decode_incoming(value.value())?);
        }
        for entry in txn.open_table(UNRELEASED)?.iter()? {
            let (key, value) = entry?;
            let (client, id) = key.value();
            sink.unreleased(client, packet_id("unreleased", id)?, codec::decode_id("unreleased", value.value())?);
        }
        for entry in txn.open_table(WILLS)?.iter()? {
            let (client, value) = entry?;
            sink.will(client.value(), codec::decode_will(value.value())?);
        }
        // A store written before the table existed has none.
        let inbox_read = match txn.open_table(INBOX_READ) {
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            opened => opened?,
        };
        for entry in inbox_read.iter()? {
            let (key, value) = entry?;
            let (node, shard) = key.value();
            sink.inbox_read(node, shard, codec::decode_mark("inbox_read", value.value())?);
        }
        Ok(())
    }
}

impl Store for RedbStore {
    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.guarded(|store| store.db().and_then(|db| Self::load_inner(db, sink)))
    }

    fn last_batch(&mut self) -> Result<u64, StoreError> {
        self.guarded(|store| store.db().and_then(|db| Self::stored_last_batch(&db.begin_read()?)))
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        self.guarded(|store| store.commit_inner(batches))
    }

    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.write_state(state)
    }

    fn size(&self) -> Option<u64> {
        self.path.as_ref().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len())
    }
}

pub(super) fn decode_error(table: &'static str, detail: String) -> StoreError {
    StoreError::Decode { table, detail }
}

pub(super) fn topic_name(table: &'static str, topic: &str) -> Result<TopicName, StoreError> {
    TopicName::new(topic).map_err(|e| decode_error(table, format!("invalid topic {topic:?}: {e}")))
}

pub(super) fn packet_id(table: &'static str, id: u16) -> Result<PacketId, StoreError> {
    PacketId::new(id).ok_or_else(|| decode_error(table, "packet id 0".into()))
}

/// A copy's row as the transaction leaves it, before it is written.
#[derive(Debug, Clone, Copy)]
struct PendingCopy {
    /// `None`: removed.
    copy: Option<StoredCopy>,
    /// Whether the table holds a row for it, if that was looked up: a
    /// copy made and removed within the transaction never touches it.
    in_table: Option<bool>,
}

/// Every table, open in one write transaction, with the changes to copies
/// and to sessions' next packet ids gathered until the end of it (or until
/// a change to a session itself): a steady flow of messages stores and
/// removes each copy between two checkpoints, and the table never sees it.
struct Tables<'t> {
    messages: Table<'t, u64, &'static [u8]>,
    retained: Table<'t, &'static str, &'static [u8]>,
    sessions: Table<'t, &'static str, &'static [u8]>,
    subscriptions: Table<'t, (&'static str, &'static str), &'static [u8]>,
    copies: Table<'t, (&'static str, u64), &'static [u8]>,
    incoming: Table<'t, (&'static str, u16), &'static [u8]>,
    unreleased: Table<'t, (&'static str, u16), &'static [u8]>,
    wills: Table<'t, &'static str, &'static [u8]>,
    inbox_read: Table<'t, (&'static str, u16), &'static [u8]>,
    meta: Table<'t, &'static str, &'static [u8]>,
    /// By client, then sequence number.
    pending_copies: HashMap<ClientId, BTreeMap<u64, PendingCopy>>,
    /// The fields of stored sessions whose next packet id moved, and of
    /// those whose copies were looked at (`false`: unchanged).
    pending_sessions: HashMap<ClientId, (SessionFields, bool)>,
}

impl<'t> Tables<'t> {
    fn open(txn: &'t WriteTransaction) -> Result<Self, TableError> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            retained: txn.open_table(RETAINED)?,
            sessions: txn.open_table(SESSIONS)?,
            subscriptions: txn.open_table(SUBSCRIPTIONS)?,
            copies: txn.open_table(COPIES)?,
            incoming: txn.open_table(INCOMING)?,
            unreleased: txn.open_table(UNRELEASED)?,
            wills: txn.open_table(WILLS)?,
            inbox_read: txn.open_table(INBOX_READ)?,
            meta: txn.open_table(META)?,
            pending_copies: HashMap::new(),
            pending_sessions: HashMap::new(),
        })
    }

    /// Writes what was gathered: copies in key order, then the sessions
    /// whose next packet id moved.
    fn flush(&mut self) -> Result<(), StoreError> {
        let mut by_client: Vec<_> = std::mem::take(&mut self.pending_copies).into_iter().collect();
        by_client.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        for (client, copies) in by_client {
            for (seq, pending) in copies {
                let key = (client.as_str(), seq);
                match pending.copy {
                    Some(copy) => {
                        self.copies.insert(key, codec::encode_copy(&copy).as_slice())?;
                    }
                    None if pending.in_table == Some(false) => {}
                    None => {
                        self.copies.remove(key)?;
                    }
                }
            }
        }
        for (client, (fields, moved)) in std::mem::take(&mut self.pending_sessions) {
            if moved {
                self.sessions.insert(client.as_str(), codec::encode_session(&fields).as_slice())?;
            }
        }
        Ok(())
    }

    /// A copy: as [`StoredState::apply`], an id new to the copy moves the
    /// session's next packet id past it.
    fn copy(&mut self, client: &ClientId, seq: u64, copy: &StoredCopy) -> Result<(), StoreError> {
        let (fields, moved) = match self.pending_sessions.entry(client.clone()) {
            hash_map::Entry::Occupied(entry) => entry.into_mut(),
            hash_map::Entry::Vacant(entry) => match self.sessions.get(client.as_str())? {
                Some(value) => entry.insert((codec::decode_session(value.value())?, false)),
                None => return Ok(()),
            },
        };
        let copies = self.pending_copies.entry(client.clone()).or_default();
        let pending = match copies.entry(seq) {
            btree_map::Entry::Occupied(entry) => entry.into_mut(),
            btree_map::Entry::Vacant(entry) => {
                let row = self.copies.get((client.as_str(), seq))?;
                let copy = row.map(|value| codec::decode_copy(value.value())).transpose()?;
                entry.insert(PendingCopy { copy, in_table: Some(copy.is_some()) })
            }
        };
        let held = pending.copy.and_then(|c| c.state.packet_id());
        if let Some(id) = copy.state.packet_id().filter(|id| held != Some(*id)) {
            fields.next_packet_id = Some(id.next()).filter(|next| *next != PacketId::MIN);
            *moved = true;
        }
        pending.copy = Some(*copy);
        Ok(())
    }

    fn drop_copy(&mut self, client: &ClientId, seq: u64) {
        self.pending_copies
            .entry(client.clone())
            .or_default()
            .entry(seq)
            .and_modify(|pending| pending.copy = None)
            .or_insert(PendingCopy { copy: None, in_table: None });
    }

    fn last_batch(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get(LAST_BATCH)?.map(|v| codec::decode_u64(v.value())).transpose()?.unwrap_or(0))
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        self.messages.retain(|_, _| false)?;
        self.retained.retain(|_, _| false)?;
        self.sessions.retain(|_, _| false)?;
        self.subscriptions.retain(|_, _| false)?;
        self.copies.retain(|_, _| false)?;
        self.incoming.retain(|_, _| false)?;
        self.unreleased.retain(|_, _| false)?;
        self.wills.retain(|_, _| false)?;
        self.meta.retain(|_, _| false)?;
        Ok(())
    }

    /// The stored session's fields, if it is stored.
    fn session(&self, client: &str) -> Result<Option<SessionFields>, StoreError> {
        self.sessions.get(client)?.map(|v| codec::decode_session(v.value())).transpose()
    }

    fn has_session(&self, client: &str) -> Result<bool, StoreError> {
        Ok(self.sessions.get(client)?.is_some())
    }

    /// One change, exactly as [`StoredState::apply`] makes it.
    fn apply(&mut self, op: &StoreOp) -> Result<(), StoreError> {
        match op {
            StoreOp::Message { id, message } => {
                self.messages.insert(id.0, codec::encode_message(message).as_slice())?;
            }
            StoreOp::DropMessage { id } => {
                self.messages.remove(id.0)?;
            }
            StoreOp::Retain { topic, message } => {
                self.retained.insert(topic.as_str(), codec::encode_id(*message).as_slice())?;
            }
            StoreOp::DropRetained { topic } => {
                self.retained.remove(topic.as_str())?;
            }
            StoreOp::Session { client, username, offline_since, epoch } => {
                self.flush()?;
                let c = client.as_str();
                let mut fields = self.session(c)?.unwrap_or_default();
                fields.username.clone_from(username);
                fields.offline_since = *offline_since;
                fields.epoch = *epoch;
                self.sessions.insert(c, codec::encode_session(&fields).as_slice())?;
            }
            StoreOp::DropSession { client } => {
                self.flush()?;
                let c = client.as_str();
                if self.sessions.remove(c)?.is_some() {
                    // Every (client, _) key sorts between (c, "") and the
                    // first string after c, which is c followed by U+0000.
                    let after = format!("{c}\0");
                    self.subscriptions.retain_in((c, "")..(after.as_str(), ""), |_, _| false)?;
                    self.copies.retain_in((c, 0)..=(c, u64::MAX), |_, _| false)?;
                    self.incoming.retain_in((c, 0)..=(c, u16::MAX), |_, _| false)?;
                }
            }
            StoreOp::Subscribe { client, filter, qos } => {
                let c = client.as_str();
                if self.has_session(c)? {
                    self.subscriptions.insert((c, filter.as_str()), codec::encode_qos(*qos).as_slice())?;
                }
            }
            StoreOp::Unsubscribe { client, filter } => {
                // Only a stored session has rows here.
                self.subscriptions.remove((client.as_str(), filter.as_str()))?;
            }
            StoreOp::Copy { client, seq, copy } => self.copy(client, *seq, copy)?,
            StoreOp::DropCopy { client, seq } => self.drop_copy(client, *seq),
            StoreOp::Incoming { client, packet_id, message } => {
                let c = client.as_str();
                if self.has_session(c)? {
                    self.incoming.insert((c, packet_id.get()), codec::encode_incoming(*message).as_slice())?;
                } else if let Some(message) = message {
                    self.unreleased.insert((c, packet_id.get()), codec::encode_id(*message).as_slice())?;
                }
            }
            StoreOp::DropIncoming { client, packet_id } => {
                let key = (client.as_str(), packet_id.get());
                self.incoming.remove(key)?;
                self.unreleased.remove(key)?;
            }
            StoreOp::Will { client, will } => {
                self.wills.insert(client.as_str(), codec::encode_will(will).as_slice())?;
            }
            StoreOp::DropWill { client } => {
                self.wills.remove(client.as_str())?;
            }
            StoreOp::InboxRead { node, run, shard, seq } => {
                let mark = codec::encode_mark(InboxMark { run: *run, seq: *seq });
                self.inbox_read.insert((node.as_str(), *shard), mark.as_slice())?;
            }
        }
        Ok(())
    }
}
