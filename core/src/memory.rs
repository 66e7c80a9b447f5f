//! `memory_limit`: the heap the process may hold. The core does no I/O
//! and reads no global state, so the runtime hands it a [`MemoryGauge`]
//! (the binaries count what their allocator holds; a simulation sets the
//! figure itself); without one the limit is never reached.

use std::fmt;

/// How many heap bytes the process holds now.
pub trait MemoryGauge: fmt::Debug + Send + Sync {
    /// Heap bytes held.
    fn in_use(&self) -> usize;
}
