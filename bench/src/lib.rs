//! `culex-load`: an end-to-end load tool for MQTT 3.1.1 brokers, speaking
//! the protocol over raw TCP on the loopback interface with the
//! `culex-core` codec.
//!
//! Each run plays one [`Scenario`] against a broker that is already
//! running and prints exactly one JSON line with the result. Every message
//! carries its publisher, a sequence number and a send timestamp in its
//! payload ([`payload`]), so loss, duplicates and latency are measured
//! where the messages arrive, never assumed. Every loop is bounded both in
//! count and in time: a hard deadline (60 s unless told otherwise) ends a
//! run whatever the broker does, and the result then says `timed_out`.
//!
//! The tool refuses any address that is not a loopback address.

pub mod mqtt;
pub mod options;
pub mod payload;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod stats;

pub use options::{Options, PayloadKind, Scenario};

use std::time::Instant;

use serde_json::{Map, Value};

/// Runs the scenario `options` ask for on a single-threaded tokio runtime
/// and returns its JSON result (one object, printed on one line by the
/// binary). A scenario that cannot run at all (no broker listening, say)
/// still returns an object, with an `error` field.
pub fn run(options: &Options) -> Value {
    let started = Instant::now();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return report::failure(options, &format!("cannot start the tokio runtime: {error}")),
    };
    let mut result = runtime.block_on(scenario::run(options));
    if let Value::Object(fields) = &mut result {
        fields.insert("wall_s".to_owned(), report::secs(started.elapsed()));
    }
    result
}

/// The fields every result starts with: scenario, address, tags.
pub(crate) fn header(options: &Options) -> Map<String, Value> {
    let mut fields = Map::new();
    fields.insert("scenario".to_owned(), Value::from(options.scenario.name()));
    fields.insert("host".to_owned(), Value::from(options.addr.ip().to_string()));
    fields.insert("port".to_owned(), Value::from(options.addr.port()));
    let tags: Map<String, Value> = options.tags.iter().map(|(k, v)| (k.clone(), Value::from(v.clone()))).collect();
    fields.insert("tags".to_owned(), Value::Object(tags));
    fields
}
