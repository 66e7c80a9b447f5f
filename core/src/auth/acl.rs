//! Mosquitto's `acl_file`: which topics a client may publish on, receive
//! from and subscribe to, parsed from text ([`AclFile::parse`]) and asked
//! pure questions ([`AclFile::may_write`], [`AclFile::may_read`],
//! [`AclFile::filter_access`]).
//!
//! Everything below was read in Mosquitto 2.0's `src/security_default.c`
//! (`aclfile__parse`, `add__acl`, `add__acl_pattern`, `acl__find_acls`,
//! `mosquitto_acl_check_default`) and `lib/util_topic.c`
//! (`mosquitto_sub_topic_check`, `mosquitto_topic_matches_sub`), and
//! checked against the Debian build of Mosquitto 2.0.11.
//!
//! # The file
//!
//! The text is read line by line (`\n` ends a line):
//! - Trailing white space (`isspace`: space, `\t`, `\r`, `\n`, `\v`, `\f`)
//!   is dropped. A line whose *first character* is `#` is a comment; an
//!   indented `#` is not (it is an invalid line). Empty lines are skipped.
//! - Words are separated by spaces only: a tab is part of a word, so
//!   `topic\tread\tx` is an invalid line. Leading spaces are allowed.
//! - `topic [read|write|readwrite|deny] TOPIC` adds a rule to the current
//!   section. The access word is optional: a lone word after `topic` is
//!   the topic, with read and write access (so `topic read` grants
//!   `readwrite` on the topic named `read`). The topic is the rest of the
//!   line with surrounding white space trimmed, and may contain spaces.
//!   It must be a valid subscription filter of at most
//!   [`TOPIC_HIERARCHY_LIMIT`] `/` separators; a trailing `# comment` is
//!   part of the topic and makes it invalid.
//! - `pattern [read|write|readwrite|deny] TOPIC` adds a rule for every
//!   client, wherever it stands in the file (also after `user` lines).
//!   In its topic `%c` stands for the client id and `%u` for the user
//!   name, anywhere in a level (`a%cb` works, although mosquitto.conf(5)
//!   asks for whole levels); `%` followed by anything else is a plain `%`.
//!   A pattern without `%c` or `%u` is accepted with a warning
//!   ([`AclFile::warnings`]).
//! - `user NAME` starts the section of the clients that send the user name
//!   `NAME` (the rest of the line, trimmed; it may contain spaces). Two
//!   sections with the same name are one. The `topic` lines before the
//!   first `user` line form the *anonymous* section: they apply to
//!   clients that send no user name, and to no one else.
//! - Any other first word (keywords are case sensitive) is an error, as
//!   are `topic`/`pattern` without a topic, an unknown access word, an
//!   invalid topic and `user` without a name. See [`AclLineError`].
//!
//! An empty file (or one with only comments) denies everything.
//!
//! # The decision ([`AclFile::may_read`] and [`AclFile::may_write`])
//!
//! For a client and a topic name, in this order:
//! 1. The client's section (the anonymous one without a user name, the
//!    section named like its user name otherwise, none if there is no
//!    such section): a matching `deny` rule refuses; otherwise a matching
//!    rule granting the access allows.
//! 2. If the file has patterns and the client id or the user name
//!    contains `+`, `#` or `/`, the access is refused (Mosquitto refuses
//!    `+` and `#`; see *Divergences* for `/`).
//! 3. The patterns (those using `%u` are skipped for clients without a
//!    user name), with the client's id and user name substituted: a
//!    matching `deny` pattern refuses; otherwise a matching pattern
//!    granting the access allows.
//! 4. Anything else is refused.
//!
//! So `deny` wins over grants of the same kind whatever their order in the
//! file, but a grant in the client's section wins over a `deny` pattern.
//! Matching is MQTT's ([`TopicFilter::matches`]): `a/#` matches `a`, and a
//! filter starting with a wildcard matches no topic starting with `$`.
//! `$SYS` and other `$` topics get no other special treatment here.
//!
//! # Subscriptions ([`AclFile::filter_access`])
//!
//! Mosquitto 2.0 grants every SUBSCRIBE and checks each message against
//! [`AclFile::may_read`] at delivery. Culex judges the filter once, at
//! SUBSCRIBE, in three ways:
//! - [`FilterAccess::Whole`]: every topic the filter matches may be read.
//!   Granted; its messages are delivered without a check (the common case,
//!   and the fast one).
//! - [`FilterAccess::Denied`]: no topic the filter matches may be read
//!   (`test/nosubscribe` under `topic deny test/nosubscribe`). Refused with
//!   0x80, where Mosquitto grants a subscription that will never deliver
//!   anything.
//! - [`FilterAccess::Partial`]: anything else (`#` under that same file,
//!   `devices/+/cmd` for a device allowed `devices/%c/#`). Granted, and
//!   each message is checked with [`AclFile::may_read`], as Mosquitto does.
//!
//! *Whole* is a sound under-approximation of "every topic matching the
//! filter may be read", following the order of the decision above:
//! - not whole if a `deny` rule of the client's section *overlaps* the
//!   filter (some topic matches both);
//! - whole if a rule of the section granting read *covers* the filter
//!   (every topic matching the filter matches the rule);
//! - otherwise, if patterns apply (file has patterns, client id and user
//!   name are acceptable): not whole if a `deny` pattern overlaps the
//!   filter, whole if a read pattern covers it;
//! - not whole otherwise.
//!
//! Covering is decided level by level: `#` covers whatever follows, `+`
//! covers `+` or one concrete level, a concrete level covers only itself;
//! a rule starting with a wildcard covers no filter that can match a `$`
//! topic. Every topic matching a whole filter therefore passes
//! [`AclFile::may_read`]: at step 1 it matches no section `deny` (no
//! overlap) and, if the covering rule is in the section, is granted
//! there; if it is a pattern, the topic reaches step 3, matches no `deny`
//! pattern and matches the covering one. A filter readable only through
//! several rules together (`a/b` and `a/+/#` for `a/#`), or through an
//! equivalent spelling (`+/#` for `#`), is judged partial: its messages
//! are checked, none is lost.
//!
//! *Denied* is a sound under-approximation of "no topic matching the
//! filter may be read": for every rule granting read (in the section, or
//! a pattern when patterns apply), the topics matching both it and the
//! filter (a filter again, their *meet*) lie inside one `deny` rule that
//! wins over that grant (a section `deny` wins over both kinds, a `deny`
//! pattern over patterns). A filter unreadable only through several
//! `deny` rules together is judged partial: granted, and nothing is
//! delivered, as in Mosquitto.
//!
//! For a filter without wildcards both judgements agree with `may_read`
//! exactly: such a filter is whole or denied, never partial.
//!
//! # Divergences, on purpose
//! - A client id or user name containing `/` is refused at step 2, like
//!   `+` and `#`. Mosquitto 1.4 refused `/` as well; 2.0.11 substitutes
//!   it, so a client calling itself `alice/inbox` reads `p/alice/inbox/x`
//!   through `pattern read p/%c/#`, inside another client's tree.
//! - A NUL character is an error (Mosquitto reads the line as a C string
//!   and silently loses what follows it). The text must be UTF-8 (a
//!   runtime reading the file with `read_to_string` reports other bytes).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use crate::policy::FilterAccess;
use crate::topic::{LEVEL_SEPARATOR, MULTI_LEVEL_WILDCARD, SINGLE_LEVEL_WILDCARD, TopicFilter, TopicName};

/// The most `/` separators an ACL topic may contain, as Mosquitto's
/// `TOPIC_HIERARCHY_LIMIT`: a topic with more is an invalid ACL topic.
pub const TOPIC_HIERARCHY_LIMIT: usize = 200;

/// The characters that make a client id or user name unfit for patterns.
const REFUSED_IN_PATTERNS: [char; 3] = ['+', '#', LEVEL_SEPARATOR];

/// An ACL file that cannot be used: start-up stops here. Displayed as
/// `file:line: reason`, like [`ConfError`](crate::conf::ConfError).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct AclError {
    /// The file, as given to [`AclFile::parse`].
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub reason: AclLineError,
}

/// What is wrong with a line of an ACL file, in Mosquitto's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclLineError {
    /// The first word (shown) is not `topic`, `pattern` or `user`. This is
    /// also what an indented comment or a tab between words gives.
    #[error("Invalid line in acl_file: {0}")]
    InvalidLine(String),
    /// `topic` or `pattern` with nothing after it.
    #[error("Empty topic in acl_file")]
    EmptyTopic,
    /// The access word (shown) is not `read`, `write`, `readwrite` or
    /// `deny` (case sensitive).
    #[error("Invalid topic access type \"{0}\" in acl_file")]
    InvalidAccess(String),
    /// The topic (shown) is not a valid subscription filter, or has more
    /// than [`TOPIC_HIERARCHY_LIMIT`] levels.
    #[error("Invalid ACL topic \"{0}\" in acl_file")]
    InvalidTopic(String),
    /// `user` with no name after it.
    #[error("Missing username in acl_file")]
    MissingUsername,
    /// The line contains U+0000.
    #[error("NUL character in acl_file")]
    NulCharacter,
}

/// A line Mosquitto accepts but warns about. Displayed as
/// `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclWarning {
    /// The file, as given to [`AclFile::parse`].
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is odd about the line, in Mosquitto's wording.
    pub message: String,
}

impl fmt::Display for AclWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// The access word of a `topic` or `pattern` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Self> {
        match word {
            "read" => Some(Self::Read),
            "write" => Some(Self::Write),
            "readwrite" => Some(Self::ReadWrite),
            "deny" => Some(Self::Deny),
            _ => None,
        }
    }
}

/// The access a check asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Receiving a message (and subscribing).
    Read,
    /// Publishing.
    Write,
}

impl Want {
    fn granted_by(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::Read, Access::Read | Access::ReadWrite) | (Self::Write, Access::Write | Access::ReadWrite)
        )
    }
}

/// A `topic` line.
#[derive(Debug, Clone)]
struct TopicRule {
    access: Access,
    filter: TopicFilter,
}

/// A `pattern` line, split into levels once.
#[derive(Debug, Clone)]
struct PatternRule {
    access: Access,
    levels: Vec<PatternLevel>,
    uses_username: bool,
}

/// One level of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternLevel {
    /// `+`.
    Single,
    /// `#`.
    Multi,
    /// A level without `%c` or `%u`.
    Fixed(String),
    /// A level with at least one `%c` or `%u`.
    Substituted(Vec<Piece>),
}

/// Part of a [`PatternLevel::Substituted`] level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    ClientId,
    Username,
}

/// A parsed `acl_file`. Pure: parsing and every check are computations on
/// the text and their arguments.
///
/// ```
/// use culex_core::auth::acl::AclFile;
/// use culex_core::policy::FilterAccess;
/// use culex_core::{TopicFilter, TopicName};
///
/// let text = "topic read public/#\n\nuser alice\ntopic readwrite alice/#\n\npattern write devices/%c/status\n";
/// let acl = AclFile::parse("/etc/culex/acl", text)?;
/// let topic = |t: &str| TopicName::new(t).map_err(|e| e.to_string());
/// assert!(acl.may_read("c1", None, &topic("public/news")?));
/// assert!(!acl.may_read("c1", Some("alice"), &topic("public/news")?));
/// assert!(acl.may_write("c1", Some("alice"), &topic("alice/x")?));
/// assert!(acl.may_write("d7", None, &topic("devices/d7/status")?));
/// assert!(!acl.may_write("d7", None, &topic("devices/d8/status")?));
/// let filter = |f: &str| TopicFilter::new(f).map_err(|e| e.to_string());
/// assert_eq!(acl.filter_access("c1", Some("alice"), &filter("alice/+/in")?), FilterAccess::Whole);
/// assert_eq!(acl.filter_access("c1", Some("alice"), &filter("#")?), FilterAccess::Partial);
/// assert_eq!(acl.filter_access("c1", Some("alice"), &filter("public/#")?), FilterAccess::Denied);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct AclFile {
    /// The `topic` lines before the first `user` line.
    anonymous: Vec<TopicRule>,
    /// The `topic` lines of each `user` section.
    users: HashMap<String, Vec<TopicRule>>,
    /// Every `pattern` line, in file order.
    patterns: Vec<PatternRule>,
    warnings: Vec<AclWarning>,
}

impl AclFile {
    /// Parses the text of an ACL file, with Mosquitto 2.0's syntax (see
    /// the [module documentation](self)). `path_for_messages` names the
    /// file in errors and warnings.
    ///
    /// # Errors
    ///
    /// The first line Mosquitto would refuse, as an [`AclError`] naming
    /// the file, the line and the [`AclLineError`].
    pub fn parse(path_for_messages: &str, text: &str) -> Result<Self, AclError> {
        let mut acl = Self::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let error = |reason| AclError { file: path_for_messages.to_owned(), line, reason };
            if raw.contains('\0') {
                return Err(error(AclLineError::NulCharacter));
            }
            match parse_line(raw).map_err(error)? {
                Line::Skip => {}
                Line::User(name) => user = Some(name.to_owned()),
                Line::Topic { access, topic } => {
                    let rule = TopicRule { access, filter: acl_filter(topic).map_err(error)? };
                    match &user {
                        None => acl.anonymous.push(rule),
                        Some(name) => acl.users.entry(name.clone()).or_default().push(rule),
                    }
                }
                Line::Pattern { access, topic } => {
                    let filter = acl_filter(topic).map_err(error)?;
                    let levels: Vec<PatternLevel> = filter.levels().map(PatternLevel::parse).collect();
                    let uses_username = levels.iter().any(|l| l.uses(&Piece::Username));
                    if !levels.iter().any(|l| matches!(l, PatternLevel::Substituted(_))) {
                        acl.warnings.push(AclWarning {
                            file: path_for_messages.to_owned(),
                            line,
                            message: format!("ACL pattern '{topic}' does not contain '%c' or '%u'."),
                        });
                    }
                    acl.patterns.push(PatternRule { access, levels, uses_username });
                }
            }
        }
        Ok(acl)
    }

    /// The lines Mosquitto accepts with a warning (a pattern without `%c`
    /// or `%u`), for the runtime to log.
    pub fn warnings(&self) -> &[AclWarning] {
        &self.warnings
    }

    /// Whether the client may publish on `topic`: a refused PUBLISH is
    /// acknowledged and dropped.
    pub fn may_write(&self, client_id: &str, username: Option<&str>, topic: &TopicName) -> bool {
        self.may(Want::Write, client_id, username, topic)
    }

    /// Whether a message on `topic` may be delivered to the client (checked
    /// for each message, retained ones included).
    pub fn may_read(&self, client_id: &str, username: Option<&str>, topic: &TopicName) -> bool {
        self.may(Want::Read, client_id, username, topic)
    }

    /// How much of what `filter` matches the client may read: whole,
    /// partly or not at all (see the [module
    /// documentation](self#subscriptions-aclfilefilter_access)). Decides
    /// the SUBACK and whether the subscription's messages are checked with
    /// [`AclFile::may_read`].
    pub fn filter_access(&self, client_id: &str, username: Option<&str>, filter: &TopicFilter) -> FilterAccess {
        if self.reads_all(client_id, username, filter) {
            FilterAccess::Whole
        } else if self.reads_none(client_id, username, filter) {
            FilterAccess::Denied
        } else {
            FilterAccess::Partial
        }
    }

    /// Whether every topic matching `filter` may surely be read.
    fn reads_all(&self, client_id: &str, username: Option<&str>, filter: &TopicFilter) -> bool {
        let section = self.section(username).unwrap_or_default();
        if section.iter().any(|r| r.access == Access::Deny && overlaps(r.filter.levels(), filter.levels())) {
            return false;
        }
        if section.iter().any(|r| Want::Read.granted_by(r.access) && covers(r.filter.levels(), filter.levels())) {
            return true;
        }
        let Some(patterns) = self.expanded_patterns(client_id, username) else { return false };
        if patterns.iter().any(|(a, l)| *a == Access::Deny && overlaps(l.iter().map(|c| &**c), filter.levels())) {
            return false;
        }
        patterns.iter().any(|(a, l)| Want::Read.granted_by(*a) && covers(l.iter().map(|c| &**c), filter.levels()))
    }

    /// Whether no topic matching `filter` may surely be read: whatever
    /// each read grant shares with the filter lies inside one `deny` that
    /// wins over that grant.
    fn reads_none(&self, client_id: &str, username: Option<&str>, filter: &TopicFilter) -> bool {
        let filter: Vec<&str> = filter.levels().collect();
        let section = self.section(username).unwrap_or_default();
        let section_denies: Vec<Vec<&str>> =
            section.iter().filter(|r| r.access == Access::Deny).map(|r| r.filter.levels().collect()).collect();
        let denied = |grant: &[&str], denies: &[Vec<&str>]| match meet(grant, &filter) {
            None => true,
            Some(common) => denies.iter().any(|deny| covers(deny.iter().copied(), common.iter().copied())),
        };
        let section_grants = section.iter().filter(|r| Want::Read.granted_by(r.access));
        if !section_grants.into_iter().all(|r| denied(&r.filter.levels().collect::<Vec<_>>(), &section_denies)) {
            return false;
        }
        let Some(patterns) = self.expanded_patterns(client_id, username) else { return true };
        let mut denies = section_denies.clone();
        denies
            .extend(patterns.iter().filter(|(a, _)| *a == Access::Deny).map(|(_, l)| l.iter().map(|c| &**c).collect()));
        patterns
            .iter()
            .filter(|(a, _)| Want::Read.granted_by(*a))
            .all(|(_, l)| denied(&l.iter().map(|c| &**c).collect::<Vec<_>>(), &denies))
    }

    /// The patterns with the client's id and user name substituted, those
    /// needing a user name it lacks left out; `None` when no pattern
    /// applies to it (none in the file, or an id or name unfit for them).
    fn expanded_patterns(&self, client_id: &str, username: Option<&str>) -> Option<Vec<(Access, Vec<Cow<'_, str>>)>> {
        if self.patterns.is_empty() || refused_in_patterns(client_id, username) {
            return None;
        }
        Some(self.patterns.iter().filter_map(|p| Some((p.access, p.expand(client_id, username)?))).collect())
    }

    /// The section that applies to a client: the anonymous one without a
    /// user name, the user's own (if any) with one.
    fn section(&self, username: Option<&str>) -> Option<&[TopicRule]> {
        match username {
            None => Some(&self.anonymous),
            Some(name) => self.users.get(name).map(Vec::as_slice),
        }
    }

    /// `mosquitto_acl_check_default`, for one access.
    fn may(&self, want: Want, client_id: &str, username: Option<&str>, topic: &TopicName) -> bool {
        if let Some(section) = self.section(username) {
            if section.iter().any(|r| r.access == Access::Deny && r.filter.matches(topic)) {
                return false;
            }
            if section.iter().any(|r| want.granted_by(r.access) && r.filter.matches(topic)) {
                return true;
            }
        }
        if self.patterns.is_empty() || refused_in_patterns(client_id, username) {
            return false;
        }
        let applicable = || self.patterns.iter().filter(|p| username.is_some() || !p.uses_username);
        if applicable().any(|p| p.access == Access::Deny && p.matches(client_id, username, topic)) {
            return false;
        }
        applicable().any(|p| want.granted_by(p.access) && p.matches(client_id, username, topic))
    }
}

/// Whether a client id or user name keeps the client out of patterns.
fn refused_in_patterns(client_id: &str, username: Option<&str>) -> bool {
    client_id.contains(REFUSED_IN_PATTERNS) || username.is_some_and(|u| u.contains(REFUSED_IN_PATTERNS))
}

/// What one line of the file says.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    Skip,
    User(&'a str),
    Topic { access: Access, topic: &'a str },
    Pattern { access: Access, topic: &'a str },
}

/// C's `isspace` in the C locale.
fn is_c_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\u{0b}' | '\u{0c}' | '\r')
}

/// `aclfile__parse` for one line: `strtok_r` on spaces for the keyword and
/// the access word, the rest of the line trimmed for the topic or name.
fn parse_line(raw: &str) -> Result<Line<'_>, AclLineError> {
    let line = raw.trim_end_matches(is_c_space);
    if line.starts_with('#') {
        return Ok(Line::Skip);
    }
    let Some((keyword, rest)) = next_word(line) else {
        return Ok(Line::Skip);
    };
    match keyword {
        "topic" | "pattern" => {
            let (access, topic) = match next_word(rest) {
                None => return Err(AclLineError::EmptyTopic),
                Some((word, "")) => (Access::ReadWrite, word),
                Some((word, topic)) => {
                    let access = Access::parse(word).ok_or_else(|| AclLineError::InvalidAccess(word.to_owned()))?;
                    (access, topic.trim_matches(is_c_space))
                }
            };
            Ok(if keyword == "topic" { Line::Topic { access, topic } } else { Line::Pattern { access, topic } })
        }
        "user" => match rest.trim_matches(is_c_space) {
            "" => Err(AclLineError::MissingUsername),
            name => Ok(Line::User(name)),
        },
        _ => Err(AclLineError::InvalidLine(keyword.to_owned())),
    }
}

/// `strtok_r(s, " ")`: skips leading spaces and returns the next word and
/// what follows the space that ended it (empty at the end of the line).
fn next_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start_matches(' ');
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once(' ') {
        Some((word, rest)) => (word, rest),
        None => (s, ""),
    })
}

/// `mosquitto_sub_topic_check` for the topic of a `topic` or `pattern`
/// line.
fn acl_filter(topic: &str) -> Result<TopicFilter, AclLineError> {
    let invalid = || AclLineError::InvalidTopic(topic.to_owned());
    if topic.matches(LEVEL_SEPARATOR).count() > TOPIC_HIERARCHY_LIMIT {
        return Err(invalid());
    }
    TopicFilter::new(topic).map_err(|_| invalid())
}

impl PatternLevel {
    /// Splits a level of a (valid) pattern into text and substitutions,
    /// scanning left to right as `mosquitto_acl_check_default` does: `%c`
    /// and `%u` are substituted, any other `%` is kept.
    fn parse(level: &str) -> Self {
        match level {
            SINGLE_LEVEL_WILDCARD => return Self::Single,
            MULTI_LEVEL_WILDCARD => return Self::Multi,
            _ => {}
        }
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = level;
        while let Some(at) = rest.find('%') {
            text.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let piece = match after.as_bytes().first() {
                Some(b'c') => Piece::ClientId,
                Some(b'u') => Piece::Username,
                _ => {
                    text.push('%');
                    rest = after;
                    continue;
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
            rest = &after[1..];
        }
        if pieces.is_empty() {
            return Self::Fixed(level.to_owned());
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Self::Substituted(pieces)
    }

    fn uses(&self, piece: &Piece) -> bool {
        matches!(self, Self::Substituted(pieces) if pieces.contains(piece))
    }
}

impl PatternRule {
    /// Whether the pattern, with the client's id and user name substituted,
    /// matches `topic` (as [`TopicFilter::matches`], without allocating).
    /// The caller has refused ids and names containing `+`, `#` or `/`, so
    /// a substituted level is one concrete level.
    fn matches(&self, client_id: &str, username: Option<&str>, topic: &TopicName) -> bool {
        if topic.is_system() && matches!(self.levels.first(), Some(PatternLevel::Single | PatternLevel::Multi)) {
            return false;
        }
        let mut levels = self.levels.iter();
        let mut topic_levels = topic.levels();
        loop {
            match (levels.next(), topic_levels.next()) {
                (Some(PatternLevel::Multi), _) | (None, None) => return true,
                (Some(PatternLevel::Single), Some(_)) => {}
                (Some(PatternLevel::Fixed(level)), Some(t)) if level == t => {}
                (Some(PatternLevel::Substituted(pieces)), Some(t)) if spells(pieces, client_id, username, t) => {}
                _ => return false,
            }
        }
    }

    /// The pattern's levels with the client's id and user name substituted;
    /// `None` if it needs a user name the client does not have.
    fn expand<'a>(&'a self, client_id: &str, username: Option<&str>) -> Option<Vec<Cow<'a, str>>> {
        self.levels
            .iter()
            .map(|level| {
                Some(match level {
                    PatternLevel::Single => Cow::Borrowed(SINGLE_LEVEL_WILDCARD),
                    PatternLevel::Multi => Cow::Borrowed(MULTI_LEVEL_WILDCARD),
                    PatternLevel::Fixed(text) => Cow::Borrowed(text.as_str()),
                    PatternLevel::Substituted(pieces) => {
                        let mut text = String::new();
                        for piece in pieces {
                            text.push_str(piece.value(client_id, username)?);
                        }
                        Cow::Owned(text)
                    }
                })
            })
            .collect()
    }
}

impl Piece {
    fn value<'a>(&'a self, client_id: &'a str, username: Option<&'a str>) -> Option<&'a str> {
        match self {
            Self::Text(text) => Some(text),
            Self::ClientId => Some(client_id),
            Self::Username => username,
        }
    }
}

/// Whether `pieces`, substituted, spell exactly `level`.
fn spells(pieces: &[Piece], client_id: &str, username: Option<&str>, level: &str) -> bool {
    let mut rest = level;
    for piece in pieces {
        let Some(tail) = piece.value(client_id, username).and_then(|value| rest.strip_prefix(value)) else {
            return false;
        };
        rest = tail;
    }
    rest.is_empty()
}

fn is_wildcard(level: Option<&&str>) -> bool {
    matches!(level, Some(&(SINGLE_LEVEL_WILDCARD | MULTI_LEVEL_WILDCARD)))
}

fn is_dollar(level: Option<&&str>) -> bool {
    level.is_some_and(|l| l.starts_with('$'))
}

/// Whether every topic name matching the filter with levels `filter` also
/// matches the filter with levels `rule` (both valid filters). `#` covers
/// anything from its level on (the parent level included), `+` covers `+`
/// or a concrete level, a concrete level covers only itself; a rule
/// starting with a wildcard does not cover a filter that can match a `$`
/// topic ([MQTT-4.7.2-1]).
fn covers<'a, 'b>(rule: impl IntoIterator<Item = &'a str>, filter: impl IntoIterator<Item = &'b str>) -> bool {
    let mut rule = rule.into_iter().peekable();
    let mut filter = filter.into_iter().peekable();
    if is_wildcard(rule.peek()) && is_dollar(filter.peek()) {
        return false;
    }
    loop {
        match (rule.next(), filter.next()) {
            (Some(MULTI_LEVEL_WILDCARD), _) | (None, None) => return true,
            (Some(SINGLE_LEVEL_WILDCARD), Some(f)) if f != MULTI_LEVEL_WILDCARD => {}
            (Some(r), Some(f)) if r == f => {}
            _ => return false,
        }
    }
}

/// Whether some topic name matches both filters (given by their levels,
/// both valid filters).
fn overlaps<'a, 'b>(a: impl IntoIterator<Item = &'a str>, b: impl IntoIterator<Item = &'b str>) -> bool {
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    if (is_wildcard(a.peek()) && is_dollar(b.peek())) || (is_wildcard(b.peek()) && is_dollar(a.peek())) {
        return false;
    }
    loop {
        match (a.next(), b.next()) {
            (Some(MULTI_LEVEL_WILDCARD), _) | (_, Some(MULTI_LEVEL_WILDCARD)) | (None, None) => return true,
            (Some(x), Some(y)) if x == y || x == SINGLE_LEVEL_WILDCARD || y == SINGLE_LEVEL_WILDCARD => {}
            _ => return false,
        }
    }
}

/// The levels of the filter matching exactly the topic names that match
/// both `a` and `b` (valid filters), or `None` when no topic matches both.
/// `#` meets whatever follows on the other side (so `a/#` and `a` meet in
/// `a`), `+` meets any one level; a filter starting with a wildcard meets
/// none that can only match a `$` topic ([MQTT-4.7.2-1]).
fn meet<'a>(a: &[&'a str], b: &[&'a str]) -> Option<Vec<&'a str>> {
    if (is_wildcard(a.first()) && is_dollar(b.first())) || (is_wildcard(b.first()) && is_dollar(a.first())) {
        return None;
    }
    let mut common = Vec::with_capacity(a.len().max(b.len()));
    for i in 0.. {
        match (a.get(i), b.get(i)) {
            (Some(&MULTI_LEVEL_WILDCARD), _) => return Some([&common[..], &b[i..]].concat()),
            (_, Some(&MULTI_LEVEL_WILDCARD)) => return Some([&common[..], &a[i..]].concat()),
            (None, None) => break,
            (Some(&SINGLE_LEVEL_WILDCARD), Some(level)) | (Some(level), Some(&SINGLE_LEVEL_WILDCARD)) => {
                common.push(*level);
            }
            (Some(x), Some(y)) if x == y => common.push(*x),
            _ => return None,
        }
    }
    Some(common)
}

#[cfg(test)]
mod tests {
    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use std::collections::BTreeMap;

    use super::*;
    use crate::policy::FilterAccess::{Denied, Partial, Whole};
    use crate::topic::tests::{ArbFilter, filter, naive_matches, name};

    fn acl(text: &str) -> AclFile {
        match AclFile::parse("acl", text) {
            Ok(acl) => acl,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn parse_error(text: &str) -> AclError {
        match AclFile::parse("acl", text) {
            Ok(acl) => panic!("{text:?} should not parse: {acl:?}"),
            Err(e) => e,
        }
    }

    fn reason(text: &str) -> AclLineError {
        parse_error(text).reason
    }

    /// A client: id and user name.
    type Who<'a> = (&'a str, Option<&'a str>);

    const ANON: Who<'static> = ("anon1", None);

    fn can_read(acl: &AclFile, who: Who<'_>, topic: &str) -> bool {
        acl.may_read(who.0, who.1, &name(topic))
    }

    fn can_write(acl: &AclFile, who: Who<'_>, topic: &str) -> bool {
        acl.may_write(who.0, who.1, &name(topic))
    }

    fn access(acl: &AclFile, who: Who<'_>, f: &str) -> FilterAccess {
        acl.filter_access(who.0, who.1, &filter(f))
    }

    // ----- parsing: line types -----

    #[test]
    fn parse_empty_text_denies_everything() {
        for text in ["", "\n", "# only a comment\n\n", "   \n\t\n"] {
            let acl = acl(text);
            assert!(!can_read(&acl, ANON, "x"), "{text:?}");
            assert!(!can_write(&acl, ANON, "x"), "{text:?}");
            assert_eq!(access(&acl, ANON, "x"), Denied, "{text:?}");
            assert!(!can_read(&acl, ("c", Some("u")), "x"), "{text:?}");
        }
    }

    #[test]
    fn parse_comments_and_blank_lines_are_skipped() {
        let acl = acl("# comment\n#topic read hidden\n\n   \n\t\r\ntopic read x\n#\n");
        assert!(can_read(&acl, ANON, "x"));
        assert!(!can_read(&acl, ANON, "hidden"));
    }

    #[test]
    fn parse_topic_without_access_grants_readwrite() {
        let acl = acl("topic x\ntopic  y\n");
        for t in ["x", "y"] {
            assert!(can_read(&acl, ANON, t));
            assert!(can_write(&acl, ANON, t));
        }
    }

    #[test]
    fn parse_access_words_grant_their_access() {
        let acl = acl("topic read r\ntopic write w\ntopic readwrite rw\ntopic readwrite d\ntopic deny d\n");
        assert!(can_read(&acl, ANON, "r") && !can_write(&acl, ANON, "r"));
        assert!(!can_read(&acl, ANON, "w") && can_write(&acl, ANON, "w"));
        assert!(can_read(&acl, ANON, "rw") && can_write(&acl, ANON, "rw"));
        assert!(!can_read(&acl, ANON, "d") && !can_write(&acl, ANON, "d"));
    }

    #[test]
    fn parse_single_word_after_topic_is_the_topic() {
        // `topic read` grants readwrite on the topic named "read".
        let acl = acl("topic read\ntopic deny\n");
        assert!(can_read(&acl, ANON, "read") && can_write(&acl, ANON, "read"));
        assert!(can_read(&acl, ANON, "deny") && can_write(&acl, ANON, "deny"));
    }

    #[test]
    fn parse_topic_is_rest_of_line_trimmed_with_inner_spaces_kept() {
        let acl =
            acl("topic read spaced topic/x\ntopic  read   multi/x \t\r\ntopic read \t tab/x\ntopic read in\tside\n");
        for t in ["spaced topic/x", "multi/x", "tab/x", "in\tside"] {
            assert!(can_read(&acl, ANON, t), "{t:?}");
            assert!(!can_write(&acl, ANON, t), "{t:?}");
        }
        assert!(!can_read(&acl, ANON, "spaced"));
    }

    #[test]
    fn parse_leading_spaces_before_keyword_are_accepted() {
        assert!(can_read(&acl("   topic read x\n"), ANON, "x"));
    }

    #[test]
    fn parse_crlf_and_missing_final_newline_are_accepted() {
        let acl = acl("topic read a\r\nuser u\r\ntopic read b");
        assert!(can_read(&acl, ANON, "a"));
        assert!(can_read(&acl, ("c", Some("u")), "b"));
    }

    #[test]
    fn parse_pattern_without_substitution_warns() {
        let acl = acl("pattern read all/#\npattern read c/%c\npattern read u/%u\n");
        assert_eq!(
            acl.warnings(),
            [AclWarning {
                file: String::from("acl"),
                line: 1,
                message: String::from("ACL pattern 'all/#' does not contain '%c' or '%u'."),
            }]
        );
        assert_eq!(acl.warnings()[0].to_string(), "acl:1: ACL pattern 'all/#' does not contain '%c' or '%u'.");
    }

    // ----- parsing: errors -----

    #[test]
    fn parse_error_names_file_line_and_reason() {
        let e = match AclFile::parse("/etc/culex/acl", "topic read a\n\ntopic bogus x\n") {
            Ok(acl) => panic!("should not parse: {acl:?}"),
            Err(e) => e,
        };
        assert_eq!(e.file, "/etc/culex/acl");
        assert_eq!(e.line, 3);
        assert_eq!(e.reason, AclLineError::InvalidAccess(String::from("bogus")));
        assert_eq!(e.to_string(), "/etc/culex/acl:3: Invalid topic access type \"bogus\" in acl_file");
    }

    #[test]
    fn parse_topic_or_pattern_without_topic_is_empty_topic() {
        for text in ["topic", "topic   ", "pattern", "pattern \t", "topic\n#x\n"] {
            assert_eq!(reason(text), AclLineError::EmptyTopic, "{text:?}");
        }
    }

    #[test]
    fn parse_unknown_access_is_invalid_access() {
        for (text, word) in [("topic bogus x", "bogus"), ("topic READ x", "READ"), ("pattern Read a/%c", "Read")] {
            assert_eq!(reason(text), AclLineError::InvalidAccess(word.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn parse_invalid_filter_is_invalid_topic() {
        for (text, topic) in [
            ("topic read a/#/b", "a/#/b"),
            ("topic a+", "a+"),
            ("pattern read a+", "a+"),
            ("topic read #/", "#/"),
            ("topic read ++", "++"),
            ("pattern read a/%c+/b", "a/%c+/b"),
            ("topic read x # comment", "x # comment"),
            ("topic read x #", "x #"),
        ] {
            assert_eq!(reason(text), AclLineError::InvalidTopic(topic.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn parse_hierarchy_limit_is_200_separators() {
        let at_limit = format!("{}a", "a/".repeat(TOPIC_HIERARCHY_LIMIT));
        assert!(can_read(&acl(&format!("topic read {at_limit}")), ANON, &at_limit));
        let above = format!("{}a", "a/".repeat(TOPIC_HIERARCHY_LIMIT + 1));
        assert_eq!(reason(&format!("topic read {above}")), AclLineError::InvalidTopic(above));
    }

    #[test]
    fn parse_too_long_topic_is_invalid_topic() {
        let long = "a".repeat(crate::topic::MAX_TOPIC_LEN + 1);
        assert_eq!(reason(&format!("topic {long}")), AclLineError::InvalidTopic(long));
    }

    #[test]
    fn parse_unknown_keyword_is_invalid_line() {
        for (text, word) in [("Topic read x", "Topic"), ("foo bar", "foo"), ("USER x", "USER"), ("topics x", "topics")]
        {
            assert_eq!(reason(text), AclLineError::InvalidLine(word.to_owned()), "{text:?}");
        }
    }

    #[test]
    fn parse_indented_comment_is_invalid_line() {
        assert_eq!(reason(" # indented"), AclLineError::InvalidLine(String::from("#")));
        assert_eq!(reason("\t# tab"), AclLineError::InvalidLine(String::from("\t#")));
    }

    #[test]
    fn parse_tab_does_not_separate_words() {
        assert_eq!(reason("topic\tread\tx"), AclLineError::InvalidLine(String::from("topic\tread\tx")));
        assert_eq!(reason("\ttopic read x"), AclLineError::InvalidLine(String::from("\ttopic")));
        assert_eq!(reason("user\tx"), AclLineError::InvalidLine(String::from("user\tx")));
    }

    #[test]
    fn parse_user_without_name_is_missing_username() {
        for text in ["user", "user    ", "user \t", "user x\nuser\n"] {
            assert_eq!(reason(text), AclLineError::MissingUsername, "{text:?}");
        }
        assert_eq!(parse_error("user x\nuser\n").line, 2);
    }

    #[test]
    fn parse_nul_character_is_refused() {
        assert_eq!(reason("topic read a\0b"), AclLineError::NulCharacter);
        assert_eq!(reason("# comment \0"), AclLineError::NulCharacter);
    }

    #[test]
    fn parse_stops_at_first_bad_line() {
        let e = parse_error("topic a\nfoo\ntopic bogus x\n");
        assert_eq!((e.line, e.reason), (2, AclLineError::InvalidLine(String::from("foo"))));
    }

    // ----- sections -----

    #[test]
    fn anonymous_section_applies_to_clients_without_username_only() {
        let acl = acl("topic read anon/#\nuser alice\ntopic read alice/#\n");
        assert!(can_read(&acl, ANON, "anon/x"));
        assert!(!can_read(&acl, ANON, "alice/x"));
        assert!(!can_read(&acl, ("c", Some("alice")), "anon/x"));
        assert!(!can_read(&acl, ("c", Some("bob")), "anon/x"));
    }

    #[test]
    fn user_section_applies_to_that_username_only() {
        let acl = acl("user alice\ntopic read alice/#\nuser bob\ntopic read bob/#\n");
        assert!(can_read(&acl, ("c", Some("alice")), "alice/x"));
        assert!(!can_read(&acl, ("c", Some("alice")), "bob/x"));
        assert!(can_read(&acl, ("c", Some("bob")), "bob/x"));
        assert!(!can_read(&acl, ("alice", None), "alice/x"), "the client id is not the user name");
        assert!(!can_read(&acl, ("c", Some("Alice")), "alice/x"), "user names are case sensitive");
    }

    #[test]
    fn user_sections_with_same_name_merge() {
        let acl = acl("user alice\ntopic read a\nuser bob\ntopic read b\nuser alice\ntopic write c\n");
        let alice = ("c", Some("alice"));
        assert!(can_read(&acl, alice, "a") && can_write(&acl, alice, "c"));
        assert!(!can_read(&acl, alice, "b"));
    }

    #[test]
    fn user_name_is_rest_of_line_trimmed() {
        let acl = acl("user   al ice \t\ntopic read x\n");
        assert!(can_read(&acl, ("c", Some("al ice")), "x"));
        assert!(!can_read(&acl, ("c", Some("al")), "x"));
    }

    #[test]
    fn user_empty_username_is_not_anonymous() {
        let acl = acl("topic read x\npattern read p/%u/#\n");
        assert!(!can_read(&acl, ("c", Some("")), "x"));
        assert!(can_read(&acl, ("c", Some("")), "p//y"), "%u substitutes the empty name");
    }

    #[test]
    fn user_line_without_topics_adds_nothing() {
        let acl = acl("topic read x\nuser alice\n");
        assert!(can_read(&acl, ANON, "x"));
        assert!(!can_read(&acl, ("c", Some("alice")), "x"));
    }

    // ----- deny -----

    #[test]
    fn deny_overrides_grant_in_any_order() {
        let acl = acl("topic deny a/secret\ntopic readwrite a/#\ntopic readwrite b/#\ntopic deny b/secret\n");
        for t in ["a/secret", "b/secret"] {
            assert!(!can_read(&acl, ANON, t) && !can_write(&acl, ANON, t), "{t}");
        }
        assert!(can_read(&acl, ANON, "a/open") && can_write(&acl, ANON, "b/open"));
    }

    #[test]
    fn deny_wildcard_covers_its_matches() {
        let acl = acl("topic readwrite #\ntopic deny +/private/#\n");
        assert!(!can_read(&acl, ANON, "x/private"));
        assert!(!can_write(&acl, ANON, "y/private/z"));
        assert!(can_read(&acl, ANON, "x/public"));
    }

    #[test]
    fn deny_in_section_beats_pattern_grant() {
        let acl = acl("user alice\ntopic deny p/alice/x\npattern readwrite p/%u/#\n");
        let alice = ("c", Some("alice"));
        assert!(!can_read(&acl, alice, "p/alice/x"));
        assert!(can_read(&acl, alice, "p/alice/y"));
    }

    #[test]
    fn deny_pattern_beats_pattern_grant_in_any_order() {
        let acl =
            acl("pattern readwrite p/%u/#\npattern deny p/%u/secret\npattern deny q/%u/secret\npattern read q/%u/#\n");
        let alice = ("c", Some("alice"));
        assert!(!can_read(&acl, alice, "p/alice/secret") && !can_write(&acl, alice, "p/alice/secret"));
        assert!(!can_read(&acl, alice, "q/alice/secret"));
        assert!(can_read(&acl, alice, "p/alice/x") && can_read(&acl, alice, "q/alice/x"));
    }

    #[test]
    fn deny_pattern_loses_to_section_grant() {
        let acl = acl("user alice\ntopic read q/#\npattern deny q/%u\n");
        assert!(can_read(&acl, ("c", Some("alice")), "q/alice"));
        assert!(!can_read(&acl, ("c", Some("bob")), "q/bob"));
    }

    #[test]
    fn deny_alone_grants_nothing() {
        let acl = acl("topic deny a\npattern deny b/%c\n");
        assert!(!can_read(&acl, ANON, "c") && !can_read(&acl, ANON, "b/anon1"));
    }

    // ----- patterns -----

    #[test]
    fn pattern_client_id_is_substituted() {
        let acl = acl("pattern readwrite devices/%c/#\n");
        assert!(can_write(&acl, ("d1", None), "devices/d1/state"));
        assert!(can_read(&acl, ("d1", Some("u")), "devices/d1"));
        assert!(!can_read(&acl, ("d1", None), "devices/d2/state"));
        assert!(!can_read(&acl, ("d1", None), "devices/%c/state"));
    }

    #[test]
    fn pattern_username_is_substituted() {
        let acl = acl("pattern read users/%u/in\n");
        assert!(can_read(&acl, ("c", Some("alice")), "users/alice/in"));
        assert!(!can_read(&acl, ("c", Some("alice")), "users/bob/in"));
        assert!(!can_write(&acl, ("c", Some("alice")), "users/alice/in"));
    }

    #[test]
    fn pattern_with_username_is_skipped_for_anonymous_clients() {
        let acl = acl("pattern read u/%u/#\npattern deny c/%u\npattern read c/#\n");
        assert!(!can_read(&acl, ("c1", None), "u/c1/x"));
        assert!(!can_read(&acl, ("c1", None), "u/%u/x"));
        assert!(can_read(&acl, ("c1", None), "c/anything"), "the deny pattern needs a user name");
    }

    #[test]
    fn pattern_substitutes_inside_a_level_and_repeatedly() {
        let acl = acl("pattern read mid/a%cb\npattern read two/%c-%u/%c\n");
        assert!(can_read(&acl, ("x", None), "mid/axb"));
        assert!(!can_read(&acl, ("x", None), "mid/ab"));
        assert!(can_read(&acl, ("x", Some("y")), "two/x-y/x"));
        assert!(!can_read(&acl, ("x", Some("y")), "two/x-y/y"));
    }

    #[test]
    fn pattern_other_percent_signs_are_kept() {
        let acl = acl("pattern read a/%%c\npattern read b/%x%\npattern read c/100%\n");
        assert!(can_read(&acl, ("id", None), "a/%id"));
        assert!(can_read(&acl, ("id", None), "b/%x%"));
        assert!(can_read(&acl, ("id", None), "c/100%"));
    }

    #[test]
    fn pattern_applies_to_anonymous_and_named_clients() {
        let acl = acl("topic read x\nuser alice\ntopic read y\npattern read all/%c\n");
        assert!(can_read(&acl, ("c1", None), "all/c1"));
        assert!(can_read(&acl, ("c2", Some("alice")), "all/c2"));
        assert!(can_read(&acl, ("c3", Some("nosection")), "all/c3"));
    }

    #[test]
    fn pattern_refuses_client_ids_with_plus_hash_or_slash() {
        let acl = acl("topic read open\npattern read c/%c\npattern read all/#\n");
        for id in ["a+b", "+", "a#", "#", "a/b", "/"] {
            assert!(!can_read(&acl, (id, None), "all/x"), "{id:?}");
            assert!(can_read(&acl, (id, None), "open"), "{id:?}: the section is decided first");
        }
        assert!(!can_read(&acl, ("a/b", None), "c/a/b"));
        assert!(can_read(&acl, ("ab", None), "c/ab"));
    }

    #[test]
    fn pattern_refuses_usernames_with_plus_hash_or_slash() {
        let acl =
            acl("user u+x\ntopic read own/#\nuser s/l\ntopic read own/#\npattern read p/%u/#\npattern read all/#\n");
        for user in ["u+x", "u#", "s/l"] {
            assert!(!can_read(&acl, ("c", Some(user)), "all/x"), "{user:?}");
            assert!(!can_read(&acl, ("c", Some(user)), &format!("p/{}/x", user.replace(['+', '#'], "_"))), "{user:?}");
        }
        assert!(can_read(&acl, ("c", Some("u+x")), "own/a"));
        assert!(can_read(&acl, ("c", Some("s/l")), "own/a"));
    }

    #[test]
    fn pattern_refusal_needs_patterns() {
        let acl = acl("topic read x\n");
        assert!(can_read(&acl, ("a/b", None), "x"));
    }

    // ----- $ topics -----

    #[test]
    fn dollar_topics_match_only_rules_starting_with_dollar() {
        let acl = acl("topic readwrite #\ntopic read $SYS/#\npattern read +/%c\n");
        assert!(can_read(&acl, ANON, "$SYS/broker/uptime"));
        assert!(!can_write(&acl, ANON, "$SYS/broker/uptime"));
        assert!(!can_read(&acl, ANON, "$other/x"));
        assert!(!can_read(&acl, ("anon1", Some("u")), "$x/anon1"), "+ does not match $x");
        assert!(can_write(&acl, ANON, "a/$SYS"));
    }

    #[test]
    fn dollar_pattern_substitution_can_start_with_dollar() {
        let acl = acl("pattern read %c/#\n");
        assert!(can_read(&acl, ("$dev", None), "$dev/x"));
        assert!(!can_read(&acl, ("dev", None), "$dev/x"));
    }

    // ----- subscriptions -----

    #[test]
    fn subscribe_filter_reaching_one_denied_topic_is_granted_and_checked() {
        // Mosquitto's test ACL: everything but one topic.
        let acl = acl("topic deny test/nosubscribe\ntopic readwrite #\n");
        for f in ["#", "+/+", "test/+", "test/#", "+/nosubscribe/#"] {
            assert_eq!(access(&acl, ANON, f), Partial, "{f:?}");
        }
        assert_eq!(access(&acl, ANON, "test/nosubscribe"), Denied);
        assert_eq!(access(&acl, ANON, "test/other"), Whole);
        assert_eq!(access(&acl, ANON, "other/#"), Whole);
        assert!(can_read(&acl, ANON, "test/nosubscribe/x") && !can_read(&acl, ANON, "test/nosubscribe"));
    }

    #[test]
    fn subscribe_device_filter_wider_than_its_own_tree_is_granted_and_checked() {
        let acl = acl("pattern readwrite devices/%c/#\n");
        assert_eq!(access(&acl, ("d1", None), "devices/+/cmd"), Partial);
        assert_eq!(access(&acl, ("d1", None), "devices/d1/cmd"), Whole);
        assert_eq!(access(&acl, ("d1", None), "devices/d2/cmd"), Denied);
        assert_eq!(access(&acl, ("d1", None), "other/+/cmd"), Denied);
    }

    #[test]
    fn subscribe_deny_winning_over_grants_of_either_kind_denies() {
        // A section deny wins over section and pattern grants alike.
        let both = acl("user u\ntopic read a/#\ntopic deny a/#\npattern read a/%c/#\n");
        assert_eq!(access(&both, ("c", Some("u")), "a/+/x"), Denied);
        // A deny pattern wins over a pattern grant only: the section's
        // grant of a/c/x still reads.
        let mixed = acl("user u\ntopic read a/c/x\npattern deny a/%c/#\npattern read a/%c/#\n");
        assert_eq!(access(&mixed, ("c", Some("u")), "a/c/#"), Partial);
        assert_eq!(access(&mixed, ("c", Some("u")), "a/c/y"), Denied);
        // Unreadable only through two denies together: judged partial.
        let split = acl("topic read a/#\ntopic deny a/b\ntopic deny a/+/#\ntopic deny a\n");
        assert_eq!(access(&split, ANON, "a/#"), Partial);
        assert!(["a", "a/b", "a/b/c", "a/x"].iter().all(|t| !can_read(&split, ANON, t)));
    }

    #[test]
    fn subscribe_single_level_grant_covers_same_and_narrower_filters() {
        let acl = acl("topic read sensors/+/temp\n");
        assert_eq!(access(&acl, ANON, "sensors/+/temp"), Whole);
        assert_eq!(access(&acl, ANON, "sensors/a/temp"), Whole);
        assert_eq!(access(&acl, ANON, "sensors/#"), Partial);
        assert_eq!(access(&acl, ANON, "sensors/+/+"), Partial);
        assert_eq!(access(&acl, ANON, "sensors/+/temp/#"), Partial);
        assert_eq!(access(&acl, ANON, "+/a/temp"), Partial);
    }

    #[test]
    fn subscribe_overlapping_deny_is_checked_and_covering_deny_denies() {
        let acl = acl("topic read a/#\ntopic deny a/secret/#\n");
        assert_eq!(access(&acl, ANON, "a/#"), Partial);
        assert_eq!(access(&acl, ANON, "a/+/x"), Partial);
        assert_eq!(access(&acl, ANON, "a/secret"), Denied);
        assert_eq!(access(&acl, ANON, "a/public/#"), Whole);
        assert_eq!(access(&acl, ANON, "a"), Whole);
        assert_eq!(access(&acl, ANON, "a/public"), Whole);
    }

    #[test]
    fn subscribe_multi_level_grant_covers_everything_below_and_parent() {
        let acl = acl("topic read a/#\n");
        for f in ["a", "a/#", "a/+", "a/+/+/#", "a/b/c"] {
            assert_eq!(access(&acl, ANON, f), Whole, "{f:?}");
        }
        for f in ["#", "+", "+/#"] {
            assert_eq!(access(&acl, ANON, f), Partial, "{f:?}");
        }
        for f in ["b/#", "/a/#"] {
            assert_eq!(access(&acl, ANON, f), Denied, "{f:?}");
        }
    }

    #[test]
    fn subscribe_write_only_grant_denies() {
        let acl = acl("topic write a/#\ntopic readwrite b/#\n");
        assert_eq!(access(&acl, ANON, "a/#"), Denied);
        assert_eq!(access(&acl, ANON, "b/#"), Whole);
    }

    #[test]
    fn subscribe_dollar_filters_need_dollar_grants() {
        let all = acl("topic read #\n");
        assert_eq!(access(&all, ANON, "#"), Whole);
        assert_eq!(access(&all, ANON, "+/x"), Whole);
        assert_eq!(access(&all, ANON, "$SYS/#"), Denied);
        let sys = acl("topic read $SYS/#\n");
        assert_eq!(access(&sys, ANON, "$SYS/#"), Whole);
        assert_eq!(access(&sys, ANON, "$SYS/+/uptime"), Whole);
        assert_eq!(access(&sys, ANON, "$other/#"), Denied);
        assert_eq!(access(&sys, ANON, "#"), Denied);
    }

    #[test]
    fn subscribe_wildcard_deny_excluding_dollar_does_not_overlap_dollar_filter() {
        let acl = acl("topic read $SYS/#\ntopic deny #\n");
        assert_eq!(access(&acl, ANON, "$SYS/broker/#"), Whole);
        assert!(!can_read(&acl, ANON, "x"));
    }

    #[test]
    fn subscribe_pattern_grant_covers_own_subtree() {
        let acl = acl("pattern read devices/%c/#\npattern read users/%u/+\n");
        assert_eq!(access(&acl, ("d1", None), "devices/d1/#"), Whole);
        assert_eq!(access(&acl, ("d1", None), "devices/d1/+/state"), Whole);
        assert_eq!(access(&acl, ("d1", None), "devices/+/state"), Partial);
        assert_eq!(access(&acl, ("d1", None), "devices/#"), Partial);
        assert_eq!(access(&acl, ("c", Some("bob")), "users/bob/+"), Whole);
        assert_eq!(access(&acl, ("c", None), "users/bob/+"), Denied);
        assert_eq!(access(&acl, ("c", Some("bob")), "users/+/+"), Partial);
    }

    #[test]
    fn subscribe_pattern_deny_overlap_is_checked() {
        let acl = acl("pattern read d/%c/#\npattern deny d/%c/secret\n");
        assert_eq!(access(&acl, ("x", None), "d/x/#"), Partial);
        assert_eq!(access(&acl, ("x", None), "d/x/open/#"), Whole);
    }

    #[test]
    fn subscribe_section_grant_beats_pattern_deny() {
        let acl = acl("user alice\ntopic read q/#\npattern deny q/%u\n");
        assert_eq!(access(&acl, ("c", Some("alice")), "q/#"), Whole);
        assert_eq!(access(&acl, ("c", Some("bob")), "q/#"), Denied);
    }

    #[test]
    fn subscribe_section_deny_overlap_is_checked_even_with_pattern_grant() {
        let acl = acl("user alice\ntopic deny p/alice/x\npattern read p/%u/#\n");
        assert_eq!(access(&acl, ("c", Some("alice")), "p/alice/#"), Partial);
        assert_eq!(access(&acl, ("c", Some("alice")), "p/alice/y/#"), Whole);
    }

    #[test]
    fn subscribe_refused_pattern_clients_get_no_pattern_grants() {
        let acl = acl("pattern read all/#\n");
        assert_eq!(access(&acl, ("ok", None), "all/#"), Whole);
        for id in ["a+", "a#", "a/b"] {
            assert_eq!(access(&acl, (id, None), "all/#"), Denied, "{id:?}");
        }
    }

    #[test]
    fn subscribe_union_of_grants_is_checked_per_message() {
        // Every topic under a/ is readable, but only through two rules
        // together: not judged whole, so each message is checked.
        let union = acl("topic read a\ntopic read a/+/#\n");
        assert!(can_read(&union, ANON, "a") && can_read(&union, ANON, "a/b") && can_read(&union, ANON, "a/b/c"));
        assert_eq!(access(&union, ANON, "a/#"), Partial);
        // `+/#` matches every topic `#` does, but is not spelled `#`.
        let spelled = acl("topic read +/#\n");
        assert!(can_read(&spelled, ANON, "x"));
        assert_eq!(access(&spelled, ANON, "#"), Partial);
        assert_eq!(access(&spelled, ANON, "a/#"), Whole);
    }

    // ----- covers and overlaps -----

    fn levels(f: &str) -> Vec<&str> {
        f.split('/').collect()
    }

    #[test]
    fn covers_levels_examples() {
        for (rule, f) in [
            ("#", "#"),
            ("#", "a/+/#"),
            ("a/#", "a"),
            ("a/#", "a/#"),
            ("+", "+"),
            ("+", "a"),
            ("+/b", "a/b"),
            ("a", "a"),
            ("#", "+/x"),
            ("$SYS/#", "$SYS/+"),
        ] {
            assert!(covers(levels(rule), levels(f)), "{rule:?} should cover {f:?}");
        }
        for (rule, f) in [
            ("+", "#"),
            ("+/#", "#"),
            ("a", "a/#"),
            ("a", "+"),
            ("a/+", "a"),
            ("a/b", "a/+"),
            ("#", "$SYS/#"),
            ("+/#", "$x"),
            ("a/+/#", "a/#"),
        ] {
            assert!(!covers(levels(rule), levels(f)), "{rule:?} should not cover {f:?}");
        }
    }

    #[test]
    fn overlaps_levels_examples() {
        for (a, b) in [("#", "a"), ("a/#", "a"), ("+/b", "a/+"), ("a/+/c", "a/b/#"), ("$SYS/#", "$SYS"), ("+", "+")] {
            assert!(overlaps(levels(a), levels(b)), "{a:?} and {b:?} should overlap");
            assert!(overlaps(levels(b), levels(a)), "{b:?} and {a:?} should overlap");
        }
        for (a, b) in [("#", "$SYS/#"), ("+/x", "$SYS/x"), ("a", "b"), ("a/+", "a"), ("a/b", "a/b/c"), ("+", "a/b")] {
            assert!(!overlaps(levels(a), levels(b)), "{a:?} and {b:?} should not overlap");
            assert!(!overlaps(levels(b), levels(a)), "{b:?} and {a:?} should not overlap");
        }
    }

    // ----- checked against mosquitto 2.0.11 -----

    /// The ACL file the broker ran with (`password_file` holding admin,
    /// alice, bob, nosec, hashonly, `s/l` and `u+x`; `allow_anonymous
    /// true`). Reads were observed with `mosquitto_sub` while `admin`
    /// published; writes with `admin` subscribed while the client
    /// published.
    const MOSQUITTO_ACL: &str = "\
# anonymous section
topic read anon/r
topic write anon/w
topic anon/rw
topic readwrite anon/d/#
topic deny anon/d/secret
topic write
topic read $foo/#
topic read spaced topic/x
topic  read   multi/x
pattern readwrite p/%u/#
pattern deny p/%u/secret
pattern read c/%c
pattern read all/#
pattern read mid/a%cb

user admin
topic readwrite #
topic readwrite $foo/#

user alice
topic deny alice/private
topic read alice/#
topic read q/#
pattern deny q/%u

user bob
topic write bob/out
user hashonly
topic readwrite #
user alice
topic write alice/merged
topic read trail/x \t
topic read m/+/#
topic read n/#
topic read lit/%c
user u+x
topic read ux/#
";

    const ALICE: Who<'static> = ("al1", Some("alice"));

    #[test]
    fn mosquitto_anonymous_section_grants_per_access_word() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(can_read(&acl, ANON, "anon/r") && !can_write(&acl, ANON, "anon/r"));
        assert!(can_write(&acl, ANON, "anon/w") && !can_read(&acl, ANON, "anon/w"));
        assert!(can_read(&acl, ANON, "anon/rw") && can_write(&acl, ANON, "anon/rw"));
        assert!(can_read(&acl, ANON, "write") && can_write(&acl, ANON, "write"));
        assert!(can_read(&acl, ANON, "$foo/x"));
        assert!(can_read(&acl, ANON, "spaced topic/x"));
        assert!(can_read(&acl, ANON, "multi/x"));
    }

    #[test]
    fn mosquitto_anonymous_deny_after_grant_denies() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(can_read(&acl, ANON, "anon/d/x"));
        assert!(!can_read(&acl, ANON, "anon/d/secret"));
        assert!(!can_write(&acl, ANON, "anon/d/secret"));
    }

    #[test]
    fn mosquitto_anonymous_section_not_for_named_users() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(!can_read(&acl, ALICE, "anon/r"));
        assert!(!can_read(&acl, ("n1", Some("nosec")), "anon/r"));
        assert!(!can_read(&acl, ANON, "ux/a"));
    }

    #[test]
    fn mosquitto_user_section_deny_before_grant_denies() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(can_read(&acl, ALICE, "alice/x"));
        assert!(!can_read(&acl, ALICE, "alice/private"));
        assert!(!can_write(&acl, ALICE, "alice/x"));
        assert!(can_write(&acl, ALICE, "alice/merged"), "the second `user alice` section merges");
        assert!(can_read(&acl, ALICE, "trail/x"));
        assert!(!can_read(&acl, ALICE, "$foo/x"));
        assert!(can_read(&acl, ALICE, "m/x"), "m/+/# matches m/x");
        assert!(can_read(&acl, ALICE, "n"), "n/# matches n");
        assert!(can_read(&acl, ALICE, "lit/%c") && !can_read(&acl, ALICE, "lit/al1"), "no substitution in topic lines");
        let bob = ("b1", Some("bob"));
        assert!(can_write(&acl, bob, "bob/out") && !can_read(&acl, bob, "bob/out"));
        let hashonly = ("h1", Some("hashonly"));
        assert!(can_read(&acl, hashonly, "foo/x") && !can_read(&acl, hashonly, "$foo/x"));
    }

    #[test]
    fn mosquitto_pattern_username_and_client_id() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(can_read(&acl, ALICE, "p/alice/x") && can_write(&acl, ALICE, "p/alice/x"));
        assert!(!can_read(&acl, ALICE, "p/alice/secret"));
        assert!(!can_read(&acl, ALICE, "p/bob/x"));
        assert!(can_read(&acl, ALICE, "all/x"));
        assert!(!can_read(&acl, ANON, "p/anon1/x"), "%u patterns skip anonymous clients");
        assert!(can_read(&acl, ANON, "c/anon1") && !can_read(&acl, ANON, "c/other"));
        assert!(can_read(&acl, ANON, "all/x"));
        assert!(can_read(&acl, ANON, "mid/aanon1b"));
        assert!(can_read(&acl, ("n1", Some("nosec")), "all/x"));
    }

    #[test]
    fn mosquitto_section_grant_beats_pattern_deny() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(can_read(&acl, ALICE, "q/alice"));
        assert!(!can_read(&acl, ("b1", Some("bob")), "q/bob"));
    }

    #[test]
    fn mosquitto_plus_hash_in_id_or_username_refuses_patterns() {
        // checked against mosquitto 2.0.11
        let acl = acl(MOSQUITTO_ACL);
        assert!(can_read(&acl, ("bad#id", None), "anon/r"));
        assert!(!can_read(&acl, ("bad#id", None), "all/x"));
        assert!(!can_read(&acl, ("bad+id", None), "all/x"));
        assert!(can_read(&acl, ("ux1", Some("u+x")), "ux/a"));
        assert!(!can_read(&acl, ("ux1", Some("u+x")), "all/a"));
    }

    #[test]
    fn mosquitto_slash_in_id_or_username_diverges_on_purpose() {
        // checked against mosquitto 2.0.11: it lets the client id "s/l" read
        // all/x, c/s/l and mid/as/lb, and the user "s/l" read p/s/l/x and
        // all/x. Culex refuses them (a `/` would reach into other clients'
        // trees through %c and %u).
        let acl = acl(MOSQUITTO_ACL);
        for t in ["all/x", "c/s/l", "mid/as/lb"] {
            assert!(!can_read(&acl, ("s/l", None), t), "{t}");
        }
        for t in ["p/s/l/x", "all/x"] {
            assert!(!can_read(&acl, ("sl1", Some("s/l")), t), "{t}");
        }
    }

    #[test]
    fn mosquitto_parse_errors_and_accepted_oddities() {
        // checked against mosquitto 2.0.11 (each refused text stops start-up)
        for text in [
            "Topic read x",
            " # indented comment",
            "\t# tab comment",
            "topic\tread\tx",
            "\ttopic read x",
            "foo bar",
            "topic",
            "topic   ",
            "topic bogus x",
            "topic READ x",
            "topic read a/#/b",
            "topic a+",
            "pattern read a+",
            "user",
            "user    ",
            "user\tx",
            "topic read x # comment",
            "topic read #/",
            "topic read ++",
            "pattern read a/%c+/b",
        ] {
            assert!(AclFile::parse("acl", text).is_err(), "{text:?} should be refused");
        }
        for text in [
            "topic read x",
            "  topic read x",
            "\n\n   \n\t\n#c\n",
            "",
            "topic read a b",
            "topic read",
            "topic deny",
            "topic read \t x",
            "topic read x\r\n",
            "pattern deny %%c",
            "topic read +/+/#",
            "topic read x\tz",
        ] {
            assert!(AclFile::parse("acl", text).is_ok(), "{text:?} should be accepted");
        }
    }

    // ----- properties -----

    /// Levels of the generated filters, substitutions and topics.
    const CLIENT_IDS: [&str; 5] = ["c1", "a", "$x", "x/y", "p+"];
    const USERNAMES: [Option<&str>; 6] = [None, Some("u1"), Some("a"), Some(""), Some("q#"), Some("u2")];
    const TOPIC_LEVELS: [&str; 7] = ["a", "b", "", "$x", "z", "c1", "u1"];

    /// A random, valid ACL file over the levels of [`ArbFilter`], with
    /// `%c`/`%u` in patterns and sections for `u1`, `u2` and `a`.
    #[derive(Debug, Clone)]
    struct ArbAcl(Vec<String>);

    impl ArbAcl {
        fn text(&self) -> String {
            self.0.join("\n")
        }
    }

    fn arb_access(g: &mut Gen) -> &'static str {
        g.choose(&["", "read ", "write ", "readwrite ", "deny ", "read "]).copied().unwrap_or("")
    }

    impl Arbitrary for ArbAcl {
        fn arbitrary(g: &mut Gen) -> Self {
            let n = usize::arbitrary(g) % 9;
            let lines = (0..n)
                .map(|_| match u8::arbitrary(g) % 7 {
                    0 => format!("user {}", g.choose(&["u1", "u2", "a"]).copied().unwrap_or("u1")),
                    1..=3 => format!("topic {}{}", arb_access(g), ArbFilter::arbitrary(g).filter()),
                    _ => {
                        let mut levels = ArbFilter::arbitrary(g).0;
                        for level in &mut levels {
                            if *level != "+" && *level != "#" {
                                *level = g.choose(&[*level, *level, "%c", "%u", "x%c"]).copied().unwrap_or(level);
                            }
                        }
                        format!("pattern {}{}", arb_access(g), levels.join("/"))
                    }
                })
                .collect();
            Self(lines)
        }

        fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
            let lines = self.0.clone();
            Box::new((0..lines.len()).map(move |i| {
                let mut l = lines.clone();
                l.remove(i);
                Self(l)
            }))
        }
    }

    /// A random client from [`CLIENT_IDS`] and [`USERNAMES`].
    #[derive(Debug, Clone, Copy)]
    struct ArbClient(&'static str, Option<&'static str>);

    impl Arbitrary for ArbClient {
        fn arbitrary(g: &mut Gen) -> Self {
            Self(g.choose(&CLIENT_IDS).copied().unwrap_or("c1"), g.choose(&USERNAMES).copied().unwrap_or(None))
        }
    }

    /// Every valid topic name of one to four levels over [`TOPIC_LEVELS`].
    fn all_topics() -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        let mut last: Vec<String> = vec![String::new()];
        for depth in 1..=4 {
            let next: Vec<String> = last
                .iter()
                .flat_map(|prefix| {
                    TOPIC_LEVELS.iter().map(move |l| if depth == 1 { (*l).to_owned() } else { format!("{prefix}/{l}") })
                })
                .collect();
            all.extend(next.iter().filter(|t| !t.is_empty()).cloned());
            last = next;
        }
        all
    }

    /// `mosquitto_acl_check_default`, transcribed naively: sections looked
    /// up by scanning the lines, patterns substituted into strings as the
    /// C code does, matching by [`naive_matches`].
    fn naive_may(lines: &[String], id: &str, username: Option<&str>, topic: &str, read: bool) -> bool {
        let mut user: Option<&str> = None;
        let mut mine = Vec::new();
        let mut patterns = Vec::new();
        for line in lines {
            let words: Vec<&str> = line.split(' ').collect();
            let (kind, access, topic) = match words.as_slice() {
                ["user", name] => {
                    user = Some(name);
                    continue;
                }
                [kind, topic] => (*kind, "readwrite", *topic),
                [kind, access, topic] => (*kind, *access, *topic),
                _ => continue,
            };
            if kind == "pattern" {
                patterns.push((access, topic));
            } else if user == username {
                mine.push((access, topic));
            }
        }
        let grants = |access: &str| access == "readwrite" || access == if read { "read" } else { "write" };
        if mine.iter().any(|(a, t)| *a == "deny" && naive_matches(t, topic)) {
            return false;
        }
        if mine.iter().any(|(a, t)| grants(a) && naive_matches(t, topic)) {
            return true;
        }
        if patterns.is_empty() {
            return false;
        }
        let bad = |s: &str| s.contains(['+', '#', '/']);
        if bad(id) || username.is_some_and(bad) {
            return false;
        }
        let substitute = |pattern: &str| {
            let mut out = String::new();
            let mut chars = pattern.chars().peekable();
            while let Some(c) = chars.next() {
                match (c, chars.peek(), username) {
                    ('%', Some('c'), _) => {
                        chars.next();
                        out.push_str(id);
                    }
                    ('%', Some('u'), Some(u)) => {
                        chars.next();
                        out.push_str(u);
                    }
                    _ => out.push(c),
                }
            }
            out
        };
        let applicable: Vec<(&str, String)> = patterns
            .iter()
            .filter(|(_, p)| username.is_some() || !p.contains("%u"))
            .map(|(a, p)| (*a, substitute(p)))
            .collect();
        if applicable.iter().any(|(a, p)| *a == "deny" && naive_matches(p, topic)) {
            return false;
        }
        applicable.iter().any(|(a, p)| grants(a) && naive_matches(p, topic))
    }

    #[test]
    fn may_read_write_random_acls_agree_with_naive_model() {
        let topics = all_topics();
        fn prop(acl: ArbAcl, client: ArbClient, picks: Vec<u16>) -> bool {
            let topics = all_topics();
            let Ok(parsed) = AclFile::parse("acl", &acl.text()) else {
                return false;
            };
            picks.iter().take(40).all(|i| {
                let t = &topics[usize::from(*i) % topics.len()];
                let topic = name(t);
                parsed.may_read(client.0, client.1, &topic) == naive_may(&acl.0, client.0, client.1, t, true)
                    && parsed.may_write(client.0, client.1, &topic) == naive_may(&acl.0, client.0, client.1, t, false)
            })
        }
        assert!(topics.len() > 2000);
        QuickCheck::new().tests(1000).quickcheck(prop as fn(ArbAcl, ArbClient, Vec<u16>) -> bool);
    }

    #[test]
    fn filter_access_random_filters_is_sound_against_may_read() {
        // Whole: every matching topic is readable; denied: none is.
        fn prop(acl: ArbAcl, client: ArbClient, f: ArbFilter) -> bool {
            let Ok(parsed) = AclFile::parse("acl", &acl.text()) else {
                return false;
            };
            let f = f.filter();
            let topics = all_topics();
            let mut readable = topics
                .iter()
                .filter(|t| naive_matches(f.as_str(), t))
                .map(|t| parsed.may_read(client.0, client.1, &name(t)));
            match parsed.filter_access(client.0, client.1, &f) {
                Whole => readable.all(|r| r),
                Denied => !readable.any(|r| r),
                Partial => true,
            }
        }
        QuickCheck::new().tests(1000).quickcheck(prop as fn(ArbAcl, ArbClient, ArbFilter) -> bool);
    }

    #[test]
    fn filter_access_wildcard_free_filter_agrees_with_may_read() {
        fn prop(acl: ArbAcl, client: ArbClient, pick: u16) -> bool {
            let Ok(parsed) = AclFile::parse("acl", &acl.text()) else {
                return false;
            };
            let topics = all_topics();
            let t = name(&topics[usize::from(pick) % topics.len()]);
            let expected = if parsed.may_read(client.0, client.1, &t) { Whole } else { Denied };
            parsed.filter_access(client.0, client.1, &TopicFilter::from(t.clone())) == expected
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(ArbAcl, ArbClient, u16) -> bool);
    }

    #[test]
    fn random_acls_allow_some_reads_writes_and_subscriptions() {
        // Guards the properties above against passing vacuously.
        let mut g = Gen::new(10);
        let topics = all_topics();
        let (mut reads, mut writes, mut denied) = (0, 0, 0);
        let mut judged = BTreeMap::new();
        for i in 0..500 {
            let acl = ArbAcl::arbitrary(&mut g);
            let client = ArbClient::arbitrary(&mut g);
            let Ok(parsed) = AclFile::parse("acl", &acl.text()) else {
                panic!("{acl:?} should parse");
            };
            let topic = name(&topics[i * 7919 % topics.len()]);
            reads += usize::from(parsed.may_read(client.0, client.1, &topic));
            writes += usize::from(parsed.may_write(client.0, client.1, &topic));
            denied += usize::from(!parsed.may_read(client.0, client.1, &topic));
            let f = ArbFilter::arbitrary(&mut g).filter();
            if f.has_wildcards() {
                *judged.entry(format!("{:?}", parsed.filter_access(client.0, client.1, &f))).or_insert(0) += 1;
            }
        }
        assert!(reads > 10 && writes > 10 && denied > 10, "reads {reads}, writes {writes}, denied {denied}");
        assert!(judged.values().all(|n| *n > 10) && judged.len() == 3, "wildcard filters judged {judged:?}");
    }

    #[test]
    fn meet_random_filters_is_exactly_the_common_topics() {
        fn prop(a: ArbFilter, b: ArbFilter) -> bool {
            let (a, b) = (a.filter(), b.filter());
            let (la, lb): (Vec<&str>, Vec<&str>) = (a.levels().collect(), b.levels().collect());
            let common = meet(&la, &lb).map(|levels| levels.join("/"));
            all_topics().iter().all(|t| {
                let both = naive_matches(a.as_str(), t) && naive_matches(b.as_str(), t);
                both == common.as_deref().is_some_and(|c| naive_matches(c, t))
            })
        }
        QuickCheck::new().tests(3000).quickcheck(prop as fn(ArbFilter, ArbFilter) -> bool);
    }

    #[test]
    fn covers_and_overlaps_random_filters_are_sound() {
        // `overlaps` may say yes when the only common topic would be the
        // empty name (`/#` and `+`): conservative, as a deny must be.
        fn prop(rule: ArbFilter, f: ArbFilter) -> bool {
            let (rule, f) = (rule.filter(), f.filter());
            let topics = all_topics();
            let matching: Vec<&String> = topics.iter().filter(|t| naive_matches(f.as_str(), t)).collect();
            let covered =
                !covers(rule.levels(), f.levels()) || matching.iter().all(|t| naive_matches(rule.as_str(), t));
            let overlap =
                overlaps(rule.levels(), f.levels()) || !matching.iter().any(|t| naive_matches(rule.as_str(), t));
            covered && overlap
        }
        QuickCheck::new().tests(3000).quickcheck(prop as fn(ArbFilter, ArbFilter) -> bool);
        assert!(overlaps(levels("/#"), levels("+")), "only the empty topic name matches both");
    }

    #[test]
    fn parse_arbitrary_text_never_panics() {
        fn prop(s: String) -> bool {
            let _ = AclFile::parse("acl", &s);
            true
        }
        QuickCheck::new().tests(2000).quickcheck(prop as fn(String) -> bool);
    }

    #[test]
    fn parse_random_fragments_never_panic() {
        const FRAGMENTS: [&str; 22] = [
            "topic",
            "pattern",
            "user",
            " ",
            " ",
            "\t",
            "\n",
            "\r",
            "#",
            "+",
            "/",
            "%c",
            "%u",
            "%",
            "read",
            "write",
            "readwrite",
            "deny",
            "a",
            "\0",
            "\u{e9}",
            "$",
        ];
        fn prop(picks: Vec<u8>) -> bool {
            let text: String = picks.iter().map(|p| FRAGMENTS[usize::from(*p) % FRAGMENTS.len()]).collect();
            if let Ok(acl) = AclFile::parse("acl", &text) {
                for (id, user) in [("a", None), ("a", Some("a")), ("%c", Some("%u"))] {
                    let _ = acl.may_read(id, user, &name("a/b"));
                    let _ = acl.may_write(id, user, &name("$a"));
                    let _ = acl.filter_access(id, user, &filter("+/#"));
                }
            }
            true
        }
        QuickCheck::new().tests(3000).quickcheck(prop as fn(Vec<u8>) -> bool);
    }
}
