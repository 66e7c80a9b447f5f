//! The configuration the Debian package installs (`packaging/deb/culex.conf`)
//! is read without an error or a warning, and says what the package
//! promises: local only mode, the store under /var/lib/culex, the log under
//! /var/log/culex, user culex, local settings from conf.d.
#![allow(clippy::unwrap_used)]

use culex_core::conf::LogDest;
use culex_runtime::{Endpoint, Launch};

const PACKAGED: &str = include_str!("../../packaging/deb/culex.conf");

#[test]
fn the_packaged_configuration_is_read_as_documented() {
    let dir = std::env::temp_dir().join(format!("culex-packaged-conf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let conf_d = dir.join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    // Only the place of conf.d changes: /etc/culex need not exist here.
    let text = PACKAGED.replace("include_dir /etc/culex/conf.d", &format!("include_dir {}", conf_d.display()));
    assert_ne!(text, PACKAGED, "the packaged file has no include_dir line");
    std::fs::write(conf_d.join("README"), "not read: the name does not end in .conf\n").unwrap();
    let path = dir.join("culex.conf");
    std::fs::write(&path, &text).unwrap();

    let args = ["culex", "-c", path.to_str().unwrap()].map(str::to_owned);
    let Launch::Serve(settings) = culex_runtime::settings::load(args).unwrap() else { panic!("not a broker run") };
    assert_eq!(settings.notices.iter().filter(|n| n.starts_with("Warning")).count(), 0, "{:?}", settings.notices);
    assert_eq!(settings.process.user.as_deref(), Some("culex"));
    let persistence = settings.persistence.as_ref().expect("persistence true");
    assert_eq!(persistence.path(), std::path::Path::new("/var/lib/culex/mosquitto.db"));
    assert_eq!(settings.log.dests, vec![LogDest::File("/var/log/culex/culex.log".to_owned())]);
    let mut addresses: Vec<String> = settings.listeners.iter().map(|l| l.addr.to_string()).collect();
    addresses.sort();
    assert_eq!(addresses, ["127.0.0.1:1883", "[::1]:1883"], "local only mode");
    assert!(settings.listeners.iter().all(|l| matches!(l.addr, Endpoint::Tcp(_))));

    // A file of conf.d is read where include_dir stands.
    std::fs::write(conf_d.join("network.conf"), "listener 18830 127.0.0.1\n").unwrap();
    let args = ["culex", "-c", path.to_str().unwrap()].map(str::to_owned);
    let Launch::Serve(settings) = culex_runtime::settings::load(args).unwrap() else { panic!("not a broker run") };
    let addresses: Vec<String> = settings.listeners.iter().map(|l| l.addr.to_string()).collect();
    assert_eq!(addresses, ["127.0.0.1:18830"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
