//! What the two Culex runtimes share beyond raw I/O: start-up (command
//! line, config file, logging), the broker task, the connection outbox,
//! the clock, what is said to Redis, and how bytes travel below MQTT
//! ([`link`]: TLS with rustls in [`tls`], WebSocket in [`ws`]). The protocol itself lives in
//! `culex-core`; sockets, channels and timers live in each runtime.
//!
//! # State shared between tasks
//!
//! The broker task owns the core, the connection registry and the presence
//! queue outright; other tasks reach them only through channels, so they
//! need no lock and leave nothing for a model checker to interleave.
//! Shutdown is a channel too. The memory two tasks touch is a connection's
//! outbox ([`outbox::channel`]: its queue, its [`Backlog`] and whether to
//! read the socket, under one mutex; the broker task queues and pauses,
//! the connection task writes and reads), and the hand-off to the
//! persistence committer's thread ([`persist::Committer`]: batches, the
//! stop request and "durable up to seq"); their loom models run with
//! `RUSTFLAGS="--cfg culex_loom" cargo test -p culex-runtime --features tokio --release --lib loom`.

pub mod backlog;
pub mod clock;
pub mod cluster;
pub mod descriptors;
pub mod dial;
pub mod driver;
pub mod http_dir;
pub mod link;
mod listen_addresses;
pub mod logging;
pub mod notify;
pub mod outbox;
pub mod persist;
pub mod privileges;
pub mod redis_conn;
pub mod reload;
pub mod reports;
pub mod settings;
pub mod shards;
mod start;
pub mod store;
mod sync;
#[cfg(test)]
mod testing;
pub mod tls;
pub mod ws;

pub use backlog::{Admit, Backlog, Thresholds};
pub use clock::Clock;
pub use driver::{Event, EventSource, StoreEvent, StoreRequest, Wake};
pub use link::{Link, OpenStep, Opening, Transport};
pub use outbox::{Out, OutboxReader, QueueOutbox, Writers};
pub use reload::{ReloadSource, ShutdownOn, Signal, Signals};
pub use reports::{Board, ShardMail, WriterReports};
pub use settings::{Endpoint, Launch, Limits, Listener, Listening, RedisSettings, Settings};
pub use start::start;
