//! culex-conformance: replays the scenarios of `culex-spec` against a
//! broker and says which statements it keeps.
//!
//! Two targets read the same scenario files:
//! - [`CoreTarget`] drives `culex-core` through its
//!   [`Simulation`](culex_core::sim::Simulation) in virtual time: the whole
//!   suite runs in seconds, deterministically, and each run leaves the
//!   core's full transcript (packets, closes with their reasons, presence,
//!   expiry).
//! - [`TcpTarget`] opens real sockets to a running broker (Culex's
//!   binaries, Mosquitto, ...) and waits in real time.
//!
//! [`report`] turns results into the Markdown table of `spec/`.
//!
//! [`model`] is a reference model of a 3.1.1 broker's observable
//! behaviour, and [`differential`] runs operation sequences through the
//! core and the model side by side (see `spec/MODEL.md`).
#![warn(missing_docs)]

use std::fmt;

pub mod core_target;
pub mod differential;
mod matching;
pub mod model;
mod process;
pub mod report;
mod runner;
pub mod tcp;
pub mod transcript;

pub use core_target::CoreTarget;
pub use process::BrokerCommand;
pub use tcp::{TcpOptions, TcpTarget};

/// How one scenario went on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every step held.
    Pass,
    /// A step did not hold.
    Fail {
        /// Its line in the scenario file (0: after the last step).
        line: usize,
        /// The step as written.
        step: String,
        /// What happened instead.
        message: String,
    },
    /// The target cannot run it; the reason says what is missing.
    Skip(String),
}

impl Outcome {
    /// Whether the scenario passed.
    pub fn is_pass(&self) -> bool {
        matches!(self, Self::Pass)
    }

    /// Whether the scenario failed.
    pub fn is_fail(&self) -> bool {
        matches!(self, Self::Fail { .. })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pass => f.write_str("pass"),
            Self::Fail { line: 0, step, message } => write!(f, "FAIL {step}: {message}"),
            Self::Fail { line, step, message } => write!(f, "FAIL at line {line} `{step}`: {message}"),
            Self::Skip(why) => write!(f, "skip: {why}"),
        }
    }
}

/// One scenario run on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The scenario's name.
    pub scenario: String,
    /// How it went.
    pub outcome: Outcome,
    /// What happened, one line per event, stamped with scenario time.
    pub transcript: String,
}
