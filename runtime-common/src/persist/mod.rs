//! The persistence store: where the core's [`StoreBatch`]es become durable
//! and where its [`StoredState`] comes from at start.
//!
//! The core emits numbered batches of [`StoreOp`](culex_core::persistence::StoreOp)s and holds
//! the acknowledgements that promise them until it is told they are
//! durable. This module keeps that promise for both runtimes:
//!
//! - [`Store`]: hand everything to a [`Restore`] (the broker's
//!   [`Restorer`](culex_core::Restorer) at start), commit batches
//!   atomically, report the size on disk. [`MemStore`] keeps a [`StoredState`] (tests, and the
//!   reference), [`RedbStore`] a redb 5 file with one table per kind of
//!   record, [`RedisStore`] a cluster node's copy in Redis with one hash
//!   per kind; all give back exactly what [`StoredState::apply_batch`]
//!   would build (wills aside in Redis). [`Mirrored`] commits a node's
//!   file and its copy in Redis together.
//! - [`open_store`]: what start-up calls with the `persistence_*`
//!   settings. It creates a missing store, moves a damaged file aside
//!   (`<file>.corrupt-<unix time>`) and starts empty rather than refusing to
//!   start, and migrates a Mosquitto `mosquitto.db` found at the configured
//!   path (the original is kept as `<file>.mosquitto-<unix time>`). See
//!   [`open`] for the steps and the guarantees at each crash point.
//! - [`Committer`]: a thread that owns the store and commits whatever has
//!   piled up in one transaction (one `fdatasync`), then says "durable up
//!   to seq" through a callback. A failing disk is retried with a bounded
//!   backoff and is never reported durable.

mod batch_codec;
mod codec;
mod committer;
mod handoff;
mod memory;
mod mirrored;
mod null;
mod open;
mod redb_store;
mod redis_store;
mod shared;
#[cfg(test)]
mod tests;
mod wal;

use culex_core::persistence::{Restore, StoreBatch, StoredState};

pub use committer::{Committer, CommitterOptions, Notify};
pub use memory::MemStore;
pub use mirrored::Mirrored;
pub use null::NullStore;
pub use open::{OpenError, Opened, OpenedStore, Outcome, files, import_mosquitto, open, open_store};
pub use redb_store::RedbStore;
pub use redis_store::RedisStore;
pub use shared::SharedCommitter;
pub use wal::{DEFAULT_CHECKPOINT_BYTES, OpenLog, WalStore};

/// Where batches are kept.
///
/// A store's contents are always the result of applying, in order, every
/// batch it committed to an empty [`StoredState`] (or to the state it was
/// created with). A batch numbered at or below the last one committed is
/// taken as already committed and skipped: a retry after a commit whose
/// outcome was unknown must not apply it twice, and applying a batch twice
/// is not always a no-op.
pub trait Store: Send + std::fmt::Debug {
    /// Hands everything committed to `sink`, row by row in the order
    /// [`Restore`] asks for.
    ///
    /// # Errors
    ///
    /// When the store cannot be read or holds what this Culex cannot
    /// decode; `sink` then holds part of it.
    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError>;

    /// Everything committed, as one [`StoredState`].
    ///
    /// # Errors
    ///
    /// As [`load_into`](Self::load_into).
    fn load(&mut self) -> Result<StoredState, StoreError> {
        let mut state = StoredState::default();
        self.load_into(&mut state)?;
        Ok(state)
    }

    /// The number of the last batch committed (0 for none).
    ///
    /// # Errors
    ///
    /// As [`load_into`](Self::load_into).
    fn last_batch(&mut self) -> Result<u64, StoreError> {
        Ok(self.load()?.last_batch)
    }

    /// Commits `batches`, in order, in one atomic transaction: after a
    /// crash either all of them are there or none.
    ///
    /// # Errors
    ///
    /// When the commit failed; then none of them may be taken as durable.
    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError>;

    /// Makes `state` all it holds, in one atomic commit: at start, a
    /// store found behind another takes the other's contents
    /// ([`Mirrored`]).
    ///
    /// # Errors
    ///
    /// When the commit failed.
    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError>;

    /// Bytes on disk, `None` for a store in memory.
    fn size(&self) -> Option<u64>;

    /// Work that a commit leaves for after its durability was reported:
    /// a [`WalStore`] moves a full log into its main file here, so that the
    /// acknowledgements waiting for the commit do not wait for that too. A
    /// failure loses nothing (the log keeps the batches) and is retried at
    /// the next call.
    fn tidy(&mut self) {}

    /// Called once at shutdown, when every batch handed over is committed:
    /// a store that keeps recent batches apart ([`WalStore`]) moves them
    /// into its main file, so that a stopped broker's store is whole in it.
    ///
    /// # Errors
    ///
    /// When that fails; the batches stay where they were, durable.
    fn close(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Whether a batch numbered `seq` is already in a store whose last batch
/// is `last` (see [`Store`]). Batches are numbered from 1; a batch numbered
/// 0 is never taken as committed.
pub(crate) fn already_committed(last: u64, seq: u64) -> bool {
    seq != 0 && seq <= last
}

/// Why a store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed: I/O, a damaged file, a lock held by another process.
    #[error(transparent)]
    Redb(#[from] redb::Error),
    /// A value this Culex cannot read.
    #[error("the {table} table holds a value that cannot be read: {detail}")]
    Decode {
        /// The table.
        table: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// Redis failed or could not be reached ([`RedisStore`]).
    #[error("Redis failed: {0}")]
    Redis(String),
    /// redb panicked (it may, on a file damaged outside it).
    #[error("redb panicked: {0}")]
    Panic(String),
}

/// redb has one error type per kind of call; all of them become
/// [`redb::Error`].
macro_rules! from_redb {
    ($($error:ty),*) => {$(
        impl From<$error> for StoreError {
            fn from(e: $error) -> Self {
                Self::Redb(e.into())
            }
        }
    )*};
}
from_redb!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// The text of a caught panic.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}
