//! The `mosquitto.conf` parser, bridge sections included: any text gives
//! a configuration, or an error naming this file and a line of it; it
//! never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(error) = culex_core::conf::parse("fuzz.conf", text) {
        let lines = text.lines().count().max(1);
        assert_eq!(error.file, "fuzz.conf");
        assert!((1..=lines).contains(&error.line), "{error} ({lines} lines)");
    }
});
