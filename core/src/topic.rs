//! Topic names and topic filters (section 4.7): validated on
//! construction, matched without normalisation ([MQTT-4.7.3-4]).

use std::fmt;

use bytestring::ByteString;

use crate::error::Violation;

/// The longest topic name or filter, in bytes: the reach of the two-byte
/// length prefix of a UTF-8 string (section 1.5.3).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// The level separator `/` (section 4.7.1.1).
pub const LEVEL_SEPARATOR: char = '/';

/// The multi-level wildcard `#` (section 4.7.1.2).
pub const MULTI_LEVEL_WILDCARD: &str = "#";

/// The single-level wildcard `+` (section 4.7.1.3).
pub const SINGLE_LEVEL_WILDCARD: &str = "+";

/// A topic name as carried by PUBLISH: non-empty, no wildcards, no U+0000,
/// at most 65,535 bytes. Cloning is a reference-count increment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicName(ByteString);

impl TopicName {
    /// Validates `name` ([MQTT-4.7.3-1], [MQTT-4.7.3-2], [MQTT-4.7.3-3],
    /// [MQTT-3.3.2-2]).
    ///
    /// # Errors
    ///
    /// [`Violation::EmptyTopic`] for an empty name,
    /// [`Violation::BadLength`] above [`MAX_TOPIC_LEN`] bytes,
    /// [`Violation::NullCharacter`] if it contains U+0000 and
    /// [`Violation::WildcardInTopicName`] if it contains `+` or `#`.
    pub fn new(name: impl Into<ByteString>) -> Result<Self, Violation> {
        let name = name.into();
        check_common(&name)?;
        if memchr::memchr2(b'+', b'#', name.as_bytes()).is_some() {
            return Err(Violation::WildcardInTopicName);
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The rest of this name after `prefix`, sharing its bytes; `None`
    /// unless the name starts with `prefix` and goes on past it.
    pub fn strip_prefix(&self, prefix: &str) -> Option<Self> {
        let rest = self.0.strip_prefix(prefix).filter(|rest| !rest.is_empty())?;
        Some(Self(self.0.slice_ref(rest)))
    }

    /// The name as a shared string.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// The underlying shared string.
    pub fn into_inner(self) -> ByteString {
        self.0
    }

    /// Whether the name starts with `$` (not matched by filters that start
    /// with a wildcard, [MQTT-4.7.2-1]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The levels of the name, split at every `/`; empty levels included
    /// (`"/a"` has the levels `""` and `"a"`).
    pub fn levels(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(LEVEL_SEPARATOR)
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TopicName {
    type Error = Violation;

    fn try_from(name: &str) -> Result<Self, Violation> {
        Self::new(name)
    }
}

impl TryFrom<String> for TopicName {
    type Error = Violation;

    fn try_from(name: String) -> Result<Self, Violation> {
        Self::new(name)
    }
}

impl TryFrom<ByteString> for TopicName {
    type Error = Violation;

    fn try_from(name: ByteString) -> Result<Self, Violation> {
        Self::new(name)
    }
}

/// A topic filter as carried by SUBSCRIBE and UNSUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicFilter(ByteString);

impl TopicFilter {
    /// Validates `filter` ([MQTT-4.7.1-2], [MQTT-4.7.1-3], [MQTT-4.7.3-1],
    /// [MQTT-4.7.3-2], [MQTT-4.7.3-3]).
    ///
    /// # Errors
    ///
    /// [`Violation::EmptyTopic`] for an empty filter,
    /// [`Violation::BadLength`] above [`MAX_TOPIC_LEN`] bytes,
    /// [`Violation::NullCharacter`] if it contains U+0000,
    /// [`Violation::MultiLevelWildcard`] if a `#` is not the whole last
    /// level and [`Violation::SingleLevelWildcard`] if a `+` is not a whole
    /// level. With several faults, the first level at fault decides.
    pub fn new(filter: impl Into<ByteString>) -> Result<Self, Violation> {
        let filter = filter.into();
        check_common(&filter)?;
        if memchr::memchr2(b'+', b'#', filter.as_bytes()).is_some() {
            let mut levels = filter.split(LEVEL_SEPARATOR).peekable();
            while let Some(level) = levels.next() {
                if level.contains('#') {
                    if level != MULTI_LEVEL_WILDCARD || levels.peek().is_some() {
                        return Err(Violation::MultiLevelWildcard);
                    }
                } else if level.contains('+') && level != SINGLE_LEVEL_WILDCARD {
                    return Err(Violation::SingleLevelWildcard);
                }
            }
        }
        Ok(Self(filter))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The filter as a shared string.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// The underlying shared string.
    pub fn into_inner(self) -> ByteString {
        self.0
    }

    /// The levels of the filter, split at every `/`; empty levels included.
    /// A wildcard level is exactly `"+"` or `"#"`.
    pub fn levels(&self) -> impl Iterator<Item = &str> + '_ {
        self.0.split(LEVEL_SEPARATOR)
    }

    /// Whether the filter contains `+` or `#`, i.e. may match more than
    /// the one topic name spelled like it.
    pub fn has_wildcards(&self) -> bool {
        memchr::memchr2(b'+', b'#', self.0.as_bytes()).is_some()
    }

    /// Whether the filter starts with a wildcard, so it matches no topic
    /// name that starts with `$` ([MQTT-4.7.2-1]).
    pub fn starts_with_wildcard(&self) -> bool {
        self.0.starts_with(['+', '#'])
    }

    /// Whether `topic` matches this filter (section 4.7, with the `$` rule
    /// of [MQTT-4.7.2-1]). Levels compare byte for byte: no case folding,
    /// no Unicode normalisation, U+FEFF kept ([MQTT-4.7.3-4]). `#` also
    /// matches the parent level (`sport/#` matches `sport`); `+` matches
    /// exactly one level, which may be empty. Does not allocate.
    pub fn matches(&self, topic: &TopicName) -> bool {
        if topic.is_system() && self.starts_with_wildcard() {
            return false;
        }
        let mut filter_levels = self.levels();
        let mut topic_levels = topic.levels();
        loop {
            match (filter_levels.next(), topic_levels.next()) {
                (Some(MULTI_LEVEL_WILDCARD), _) => return true,
                (None, None) => return true,
                (Some(SINGLE_LEVEL_WILDCARD), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                _ => return false,
            }
        }
    }
}

impl From<TopicName> for TopicFilter {
    /// A topic name is a filter matching exactly itself.
    fn from(name: TopicName) -> Self {
        Self(name.0)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for TopicFilter {
    type Error = Violation;

    fn try_from(filter: &str) -> Result<Self, Violation> {
        Self::new(filter)
    }
}

impl TryFrom<String> for TopicFilter {
    type Error = Violation;

    fn try_from(filter: String) -> Result<Self, Violation> {
        Self::new(filter)
    }
}

impl TryFrom<ByteString> for TopicFilter {
    type Error = Violation;

    fn try_from(filter: ByteString) -> Result<Self, Violation> {
        Self::new(filter)
    }
}

/// The rules names and filters share: non-empty, at most
/// [`MAX_TOPIC_LEN`] bytes, no U+0000.
fn check_common(text: &str) -> Result<(), Violation> {
    if text.is_empty() {
        Err(Violation::EmptyTopic)
    } else if text.len() > MAX_TOPIC_LEN {
        Err(Violation::BadLength)
    } else if memchr::memchr(0, text.as_bytes()).is_some() {
        Err(Violation::NullCharacter)
    } else {
        Ok(())
    }
}

/// Splits `rest` at its first `/`: the first level and what follows it,
/// `None` when that level was the last.
pub(crate) fn split_level(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once(LEVEL_SEPARATOR) {
        Some((level, tail)) => (level, Some(tail)),
        None => (rest, None),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;

    /// A topic name the test knows is valid.
    pub(crate) fn name(s: &str) -> TopicName {
        match TopicName::new(s) {
            Ok(n) => n,
            Err(e) => panic!("{s:?} should be a valid topic name: {e}"),
        }
    }

    /// A topic filter the test knows is valid.
    pub(crate) fn filter(s: &str) -> TopicFilter {
        match TopicFilter::new(s) {
            Ok(f) => f,
            Err(e) => panic!("{s:?} should be a valid topic filter: {e}"),
        }
    }

    fn matches(f: &str, t: &str) -> bool {
        filter(f).matches(&name(t))
    }

    #[test]
    fn topic_name_empty_is_rejected() {
        assert_eq!(TopicName::new(""), Err(Violation::EmptyTopic));
    }

    #[test]
    fn topic_name_null_character_is_rejected() {
        assert_eq!(TopicName::new("a\0b"), Err(Violation::NullCharacter));
        assert_eq!(TopicName::new("\0"), Err(Violation::NullCharacter));
    }

    #[test]
    fn topic_name_too_long_is_rejected() {
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(TopicName::new(long), Err(Violation::BadLength));
    }

    #[test]
    fn topic_name_max_length_is_accepted() {
        let max = "a".repeat(MAX_TOPIC_LEN);
        assert_eq!(name(&max).as_str().len(), MAX_TOPIC_LEN);
    }

    #[test]
    fn topic_name_wildcards_are_rejected() {
        for s in ["+", "#", "a/+", "a/#", "a+b", "sport/tennis#", "a/b+/c"] {
            assert_eq!(TopicName::new(s), Err(Violation::WildcardInTopicName), "{s:?}");
        }
    }

    #[test]
    fn topic_name_empty_levels_are_accepted() {
        for s in ["/", "/a", "a/", "a//b", "//", " ", "$SYS/x", "$"] {
            assert_eq!(name(s).as_str(), s);
        }
    }

    #[test]
    fn topic_name_byte_order_mark_is_kept() {
        let t = name("\u{feff}a/\u{feff}");
        assert_eq!(t.as_str(), "\u{feff}a/\u{feff}");
        assert_eq!(t.levels().collect::<Vec<_>>(), ["\u{feff}a", "\u{feff}"]);
    }

    #[test]
    fn topic_name_is_system_dollar_prefix_only() {
        assert!(name("$SYS/x").is_system());
        assert!(name("$").is_system());
        assert!(!name("a/$SYS").is_system());
        assert!(!name("/$SYS").is_system());
    }

    #[test]
    fn topic_name_conversions_round_trip() {
        let t = TopicName::try_from("a/b").ok();
        assert_eq!(t.as_ref().map(TopicName::as_str), Some("a/b"));
        assert_eq!(TopicName::try_from(String::from("")), Err(Violation::EmptyTopic));
        assert_eq!(TopicName::try_from(ByteString::from_static("x/y")).map(|t| t.to_string()), Ok(String::from("x/y")));
        assert_eq!(name("a/b").into_inner(), ByteString::from_static("a/b"));
        assert_eq!(TopicFilter::from(name("a/b")), filter("a/b"), "a topic name is a filter");
    }

    #[test]
    fn topic_filter_empty_is_rejected() {
        assert_eq!(TopicFilter::new(""), Err(Violation::EmptyTopic));
    }

    #[test]
    fn topic_filter_null_character_is_rejected() {
        assert_eq!(TopicFilter::new("a/\0"), Err(Violation::NullCharacter));
        assert_eq!(TopicFilter::new("#\0"), Err(Violation::NullCharacter));
    }

    #[test]
    fn topic_filter_too_long_is_rejected() {
        let long = "+/".repeat(MAX_TOPIC_LEN / 2 + 1);
        assert_eq!(TopicFilter::new(long), Err(Violation::BadLength));
    }

    #[test]
    fn topic_filter_valid_wildcards_are_accepted() {
        for s in [
            "#",
            "+",
            "+/+",
            "/+",
            "+/",
            "sport/#",
            "sport/+",
            "sport/tennis/#",
            "sport/+/player1",
            "+/tennis/#",
            "/#",
            "//#",
            "+/#",
            "a//+//#",
            "$SYS/#",
        ] {
            assert_eq!(filter(s).as_str(), s);
        }
    }

    #[test]
    fn topic_filter_misplaced_multi_level_wildcard_is_rejected() {
        for s in ["sport/tennis#", "sport/tennis/#/ranking", "#/", "#/a", "a#", "##", "a/#b", "#+", "a/#/#"] {
            assert_eq!(TopicFilter::new(s), Err(Violation::MultiLevelWildcard), "{s:?}");
        }
    }

    #[test]
    fn topic_filter_partial_single_level_wildcard_is_rejected() {
        for s in ["sport+", "a/b+", "+a", "++", "a/+b/c", "+/a+/#"] {
            assert_eq!(TopicFilter::new(s), Err(Violation::SingleLevelWildcard), "{s:?}");
        }
    }

    #[test]
    fn topic_filter_first_faulty_level_decides_violation() {
        assert_eq!(TopicFilter::new("a+/#b"), Err(Violation::SingleLevelWildcard));
        assert_eq!(TopicFilter::new("#/a+"), Err(Violation::MultiLevelWildcard));
    }

    #[test]
    fn topic_filter_has_wildcards_detects_plus_and_hash() {
        assert!(filter("a/+").has_wildcards());
        assert!(filter("#").has_wildcards());
        assert!(!filter("a/b").has_wildcards());
        assert!(filter("+/a").starts_with_wildcard());
        assert!(filter("#").starts_with_wildcard());
        assert!(!filter("a/#").starts_with_wildcard());
    }

    #[test]
    fn topic_filter_levels_include_empty_levels() {
        assert_eq!(filter("/+//#").levels().collect::<Vec<_>>(), ["", "+", "", "#"]);
    }

    #[test]
    fn matches_multi_level_spec_examples_match() {
        for t in ["sport/tennis/player1", "sport/tennis/player1/ranking", "sport/tennis/player1/score/wimbledon"] {
            assert!(matches("sport/tennis/player1/#", t), "{t:?}");
        }
        assert!(matches("sport/#", "sport"));
        assert!(matches("sport/#", "sport/"));
        assert!(matches("#", "sport"));
        assert!(matches("#", "/"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/player1/#", "sport/tennis"));
    }

    #[test]
    fn matches_single_level_spec_examples_match() {
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("+", "finance"));
        assert!(matches("+/tennis/#", "sport/tennis/player1"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
    }

    #[test]
    fn matches_empty_levels_are_levels() {
        assert!(matches("a//b", "a//b"));
        assert!(!matches("a//b", "a/b"));
        assert!(matches("a/+/b", "a//b"));
        assert!(matches("+/+", "/"));
        assert!(!matches("+", "/"));
        assert!(matches("/", "/"));
        assert!(!matches("/a", "a"));
        assert!(!matches("a/", "a"));
        assert!(matches("a/#", "a/"));
    }

    #[test]
    fn matches_dollar_topics_wildcard_first_level_no_match() {
        assert!(!matches("#", "$SYS/x"));
        assert!(!matches("#", "$SYS"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$"));
        assert!(!matches("+/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/+/Clients", "$SYS/monitor/Clients"));
        assert!(matches("a/+", "a/$b"));
        assert!(matches("#", "a/$b"));
    }

    #[test]
    fn matches_case_differs_no_match() {
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(!matches("sport/Tennis/+", "sport/tennis/x"));
        assert!(matches("Accounts", "Accounts"));
    }

    #[test]
    fn matches_byte_order_mark_is_significant() {
        assert!(!matches("a", "\u{feff}a"));
        assert!(matches("\u{feff}a/+", "\u{feff}a/b"));
        assert!(matches("+/b", "\u{feff}/b"));
    }

    #[test]
    fn matches_no_normalisation_or_trimming() {
        assert!(!matches("caf\u{e9}", "cafe\u{301}"));
        assert!(!matches("a", "a "));
        assert!(!matches(" a", "a"));
    }

    const NAME_LEVELS: [&str; 5] = ["a", "b", "", "$x", "\u{feff}"];

    /// `levels`, unless they spell the empty string (a lone empty level).
    fn non_empty(levels: Vec<&'static str>) -> Option<Vec<&'static str>> {
        (levels.concat().len() + levels.len() > 1).then_some(levels)
    }

    /// A random valid topic name over [`NAME_LEVELS`].
    #[derive(Debug, Clone)]
    pub(crate) struct ArbName(pub(crate) Vec<&'static str>);

    impl ArbName {
        pub(crate) fn topic(&self) -> TopicName {
            name(&self.0.join("/"))
        }
    }

    impl Arbitrary for ArbName {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = 1 + usize::arbitrary(g) % 4;
            Self(
                non_empty((0..n).map(|_| *g.choose(&NAME_LEVELS).unwrap_or(&"a")).collect())
                    .unwrap_or_else(|| vec!["a"]),
            )
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            let levels = self.0.clone();
            let n = if levels.len() > 1 { levels.len() } else { 0 };
            Box::new((0..n).map(move |i| {
                let mut l = levels.clone();
                l.remove(i);
                Self(non_empty(l).unwrap_or_else(|| vec!["a"]))
            }))
        }
    }

    /// A random valid topic filter over [`NAME_LEVELS`] plus wildcards.
    #[derive(Debug, Clone)]
    pub(crate) struct ArbFilter(pub(crate) Vec<&'static str>);

    impl ArbFilter {
        pub(crate) fn filter(&self) -> TopicFilter {
            filter(&self.0.join("/"))
        }
    }

    impl Arbitrary for ArbFilter {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = 1 + usize::arbitrary(g) % 4;
            let mut levels: Vec<&'static str> =
                (0..n).map(|_| *g.choose(&["a", "b", "", "$x", "+", "+"]).unwrap_or(&"a")).collect();
            if bool::arbitrary(g)
                && let Some(last) = levels.last_mut()
            {
                *last = "#";
            }
            Self(non_empty(levels).unwrap_or_else(|| vec!["a"]))
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            let levels = self.0.clone();
            let n = if levels.len() > 1 { levels.len() } else { 0 };
            Box::new((0..n).map(move |i| {
                let mut l = levels.clone();
                l.remove(i);
                if let Some(pos) = l.iter().position(|x| *x == "#") {
                    l.truncate(pos + 1);
                }
                Self(non_empty(l).unwrap_or_else(|| vec!["a"]))
            }))
        }
    }

    /// Reference matcher, written from section 4.7 independently of
    /// [`TopicFilter::matches`]: recursive on level slices.
    pub(crate) fn naive_matches(filter: &str, topic: &str) -> bool {
        fn rec(f: &[&str], t: &[&str]) -> bool {
            match (f.split_first(), t.split_first()) {
                (None, None) => true,
                (Some((&"#", [])), _) => true,
                (Some((&"+", fr)), Some((_, tr))) => rec(fr, tr),
                (Some((fl, fr)), Some((tl, tr))) => fl == tl && rec(fr, tr),
                _ => false,
            }
        }
        if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
            return false;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let t: Vec<&str> = topic.split('/').collect();
        rec(&f, &t)
    }

    #[test]
    fn matches_random_filters_agree_with_naive_model() {
        fn prop(f: ArbFilter, t: ArbName) -> bool {
            let (f, t) = (f.filter(), t.topic());
            f.matches(&t) == naive_matches(f.as_str(), t.as_str())
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(ArbFilter, ArbName) -> bool);
    }

    #[test]
    fn new_random_strings_agree_with_rules() {
        fn prop(chars: Vec<u8>) -> bool {
            let alphabet = ['a', '/', '+', '#', '\0', '$'];
            let s: String = chars.iter().take(8).map(|c| alphabet[usize::from(*c) % alphabet.len()]).collect();
            let levels: Vec<&str> = s.split('/').collect();
            let filter_ok = !s.is_empty()
                && !s.contains('\0')
                && levels.iter().enumerate().all(|(i, l)| {
                    (!l.contains('#') || (*l == "#" && i + 1 == levels.len())) && (!l.contains('+') || *l == "+")
                });
            let name_ok = !s.is_empty() && !s.contains(['\0', '+', '#']);
            TopicFilter::new(s.as_str()).is_ok() == filter_ok && TopicName::new(s.as_str()).is_ok() == name_ok
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(Vec<u8>) -> bool);
    }

    #[test]
    fn split_level_first_level_and_rest() {
        assert_eq!(split_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(split_level("a"), ("a", None));
        assert_eq!(split_level("/"), ("", Some("")));
        assert_eq!(split_level(""), ("", None));
    }
}
