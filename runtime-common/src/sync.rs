//! `Arc`, `Mutex`, `Condvar` and `AtomicU64` from std, or from loom when
//! model-checking (`--cfg culex_loom`).

#[cfg(culex_loom)]
pub(crate) use loom::sync::atomic::AtomicU64;
#[cfg(culex_loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(culex_loom))]
pub(crate) use std::sync::atomic::AtomicU64;
#[cfg(not(culex_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
