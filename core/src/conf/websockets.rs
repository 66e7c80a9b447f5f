//! The WebSocket keys: `http_dir` and `websockets_origin` (per listener),
//! `websockets_headers_size` and `websockets_log_level` (broker-wide, as
//! in Mosquitto).
//!
//! Mosquitto 2.0 serves WebSocket through libwebsockets; Culex has its
//! own handshake (`culex_runtime::ws`). The keys keep their meaning:
//! - `http_dir DIR`: plain HTTP requests (no upgrade) on a websockets
//!   listener are answered with the files of DIR.
//! - `websockets_origin ORIGIN` (Mosquitto 2.1, one line per origin): an
//!   upgrade request must carry one of them in its `Origin` header.
//! - `websockets_headers_size N` (0–65535): the largest handshake request
//!   head; 0 means Culex's default.
//! - `websockets_log_level N`: libwebsockets' own log mask. Culex has no
//!   libwebsockets: the value is checked and selects nothing.

use super::ConfError;
use super::file::{INT_MIN, Line};
use super::listeners::{ListenersDraft, Section};

/// The keys of this section.
pub(super) const KEYS: &[&str] = &["http_dir", "websockets_headers_size", "websockets_log_level", "websockets_origin"];

/// The WebSocket settings shared by every `protocol websockets` listener.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebSocketsConf {
    /// Largest handshake request head, in bytes; 0 (the default) leaves
    /// the runtime's own limit. Mosquitto: `websockets_headers_size`.
    pub headers_size: u16,
    /// libwebsockets' log mask (`websockets_log_level`, default 0): kept
    /// as given, it has no effect in Culex.
    pub log_level: i32,
}

/// Reads one line of this section: the listener keys go to the listener
/// of `section`, the others to `conf`.
pub(super) fn handle(
    conf: &mut WebSocketsConf,
    listeners: &mut ListenersDraft,
    line: &Line<'_>,
    section: Section,
) -> Result<(), ConfError> {
    match line.key {
        "http_dir" => {
            let dir = line.text()?;
            let listener = listeners.target(line, section);
            if listener.http_dir.is_some() {
                return Err(line.duplicate());
            }
            listener.http_dir = Some(line.located(dir));
        }
        "websockets_origin" => {
            let origin = line.text()?;
            listeners.target(line, section).websockets_origins.push(origin.to_owned());
        }
        "websockets_headers_size" => {
            let size = line.int_described(
                INT_MIN,
                i64::from(i32::MAX),
                "an integer from 0 to 65535 (Websockets headers size must be between 0 and 65535 inclusive)",
            )?;
            conf.headers_size = u16::try_from(size).map_err(|_| {
                line.error(format!(
                    "Invalid websockets_headers_size value ({size}): Websockets headers size must be between 0 and \
                     65535 inclusive."
                ))
            })?;
        }
        "websockets_log_level" => {
            let level = line.int(INT_MIN, i64::from(i32::MAX))?;
            conf.log_level = i32::try_from(level).unwrap_or_default();
        }
        _ => return Err(line.unknown()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::testing::{assert_error, conf};

    #[test]
    fn http_dir_belongs_to_the_listener_above_and_keeps_blanks() {
        let conf = conf("listener 1883\nlistener 9001\nprotocol websockets\nhttp_dir  /srv/my site \n");
        assert_eq!(conf.listeners[0].http_dir, None);
        let dir = conf.listeners[1].http_dir.as_ref().map(|d| (d.value.as_str(), d.line));
        assert_eq!(dir, Some(("/srv/my site", 4)));
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn http_dir_errors_as_mosquitto() {
        assert_error("listener 9001\nhttp_dir\n", 2, "Empty http_dir value in configuration.");
        assert_error("listener 9001\nhttp_dir /a\nhttp_dir /b\n", 3, "Duplicate http_dir value in configuration.");
    }

    #[test]
    fn websockets_origin_lines_accumulate_per_listener() {
        let conf = conf(
            "listener 9001\nprotocol websockets\nwebsockets_origin https://example.com\n\
             websockets_origin http://localhost:8080\nlistener 9002\nprotocol websockets\n",
        );
        assert_eq!(conf.listeners[0].websockets_origins, ["https://example.com", "http://localhost:8080"]);
        assert!(conf.listeners[1].websockets_origins.is_empty());
        assert_error("listener 9001\nwebsockets_origin\n", 2, "Empty websockets_origin value in configuration.");
    }

    #[test]
    fn listener_keys_before_any_listener_configure_the_default_listener() {
        let conf = conf("port 9001\nprotocol websockets\nhttp_dir /www\nwebsockets_origin http://a\n");
        assert_eq!(conf.listeners.len(), 1);
        assert_eq!(conf.listeners[0].port, 9001);
        assert_eq!(conf.listeners[0].http_dir.as_ref().map(|d| d.value.as_str()), Some("/www"));
        assert_eq!(conf.listeners[0].websockets_origins, ["http://a"]);
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn headers_size_is_broker_wide_from_0_to_65535() {
        let conf = conf("listener 9001\nwebsockets_headers_size 16384\nlistener 9002\n");
        assert_eq!(conf.websockets.headers_size, 16384);
        assert_eq!(self::conf("websockets_headers_size 0").websockets.headers_size, 0);
        assert_eq!(self::conf("").websockets, WebSocketsConf::default());
        assert_error(
            "websockets_headers_size 65536",
            1,
            "Invalid websockets_headers_size value (65536): Websockets headers size must be between 0 and 65535 \
             inclusive.",
        );
        assert_error(
            "websockets_headers_size -1",
            1,
            "Invalid websockets_headers_size value (-1): Websockets headers size must be between 0 and 65535 \
             inclusive.",
        );
        assert_error(
            "websockets_headers_size big",
            1,
            "Invalid websockets_headers_size value (big): expected an integer from 0 to 65535 (Websockets headers \
             size must be between 0 and 65535 inclusive).",
        );
    }

    #[test]
    fn log_level_is_an_integer_without_a_warning() {
        let conf = conf("websockets_log_level 255\n");
        assert_eq!(conf.websockets.log_level, 255);
        assert!(conf.warnings.is_empty());
        assert_error(
            "websockets_log_level all",
            1,
            "Invalid websockets_log_level value (all): expected an integer from -2147483648 to 2147483647.",
        );
    }
}
