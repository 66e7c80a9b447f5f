//! The `tracing` targets of the log lines Mosquitto selects with a
//! `log_type` of their own rather than by level. The core logs them at
//! info; a runtime shows them only when `log_type` asks for them.

/// `log_type subscribe`: `CLIENT QOS FILTER` for each granted filter.
pub const SUBSCRIBE: &str = "culex::subscribe";

/// `log_type unsubscribe`: `CLIENT FILTER` for each filter removed.
pub const UNSUBSCRIBE: &str = "culex::unsubscribe";
