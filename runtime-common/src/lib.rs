//! What the two Culex runtimes share beyond raw I/O: settings, logging,
//! the clock, and what is said to Redis. The protocol itself lives in
//! `culex-core`; socket and timer handling lives in each runtime.

pub mod backlog;
pub mod clock;
pub mod logging;
pub mod settings;
pub mod store;
mod sync;

pub use backlog::{Admit, Backlog};
pub use clock::Clock;
pub use settings::{Launch, RedisSettings, Settings};
