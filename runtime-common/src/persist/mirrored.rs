//! A cluster node's store: its own (a file with `persistence`, or none)
//! and its copy in Redis ([`RedisStore`]), committed together. A batch is
//! durable once both have it, so an acknowledgement waiting for it holds
//! while the node's machine is gone for good (docs/cluster.md).

use std::time::Duration;

use culex_core::persistence::{Restore, StoreBatch, StoredState};
use tracing::{info, warn};

use super::{RedisStore, Store, StoreError};

/// How long a start waits between tries to read Redis.
const RETRY: Duration = Duration::from_secs(1);

/// A node's own store and its copy in Redis (see the module).
#[derive(Debug)]
pub struct Mirrored {
    own: Box<dyn Store>,
    shared: RedisStore,
}

impl Mirrored {
    /// Puts `own`, which holds `own_state`, beside `shared`, and says
    /// which state the node starts from:
    ///
    /// - `own` new (no batch committed: a node without `persistence`, or a
    ///   new file): Redis's, which `own` then takes. A start waits for
    ///   Redis meanwhile, saying so: the node's sessions are there alone.
    /// - else `own`'s; Redis is written again from it if it holds another
    ///   last batch (it lost its data), now or, while it cannot be
    ///   reached, at the first commit.
    ///
    /// # Errors
    ///
    /// When Redis holds what this Culex cannot read, or `own` cannot take
    /// Redis's state.
    pub fn open(
        mut own: Box<dyn Store>,
        own_state: StoredState,
        mut shared: RedisStore,
    ) -> Result<(Self, StoredState), StoreError> {
        let own_is_new = own_state.last_batch == 0;
        let mut waited = false;
        let shared_state = loop {
            match shared.read() {
                Ok(state) => break state,
                Err(e @ StoreError::Decode { .. }) => return Err(e),
                Err(e) if own_is_new => {
                    if !waited {
                        warn!("Waiting for Redis to read this node's sessions: {e}");
                        waited = true;
                    }
                    std::thread::sleep(RETRY);
                }
                Err(e) => {
                    warn!(
                        "Redis cannot be read ({e}): starting from this node's store; Redis gets a copy once it answers."
                    );
                    // Fails while Redis is away; the copy stays due, written
                    // whole at the first commit that reaches Redis.
                    let _ = shared.replace(&own_state);
                    return Ok((Self { own, shared }, own_state));
                }
            }
        };
        if own_is_new {
            if shared_state.last_batch != 0 {
                info!("Read this node's sessions from Redis ({} stored).", shared_state.sessions.len());
                own.replace(&shared_state)?;
            }
            return Ok((Self { own, shared }, shared_state));
        }
        if shared_state.last_batch != own_state.last_batch {
            info!(
                "Redis holds this node's store as of batch {}, the store {}: Redis gets a copy.",
                shared_state.last_batch, own_state.last_batch
            );
            if let Err(e) = shared.replace(&own_state) {
                warn!("Writing this node's store to Redis failed, tried again at the next commit: {e}");
            }
        }
        Ok((Self { own, shared }, own_state))
    }
}

impl Store for Mirrored {
    fn load_into(&mut self, sink: &mut dyn Restore) -> Result<(), StoreError> {
        self.own.load_into(sink)
    }

    fn last_batch(&mut self) -> Result<u64, StoreError> {
        Ok(self.own.last_batch()?.min(self.shared.last_batch()?))
    }

    /// `own` first: a batch it took is skipped there when the commit is
    /// tried again after Redis failed.
    fn commit(&mut self, batches: &[StoreBatch]) -> Result<(), StoreError> {
        self.own.commit(batches)?;
        self.shared.commit(batches)
    }

    fn replace(&mut self, state: &StoredState) -> Result<(), StoreError> {
        self.own.replace(state)?;
        self.shared.replace(state)
    }

    fn size(&self) -> Option<u64> {
        self.own.size()
    }

    fn tidy(&mut self) {
        self.own.tidy();
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.own.close()
    }
}
