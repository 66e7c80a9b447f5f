//! Topics across a bridge, mapped as Mosquitto maps them
//! (`send_publish.c`, `handle_publish.c`): the first `topic` line, in
//! file order, that goes the message's way, has a prefix and whose filter
//! on the message's side matches it, strips that side's prefix (when the
//! topic literally starts with it) and puts the other side's in front.
//! Prefixes join by plain concatenation: no `/` is added.

use crate::conf::{BridgeTopic, Direction};
use crate::topic::{TopicFilter, TopicName};
use crate::types::QoS;

/// Which way a message crosses the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// From this broker to the remote one.
    Out,
    /// From the remote broker to this one.
    In,
}

/// One `topic` line, its filters parsed.
#[derive(Debug, Clone)]
pub(crate) struct Mapping {
    direction: Direction,
    /// What the bridge subscribes to here (`out`, `both`).
    pub(crate) local: TopicFilter,
    /// What it subscribes to on the remote (`in`, `both`).
    pub(crate) remote: TopicFilter,
    local_prefix: String,
    remote_prefix: String,
    /// Both subscriptions' QoS.
    pub(crate) qos: QoS,
}

impl Mapping {
    /// The line's filters, or `None` when they are not valid filters (the
    /// configuration parser refuses such lines first).
    pub(crate) fn new(topic: &BridgeTopic) -> Option<Self> {
        Some(Self {
            direction: topic.direction,
            local: TopicFilter::new(topic.local_filter()).ok()?,
            remote: TopicFilter::new(topic.remote_filter()).ok()?,
            local_prefix: topic.local_prefix.clone(),
            remote_prefix: topic.remote_prefix.clone(),
            qos: topic.qos,
        })
    }

    /// Whether messages cross this line `way`.
    pub(crate) fn goes(&self, way: Way) -> bool {
        matches!((self.direction, way), (Direction::Both, _) | (Direction::Out, Way::Out) | (Direction::In, Way::In))
    }

    fn has_prefix(&self) -> bool {
        !self.local_prefix.is_empty() || !self.remote_prefix.is_empty()
    }
}

/// The name `topic` takes once it crossed `way`; itself when no line with
/// a prefix matches, `None` when the mapped name is not a valid topic
/// (a prefix stripped to nothing).
pub(crate) fn remap(mappings: &[Mapping], way: Way, topic: &TopicName) -> Option<TopicName> {
    let found = mappings.iter().filter(|m| m.goes(way) && m.has_prefix()).find(|m| match way {
        Way::Out => m.local.matches(topic),
        Way::In => m.remote.matches(topic),
    });
    let Some(mapping) = found else { return Some(topic.clone()) };
    let (from, to) = match way {
        Way::Out => (&mapping.local_prefix, &mapping.remote_prefix),
        Way::In => (&mapping.remote_prefix, &mapping.local_prefix),
    };
    let rest = topic.as_str().strip_prefix(from.as_str()).unwrap_or(topic.as_str());
    TopicName::new(format!("{to}{rest}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pattern: &str, direction: Direction, local_prefix: &str, remote_prefix: &str) -> Mapping {
        let topic = BridgeTopic {
            pattern: pattern.to_owned(),
            direction,
            qos: QoS::AtLeastOnce,
            local_prefix: local_prefix.to_owned(),
            remote_prefix: remote_prefix.to_owned(),
        };
        Mapping::new(&topic).expect("valid filters")
    }

    fn mapped(mappings: &[Mapping], way: Way, topic: &str) -> Option<String> {
        let topic = TopicName::new(topic).expect("a valid topic");
        remap(mappings, way, &topic).map(|t| t.as_str().to_owned())
    }

    /// A topic level of letters from a small alphabet (never empty).
    fn level(seed: &[u8]) -> String {
        let mut level: String = seed.iter().map(|b| char::from(b'a' + b % 4)).collect();
        if level.is_empty() {
            level.push('x');
        }
        level
    }

    quickcheck::quickcheck! {
        fn a_both_line_maps_there_and_back(topic: Vec<Vec<u8>>, local: Vec<u8>, remote: Vec<u8>) -> bool {
            let topic: Vec<String> = topic.iter().take(5).map(|l| level(l)).collect();
            let topic = if topic.is_empty() { "t".to_owned() } else { topic.join("/") };
            let (local, remote) = (format!("{}/", level(&local)), format!("{}/", level(&remote)));
            let lines = [line("#", Direction::Both, &local, &remote)];
            let there = mapped(&lines, Way::Out, &format!("{local}{topic}"));
            let back = there.as_deref().and_then(|t| mapped(&lines, Way::In, t));
            there == Some(format!("{remote}{topic}")) && back == Some(format!("{local}{topic}"))
        }
    }

    #[test]
    fn the_man_page_cases() {
        // pattern L/ R/: L/pattern <-> R/pattern.
        let both = [line("sensors/#", Direction::Both, "edge/", "site1/")];
        assert_eq!(mapped(&both, Way::Out, "edge/sensors/t"), Some("site1/sensors/t".into()));
        assert_eq!(mapped(&both, Way::In, "site1/sensors/t"), Some("edge/sensors/t".into()));
        // pattern L/ "": L/pattern -> pattern.
        let out = [line("a/#", Direction::Out, "L/", "")];
        assert_eq!(mapped(&out, Way::Out, "L/a/b"), Some("a/b".into()));
        // pattern "" R/: pattern -> R/pattern.
        let out = [line("a/#", Direction::Out, "", "R/")];
        assert_eq!(mapped(&out, Way::Out, "a/b"), Some("R/a/b".into()));
        // No prefix: unchanged.
        let plain = [line("#", Direction::Both, "", "")];
        assert_eq!(mapped(&plain, Way::Out, "x/y"), Some("x/y".into()));
    }

    #[test]
    fn an_empty_pattern_maps_one_topic_to_another() {
        let one = [line("", Direction::Both, "here/state", "there/state")];
        assert_eq!(mapped(&one, Way::Out, "here/state"), Some("there/state".into()));
        assert_eq!(mapped(&one, Way::In, "there/state"), Some("here/state".into()));
    }

    #[test]
    fn prefixes_are_concatenated_without_a_slash() {
        let out = [line("t/#", Direction::Out, "", "x")];
        assert_eq!(mapped(&out, Way::Out, "t/1"), Some("xt/1".into()));
    }

    #[test]
    fn the_first_matching_line_with_a_prefix_wins_and_direction_counts() {
        let lines = [
            line("a/#", Direction::In, "in/", "r/"),
            line("a/#", Direction::Out, "", ""),
            line("a/#", Direction::Out, "", "first/"),
            line("a/#", Direction::Out, "", "second/"),
        ];
        assert_eq!(mapped(&lines, Way::Out, "a/1"), Some("first/a/1".into()));
        assert_eq!(mapped(&lines, Way::In, "r/a/1"), Some("in/a/1".into()));
    }

    #[test]
    fn a_prefix_with_hash_does_not_map_the_parent_topic_as_in_mosquitto() {
        // The filter `a/b/#` matches `a/b` itself, but `a/b` does not start
        // with the prefix `a/b/`: only the remote prefix is added.
        let lines = [line("#", Direction::Out, "a/b/", "r/")];
        assert_eq!(mapped(&lines, Way::Out, "a/b"), Some("r/a/b".into()));
    }
}
