//! What the two Culex runtimes share beyond raw I/O: settings, logging,
//! the clock, and what is said to Redis. The protocol itself lives in
//! `culex-core`; socket and timer handling lives in each runtime.

pub mod backlog;
pub mod clock;
pub mod driver;
pub mod logging;
pub mod outbox;
pub mod settings;
mod start;
pub mod store;
mod sync;

pub use backlog::{Admit, Backlog};
pub use clock::Clock;
pub use driver::{Event, EventSource, StoreEvent, StoreRequest, Wake};
pub use outbox::{Out, OutQueue, QueueOutbox};
pub use settings::{Launch, RedisSettings, Settings};
pub use start::start;
