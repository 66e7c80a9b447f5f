//! culex-core: the sans-IO heart of the Culex MQTT broker.
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod retained;
pub mod router;
pub mod time;
pub mod topic;
pub mod types;

pub use error::{CloseReason, Violation};
pub use time::{Instant, Now, UnixTime};
pub use types::{ClientId, ConnId, PacketId, Protocol, QoS};
