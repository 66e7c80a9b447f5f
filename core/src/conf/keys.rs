//! The configuration keys Mosquitto knows and Culex does not act on.
//!
//! Gathered from Mosquitto's `src/conf.c` (1.6, 2.0 and the development
//! branch) and mosquitto.conf(5). A key here is reported as a warning and
//! ignored; a key neither here nor handled by Culex stops start-up, as an
//! unknown key stops Mosquitto.

/// Mosquitto keys Culex accepts with a warning and otherwise ignores.
/// The bridge keys of Mosquitto's development branch (2.1) are among
/// them; those of 2.0 are read by `bridges.rs`.
pub(super) const IGNORED: &[&str] = &[
    "auth_plugin",
    "auth_plugin_deny_special_chars",
    "bridge_ciphers",
    "bridge_ciphers_tls1.3",
    "bridge_max_topic_alias",
    "bridge_receive_maximum",
    "bridge_reload_type",
    "bridge_session_expiry_interval",
    "bridge_tcp_keepalive",
    "bridge_tcp_user_timeout",
    "bridge_tls_use_os_certs",
    "enable_control_api",
    "global_plugin",
    "max_topic_alias",
    "max_topic_alias_broker",
    "plugin",
    "plugin_load",
    "plugin_use",
    "psk_file",
    "retry_interval",
    "store_clean_interval",
];

/// The ignored keys that belong to the listener they follow in Mosquitto
/// (WebSocket and per-listener options, TLS keys Culex does not act on).
/// Culex records them on that listener
/// ([`ListenerConf::ignored_keys`](super::ListenerConf::ignored_keys)).
const LISTENER_SCOPED: &[&str] = &["max_topic_alias", "max_topic_alias_broker"];

/// Whether Mosquitto knows `key` although Culex ignores it (plugin
/// options `auth_opt_*` and `plugin_opt_*` included).
pub(super) fn is_ignored_mosquitto_key(key: &str) -> bool {
    IGNORED.contains(&key) || key.starts_with("auth_opt_") || key.starts_with("plugin_opt_")
}

/// Ignored keys that are security settings: `per_listener_settings true`
/// may not follow them (Mosquitto's rule).
const SECURITY: &[&str] = &["auth_plugin", "plugin", "psk_file"];

/// Whether an ignored key is a security setting (plugin options
/// included).
pub(super) fn is_security_key(key: &str) -> bool {
    SECURITY.contains(&key) || key.starts_with("auth_opt_") || key.starts_with("plugin_opt_")
}

/// Whether an ignored key belongs to the current listener.
pub(super) fn is_listener_scoped(key: &str) -> bool {
    LISTENER_SCOPED.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_scoped_keys_are_all_ignored_keys() {
        for key in LISTENER_SCOPED {
            assert!(IGNORED.contains(key), "{key}");
        }
    }

    #[test]
    fn ignored_keys_are_sorted_and_unique() {
        assert!(IGNORED.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(LISTENER_SCOPED.windows(2).all(|pair| pair[0] < pair[1]));
    }

    #[test]
    fn plugin_option_prefixes_are_known() {
        assert!(is_ignored_mosquitto_key("auth_opt_backend"));
        assert!(is_ignored_mosquitto_key("plugin_opt_db"));
        assert!(!is_ignored_mosquitto_key("plugin_optx"));
    }
}
