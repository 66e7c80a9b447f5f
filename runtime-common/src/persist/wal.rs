//! A write-ahead log in front of a [`Store`]: a commit is one write and
//! one `fdatasync` of a small file, where a redb commit writes and syncs
//! several pages; the batches reach the store in bulk, one transaction per
//! `checkpoint_bytes` of log ([`DEFAULT_CHECKPOINT_BYTES`] at start-up; a
//! *checkpoint*), after which the log is emptied.
//!
//! The log is a header (`CULEXWAL`, a format version) and records:
//! `[length: u32][CRC-32 of the body: u32][body]`, the body being the
//! committed batches ([`super::batch_codec`]). A crash can leave the last
//! record torn or half-written: reading stops at the first record that is
//! cut short, fails its CRC, or does not go on from the batches before it,
//! and that tail is cut off before anything is appended. Such a record was
//! never reported durable: its commit had not returned.
//!
//! A batch can be in the log and in the store at once (a crash between a
//! checkpoint and the log being emptied); the store's rule that a batch at
//! or below its last one is already there ([`Store`]) makes replaying it a
//! no-op.

use std::collections::HashSet;
use std::fmt;
use std::hash::BuildHasherDefault;

use culex_core::persistence::{MessageId, Restore, StoreBatch, StoreOp, StoredState};
use culex_core::types::IdHasher;
use redb::{BackendError, StorageBackend};
use tracing::warn;

use super::{Store, StoreError, already_committed, batch_codec};

/// Message ids, hashed as the ids handed out in sequence that they are.
type IdSet = HashSet<MessageId, BuildHasherDefault<IdHasher>>;

/// The log's first bytes.
const MAGIC: &[u8; 8] = b"CULEXWAL";
/// The format this code writes and reads.
const FORMAT: u32 = 1;
/// Magic, format, and four bytes kept zero.
const HEADER: u64 = 16;
/// A record's length and CRC.
const RECORD_HEAD: u64 = 8;
/// Log bytes after which the batches go into the store.
pub const DEFAULT_CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;
/// The log grows by this much of zeros at a time: a record written over
/// bytes already there is synced in about half the time of one that
/// makes the file longer (no allocation to record with it).
const GROWTH: u64 = 1024 * 1024;

/// A [`Store`] whose commits go to a log first (see the module).
pub struct WalStore {
    store: Box<dyn Store>,
    log: Box<dyn StorageBackend>,
    /// Where the next record goes: the end of the valid records.
    end: u64,
    /// The file's length: `end`, then zeros written ahead.
    allocated: u64,
    /// The batches in the log that the store may not hold yet, in order.
    pending: Vec<StoreBatch>,
    /// The last batch committed, to the store or to the log.
    last: u64,
    checkpoint_bytes: u64,
    /// The store's size after the last checkpoint (asking the file system
    /// at every commit would cost a system call each).
    store_size: Option<u64>,
    /// The record being written, kept for the next one.
    record: Vec<u8>,
}

impl fmt::Debug for WalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalStore")
            .field("store", &self.store)
            .field("end", &self.end)
            .field("pending", &self.pending.len())
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

/// A log read and ready for appending, before it is put in front of a
/// store ([`WalStore::new`]).
pub struct OpenLog {
    backend: Box<dyn StorageBackend>,
    end: u64,
    batches: Vec<StoreBatch>,
}

impl fmt::Debug for OpenLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenLog").field("end", &self.end).field("batches", &self.batches.len()).finish_non_exhaustive()
    }
}

impl OpenLog {
    /// Reads the records of `backend` (those a crash left whole), cuts off
    /// a torn tail, and gives a new or empty log its header.
    ///
    /// # Errors
    ///
    /// When it cannot be read or written ([`StoreError::Redb`]), or is not
    /// a log this Culex reads ([`StoreError::Decode`]).
    pub fn open(backend: Box<dyn StorageBackend>) -> Result<Self, StoreError> {
        let (end, records) = read_log(backend.as_ref())?;
        if end == 0 {
            start_log(backend.as_ref())?;
        } else if backend.len().map_err(io)? > end {
            // A torn tail: appending after it would hide what follows.
            backend.set_len(end).map_err(io)?;
            backend.sync_data().map_err(io)?;
        }
        Ok(Self { backend, end: end.max(HEADER), batches: records })
    }
}

impl WalStore {
    /// Puts `log` in front of `store`. The log's batches reach the store
    /// at the first [`load_into`](Store::load_into) or checkpoint; those
    /// the store already holds (a crash between a checkpoint and the log
    /// being emptied) are skipped by their numbers then.
    pub fn new(store: Box<dyn Store>, log: OpenLog, checkpoint_bytes: u64) -> Self {
        let store_size = store.size();
        Self {
            store,
            log: log.backend,
            end: log.end,
            allocated: log.end,
            last: log.batches.last().map_or(0, |b| b.seq),
            pending: log.batches,
            checkpoint_bytes,
            store_size,
            record: Vec::new(),
        }
    }

    /// Moves the logged batches into the store and empties the log.
    ///
    /// # Errors
    ///
    /// When the store's commit fails; the log keeps the batches.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if !self.pending.is_empty() {
            // A log found at start may hold batches the store has (a crash
            // between a checkpoint and the log being emptied): they must
            // not pair a body they stored with a later drop.
            let stored = self.store.last_batch()?;
            self.pending.retain(|b| !already_committed(stored, b.seq));
            // Kept as it is if the commit fails: the same state, for less.
            drop_passing_messages(&mut self.pending);
            self.store.commit(&self.pending)?;
            self.pending.clear();
            self.store_size = self.store.size();
        }
        // Emptied only once the store has them; a crash before the sync
        // leaves records the store already holds, skipped by their numbers.
        self.log.set_len(HEADER).map_err(io)?;
        self.log.sync_data().map_err(io)?;
        self.end = HEADER;
        self.allocated = HEADER;
        Ok(())
    }

    fn append(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        // One buffer for every record: no allocation per commit.
        let head = RECORD_HEAD as usize;
        let record = &mut self.record;
        record.clear();
        record.resize(head, 0);
        batch_codec::encode_into(batches, record);
        let len = u32::try_from(record.len() - head).map_err(|_| log_error("a commit of more than 4 GiB"))?;
        let crc = crc32(&record[head..]);
        record[..4].copy_from_slice(&len.to_be_bytes());
        record[4..head].copy_from_slice(&crc.to_be_bytes());
        let record_end = self.end + record.len() as u64;
        if record_end > self.allocated {
            // Reading stops at the zeros (a record is never empty); the
            // record's sync below makes them durable too.
            let grown = record_end.max(self.allocated + GROWTH);
            let zeros = vec![0; usize::try_from(grown - self.allocated).unwrap_or(0)];
            self.log.write(self.allocated, &zeros).map_err(io)?;
            self.allocated = grown;
        }
        // On failure `end` stays: the next record overwrites this one.
        self.log.write(self.end, &self.record).map_err(io)?;
        self.log.sync_data().map_err(io)?;
        self.end = record_end;
        Ok(())
    }
}

impl Store for WalStore {
    /// Checkpoints first, so that the store streams everything; if that
    /// fails, the store's contents with the log's batches applied.
    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return self.store.load_into(sink);
        }
        if let Err(e) = self.checkpoint() {
            warn!("Moving the write-ahead log into the store at start failed, read both instead: {e}");
            let mut state = self.store.load()?;
            for batch in &self.pending {
                if !already_committed(state.last_batch, batch.seq) {
                    state.apply_batch(batch);
                }
            }
            state.replay(sink);
            return Ok(());
        }
        self.store.load_into(sink)
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        let fresh: Vec<StoreBatch> = batches.iter().filter(|b| !already_committed(self.last, b.seq)).cloned().collect();
        let Some(last) = fresh.last().map(|b| b.seq) else { return Ok(()) };
        self.append(&fresh)?;
        self.last = last;
        self.pending.extend(fresh);
        Ok(())
    }

    /// Checkpoints once the log holds `checkpoint_bytes`.
    fn tidy(&mut self) {
        if self.end >= self.checkpoint_bytes
            && let Err(e) = self.checkpoint()
        {
            warn!("Moving the write-ahead log into the store failed, retried after the next commit: {e}");
        }
    }

    /// Empties the log into the store first: the store then takes
    /// `state` whole.
    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.checkpoint()?;
        self.store.replace(state)?;
        self.last = state.last_batch;
        self.store_size = self.store.size();
        Ok(())
    }

    fn last_batch(&mut self) -> Result<u64, StoreError> {
        let logged = self.pending.last().map_or(0, |b| b.seq);
        Ok(self.store.last_batch()?.max(logged))
    }

    fn size(&self) -> Option<u64> {
        self.store_size.map(|size| size + self.end)
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.checkpoint()
    }
}

/// Takes out of `batches` the message bodies that they both store and
/// drop: neither store reads a body between the two (message ids are never
/// reused), so what they hold afterwards is the same, written with less.
/// A steady flow of acknowledged messages mostly passes this way.
fn drop_passing_messages(batches: &mut [StoreBatch]) {
    let mut stored = IdSet::default();
    let mut passing = IdSet::default();
    for op in batches.iter().flat_map(|b| &b.ops) {
        match op {
            StoreOp::Message { id, .. } => {
                stored.insert(*id);
            }
            StoreOp::DropMessage { id } if stored.contains(id) => {
                passing.insert(*id);
            }
            _ => {}
        }
    }
    if passing.is_empty() {
        return;
    }
    for batch in batches {
        batch.ops.retain(|op| match op {
            StoreOp::Message { id, .. } | StoreOp::DropMessage { id } => !passing.contains(id),
            _ => true,
        });
    }
}

/// Whether the log file at `path` holds anything beyond its header (a
/// file that cannot be read counts as holding something).
pub(crate) fn has_records(path: &std::path::Path) -> bool {
    std::fs::metadata(path).map_or(true, |m| m.len() > HEADER)
}

/// Writes the header of an empty log.
fn start_log(log: &dyn StorageBackend) -> Result<(), StoreError> {
    let mut header = [0; HEADER as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT.to_be_bytes());
    log.set_len(0).map_err(io)?;
    log.write(0, &header).map_err(io)?;
    log.sync_data().map_err(io)
}

/// The end of the valid records (0 for a log without a complete header)
/// and their batches.
fn read_log(log: &dyn StorageBackend) -> Result<(u64, Vec<StoreBatch>), StoreError> {
    let len = log.len().map_err(io)?;
    if len < HEADER {
        // Nothing was ever appended: records follow a synced header.
        return Ok((0, Vec::new()));
    }
    let mut header = [0; HEADER as usize];
    log.read(0, &mut header).map_err(io)?;
    if &header[..8] != MAGIC {
        return Err(log_error("not a Culex write-ahead log"));
    }
    let format = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    if format != FORMAT {
        return Err(log_error(&format!("format {format}, this Culex reads {FORMAT}")));
    }
    let mut batches: Vec<StoreBatch> = Vec::new();
    let mut at = HEADER;
    while let Some((body, next)) = record_at(log, at, len)? {
        let Ok(record) = batch_codec::decode(&body) else { break };
        // Records only go forward: one that does not is left over from
        // before the log was last emptied.
        let last_seq = batches.last().map_or(0, |b| b.seq);
        if record.first().is_none_or(|b| b.seq <= last_seq) {
            break;
        }
        batches.extend(record);
        at = next;
    }
    Ok((at, batches))
}

/// The body of the record at `at` and where the next one starts; `None`
/// where no whole record is.
fn record_at(log: &dyn StorageBackend, at: u64, len: u64) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
    if at + RECORD_HEAD > len {
        return Ok(None);
    }
    let mut head = [0; RECORD_HEAD as usize];
    log.read(at, &mut head).map_err(io)?;
    let body_len = u64::from(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
    let crc = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let next = at + RECORD_HEAD + body_len;
    if body_len == 0 || next > len {
        return Ok(None);
    }
    let mut body = vec![0; usize::try_from(body_len).map_err(|_| log_error("a record too large"))?];
    log.read(at + RECORD_HEAD, &mut body).map_err(io)?;
    Ok((crc32(&body) == crc).then_some((body, next)))
}

fn io(e: BackendError) -> StoreError {
    StoreError::Redb(e.into())
}

fn log_error(detail: &str) -> StoreError {
    StoreError::Decode { table: "write-ahead log", detail: detail.to_owned() }
}

/// CRC-32 (IEEE 802.3, as zlib computes it), eight bytes at a step
/// ("slicing by 8"): a record is checksummed at every commit.
fn crc32(bytes: &[u8]) -> u32 {
    const TABLES: [[u32; 256]; 8] = {
        let mut tables = [[0u32; 256]; 8];
        let mut n = 0;
        while n < 256 {
            let mut c = n as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            tables[0][n] = c;
            n += 1;
        }
        let mut t = 1;
        while t < 8 {
            let mut n = 0;
            while n < 256 {
                let prev = tables[t - 1][n];
                tables[t][n] = (prev >> 8) ^ tables[0][(prev & 0xFF) as usize];
                n += 1;
            }
            t += 1;
        }
        tables
    };
    let byte = |crc: u32, b: u8| TABLES[0][((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    let mut crc = !0u32;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        crc = TABLES[7][(lo & 0xFF) as usize]
            ^ TABLES[6][((lo >> 8) & 0xFF) as usize]
            ^ TABLES[5][((lo >> 16) & 0xFF) as usize]
            ^ TABLES[4][(lo >> 24) as usize]
            ^ TABLES[3][usize::from(chunk[4])]
            ^ TABLES[2][usize::from(chunk[5])]
            ^ TABLES[1][usize::from(chunk[6])]
            ^ TABLES[0][usize::from(chunk[7])];
    }
    !chunks.remainder().iter().fold(crc, |crc, &b| byte(crc, b))
}

#[cfg(test)]
mod tests {
    use super::crc32;

    #[test]
    fn crc32_is_zlibs() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"The quick brown fox jumps over the lazy dog"), 0x414F_A339);
    }

    /// Eight bytes at a step give what one at a time gives, at every length
    /// and alignment.
    #[test]
    fn crc32_by_eight_matches_bytewise() {
        fn bytewise(bytes: &[u8]) -> u32 {
            !bytes.iter().fold(!0u32, |mut crc, &b| {
                crc ^= u32::from(b);
                for _ in 0..8 {
                    crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
                }
                crc
            })
        }
        let data: Vec<u8> = (0..300u32).map(|n| (n.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for start in 0..9 {
            for end in start..data.len() {
                assert_eq!(crc32(&data[start..end]), bytewise(&data[start..end]), "{start}..{end}");
            }
        }
    }
}
