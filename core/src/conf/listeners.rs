//! The listener section: `listener`, `port`, `bind_address` and the keys
//! scoped to a listener (`protocol`, `max_connections`, `socket_domain`;
//! the TLS keys are read by [`super::tls`], those that change how clients
//! are admitted and which topics they see by `listener_rules.rs`).
//!
//! # Defaults (Mosquitto 2)
//!
//! Taken from Mosquitto 2.0's `src/conf.c` (`config__read`,
//! `config__parse_args`) and `listeners__start_local_only`, and from
//! mosquitto.conf(5):
//! - **Local only mode.** A configuration without `listener`, `port` and
//!   `bind_address` listens on port 1883 of 127.0.0.1 and ::1 only, and
//!   `allow_anonymous` defaults to true ([`BrokerConf::local_only`]).
//! - Once the configuration opens a listener (`listener`, `port` or
//!   `bind_address`), `allow_anonymous` defaults to **false**.
//! - `port N` and `bind_address A` configure the *default listener*,
//!   wherever they appear; it is opened when either is given (port 1883
//!   without `port`, all addresses without `bind_address`). As in
//!   Mosquitto, `protocol`, `max_connections` or `socket_domain` written
//!   before the first `listener` line also belong to the default listener
//!   and open it on port 1883: Culex does so too, with a warning.
//!
//! # Divergences, on purpose
//! - In local only mode `protocol`, `max_connections` and `socket_domain`
//!   apply to the loopback listeners instead of opening port 1883 on all
//!   addresses.
//! - A duplicate `listener` (same port and address) is an error.

use std::collections::BTreeMap;

use super::file::{Line, Loc};
use super::limits::positive_limit;
use super::{BrokerConf, ConfError, ListenerSecurity, Located, TlsConf, Warning};
use crate::{ListenerId, ListenerRules, ListenerSummary};

/// Port of the default listener and of the local only listeners.
pub const DEFAULT_PORT: u16 = 1883;

/// The loopback addresses of local only mode, as Mosquitto 2 opens them.
const LOOPBACK_V4: &str = "127.0.0.1";
const LOOPBACK_V6: &str = "::1";

/// The keys of this section.
pub(super) const KEYS: &[&str] =
    &["bind_address", "bind_interface", "listener", "max_connections", "port", "protocol", "socket_domain"];

/// What a listener speaks. Mosquitto: `protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenerProtocol {
    /// MQTT over TCP (`protocol mqtt`, the default).
    #[default]
    Mqtt,
    /// MQTT over WebSocket (`protocol websockets`).
    WebSockets,
    /// The HTTP API and status page (`protocol http_api`, as Mosquitto
    /// 2.1 names it): bound to loopback unless given an address.
    HttpApi,
}

/// Which address family a listener without an address binds. Mosquitto:
/// `socket_domain`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketDomain {
    /// `socket_domain ipv4`.
    Ipv4,
    /// `socket_domain ipv6`.
    Ipv6,
}

/// One socket to listen on, with the settings Mosquitto scopes to a
/// listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConf {
    /// TCP port, 1 to 65535; 0 for a Unix socket listener (`listener 0
    /// PATH`), whose path is then `address`.
    pub port: u16,
    /// Address or host name to bind; `None` binds every address. The
    /// socket's path for a Unix socket listener.
    pub address: Option<String>,
    /// MQTT or WebSocket.
    pub protocol: ListenerProtocol,
    /// Connections this listener serves at once; `None` means no limit
    /// (Mosquitto: -1 or 0). The core enforces it
    /// ([`Config::listener_max_connections`](crate::Config::listener_max_connections)).
    pub max_connections: Option<usize>,
    /// Address family, when `socket_domain` is given.
    pub socket_domain: Option<SocketDomain>,
    /// `bind_interface`: the network interface whose addresses the
    /// listener binds, one per address family.
    pub bind_interface: Option<String>,
    /// Its own security settings: under `per_listener_settings true`, and
    /// Mosquitto 2.1's `listener_allow_anonymous` and
    /// `listener_auto_id_prefix` whatever it says (unset: the global
    /// settings apply).
    pub security: ListenerSecurity,
    /// How its clients are admitted and which topics they see
    /// (`use_username_as_clientid`, `max_qos`, `mount_point`,
    /// `accept_protocol_versions`).
    pub rules: ListenerRules,
    /// Mosquitto keys given for this listener that Culex ignored (each also
    /// has a [`Warning`]).
    pub ignored_keys: Vec<String>,
    /// TLS: certificate, key, client certificate checks.
    pub tls: TlsConf,
    /// `http_dir`: the directory whose files a websockets listener serves
    /// to plain HTTP requests; `None` answers them with an error.
    pub http_dir: Option<Located<String>>,
    /// `websockets_origin` lines: when any is given, a WebSocket upgrade
    /// must carry one of them as its `Origin`.
    pub websockets_origins: Vec<String>,
}

impl ListenerConf {
    /// A plain MQTT listener on every address of `port`, without limits.
    pub fn new(port: u16) -> Self {
        Self {
            port,
            address: None,
            protocol: ListenerProtocol::Mqtt,
            max_connections: None,
            socket_domain: None,
            bind_interface: None,
            security: ListenerSecurity::default(),
            rules: ListenerRules::DEFAULT,
            ignored_keys: Vec::new(),
            tls: TlsConf::default(),
            http_dir: None,
            websockets_origins: Vec::new(),
        }
    }
}

impl ListenerConf {
    /// The path of a Unix socket listener.
    pub fn unix_socket(&self) -> Option<&str> {
        match self.port {
            0 => self.address.as_deref(),
            _ => None,
        }
    }
}

impl BrokerConf {
    /// The connection limit of each listener (by its index) that has one,
    /// for [`Config::listener_max_connections`](crate::Config::listener_max_connections).
    pub fn listener_max_connections(&self) -> BTreeMap<ListenerId, usize> {
        let limits = self.listeners.iter().enumerate();
        limits.filter_map(|(index, l)| Some((ListenerId::at(index), l.max_connections?))).collect()
    }

    /// Every listener as the HTTP API lists it.
    pub fn listener_summaries(&self) -> Vec<ListenerSummary> {
        let listeners = self.listeners.iter().enumerate();
        listeners
            .map(|(index, l)| ListenerSummary {
                id: ListenerId::at(index),
                port: l.port,
                path: l.unix_socket().map(str::to_owned),
                protocol: l.protocol,
                tls: l.tls.certfile.is_some(),
                mtls: l.tls.certfile.is_some() && l.tls.require_certificate,
                allow_anonymous: self.auth(index).allow_anonymous,
            })
            .collect()
    }
}

/// Which listener the listener-scoped keys of a line apply to.
#[derive(Debug, Clone, Copy)]
pub(super) enum Section {
    /// Before any `listener` line of this file: the default listener.
    Default,
    /// After `listener`: that listener, by index.
    Listener(usize),
}

/// The listener keys as written, assembled at the end.
#[derive(Debug)]
pub(super) struct ListenersDraft {
    /// The `listener` lines, in file order.
    listeners: Vec<ListenerConf>,
    /// Settings of the default listener (`port`, `bind_address`, and the
    /// listener keys before any `listener` line).
    default_listener: ListenerConf,
    /// `port` or `bind_address` was given.
    default_requested: bool,
    /// `port` was given.
    port_set: bool,
    /// First listener key (other than port/bind_address) given for the
    /// default listener: it opens that listener, as in Mosquitto.
    default_touched: Option<(Loc, String)>,
    /// Some `listener`, `port` or `bind_address` line was seen.
    opens_listener: bool,
}

impl Default for ListenersDraft {
    fn default() -> Self {
        Self {
            listeners: Vec::new(),
            default_listener: ListenerConf::new(DEFAULT_PORT),
            default_requested: false,
            port_set: false,
            default_touched: None,
            opens_listener: false,
        }
    }
}

impl ListenersDraft {
    /// Reads one line of this section; `listener` starts a new `section`.
    pub(super) fn handle(
        &mut self,
        line: &Line<'_>,
        section: &mut Section,
        warnings: &mut Vec<Warning>,
    ) -> Result<(), ConfError> {
        match line.key {
            "listener" => self.listener(line, section)?,
            "port" => {
                let port = line.port()?;
                if self.port_set {
                    warnings.push(
                        line.warning("Default listener port specified multiple times. Only the latest will be used."),
                    );
                }
                self.port_set = true;
                self.default_listener.port = port;
                self.default_requested = true;
                self.opens_listener = true;
            }
            "bind_address" => {
                let address = line.word()?;
                if self.default_listener.address.is_some() {
                    return Err(line.error("Duplicate default listener bind_address value in configuration."));
                }
                if !matches!(section, Section::Default) {
                    warnings.push(line.warning(
                        "bind_address sets the address of the default listener (see port), not of the listener \
                         above; write `listener PORT ADDRESS` to bind that one",
                    ));
                }
                self.default_listener.address = Some(address.to_owned());
                self.default_requested = true;
                self.opens_listener = true;
            }
            "protocol" => {
                let protocol = match line.word()? {
                    "mqtt" => ListenerProtocol::Mqtt,
                    "websockets" => ListenerProtocol::WebSockets,
                    "http_api" => ListenerProtocol::HttpApi,
                    other => {
                        return Err(line.error(format!(
                            "Invalid protocol value ({other}): expected mqtt, websockets or http_api."
                        )));
                    }
                };
                self.target(line, *section).protocol = protocol;
            }
            "max_connections" => self.target(line, *section).max_connections = positive_limit(line)?,
            "bind_interface" => {
                let interface = line.text()?.to_owned();
                if self.target(line, *section).bind_interface.replace(interface).is_some() {
                    return Err(line.duplicate());
                }
            }
            "socket_domain" => {
                let domain = match line.word()? {
                    "ipv4" => SocketDomain::Ipv4,
                    "ipv6" => SocketDomain::Ipv6,
                    other => {
                        return Err(line.error(format!(
                            "Invalid socket_domain value \"{other}\" in configuration: expected ipv4 or ipv6."
                        )));
                    }
                };
                self.target(line, *section).socket_domain = Some(domain);
            }
            _ => return Err(line.unknown()),
        }
        Ok(())
    }

    /// The listener of `section`.
    pub(super) fn current(&mut self, section: Section) -> &mut ListenerConf {
        match section {
            Section::Default => &mut self.default_listener,
            // Sections only name listeners already pushed, and none is removed.
            Section::Listener(index) => &mut self.listeners[index],
        }
    }

    /// The listener a listener-scoped `line` configures. Before any
    /// `listener` line that is the default listener, which the line then
    /// opens, as in Mosquitto.
    pub(super) fn target(&mut self, line: &Line<'_>, section: Section) -> &mut ListenerConf {
        if matches!(section, Section::Default) && self.default_touched.is_none() {
            self.default_touched = Some((line.loc(), line.key.to_owned()));
        }
        self.current(section)
    }

    fn listener(&mut self, line: &Line<'_>, section: &mut Section) -> Result<(), ConfError> {
        self.opens_listener = true;
        let (port, address) = match line.words()[..] {
            [] => return Err(line.error("Empty listener value in configuration.")),
            [port] => (port, None),
            [port, address] => (port, Some(address)),
            [_, _, extra, ..] => {
                return Err(line.error(format!("Unexpected \"{extra}\" after the listener address.")));
            }
        };
        let port = match port {
            "0" if address.is_none() => {
                return Err(line.error("A listener with port 0 must provide a Unix socket path."));
            }
            "0" => 0,
            port => line.port_from(port)?,
        };
        let address = address.map(str::to_owned);
        if self.listeners.iter().any(|l| l.port == port && l.address == address) {
            return Err(line.error(match (port, address.as_deref()) {
                (0, Some(path)) => format!("Duplicate listener for Unix socket {path}."),
                (_, Some(a)) => format!("Duplicate listener for port {port} on {a}."),
                (_, None) => format!("Duplicate listener for port {port}."),
            }));
        }
        self.listeners.push(ListenerConf { address, ..ListenerConf::new(port) });
        *section = Section::Listener(self.listeners.len() - 1);
        Ok(())
    }

    /// The listeners to open, and whether that is local only mode.
    pub(super) fn assemble(self, warnings: &mut Vec<Warning>) -> (Vec<ListenerConf>, bool) {
        let local_only = !self.opens_listener;
        let mut listeners = self.listeners;
        let template = self.default_listener;
        if local_only {
            let addresses: &[&str] = match template.socket_domain {
                Some(SocketDomain::Ipv4) => &[LOOPBACK_V4],
                Some(SocketDomain::Ipv6) => &[LOOPBACK_V6],
                None => &[LOOPBACK_V4, LOOPBACK_V6],
            };
            for address in addresses {
                listeners.push(ListenerConf { address: Some((*address).to_owned()), ..template.clone() });
            }
        } else if self.default_requested || self.default_touched.is_some() {
            if let (false, Some((loc, key))) = (self.default_requested, &self.default_touched) {
                warnings.push(loc.warning(
                    key,
                    "before any listener line this configures the default listener, so port 1883 is opened on all \
                     addresses, as Mosquitto does; move it below a listener line to apply it there",
                ));
            }
            listeners.push(template);
        }
        (listeners, local_only)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::testing::{assert_error, conf, listener, warnings};

    #[test]
    fn listener_leaves_local_only_and_defaults_anonymous_to_false() {
        let conf = conf("listener 1883\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1883, None)]);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn port_opens_default_listener_on_all_addresses() {
        let conf = conf("port 1884\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1884, None)]);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn bind_address_opens_default_listener_on_1883_at_that_address() {
        let conf = conf("bind_address 10.0.0.1\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners, vec![listener(1883, Some("10.0.0.1"))]);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn default_listener_comes_after_configured_listeners() {
        let conf = conf("port 1883\nbind_address 0.0.0.0\nlistener 8080 127.0.0.1\nprotocol websockets\n");
        assert_eq!(
            conf.listeners,
            vec![
                ListenerConf { protocol: ListenerProtocol::WebSockets, ..listener(8080, Some("127.0.0.1")) },
                listener(1883, Some("0.0.0.0")),
            ]
        );
    }

    #[test]
    fn port_twice_warns_and_the_latest_wins() {
        let conf = conf("port 1884\nport 1885\n");
        assert_eq!(conf.listeners, vec![listener(1885, None)]);
        assert_eq!(
            warnings(&conf),
            vec![(2, "port", "Default listener port specified multiple times. Only the latest will be used.")]
        );
    }

    #[test]
    fn port_out_of_range_is_an_error() {
        assert_error("port 0", 1, "Invalid port value (0): expected an integer from 1 to 65535.");
        assert_error("port 65536", 1, "Invalid port value (65536): expected an integer from 1 to 65535.");
        assert_error("port x", 1, "Invalid port value (x): expected an integer from 1 to 65535.");
        assert_error("port", 1, "Empty port value in configuration.");
    }

    #[test]
    fn bind_address_twice_is_an_error() {
        assert_error(
            "bind_address a\nbind_address b\n",
            2,
            "Duplicate default listener bind_address value in configuration.",
        );
    }

    #[test]
    fn bind_address_after_listener_warns_that_it_binds_the_default_listener() {
        let conf = conf("listener 1884\nbind_address 10.0.0.1\n");
        assert_eq!(conf.listeners, vec![listener(1884, None), listener(1883, Some("10.0.0.1"))]);
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!((conf.warnings[0].line, conf.warnings[0].key.as_str()), (2, "bind_address"));
    }

    #[test]
    fn several_listeners_keep_file_order_and_addresses() {
        let conf = conf("listener 1883\nlistener 8883 192.168.1.2\nlistener 1883 ::1 # loopback\n");
        assert_eq!(
            conf.listeners,
            vec![listener(1883, None), listener(8883, Some("192.168.1.2")), listener(1883, Some("::1"))]
        );
    }

    #[test]
    fn listener_errors_name_line_and_reason() {
        assert_error("\nlistener\n", 2, "Empty listener value in configuration.");
        assert_error("listener 70000", 1, "Invalid port value (70000): expected an integer from 1 to 65535.");
        assert_error("listener -1", 1, "Invalid port value (-1): expected an integer from 1 to 65535.");
        assert_error("listener 1883 a b", 1, "Unexpected \"b\" after the listener address.");
        assert_error("listener 0", 1, "A listener with port 0 must provide a Unix socket path.");
        assert_error("listener 1883\nlistener 1883\n", 2, "Duplicate listener for port 1883.");
        assert_error("listener 1883 ::1\nlistener 1883 ::1\n", 2, "Duplicate listener for port 1883 on ::1.");
    }

    #[test]
    fn unix_socket_listener_takes_the_settings_that_follow() {
        let conf = conf("listener 1883\nlistener 0 /run/mqtt.sock\nprotocol websockets\nmax_connections 3\n");
        assert!(conf.warnings.is_empty());
        assert_eq!(conf.listeners[0], listener(1883, None));
        let unix = &conf.listeners[1];
        assert_eq!((unix.port, unix.unix_socket()), (0, Some("/run/mqtt.sock")));
        assert_eq!((unix.protocol, unix.max_connections), (ListenerProtocol::WebSockets, Some(3)));
    }

    #[test]
    fn unix_socket_alone_leaves_local_only_mode() {
        let conf = conf("listener 0 /run/mqtt.sock\n");
        assert!(!conf.local_only);
        assert_eq!(conf.listeners.len(), 1);
        assert_eq!(conf.listeners[0].unix_socket(), Some("/run/mqtt.sock"));
        assert_error(
            "listener 0 /run/mqtt.sock\nlistener 0 /run/mqtt.sock\n",
            2,
            "Duplicate listener for Unix socket /run/mqtt.sock.",
        );
    }

    #[test]
    fn protocol_applies_to_the_current_listener() {
        let conf = conf(
            "listener 1883\nlistener 9001\nprotocol websockets\nlistener 1884\nprotocol mqtt\nlistener 9883\nprotocol http_api\n",
        );
        let protocols: Vec<_> = conf.listeners.iter().map(|l| l.protocol).collect();
        let expected =
            [ListenerProtocol::Mqtt, ListenerProtocol::WebSockets, ListenerProtocol::Mqtt, ListenerProtocol::HttpApi];
        assert_eq!(protocols, expected);
        assert_error(
            "listener 1\nprotocol mqttsn\n",
            2,
            "Invalid protocol value (mqttsn): expected mqtt, websockets or http_api.",
        );
        assert_error("listener 1\nprotocol\n", 2, "Empty protocol value in configuration.");
    }

    #[test]
    fn max_connections_applies_per_listener() {
        let conf = conf("listener 1883\nlistener 1884\nmax_connections 5\nlistener 1885\nmax_connections 10\n");
        let limits: Vec<_> = conf.listeners.iter().map(|l| l.max_connections).collect();
        assert_eq!(limits, [None, Some(5), Some(10)]);
        let by_id = conf.listener_max_connections().into_iter().collect::<Vec<_>>();
        assert_eq!(by_id, [(ListenerId(1), 5), (ListenerId(2), 10)]);
        // The broker-wide limit is global_max_connections alone.
        assert_eq!(conf.core.max_connections, None);
    }

    #[test]
    fn max_connections_zero_or_below_means_no_limit() {
        // As Mosquitto 2.0, which limits only when the value is positive.
        let conf = conf("listener 1883\nmax_connections 0\nlistener 1884\nmax_connections -1\n");
        assert_eq!((conf.listeners[0].max_connections, conf.listeners[1].max_connections), (None, None));
        assert_error(
            "listener 1\nmax_connections 2147483648\n",
            2,
            "Invalid max_connections value (2147483648): expected -1 (no limit) or an integer up to 2147483647.",
        );
    }

    #[test]
    fn socket_domain_applies_to_the_current_listener() {
        let conf = conf("listener 1883\nsocket_domain ipv6\nlistener 1884\nsocket_domain ipv4\n");
        let domains: Vec<_> = conf.listeners.iter().map(|l| l.socket_domain).collect();
        assert_eq!(domains, [Some(SocketDomain::Ipv6), Some(SocketDomain::Ipv4)]);
        assert_error(
            "listener 1\nsocket_domain ipx\n",
            2,
            "Invalid socket_domain value \"ipx\" in configuration: expected ipv4 or ipv6.",
        );
    }

    #[test]
    fn listener_key_before_any_listener_opens_default_listener_with_a_warning() {
        let conf = conf("max_connections 100\nlistener 1884\n");
        assert_eq!(
            conf.listeners,
            vec![listener(1884, None), ListenerConf { max_connections: Some(100), ..listener(1883, None) }]
        );
        assert_eq!(conf.warnings.len(), 1);
        assert_eq!((conf.warnings[0].line, conf.warnings[0].key.as_str()), (1, "max_connections"));
        assert!(conf.warnings[0].message.contains("port 1883 is opened on all addresses"));
    }

    #[test]
    fn listener_keys_before_port_configure_the_default_listener_silently() {
        let conf = conf("port 1884\nmax_connections 7\nprotocol websockets\n");
        assert_eq!(
            conf.listeners,
            vec![ListenerConf {
                protocol: ListenerProtocol::WebSockets,
                max_connections: Some(7),
                ..listener(1884, None)
            }]
        );
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn local_only_listeners_carry_default_listener_settings() {
        let conf = conf("max_connections 5\nsocket_domain ipv4\n");
        assert!(conf.local_only);
        assert_eq!(
            conf.listeners,
            vec![ListenerConf {
                max_connections: Some(5),
                socket_domain: Some(SocketDomain::Ipv4),
                ..listener(1883, Some("127.0.0.1"))
            }]
        );
        let v6 = self::conf("socket_domain ipv6\n");
        assert_eq!(v6.listeners.iter().map(|l| l.address.as_deref()).collect::<Vec<_>>(), [Some("::1")]);
    }
}
