//! Helpers for the tests of every section: parse a text as `test.conf`
//! and look at the result or the error.

use super::{BrokerConf, ConfError, ListenerConf, parse};

/// The configuration `text` gives; panics on an error.
pub(super) fn conf(text: &str) -> BrokerConf {
    match parse("test.conf", text) {
        Ok(conf) => conf,
        Err(e) => panic!("unexpected error: {e}"),
    }
}

/// The error `text` gives; panics if it parses.
pub(super) fn error(text: &str) -> ConfError {
    match parse("test.conf", text) {
        Ok(conf) => panic!("expected an error, got {conf:?}"),
        Err(e) => e,
    }
}

/// Asserts the error is at `line` of test.conf with `reason`.
pub(super) fn assert_error(text: &str, line: usize, reason: &str) {
    let e = error(text);
    assert_eq!((e.file.as_str(), e.line, e.reason.as_str()), ("test.conf", line, reason), "{text:?}");
}

/// A listener on `port` (and `address`) with nothing else set.
pub(super) fn listener(port: u16, address: Option<&str>) -> ListenerConf {
    ListenerConf { address: address.map(str::to_owned), ..ListenerConf::new(port) }
}

/// The warnings as (line, key, message).
pub(super) fn warnings(conf: &BrokerConf) -> Vec<(usize, &str, &str)> {
    conf.warnings.iter().map(|w| (w.line, w.key.as_str(), w.message.as_str())).collect()
}
