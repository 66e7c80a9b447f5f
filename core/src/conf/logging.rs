//! The logging section: `log_type`, `log_dest`, `log_facility`,
//! `log_timestamp`, `log_timestamp_format` and `connection_messages`;
//! `quic_log_level` (Mosquitto 2.1's QUIC library) is accepted and
//! changes nothing: Culex has no QUIC listener.
//!
//! `log_type` and `log_dest` lines replace the defaults (error, warning,
//! notice, information to stderr) as soon as one is given; `none` clears
//! what came before.

use super::ConfError;
use super::file::Line;
use super::timestamp::TimestampFormat;

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "connection_messages",
    "log_dest",
    "log_facility",
    "log_timestamp",
    "log_timestamp_format",
    "log_type",
    "quic_log_level",
];

/// Which kinds of log lines are written. Mosquitto: `log_type`, one kind
/// per line; the default is error, warning, notice and information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)]
pub struct LogTypes {
    /// `log_type error`.
    pub error: bool,
    /// `log_type warning`.
    pub warning: bool,
    /// `log_type notice`.
    pub notice: bool,
    /// `log_type information`.
    pub information: bool,
    /// `log_type debug`.
    pub debug: bool,
    /// `log_type subscribe`: one line per subscription.
    pub subscribe: bool,
    /// `log_type unsubscribe`: one line per unsubscription.
    pub unsubscribe: bool,
    /// `log_type websockets`: WebSocket transport details.
    pub websockets: bool,
}

impl LogTypes {
    /// No log lines (`log_type none`).
    pub const fn none() -> Self {
        Self {
            error: false,
            warning: false,
            notice: false,
            information: false,
            debug: false,
            subscribe: false,
            unsubscribe: false,
            websockets: false,
        }
    }

    /// Every kind (`log_type all`, or `-v` on the command line).
    pub const fn all() -> Self {
        Self {
            error: true,
            warning: true,
            notice: true,
            information: true,
            debug: true,
            subscribe: true,
            unsubscribe: true,
            websockets: true,
        }
    }
}

impl Default for LogTypes {
    fn default() -> Self {
        Self { error: true, warning: true, notice: true, information: true, ..Self::none() }
    }
}

/// Where log lines go. Mosquitto: `log_dest`, one per line. `dlt` stops
/// start-up: Culex has no DLT output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// `log_dest stdout`.
    Stdout,
    /// `log_dest stderr` (the default).
    Stderr,
    /// `log_dest file PATH`: appended to PATH.
    File(String),
    /// `log_dest syslog`: the local syslog (`/dev/log`), with
    /// [`LogConf::facility`].
    Syslog,
    /// `log_dest topic`: published under `$SYS/broker/log/`, as Mosquitto
    /// does.
    Topic,
}

/// The syslog facility `daemon`, Mosquitto's default.
pub const FACILITY_DAEMON: u8 = 3;

/// The syslog facility `local0`; `log_facility N` means `local0 + N`.
pub const FACILITY_LOCAL0: u8 = 16;

/// How the broker logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConf {
    /// The kinds of lines written.
    pub types: LogTypes,
    /// Where they go; empty after `log_dest none`.
    pub dests: Vec<LogDest>,
    /// Prefix lines with a timestamp. Mosquitto: `log_timestamp`, default
    /// true.
    pub timestamp: bool,
    /// Log each connection and disconnection. Mosquitto:
    /// `connection_messages`, default true.
    pub connection_messages: bool,
    /// The syslog facility code ([`FACILITY_DAEMON`] unless `log_facility
    /// N` asks for local0 to local7).
    pub facility: u8,
    /// The timestamp's format (`log_timestamp_format`); `None` prints
    /// seconds since the epoch, as Mosquitto does.
    pub timestamp_format: Option<TimestampFormat>,
}

impl Default for LogConf {
    fn default() -> Self {
        Self {
            types: LogTypes::default(),
            dests: vec![LogDest::Stderr],
            timestamp: true,
            connection_messages: true,
            facility: FACILITY_DAEMON,
            timestamp_format: None,
        }
    }
}

/// The logging keys as written, assembled at the end.
#[derive(Debug, Default)]
#[allow(clippy::struct_excessive_bools)]
pub(super) struct LogDraft {
    log: LogConf,
    types_set: bool,
    dests_set: bool,
    file_set: bool,
}

impl LogDraft {
    /// Reads one line of this section.
    pub(super) fn handle(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        match line.key {
            "connection_messages" => self.log.connection_messages = line.boolean()?,
            "log_timestamp" => self.log.timestamp = line.boolean()?,
            "log_type" => self.log_type(line)?,
            "log_dest" => self.log_dest(line)?,
            "log_facility" => {
                let local = line.int_described(0, 7, "an integer from 0 to 7 (local0 to local7)")?;
                self.log.facility = FACILITY_LOCAL0 + u8::try_from(local).unwrap_or_default();
            }
            "log_timestamp_format" => {
                if self.log.timestamp_format.is_some() {
                    return Err(line.duplicate());
                }
                let format = TimestampFormat::parse(line.text()?)
                    .map_err(|e| line.error(format!("Invalid log_timestamp_format value: {e}.")))?;
                self.log.timestamp_format = Some(format);
            }
            // The log level of a QUIC library Culex does not have; `protocol`
            // takes no QUIC listener, so nothing would be logged under it.
            "quic_log_level" => {
                line.text()?;
            }
            _ => return Err(line.unknown()),
        }
        Ok(())
    }

    fn log_type(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        let words = line.words();
        if words.is_empty() {
            return Err(line.empty());
        }
        if !self.types_set {
            self.types_set = true;
            self.log.types = LogTypes::none();
        }
        // Mosquitto reads one word per line; Culex takes them all.
        for word in words {
            let types = &mut self.log.types;
            match word {
                "none" => *types = LogTypes::none(),
                "all" => *types = LogTypes::all(),
                "error" => types.error = true,
                "warning" => types.warning = true,
                "notice" => types.notice = true,
                "information" => types.information = true,
                "debug" => types.debug = true,
                "subscribe" => types.subscribe = true,
                "unsubscribe" => types.unsubscribe = true,
                "websockets" => types.websockets = true,
                other => {
                    return Err(line.error(format!(
                        "Invalid log_type value ({other}): expected error, warning, notice, information, debug, \
                         subscribe, unsubscribe, websockets, none or all."
                    )));
                }
            }
        }
        Ok(())
    }

    fn log_dest(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        let Some(kind) = line.words().first().copied() else {
            return Err(line.empty());
        };
        if !self.dests_set {
            self.dests_set = true;
            self.log.dests.clear();
        }
        let dest = match kind {
            "file" => {
                let path = line.rest["file".len()..].trim_matches(|c: char| c.is_ascii_whitespace());
                if path.is_empty() {
                    return Err(line.error("Empty \"log_dest file\" value in configuration."));
                }
                if self.file_set {
                    return Err(line.error("Duplicate \"log_dest file\" value."));
                }
                self.file_set = true;
                LogDest::File(path.to_owned())
            }
            _ => {
                let _ = line.word()?;
                match kind {
                    "none" => {
                        self.log.dests.clear();
                        return Ok(());
                    }
                    "stdout" => LogDest::Stdout,
                    "stderr" => LogDest::Stderr,
                    "syslog" => LogDest::Syslog,
                    "topic" => LogDest::Topic,
                    "dlt" => {
                        return Err(line.error(
                            "log_dest dlt: Culex has no DLT (Diagnostic Log and Trace) output; log to syslog, a \
                             file, stdout, stderr or a topic instead.",
                        ));
                    }
                    other => {
                        return Err(line.error(format!(
                            "Invalid log_dest value ({other}): expected stdout, stderr, file PATH, syslog, topic or \
                             none."
                        )));
                    }
                }
            }
        };
        if !self.log.dests.contains(&dest) {
            self.log.dests.push(dest);
        }
        Ok(())
    }

    /// The logging settings.
    pub(super) fn assemble(self) -> LogConf {
        self.log
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::testing::{assert_error, conf};

    #[test]
    fn log_type_lines_replace_the_default_and_accumulate() {
        let conf = conf("log_type error\nlog_type subscribe\n");
        assert_eq!(conf.log.types, LogTypes { error: true, subscribe: true, ..LogTypes::none() });
    }

    #[test]
    fn log_type_covers_every_kind_none_and_all() {
        let every = conf(
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\nlog_type debug\n\
             log_type subscribe\nlog_type unsubscribe\nlog_type websockets\n",
        );
        assert_eq!(every.log.types, LogTypes::all());
        assert_eq!(conf("log_type all").log.types, LogTypes::all());
        assert_eq!(conf("log_type all\nlog_type none\n").log.types, LogTypes::none());
        assert_eq!(conf("log_type none\nlog_type debug\n").log.types, LogTypes { debug: true, ..LogTypes::none() });
        assert_eq!(conf("log_type error debug").log.types, LogTypes { error: true, debug: true, ..LogTypes::none() });
    }

    #[test]
    fn log_type_errors_name_the_value() {
        assert_error(
            "log_type verbose",
            1,
            "Invalid log_type value (verbose): expected error, warning, notice, information, debug, subscribe, \
             unsubscribe, websockets, none or all.",
        );
        assert_error("log_type", 1, "Empty log_type value in configuration.");
    }

    #[test]
    fn log_dest_lines_replace_the_default() {
        assert_eq!(conf("log_dest stdout").log.dests, vec![LogDest::Stdout]);
        assert_eq!(
            conf("log_dest stdout\nlog_dest stderr\nlog_dest stdout\n").log.dests,
            vec![LogDest::Stdout, LogDest::Stderr]
        );
        assert_eq!(conf("log_dest none").log.dests, vec![]);
        assert_eq!(conf("log_dest stdout\nlog_dest none\nlog_dest stderr\n").log.dests, vec![LogDest::Stderr]);
    }

    #[test]
    fn log_dest_file_takes_the_rest_of_the_line() {
        let conf = conf("log_dest file /var/log/my broker/culex.log \n");
        assert_eq!(conf.log.dests, vec![LogDest::File("/var/log/my broker/culex.log".to_owned())]);
        assert_error("log_dest file", 1, "Empty \"log_dest file\" value in configuration.");
        assert_error("log_dest file a\nlog_dest file b\n", 2, "Duplicate \"log_dest file\" value.");
    }

    #[test]
    fn log_dest_syslog_and_topic_are_destinations() {
        let conf = conf("log_dest syslog\nlog_dest topic\nlog_dest syslog\n");
        assert_eq!(conf.log.dests, vec![LogDest::Syslog, LogDest::Topic]);
        assert!(conf.warnings.is_empty());
        assert_eq!(self::conf("log_dest syslog\nlog_dest none\n").log.dests, vec![]);
    }

    #[test]
    fn log_dest_dlt_stops_start_up() {
        assert_error(
            "log_dest stderr\nlog_dest dlt\n",
            2,
            "log_dest dlt: Culex has no DLT (Diagnostic Log and Trace) output; log to syslog, a file, stdout, stderr \
             or a topic instead.",
        );
    }

    #[test]
    fn log_facility_is_local0_to_local7_and_defaults_to_daemon() {
        assert_eq!(conf("").log.facility, FACILITY_DAEMON);
        assert_eq!(conf("log_facility 0").log.facility, 16);
        assert_eq!(conf("log_facility 7").log.facility, 23);
        for bad in ["8", "-1", "local3"] {
            assert_error(
                &format!("log_facility {bad}"),
                1,
                &format!("Invalid log_facility value ({bad}): expected an integer from 0 to 7 (local0 to local7)."),
            );
        }
    }

    #[test]
    fn log_timestamp_format_is_checked_and_kept_whole() {
        let conf = conf("log_timestamp_format  %Y-%m-%dT%H:%M:%S # not a comment \n");
        let format = conf.log.timestamp_format.as_ref().map(TimestampFormat::as_str);
        assert_eq!(format, Some("%Y-%m-%dT%H:%M:%S # not a comment"));
        assert_eq!(self::conf("").log.timestamp_format, None);
        assert_error("\nlog_timestamp_format %Y %Q\n", 2, "Invalid log_timestamp_format value: unknown conversion %Q.");
        assert_error("log_timestamp_format", 1, "Empty log_timestamp_format value in configuration.");
        assert_error(
            "log_timestamp_format %s\nlog_timestamp_format %s\n",
            2,
            "Duplicate log_timestamp_format value in configuration.",
        );
    }

    #[test]
    fn log_dest_errors_name_the_value() {
        assert_error(
            "log_dest printer",
            1,
            "Invalid log_dest value (printer): expected stdout, stderr, file PATH, syslog, topic or none.",
        );
        assert_error("log_dest", 1, "Empty log_dest value in configuration.");
        assert_error("log_dest stdout stderr", 1, "Unexpected \"stderr\" after the log_dest value.");
    }

    #[test]
    fn quic_log_level_is_accepted_without_effect_or_warning() {
        let conf = conf("quic_log_level 3\n");
        assert!(conf.warnings.is_empty());
        assert_eq!(conf.log, LogConf::default());
        assert_error("quic_log_level", 1, "Empty quic_log_level value in configuration.");
    }

    #[test]
    fn log_timestamp_and_connection_messages_are_applied() {
        let conf = conf("log_timestamp false\nconnection_messages false\n");
        assert!(!conf.log.timestamp);
        assert!(!conf.log.connection_messages);
        assert_error(
            "connection_messages maybe",
            1,
            "Invalid connection_messages value (maybe): expected true or false.",
        );
    }
}
