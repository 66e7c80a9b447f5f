//! Topic names and topic filters (section 4.7): validated on
//! construction, matched without normalisation ([MQTT-4.7.3-4]).

use bytestring::ByteString;

use crate::error::Violation;

/// A topic name as carried by PUBLISH: non-empty, no wildcards, no U+0000,
/// at most 65,535 bytes. Cloning is a reference-count increment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates `name` ([MQTT-4.7.3-1], [MQTT-4.7.3-2], [MQTT-4.7.3-3],
    /// [MQTT-3.3.2-2]).
    pub fn new(name: impl Into<ByteString>) -> Result<Self, Violation> {
        let _ = name.into();
        todo!()
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the name starts with `$` (not matched by filters that start
    /// with a wildcard, [MQTT-4.7.2-1]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }
}

/// A topic filter as carried by SUBSCRIBE and UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates `filter` ([MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1],
    /// [MQTT-4.7.3-2], [MQTT-4.7.3-3]).
    pub fn new(filter: impl Into<ByteString>) -> Result<Self, Violation> {
        let _ = filter.into();
        todo!()
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `topic` matches this filter (section 4.7, with the `$` rule
    /// of [MQTT-4.7.2-1]).
    pub fn matches(&self, topic: &TopicName) -> bool {
        let _ = topic;
        todo!()
    }
}
