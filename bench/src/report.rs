//! Small helpers to build the JSON result.

use std::time::Duration;

use serde_json::Value;

use crate::options::Options;

/// A result for a run that could not happen at all.
pub fn failure(options: &Options, error: &str) -> Value {
    let mut fields = crate::header(options);
    fields.insert("error".to_owned(), Value::from(error));
    Value::Object(fields)
}

/// Seconds with millisecond precision.
pub fn secs(d: Duration) -> Value {
    Value::from((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// `count / d` per second, rounded; null for an empty interval.
pub fn per_sec(count: u64, d: Duration) -> Value {
    let s = d.as_secs_f64();
    if s <= 0.0 { Value::Null } else { Value::from((count as f64 / s).round()) }
}

/// `part / whole` in percent with three decimals; 0 for an empty whole.
pub fn percent(part: u64, whole: u64) -> Value {
    if whole == 0 { Value::from(0.0) } else { Value::from((part as f64 / whole as f64 * 100_000.0).round() / 1000.0) }
}

/// Keeps the first few distinct errors of a run.
#[derive(Debug, Default)]
pub struct Errors {
    first: Vec<String>,
    count: u64,
}

impl Errors {
    /// Most distinct messages kept.
    const KEPT: usize = 5;

    /// Records one error.
    pub fn push(&mut self, error: impl Into<String>) {
        self.count += 1;
        let error = error.into();
        if self.first.len() < Self::KEPT && !self.first.contains(&error) {
            self.first.push(error);
        }
    }

    /// Errors recorded, counting repeats.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Adds every error of `other`.
    pub fn merge(&mut self, other: Self) {
        self.count += other.count.saturating_sub(other.first.len() as u64);
        for e in other.first {
            self.push(e);
        }
    }

    /// The kept messages as a JSON array.
    pub fn to_json(&self) -> Value {
        Value::from(self.first.clone())
    }
}
