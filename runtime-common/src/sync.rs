//! `Arc` and `Mutex` from std, or from loom when model-checking
//! (`--cfg culex_loom`).

#[cfg(culex_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(culex_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
