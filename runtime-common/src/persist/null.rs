//! A store that keeps nothing, for a cluster node without `persistence`:
//! its broker journals as a persisting one does, so that a publisher's
//! acknowledgement waits for the other nodes' inboxes (see
//! [`culex_core::shard::nodes`]), and every batch is taken as committed at
//! once.

use culex_core::persistence::{Restore, StoreBatch, StoredState};

use super::{Store, StoreError};

/// A [`Store`] that commits every batch at once and holds nothing.
#[derive(Debug, Default)]
pub struct NullStore {
    last_batch: u64,
}

impl Store for NullStore {
    fn load_into(&mut self, _sink: &mut dyn Restore) -> Result<(), StoreError> {
        Ok(())
    }

    fn last_batch(&mut self) -> Result<u64, StoreError> {
        Ok(self.last_batch)
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        if let Some(last) = batches.iter().map(|batch| batch.seq).max() {
            self.last_batch = self.last_batch.max(last);
        }
        Ok(())
    }

    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.last_batch = state.last_batch;
        Ok(())
    }

    fn size(&self) -> Option<u64> {
        None
    }
}
