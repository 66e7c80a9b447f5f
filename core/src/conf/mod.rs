//! Mosquitto-compatible configuration: the `mosquitto.conf` file format
//! ([`file`](mod@file)) and the `mosquitto` command line ([`cli`]), both parsed from
//! text so that the tokio and async-std runtimes share one reading of them.
//!
//! The core reads no files. A runtime reads the main file, hands its text
//! to [`parse_with`] and answers `include_dir` through an
//! [`IncludeSource`]; it then lets the command line have its say with
//! [`CliOptions::apply_to`], logs the [`BrokerConf::warnings`] and starts.
//! Every key is described in `docs/config.md`.
//!
//! ```no_run
//! use culex_core::conf::{self, BrokerConf, CliCommand, IncludeSource};
//!
//! /// `include_dir` served from the file system.
//! struct Fs;
//!
//! impl IncludeSource for Fs {
//!     fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
//!         let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
//!         entries
//!             .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()).map_err(|e| e.to_string()))
//!             .collect()
//!     }
//!
//!     fn read_file(&mut self, path: &str) -> Result<String, String> {
//!         std::fs::read_to_string(path).map_err(|e| e.to_string())
//!     }
//! }
//!
//! fn load() -> Result<BrokerConf, String> {
//!     let options = match conf::parse_args(std::env::args()).map_err(|e| e.to_string())? {
//!         CliCommand::Run(options) => options,
//!         CliCommand::Help(text) | CliCommand::Version(text) => {
//!             print!("{text}");
//!             std::process::exit(0);
//!         }
//!     };
//!     let mut broker = match &options.config_file {
//!         Some(path) => {
//!             let text = std::fs::read_to_string(path)
//!                 .map_err(|e| format!("Unable to open config file {path}: {e}"))?;
//!             conf::parse_with(path, &text, &mut Fs).map_err(|e| e.to_string())?
//!         }
//!         None => BrokerConf::default(),
//!     };
//!     options.apply_to(&mut broker);
//!     for warning in &broker.warnings {
//!         eprintln!("Warning: {warning}");
//!     }
//!     Ok(broker)
//! }
//! ```

mod bridges;
pub mod cli;
pub mod file;
mod keys;
mod limits;
mod listener_rules;
mod listeners;
mod logging;
mod persistence;
mod process;
mod redis;
mod security;
#[cfg(test)]
mod testing;
mod timestamp;
pub mod tls;
mod websockets;

pub use bridges::{
    BridgeAddress, BridgeConf, BridgeProtocol, BridgeTls, BridgeTopic, Direction, RestartTimeout, StartType,
};
pub use cli::{CliCommand, CliError, CliOptions, MAX_CLI_PORTS, parse_args};
pub use file::{BrokerConf, ConfError, IncludeSource, NoIncludes, Warning, parse, parse_with};
pub use listeners::{DEFAULT_PORT, ListenerConf, ListenerProtocol, SocketDomain};
pub use logging::{FACILITY_DAEMON, FACILITY_LOCAL0, LogConf, LogDest, LogTypes};
pub use persistence::PersistenceConf;
pub use process::{MAX_SHARDS, ProcessConf, Shards};
pub use redis::{DEFAULT_REDIS_KEY, DEFAULT_REDIS_PORT, RedisConf, Secret};
pub use security::{ListenerAuth, ListenerSecurity};
pub use timestamp::{LocalTime, TimestampFormat};
pub use tls::{CertUsername, Located, TlsConf, TlsVersion};
pub use websockets::WebSocketsConf;
