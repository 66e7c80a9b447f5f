//! Persistence as data: what the broker asks a store to keep, and what a
//! store hands back at start.
//!
//! The core does no I/O. With [`Config::persistence`](crate::Config) on,
//! each drain of [`Broker::poll_action`](crate::Broker::poll_action) that
//! changed durable state ends with one [`Action::Store`](crate::Action)
//! carrying a [`StoreBatch`]: the changes of that turn, numbered. The
//! runtime commits batches in order (several in one transaction if they
//! have piled up) and answers with
//! [`Input::Stored`](crate::Input::Stored) once they are on disk. Until
//! then the packets that promise what a batch holds wait in the core: a
//! PUBACK or PUBREC for a message that is retained or lands in a
//! persistent session, a delivery to a persistent session (its packet id
//! must survive a crash), the SUBACK and UNSUBACK of a persistent session
//! and the CONNACK that creates or resumes one. Traffic that touches only
//! clean sessions never waits.
//!
//! At start the store hands what it holds (the result of applying every
//! committed batch, in order, to an empty [`StoredState`] with
//! [`StoredState::apply`]) to a [`Restorer`](crate::Restorer), row by row
//! through [`Restore`]; [`Broker::restore`](crate::Broker::restore) does
//! the same from a whole [`StoredState`].

mod image;
pub(crate) mod journal;
pub mod mosquitto_db;
mod restore;

pub use image::{CopyState, InboxMark, MessageId, StoreBatch, StoreOp, StoredCopy, StoredSession, StoredState};
pub use restore::{Restore, SessionFields};
