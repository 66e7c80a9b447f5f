//! A store in memory: the reference the redb store is checked against,
//! and a store for tests.

use culex_core::persistence::{Restore, StoreBatch, StoredState};

use super::{Store, StoreError, already_committed};

/// A [`Store`] that keeps a [`StoredState`] in memory; nothing survives
/// the process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemStore {
    state: StoredState,
}

impl MemStore {
    /// A store holding `state`.
    pub fn new(state: StoredState) -> Self {
        Self { state }
    }

    /// What it holds.
    pub fn state(&self) -> &StoredState {
        &self.state
    }
}

impl Store for MemStore {
    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.state.clone().replay(sink);
        Ok(())
    }

    fn last_batch(&mut self) -> Result<u64, StoreError> {
        Ok(self.state.last_batch)
    }

    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        for batch in batches {
            if !already_committed(self.state.last_batch, batch.seq) {
                self.state.apply_batch(batch);
            }
        }
        Ok(())
    }

    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.state = state.clone();
        Ok(())
    }

    fn size(&self) -> Option<u64> {
        None
    }
}
