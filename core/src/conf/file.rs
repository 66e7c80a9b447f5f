//! The `mosquitto.conf` format, read the way Mosquitto 2 reads it.
//!
//! One setting per line: a key, white space, a value. Blank lines and
//! lines whose first non-blank character is `#` are skipped. Values that
//! are one word (numbers, booleans, host names) may be followed by a
//! `# comment`; values that run to the end of the line (`redis_auth`,
//! `auto_id_prefix`, `include_dir`, `persistence_location`, `log_dest
//! file PATH`) are taken whole, `#` included, with the surrounding blanks
//! trimmed, as Mosquitto takes its string values. Keys are
//! case-sensitive.
//!
//! A key Culex implements is checked (range, syntax) and applied. A key
//! Mosquitto knows but Culex does not implement (`psk_file`, plugins,
//! ...) yields a [`Warning`] and is ignored. Any other key stops start-up
//! with a [`ConfError`], as Mosquitto does.
//!
//! This file reads lines, hands each to the section its key belongs to
//! and assembles the [`BrokerConf`]. The sections, one file each: the
//! listeners (`listeners.rs`, with Mosquitto 2's default listener and
//! local only mode), their TLS keys ([`super::tls`]) and their rules for
//! clients (`listener_rules.rs`: `max_qos`, `mount_point`, ...), security
//! (`security.rs`, with `per_listener_settings`), limits (`limits.rs`),
//! logging (`logging.rs`), presence in Redis (`redis.rs`), persistence
//! (`persistence.rs`) and bridges (`bridges.rs`); the keys Culex ignores
//! are listed in `keys.rs`.
//! Limits not set start at Mosquitto's defaults, see [`Config`].
//!
//! # Divergences, on purpose
//! - Booleans are `true`/`false` (and `1`/`0`, which Mosquitto's parser also
//!   takes); integers must be whole decimal numbers (Mosquitto's `atoi`
//!   reads `12abc` as 12, Culex refuses it).
//! - Extra words after a one-word value are an error unless they start a
//!   `#` comment (Mosquitto ignores them silently).
//! - The sections have their own (listeners and TLS: local only mode,
//!   TLS keys without a certificate, `tls_version tlsv1.1`).

use std::fmt;

use super::bridges::{self, BridgesDraft, CurrentBridge};
use super::keys;
use super::listener_rules;
use super::listeners::{self, ListenersDraft, Section};
use super::logging::{self, LogDraft};
use super::persistence::{self, PersistenceDraft};
use super::process::{self, ProcessConf};
use super::redis::{self, RedisDraft};
use super::security::{self, SecurityDraft};
use super::tls::{self, Located};
use super::websockets::{self, WebSocketsConf};
use super::{BridgeConf, ListenerConf, LogConf, PersistenceConf, RedisConf, limits};
use crate::Config;

/// Largest value of Mosquitto's integer keys (a C `int`).
pub(super) const INT_MAX: i64 = i32::MAX as i64;

/// Smallest value of Mosquitto's integer keys.
pub(super) const INT_MIN: i64 = i32::MIN as i64;

/// A configuration that cannot be used: start-up stops here. Displayed as
/// `file:line: reason`, the way Mosquitto reports `Error found at
/// file:line.` after its reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct ConfError {
    /// The file the line is in (as given to [`parse`], or the included
    /// file's path).
    pub file: String,
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong, in Mosquitto's wording where it has one. Never
    /// contains a password.
    pub reason: String,
}

/// A line Culex accepted without acting on it as Mosquitto would: a key
/// Culex does not implement, or a setting whose effect is surprising.
/// Displayed as `file:line: key: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// The file the line is in, or `command line` for options.
    pub file: String,
    /// The 1-based line number; 0 for the command line.
    pub line: usize,
    /// The key (or option) the warning is about.
    pub key: String,
    /// What Culex did with it, e.g. `not supported by Culex, ignored`.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        } else {
            write!(f, "{}:{}: {}: {}", self.file, self.line, self.key, self.message)
        }
    }
}

/// The message of a warning about a key Mosquitto knows and Culex ignores.
pub(super) const NOT_SUPPORTED: &str = "not supported by Culex, ignored";

/// Everything a configuration file says, ready for a runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConf {
    /// The core's limits and switches; the per-listener ones come from
    /// [`listeners`](Self::listeners) (see
    /// [`listener_rules`](Self::listener_rules) and
    /// [`listener_max_connections`](Self::listener_max_connections)).
    pub core: Config,
    /// The sockets to open, in file order; the default listener (`port`,
    /// `bind_address`) comes last, as in Mosquitto. Never empty.
    pub listeners: Vec<ListenerConf>,
    /// Logging.
    pub log: LogConf,
    /// Presence in Redis; `None` without `redis_host`.
    pub redis: Option<RedisConf>,
    /// Where retained messages and persistent sessions are kept.
    pub persistence: PersistenceConf,
    /// The broker-wide WebSocket settings.
    pub websockets: WebSocketsConf,
    /// The user to run as and the pid file.
    pub process: ProcessConf,
    /// The outgoing bridges (`connection` sections), in file order.
    pub bridges: Vec<BridgeConf>,
    /// `password_file`: the path of a `mosquitto_passwd` file; the
    /// runtime reads it.
    pub password_file: Option<String>,
    /// `acl_file`: the path of a Mosquitto ACL file; the runtime reads it.
    pub acl_file: Option<String>,
    /// `per_listener_settings true`: each listener has its own security
    /// settings ([`ListenerConf::security`]) and the global ones above are
    /// not used.
    pub per_listener_settings: bool,
    /// No listener was configured: the broker serves 127.0.0.1 and ::1
    /// only. A runtime says so at start, as Mosquitto 2 does ("Starting in
    /// local only mode").
    pub local_only: bool,
    /// What was accepted but not acted on; the runtime logs each once.
    pub warnings: Vec<Warning>,
}

impl Default for BrokerConf {
    /// The configuration of a broker started without a file: local only
    /// mode on port 1883, anonymous clients allowed.
    fn default() -> Self {
        Parser::default().assemble()
    }
}

/// Access to the files of `include_dir`, provided by the runtime; the core
/// never touches the file system.
pub trait IncludeSource {
    /// The names (not paths) of the entries of directory `dir`. Culex
    /// keeps those ending in `.conf` and reads them in byte order (capital
    /// letters first), as Mosquitto 2 does.
    fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String>;

    /// The text of the file at `path`.
    fn read_file(&mut self, path: &str) -> Result<String, String>;
}

/// An [`IncludeSource`] without files: `include_dir` is an error.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIncludes;

impl IncludeSource for NoIncludes {
    fn list_dir(&mut self, _dir: &str) -> Result<Vec<String>, String> {
        Err("no file access here (the runtime reads include_dir)".to_owned())
    }

    fn read_file(&mut self, _path: &str) -> Result<String, String> {
        Err("no file access here (the runtime reads include_dir)".to_owned())
    }
}

/// Parses one configuration text; `include_dir` is refused (see
/// [`parse_with`]). `path_for_messages` names the file in errors and
/// warnings.
pub fn parse(path_for_messages: &str, text: &str) -> Result<BrokerConf, ConfError> {
    parse_with(path_for_messages, text, &mut NoIncludes)
}

/// Parses a configuration text, reading the files of its `include_dir`
/// lines through `includes`. As in Mosquitto, each included file is read
/// where its `include_dir` line stands, starts outside any listener
/// section, and may not include further files.
pub fn parse_with(
    path_for_messages: &str,
    text: &str,
    includes: &mut dyn IncludeSource,
) -> Result<BrokerConf, ConfError> {
    let mut parser = Parser::default();
    parser.parse_text(path_for_messages, text, 0, includes)?;
    parser.finish()
}

/// Where a line is: file and 1-based number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Loc {
    pub(super) file: String,
    pub(super) line: usize,
}

impl Loc {
    pub(super) fn error(&self, reason: impl Into<String>) -> ConfError {
        ConfError { file: self.file.clone(), line: self.line, reason: reason.into() }
    }

    pub(super) fn warning(&self, key: &str, message: impl Into<String>) -> Warning {
        Warning { file: self.file.clone(), line: self.line, key: key.to_owned(), message: message.into() }
    }
}

/// One setting line, split into its key and the rest (blanks trimmed),
/// with the ways a section reads its value.
pub(super) struct Line<'a> {
    file: &'a str,
    number: usize,
    /// The key, as written.
    pub(super) key: &'a str,
    /// Everything after the key, blanks trimmed.
    pub(super) rest: &'a str,
}

impl<'a> Line<'a> {
    pub(super) fn loc(&self) -> Loc {
        Loc { file: self.file.to_owned(), line: self.number }
    }

    pub(super) fn error(&self, reason: impl Into<String>) -> ConfError {
        ConfError { file: self.file.to_owned(), line: self.number, reason: reason.into() }
    }

    pub(super) fn warning(&self, message: impl Into<String>) -> Warning {
        Warning { file: self.file.to_owned(), line: self.number, key: self.key.to_owned(), message: message.into() }
    }

    pub(super) fn empty(&self) -> ConfError {
        self.error(format!("Empty {} value in configuration.", self.key))
    }

    pub(super) fn duplicate(&self) -> ConfError {
        self.error(format!("Duplicate {} value in configuration.", self.key))
    }

    /// Mosquitto's error for a key it does not know, with a hint when
    /// only the case is wrong.
    pub(super) fn unknown(&self) -> ConfError {
        let key = self.key;
        let lower = key.to_ascii_lowercase();
        if lower != key && (keys::is_ignored_mosquitto_key(&lower) || is_culex_key(&lower)) {
            self.error(format!("Unknown configuration variable \"{key}\" (keys are lower case: \"{lower}\")."))
        } else {
            self.error(format!("Unknown configuration variable \"{key}\"."))
        }
    }

    /// `value`, remembered with this line.
    pub(super) fn located(&self, value: &str) -> Located<String> {
        Located { value: value.to_owned(), file: self.file.to_owned(), line: self.number }
    }

    /// The rest of the line as one value, spaces and `#` included.
    pub(super) fn text(&self) -> Result<&'a str, ConfError> {
        if self.rest.is_empty() { Err(self.empty()) } else { Ok(self.rest) }
    }

    /// The words of the value, up to a `#` comment.
    pub(super) fn words(&self) -> Vec<&'a str> {
        self.rest.split_ascii_whitespace().take_while(|word| !word.starts_with('#')).collect()
    }

    /// The value as a single word.
    pub(super) fn word(&self) -> Result<&'a str, ConfError> {
        match self.words()[..] {
            [] => Err(self.empty()),
            [word] => Ok(word),
            [_, extra, ..] => Err(self.error(format!("Unexpected \"{extra}\" after the {} value.", self.key))),
        }
    }

    /// An integer in `min..=max`.
    pub(super) fn int(&self, min: i64, max: i64) -> Result<i64, ConfError> {
        self.int_described(min, max, &format!("an integer from {min} to {max}"))
    }

    /// An integer in `min..=max`, the range described as `expected`.
    pub(super) fn int_described(&self, min: i64, max: i64, expected: &str) -> Result<i64, ConfError> {
        let word = self.word()?;
        match word.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(format!("Invalid {} value ({word}): expected {expected}.", self.key))),
        }
    }

    /// An integer up to `max` where a negative value means 0, as Mosquitto
    /// reads `max_queued_messages -1`.
    pub(super) fn int_negative_is_zero(&self, max: i64) -> Result<i64, ConfError> {
        Ok(self.int_described(i64::MIN, max, &format!("an integer from 0 to {max}"))?.max(0))
    }

    /// A port, 1 to 65535.
    pub(super) fn port(&self) -> Result<u16, ConfError> {
        self.port_from(self.word()?)
    }

    pub(super) fn port_from(&self, word: &str) -> Result<u16, ConfError> {
        match word.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(self.error(format!("Invalid port value ({word}): expected an integer from 1 to 65535."))),
        }
    }

    /// `true`/`false` (or `1`/`0`, as Mosquitto's parser also takes).
    pub(super) fn boolean(&self) -> Result<bool, ConfError> {
        match self.word()? {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(self.error(format!("Invalid {} value ({other}): expected true or false.", self.key))),
        }
    }
}

/// Converts a range-checked integer; the ranges used fit every target.
pub(super) fn to_usize(n: i64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// The keys Culex acts on, by section.
const SECTIONS: &[&[&str]] = &[
    listeners::KEYS,
    listener_rules::KEYS,
    tls::KEYS,
    security::KEYS,
    limits::KEYS,
    logging::KEYS,
    redis::KEYS,
    persistence::KEYS,
    websockets::KEYS,
    process::KEYS,
    bridges::KEYS,
    &["include_dir", "allow_duplicate_messages"],
];

/// Whether Culex acts on `key`.
fn is_culex_key(key: &str) -> bool {
    SECTIONS.iter().any(|keys| keys.contains(&key))
}

/// The state of a parse across the main file and its includes: one draft
/// per section.
#[derive(Debug, Default)]
struct Parser {
    core: Config,
    listeners: ListenersDraft,
    security: SecurityDraft,
    log: LogDraft,
    redis: RedisDraft,
    persistence: PersistenceDraft,
    websockets: WebSocketsConf,
    process: ProcessConf,
    bridges: BridgesDraft,
    warnings: Vec<Warning>,
}

impl Parser {
    fn parse_text(
        &mut self,
        file: &str,
        text: &str,
        level: usize,
        includes: &mut dyn IncludeSource,
    ) -> Result<(), ConfError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut section = Section::Default;
        // Likewise, each file starts outside any bridge (Mosquitto's
        // `cur_bridge` is local to the file being read).
        let mut bridge = CurrentBridge::default();
        for (index, raw) in text.lines().enumerate() {
            let trimmed = raw.trim_matches(|c: char| c.is_ascii_whitespace());
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, rest) = match trimmed.split_once(|c: char| c.is_ascii_whitespace()) {
                Some((key, rest)) => (key, rest.trim_matches(|c: char| c.is_ascii_whitespace())),
                None => (trimmed, ""),
            };
            let line = Line { file, number: index + 1, key, rest };
            self.handle(&line, &mut section, &mut bridge, level, includes)?;
        }
        Ok(())
    }

    /// Hands a line to the section its key belongs to.
    fn handle(
        &mut self,
        line: &Line<'_>,
        section: &mut Section,
        bridge: &mut CurrentBridge,
        level: usize,
        includes: &mut dyn IncludeSource,
    ) -> Result<(), ConfError> {
        match line.key {
            "include_dir" => self.include_dir(line, level, includes),
            // Read and dropped by Mosquitto 2.0 too, with this notice.
            "allow_duplicate_messages" => {
                line.boolean()?;
                self.warnings.push(
                    line.warning(
                        "deprecated and without effect in Mosquitto 2.0; overlapping subscriptions get one copy",
                    ),
                );
                Ok(())
            }
            key if listeners::KEYS.contains(&key) => self.listeners.handle(line, section, &mut self.warnings),
            key if listener_rules::KEYS.contains(&key) => {
                listener_rules::handle(line, *section, &mut self.listeners, &mut self.warnings)
            }
            key if tls::KEYS.contains(&key) => tls::handle(&mut self.listeners.target(line, *section).tls, line),
            key if security::KEYS.contains(&key) => self.security.handle(line, *section, &mut self.listeners),
            key if limits::KEYS.contains(&key) => limits::handle(&mut self.core, line),
            key if logging::KEYS.contains(&key) => self.log.handle(line),
            key if redis::KEYS.contains(&key) => self.redis.handle(line),
            key if persistence::KEYS.contains(&key) => self.persistence.handle(line, &mut self.warnings),
            key if process::KEYS.contains(&key) => self.process.handle(line),
            key if bridges::KEYS.contains(&key) => self.bridges.handle(line, bridge, &mut self.warnings),
            key if websockets::KEYS.contains(&key) => {
                websockets::handle(&mut self.websockets, &mut self.listeners, line, *section)
            }
            key if keys::is_ignored_mosquitto_key(key) => {
                if keys::is_security_key(key) {
                    self.security.note(line);
                }
                if keys::is_listener_scoped(key) {
                    self.listeners.current(*section).ignored_keys.push(key.to_owned());
                }
                self.warnings.push(line.warning(NOT_SUPPORTED));
                Ok(())
            }
            _ => Err(line.unknown()),
        }
    }

    fn include_dir(
        &mut self,
        line: &Line<'_>,
        level: usize,
        includes: &mut dyn IncludeSource,
    ) -> Result<(), ConfError> {
        let dir = line.text()?;
        if level > 0 {
            self.warnings.push(
                line.warning(
                    "include_dir is only read from the main configuration file; ignored here, as Mosquitto does",
                ),
            );
            return Ok(());
        }
        let mut names =
            includes.list_dir(dir).map_err(|e| line.error(format!("Unable to open include_dir {dir}: {e}.")))?;
        names.retain(|name| name.len() > ".conf".len() && name.ends_with(".conf"));
        names.sort();
        for name in names {
            let path = if dir.ends_with('/') { format!("{dir}{name}") } else { format!("{dir}/{name}") };
            let text = includes
                .read_file(&path)
                .map_err(|e| line.error(format!("Unable to open config file {path}: {e}.")))?;
            self.parse_text(&path, &text, level + 1, includes)?;
        }
        Ok(())
    }

    /// Assembles the configuration and checks what only the whole file
    /// can tell.
    fn finish(mut self) -> Result<BrokerConf, ConfError> {
        let bridges = std::mem::take(&mut self.bridges);
        self.redis.check()?;
        let mut conf = self.assemble();
        for listener in &conf.listeners {
            listener.tls.validate()?;
        }
        conf.bridges = bridges.finish()?;
        Ok(conf)
    }

    fn assemble(self) -> BrokerConf {
        let mut warnings = self.warnings;
        let (listeners, local_only) = self.listeners.assemble(&mut warnings);
        let redis = self.redis.assemble(&mut warnings);
        let mut conf = BrokerConf {
            core: self.core,
            listeners,
            log: self.log.assemble(),
            redis,
            persistence: PersistenceConf::default(),
            websockets: self.websockets,
            process: self.process,
            bridges: Vec::new(),
            password_file: None,
            acl_file: None,
            per_listener_settings: false,
            local_only,
            warnings,
        };
        self.security.apply(&mut conf);
        self.persistence.apply(&mut conf);
        conf
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use quickcheck::{Arbitrary, Gen, QuickCheck};

    use super::*;
    use crate::conf::testing::{assert_error, conf, error, listener, warnings};
    use crate::conf::{LogDest, LogTypes};

    // --- the defaults ----------------------------------------------------

    #[test]
    fn empty_config_is_local_only_with_anonymous_allowed() {
        let conf = conf("");
        assert!(conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1883, Some("127.0.0.1")), listener(1883, Some("::1"))]);
        assert!(conf.core.allow_anonymous);
        assert_eq!(conf, BrokerConf::default());
        assert_eq!(conf.log, LogConf::default());
        assert_eq!(conf.redis, None);
        assert_eq!(conf.core.max_connections, None);
    }

    #[test]
    fn defaults_are_mosquitto_defaults() {
        let conf = conf("# nothing\n");
        let core = &conf.core;
        assert_eq!(core.max_inflight_messages, 20);
        assert_eq!(core.max_queued_messages, 1000);
        assert_eq!(core.max_queued_bytes, 0);
        assert_eq!(core.message_size_limit, 0);
        assert_eq!(core.max_keepalive, 65535);
        assert!(!core.queue_qos0_messages);
        assert!(core.allow_zero_length_clientid);
        assert_eq!(core.auto_id_prefix, "auto-");
        assert_eq!(conf.log.types, LogTypes::default());
        assert_eq!(conf.log.dests, vec![LogDest::Stderr]);
        assert!(conf.log.timestamp);
        assert!(conf.log.connection_messages);
    }

    // --- unknown and ignored keys ----------------------------------------

    #[test]
    fn unknown_key_stops_with_mosquittos_message_at_its_line() {
        assert_error("# comment\n\nlistener 1883\n  foo bar\n", 4, "Unknown configuration variable \"foo\".");
        assert_eq!(error("foo bar").to_string(), "test.conf:1: Unknown configuration variable \"foo\".");
    }

    #[test]
    fn unknown_key_in_another_case_gets_a_hint() {
        assert_error("Port 1883", 1, "Unknown configuration variable \"Port\" (keys are lower case: \"port\").");
        assert_error(
            "Persistence true",
            1,
            "Unknown configuration variable \"Persistence\" (keys are lower case: \"persistence\").",
        );
    }

    #[test]
    fn every_key_culex_acts_on_reaches_its_section() {
        let values = ["", "1", "x", "true", "/p", "14d", "file /l"];
        for key in SECTIONS.iter().flat_map(|keys| keys.iter()) {
            for value in values {
                if let Err(e) = parse("test.conf", &format!("listener 1\n{key} {value}\n")) {
                    assert!(!e.reason.starts_with("Unknown configuration variable"), "{key} {value}: {e}");
                }
            }
        }
    }

    #[test]
    fn sections_share_no_key() {
        let mut all: Vec<&str> = SECTIONS.iter().flat_map(|keys| keys.iter().copied()).collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count);
        assert!(all.iter().all(|key| !keys::is_ignored_mosquitto_key(key)), "a key is both acted on and ignored");
    }

    #[test]
    fn every_mosquitto_key_culex_ignores_is_a_warning_not_an_error() {
        for key in keys::IGNORED {
            let conf = conf(&format!("listener 1883\n{key} value\n"));
            assert_eq!(warnings(&conf), vec![(2, *key, NOT_SUPPORTED)], "{key}");
        }
    }

    #[test]
    fn examples_from_the_brief_warn() {
        let conf = conf(
            "autosave_interval 1800\npsk_file /etc/p\nauth_plugin /etc/a\npersistence true\n\
             persistence_location /var/lib\nretry_interval 10\nuser mosquitto\npid_file /run/m.pid\n\
             retain_available true\nmax_qos 2\nset_tcp_nodelay true\n\
             connection bridge1\naddress 10.0.0.1:1883\ntopic # both 0\nnotifications false\nround_robin true\n\
             auth_opt_db x\nplugin_opt_x y\n",
        );
        // The persistence keys are Culex's now: autosave_interval says it
        // changes nothing, persistence and persistence_location are applied;
        // user, pid_file, retain_available, set_tcp_nodelay and max_qos
        // are applied too, and the bridge section is read.
        assert_eq!(conf.warnings.len(), 6);
        assert_eq!(conf.warnings[0].key, "autosave_interval");
        assert!(conf.warnings[1..].iter().all(|w| w.message == NOT_SUPPORTED));
        assert_eq!(conf.warnings[1].to_string(), "test.conf:2: psk_file: not supported by Culex, ignored");
        assert!(conf.persistence.enabled);
        assert_eq!(conf.bridges.len(), 1);
        assert!(!conf.bridges[0].notifications && conf.bridges[0].round_robin);
    }

    // --- file format ---------------------------------------------------

    #[test]
    fn comments_blanks_tabs_crlf_and_bom_are_handled() {
        let conf = conf("\u{feff}# first\r\n\r\n   # indented\r\nlistener\t1884\r\n\tmax_connections  \t 3 \r\n");
        assert_eq!(conf.listeners, vec![ListenerConf { max_connections: Some(3), ..listener(1884, None) }]);
    }

    #[test]
    fn booleans_accept_one_and_zero_as_mosquitto_does() {
        let conf = conf("listener 1\nallow_anonymous 1\nqueue_qos0_messages 1\nlog_timestamp 0\n");
        assert!(conf.core.allow_anonymous);
        assert!(conf.core.queue_qos0_messages);
        assert!(!conf.log.timestamp);
    }

    #[test]
    fn conf_error_and_warning_display_file_line_and_text() {
        let e = ConfError { file: "/etc/culex.conf".to_owned(), line: 7, reason: "bad".to_owned() };
        assert_eq!(e.to_string(), "/etc/culex.conf:7: bad");
        let w = Warning { file: "f".to_owned(), line: 2, key: "k".to_owned(), message: "m".to_owned() };
        assert_eq!(w.to_string(), "f:2: k: m");
        let cli = Warning { file: "command line".to_owned(), line: 0, key: "-p".to_owned(), message: "m".to_owned() };
        assert_eq!(cli.to_string(), "command line: -p: m");
    }

    // --- include_dir -----------------------------------------------------

    /// Files in memory: path → text.
    #[derive(Default)]
    struct Files(BTreeMap<String, String>);

    impl Files {
        fn with(entries: &[(&str, &str)]) -> Self {
            Self(entries.iter().map(|(p, t)| ((*p).to_owned(), (*t).to_owned())).collect())
        }
    }

    impl IncludeSource for Files {
        fn list_dir(&mut self, dir: &str) -> Result<Vec<String>, String> {
            let prefix = format!("{}/", dir.trim_end_matches('/'));
            let names: Vec<String> =
                self.0.keys().filter_map(|path| path.strip_prefix(&prefix)).map(str::to_owned).rev().collect();
            if names.is_empty() { Err("No such file or directory".to_owned()) } else { Ok(names) }
        }

        fn read_file(&mut self, path: &str) -> Result<String, String> {
            self.0.get(path).cloned().ok_or_else(|| "No such file or directory".to_owned())
        }
    }

    #[test]
    fn include_dir_reads_conf_files_in_byte_order_where_it_stands() {
        let mut files = Files::with(&[
            ("/etc/c/b.conf", "listener 1885\n"),
            ("/etc/c/a.conf", "listener 1884\nmax_connections 4\n"),
            ("/etc/c/Z.conf", "listener 1886\n"),
            ("/etc/c/notes.txt", "garbage\n"),
            ("/etc/c/.conf", "garbage\n"),
        ]);
        let main = "listener 1883\ninclude_dir /etc/c\nmax_connections 2\n";
        let conf = parse_with("main.conf", main, &mut files).unwrap();
        let ports: Vec<_> = conf.listeners.iter().map(|l| (l.port, l.max_connections)).collect();
        // The main file's section continues after the include: max_connections 2 is 1883's.
        assert_eq!(ports, [(1883, Some(2)), (1886, None), (1884, Some(4)), (1885, None)]);
    }

    #[test]
    fn included_file_starts_outside_any_listener() {
        let mut files = Files::with(&[("/d/x.conf", "max_connections 9\n")]);
        let conf = parse_with("main.conf", "listener 1883\ninclude_dir /d/\n", &mut files).unwrap();
        // As in Mosquitto, the included max_connections is the default listener's.
        assert_eq!(conf.listeners[0].max_connections, None);
        assert_eq!(conf.listeners[1], ListenerConf { max_connections: Some(9), ..listener(1883, None) });
        assert_eq!((conf.warnings[0].file.as_str(), conf.warnings[0].line), ("/d/x.conf", 1));
    }

    #[test]
    fn errors_in_included_files_name_that_file_and_line() {
        let mut files = Files::with(&[("/d/x.conf", "# x\nmax_keepalive -5\n")]);
        let e = parse_with("main.conf", "include_dir /d\n", &mut files).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/d/x.conf:2: Invalid max_keepalive value (-5): expected an integer from 0 to 65535."
        );
    }

    #[test]
    fn include_dir_in_an_included_file_is_ignored_with_a_warning() {
        let mut files = Files::with(&[("/d/x.conf", "include_dir /e\n"), ("/e/y.conf", "listener 1\n")]);
        let conf = parse_with("main.conf", "include_dir /d\n", &mut files).unwrap();
        assert!(conf.local_only);
        assert_eq!((conf.warnings[0].file.as_str(), conf.warnings[0].key.as_str()), ("/d/x.conf", "include_dir"));
    }

    #[test]
    fn include_dir_that_cannot_be_read_is_an_error_at_its_line() {
        let mut files = Files::default();
        let e = parse_with("main.conf", "\ninclude_dir /missing\n", &mut files).unwrap_err();
        assert_eq!(e.to_string(), "main.conf:2: Unable to open include_dir /missing: No such file or directory.");
        assert_error(
            "include_dir /etc/culex.d",
            1,
            "Unable to open include_dir /etc/culex.d: no file access here (the runtime reads include_dir).",
        );
        assert_error("include_dir", 1, "Empty include_dir value in configuration.");
    }

    // --- properties ------------------------------------------------------

    fn quickcheck(tests: u64) -> QuickCheck {
        QuickCheck::new().tests(tests).rng(Gen::new(64))
    }

    #[test]
    fn arbitrary_text_never_panics_the_parser() {
        fn prop(text: String) -> bool {
            let _ = parse("arbitrary.conf", &text);
            true
        }
        quickcheck(3000).quickcheck(prop as fn(String) -> bool);
    }

    /// Lines made of real keys and awkward values.
    #[derive(Debug, Clone)]
    struct ConfLines(String);

    impl Arbitrary for ConfLines {
        fn arbitrary(g: &mut Gen) -> Self {
            let keys: Vec<&str> = SECTIONS.iter().flat_map(|keys| keys.iter()).chain(keys::IGNORED).copied().collect();
            let values = [
                "",
                "0",
                "-1",
                "1",
                "65535",
                "65536",
                "true",
                "false",
                "1883 ::1",
                "# c",
                "file",
                "file x",
                "none",
                "all",
                "0 /sock",
                "a b c",
                "\t",
                "999999999999999999999",
                "websockets",
                "ipv6",
                "syslog",
                "14d",
                "0h",
                "2147483647y",
                "h:1883",
                "# both 1 l/ r/",
                "\"\" in 0 a b",
                "lazy",
                "5 30",
                "mqttv311",
            ];
            let mut text = String::new();
            for _ in 0..usize::arbitrary(g) % 12 {
                let key = g.choose(&keys).copied().unwrap_or("port");
                let value = if bool::arbitrary(g) {
                    (*g.choose(&values).unwrap_or(&"")).to_owned()
                } else {
                    String::arbitrary(g)
                };
                text.push_str(key);
                text.push(' ');
                text.push_str(&value);
                text.push('\n');
            }
            Self(text)
        }
    }

    #[test]
    fn arbitrary_key_value_lines_never_panic_and_keep_a_listener() {
        fn prop(lines: ConfLines) -> bool {
            match parse("arbitrary.conf", &lines.0) {
                Ok(conf) => !conf.listeners.is_empty(),
                Err(e) => e.line > 0,
            }
        }
        quickcheck(3000).quickcheck(prop as fn(ConfLines) -> bool);
    }
}
