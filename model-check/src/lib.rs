//! Model checks of the two protocols of Culex that span processes, run
//! with stateright on the core's own code:
//!
//! - [`presence`]: brokers sharing one Redis hash, each running the real
//!   [`PresenceSync`](culex_core::presence::PresenceSync), with Redis
//!   modelled after the presence scripts;
//! - [`persistence`]: a broker with persistence, its store durable up to
//!   some batch, crashing at any point between a publisher and a
//!   persistent subscriber.
//!
//! `spec/MODEL.md` says what each covers, what it leaves out, and how to
//! run the CI bound and the long runs.

pub mod persistence;
pub mod presence;
