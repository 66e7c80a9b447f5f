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
//!
//! The clients run on one thread unless `--threads` asks for more; every
//! result says how much CPU the tool used over its timed phase
//! ([`tool_cpu`]), so a rate the tool itself capped is flagged as such.

pub mod mqtt;
pub mod options;
pub mod payload;
pub mod procfs;
pub mod redis_stats;
pub mod report;
pub mod scenario;
pub mod stats;
pub mod tool_cpu;

pub use options::{Options, PayloadKind, Scenario};

use std::time::Instant;

use serde_json::{Map, Value};
use tokio::runtime::{Builder, Runtime};

/// Runs the scenario `options` ask for and returns its JSON result (one
/// object, printed on one line by the binary). The clients run on a
/// current-thread tokio runtime, or with `options.threads` above 1 on a
/// multi-threaded one with that many workers, the scenario itself being
/// one of its tasks. A scenario that cannot run at all (no broker
/// listening, say) still returns an object, with an `error` field.
pub fn run(options: &Options) -> Value {
    let started = Instant::now();
    let runtime = match runtime(options.threads) {
        Ok(runtime) => runtime,
        Err(error) => return report::failure(options, &format!("cannot start the tokio runtime: {error}")),
    };
    let owned = options.clone();
    let scenario = runtime.spawn(async move { scenario::run(&owned).await });
    let mut result = match runtime.block_on(scenario) {
        Ok(result) => result,
        Err(error) => report::failure(options, &format!("the scenario task failed: {error}")),
    };
    if let Value::Object(fields) = &mut result {
        fields.insert("wall_s".to_owned(), report::secs(started.elapsed()));
    }
    result
}

/// The runtime for `threads` threads (see [`run`]).
fn runtime(threads: usize) -> std::io::Result<Runtime> {
    match threads {
        0 | 1 => Builder::new_current_thread().enable_all().build(),
        n => Builder::new_multi_thread().worker_threads(n).enable_all().build(),
    }
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
