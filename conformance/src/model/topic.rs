//! Topic filters matched against topic names, level by level, as section
//! 4.7 describes them: written for reading, not for speed.

/// Whether `filter` matches `topic`.
///
/// - `#` matches the rest of the topic, the parent level included
///   ([MQTT-4.7.1-2]): `a/#` matches `a`.
/// - `+` matches exactly one level, empty or not ([MQTT-4.7.1-3]).
/// - A filter starting with a wildcard does not match a topic starting
///   with `$` ([MQTT-4.7.2-1]).
/// - Every other level matches only itself, byte for byte.
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let filter: Vec<&str> = filter.split('/').collect();
    let topic: Vec<&str> = topic.split('/').collect();
    levels_match(&filter, &topic)
}

fn levels_match(filter: &[&str], topic: &[&str]) -> bool {
    match (filter.split_first(), topic.split_first()) {
        (Some((&"#", _)), _) => true,
        (Some((&"+", filter_rest)), Some((_, topic_rest))) => levels_match(filter_rest, topic_rest),
        (Some((level, filter_rest)), Some((name, topic_rest))) => {
            level == name && levels_match(filter_rest, topic_rest)
        }
        (None, None) => true,
        (None, Some(_)) | (Some(_), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards_match_levels_and_skip_dollar_topics() {
        assert!(matches("a/#", "a"));
        assert!(matches("a/+", "a/"));
        assert!(!matches("a/+", "a"));
        assert!(matches("+/+", "/b"));
        assert!(!matches("+", "/b"));
        assert!(!matches("#", "$x/a"));
        assert!(!matches("+/a", "$x/a"));
        assert!(matches("$x/#", "$x/a"));
    }
}
