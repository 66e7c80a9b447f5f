//! The security section: `allow_anonymous`, `password_file`, `acl_file`,
//! `allow_zero_length_clientid`, `auto_id_prefix`, `clientid_prefixes`,
//! `per_listener_settings`, and Mosquitto 2.1's `listener_allow_anonymous`
//! and `listener_auto_id_prefix`.
//!
//! # `per_listener_settings`
//! With `per_listener_settings true`, `password_file`, `acl_file`,
//! `allow_anonymous`, `allow_zero_length_clientid` and `auto_id_prefix`
//! belong to the listener they follow
//! ([`ListenerConf::security`](super::ListenerConf::security)); those
//! written before the first `listener` line belong to the default listener
//! (`port`, or the local only listeners) and, as in Mosquitto, open it.
//! As in Mosquitto the key must come before every security setting, and a
//! listener without `allow_anonymous` refuses anonymous clients unless the
//! broker is in local only mode.
//!
//! # `listener_allow_anonymous` and `listener_auto_id_prefix`
//! Mosquitto 2.1's keys give the listener they follow its own
//! `allow_anonymous` and `auto_id_prefix`, whatever `per_listener_settings`
//! says; under it they are the same settings as the plain keys (the last
//! line wins). Without it, a listener that does not set them follows the
//! global keys. They need a `listener` line first, as in 2.1, and the
//! prefix is at most 50 bytes long (2.1's limit).
//!
//! Divergence, on purpose: in local only mode an explicit
//! `allow_anonymous false` is honoured (Mosquitto 2.0 forces anonymous
//! access on).

use std::collections::BTreeMap;

use super::file::{Line, Loc};
use super::listeners::{ListenersDraft, Section};
use super::{BrokerConf, ConfError};
use crate::{ClientIdRules, Config, ListenerId};

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "acl_file",
    "allow_anonymous",
    "allow_zero_length_clientid",
    "auto_id_prefix",
    "clientid_prefixes",
    "listener_allow_anonymous",
    "listener_auto_id_prefix",
    "password_file",
    "per_listener_settings",
];

/// Longest `listener_auto_id_prefix`, as in Mosquitto 2.1.
const MAX_LISTENER_ID_PREFIX: usize = 50;

/// The security settings of one listener, as written under
/// `per_listener_settings true` (or with `listener_allow_anonymous` and
/// `listener_auto_id_prefix`); `None` takes the default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerSecurity {
    /// `allow_anonymous`: default true in local only mode, else false.
    pub allow_anonymous: Option<bool>,
    /// `password_file`.
    pub password_file: Option<String>,
    /// `acl_file`.
    pub acl_file: Option<String>,
    /// `allow_zero_length_clientid`: default true.
    pub allow_zero_length_clientid: Option<bool>,
    /// `auto_id_prefix`: default `auto-`.
    pub auto_id_prefix: Option<String>,
}

/// Who may connect to a listener and what they may do, resolved from the
/// global or per-listener settings: what an access policy is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAuth {
    /// Clients without a user name are accepted.
    pub allow_anonymous: bool,
    /// The `mosquitto_passwd` file, if any.
    pub password_file: Option<String>,
    /// The ACL file, if any.
    pub acl_file: Option<String>,
}

impl BrokerConf {
    /// The access settings of the listener at `index` of
    /// [`listeners`](Self::listeners): its own under
    /// `per_listener_settings`, the global ones otherwise.
    pub fn auth(&self, index: usize) -> ListenerAuth {
        let security = self.listeners.get(index).map(|l| l.security.clone()).unwrap_or_default();
        if !self.per_listener_settings {
            return ListenerAuth {
                allow_anonymous: security.allow_anonymous.unwrap_or(self.core.allow_anonymous),
                password_file: self.password_file.clone(),
                acl_file: self.acl_file.clone(),
            };
        }
        ListenerAuth {
            allow_anonymous: security.allow_anonymous.unwrap_or(self.local_only),
            password_file: security.password_file,
            acl_file: security.acl_file,
        }
    }

    /// Whether every listener has the same access settings: those of the
    /// global keys (neither `per_listener_settings` nor
    /// `listener_allow_anonymous` is used).
    pub fn uniform_auth(&self) -> bool {
        !self.per_listener_settings && self.listeners.iter().all(|l| l.security.allow_anonymous.is_none())
    }

    /// The client id rules of each listener (by its index) under
    /// `per_listener_settings`, for [`Config::listener_client_ids`];
    /// otherwise those of the listeners with a `listener_auto_id_prefix`.
    pub fn listener_client_ids(&self) -> BTreeMap<ListenerId, ClientIdRules> {
        if !self.per_listener_settings {
            return self
                .listeners
                .iter()
                .enumerate()
                .filter_map(|(index, listener)| {
                    let rules = ClientIdRules {
                        allow_zero_length_clientid: self.core.allow_zero_length_clientid,
                        auto_id_prefix: listener.security.auto_id_prefix.clone()?,
                    };
                    Some((ListenerId::at(index), rules))
                })
                .collect();
        }
        let defaults = Config::default();
        self.listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| {
                let security = &listener.security;
                let rules = ClientIdRules {
                    allow_zero_length_clientid: security
                        .allow_zero_length_clientid
                        .unwrap_or(defaults.allow_zero_length_clientid),
                    auto_id_prefix: security.auto_id_prefix.clone().unwrap_or_else(|| defaults.auto_id_prefix.clone()),
                };
                (ListenerId::at(index), rules)
            })
            .collect()
    }
}

/// The global security keys as written, applied at the end.
#[derive(Debug, Default)]
pub(super) struct SecurityDraft {
    allow_anonymous: Option<bool>,
    allow_zero_length_clientid: Option<bool>,
    auto_id_prefix: Option<String>,
    clientid_prefixes: Option<String>,
    password_file: Option<String>,
    acl_file: Option<String>,
    per_listener_settings: bool,
    /// The first security setting seen: `per_listener_settings true` may
    /// not follow it.
    first_security: Option<Loc>,
}

impl SecurityDraft {
    /// Reads one line of this section; under `per_listener_settings` it
    /// configures the listener of `section`.
    pub(super) fn handle(
        &mut self,
        line: &Line<'_>,
        section: Section,
        listeners: &mut ListenersDraft,
    ) -> Result<(), ConfError> {
        match line.key {
            "allow_anonymous" | "allow_zero_length_clientid" | "auto_id_prefix" | "password_file" | "acl_file"
                if self.per_listener_settings =>
            {
                self.listener_security(line, section, listeners)?;
            }
            "allow_anonymous" => {
                let value = line.boolean()?;
                self.note(line);
                self.allow_anonymous = Some(value);
            }
            "allow_zero_length_clientid" => {
                let value = line.boolean()?;
                self.note(line);
                self.allow_zero_length_clientid = Some(value);
            }
            "auto_id_prefix" => {
                let value = line.text()?;
                if self.auto_id_prefix.is_some() {
                    return Err(line.duplicate());
                }
                self.note(line);
                self.auto_id_prefix = Some(value.to_owned());
            }
            "clientid_prefixes" => {
                let value = line.text()?;
                if self.clientid_prefixes.replace(value.to_owned()).is_some() {
                    return Err(line.duplicate());
                }
            }
            "listener_allow_anonymous" | "listener_auto_id_prefix" => self.listener_key(line, section, listeners)?,
            "password_file" => {
                if self.password_file.is_some() {
                    return Err(line.duplicate());
                }
                self.note(line);
                self.password_file = Some(line.text()?.to_owned());
            }
            "acl_file" => {
                if self.acl_file.is_some() {
                    return Err(line.duplicate());
                }
                self.note(line);
                self.acl_file = Some(line.text()?.to_owned());
            }
            "per_listener_settings" => {
                if line.boolean()? {
                    if self.first_security.is_some() {
                        return Err(line.error("per_listener_settings must be set before any other security settings."));
                    }
                    self.per_listener_settings = true;
                }
            }
            _ => return Err(line.unknown()),
        }
        Ok(())
    }

    /// Remembers that a security setting was seen (ignored ones such as
    /// `psk_file` included).
    pub(super) fn note(&mut self, line: &Line<'_>) {
        self.first_security.get_or_insert_with(|| line.loc());
    }

    /// `listener_allow_anonymous` or `listener_auto_id_prefix`: a setting
    /// of the listener of `section`, which must follow a `listener` line.
    fn listener_key(
        &mut self,
        line: &Line<'_>,
        section: Section,
        listeners: &mut ListenersDraft,
    ) -> Result<(), ConfError> {
        if matches!(section, Section::Default) {
            return Err(line.error(format!("The '{}' option requires a listener to be defined first.", line.key)));
        }
        let security = &mut listeners.current(section).security;
        if line.key == "listener_allow_anonymous" {
            security.allow_anonymous = Some(line.boolean()?);
            return Ok(());
        }
        let value = line.text()?;
        if value.len() > MAX_LISTENER_ID_PREFIX {
            return Err(line.error("Invalid listener_auto_id_prefix value: longer than 50 bytes."));
        }
        if security.auto_id_prefix.replace(value.to_owned()).is_some() {
            return Err(line.duplicate());
        }
        Ok(())
    }

    /// A security setting under `per_listener_settings`: it belongs to the
    /// listener of `section`.
    fn listener_security(
        &mut self,
        line: &Line<'_>,
        section: Section,
        listeners: &mut ListenersDraft,
    ) -> Result<(), ConfError> {
        self.note(line);
        // Before any listener line it configures the default listener and
        // so opens it, as in Mosquitto.
        let security = &mut listeners.target(line, section).security;
        match line.key {
            "allow_anonymous" => security.allow_anonymous = Some(line.boolean()?),
            "allow_zero_length_clientid" => security.allow_zero_length_clientid = Some(line.boolean()?),
            "auto_id_prefix" => {
                let value = line.text()?;
                if security.auto_id_prefix.replace(value.to_owned()).is_some() {
                    return Err(line.duplicate());
                }
            }
            "password_file" => {
                let value = line.text()?;
                if security.password_file.replace(value.to_owned()).is_some() {
                    return Err(line.duplicate());
                }
            }
            "acl_file" => {
                let value = line.text()?;
                if security.acl_file.replace(value.to_owned()).is_some() {
                    return Err(line.duplicate());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Sets the global security settings; `allow_anonymous` defaults to
    /// local only mode.
    pub(super) fn apply(self, conf: &mut BrokerConf) {
        let core = &mut conf.core;
        core.allow_anonymous = self.allow_anonymous.unwrap_or(conf.local_only);
        if let Some(allowed) = self.allow_zero_length_clientid {
            core.allow_zero_length_clientid = allowed;
        }
        if let Some(prefix) = self.auto_id_prefix {
            core.auto_id_prefix = prefix;
        }
        core.clientid_prefixes = self.clientid_prefixes;
        conf.password_file = self.password_file;
        conf.acl_file = self.acl_file;
        conf.per_listener_settings = self.per_listener_settings;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::testing::{assert_error, conf};

    #[test]
    fn listener_with_allow_anonymous_true_allows_anonymous() {
        let conf = conf("listener 1883\nallow_anonymous true\n");
        assert!(conf.core.allow_anonymous);
    }

    #[test]
    fn allow_anonymous_false_is_honoured_in_local_only_mode() {
        let conf = conf("allow_anonymous false\n");
        assert!(conf.local_only);
        assert!(!conf.core.allow_anonymous);
    }

    #[test]
    fn allow_anonymous_last_value_wins() {
        assert!(conf("listener 1\nallow_anonymous false\nallow_anonymous true\n").core.allow_anonymous);
    }

    #[test]
    fn allow_anonymous_and_zero_length_clientid_take_booleans() {
        let conf = conf("listener 1\nallow_anonymous true\nallow_zero_length_clientid false\n");
        assert!(conf.core.allow_anonymous);
        assert!(!conf.core.allow_zero_length_clientid);
        assert_error("allow_anonymous yes", 1, "Invalid allow_anonymous value (yes): expected true or false.");
        assert_error("allow_anonymous", 1, "Empty allow_anonymous value in configuration.");
        assert_error(
            "allow_zero_length_clientid TRUE",
            1,
            "Invalid allow_zero_length_clientid value (TRUE): expected true or false.",
        );
    }

    #[test]
    fn auto_id_prefix_takes_the_rest_of_the_line() {
        assert_eq!(conf("auto_id_prefix  dev # x \n").core.auto_id_prefix, "dev # x");
        assert_error("auto_id_prefix", 1, "Empty auto_id_prefix value in configuration.");
        assert_error("auto_id_prefix a\nauto_id_prefix b\n", 2, "Duplicate auto_id_prefix value in configuration.");
    }

    #[test]
    fn per_listener_settings_gives_each_listener_its_security() {
        let conf = conf(
            "per_listener_settings true\n\
             listener 1883 127.0.0.1\nallow_anonymous true\n\
             listener 8884\npassword_file /etc/pw\nacl_file /etc/acl\nallow_anonymous false\n\
             auto_id_prefix dev-\nallow_zero_length_clientid false\n\
             listener 8885\n",
        );
        assert!(conf.per_listener_settings);
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
        let open = ListenerAuth { allow_anonymous: true, password_file: None, acl_file: None };
        assert_eq!(conf.auth(0), open);
        let closed = ListenerAuth {
            allow_anonymous: false,
            password_file: Some("/etc/pw".to_owned()),
            acl_file: Some("/etc/acl".to_owned()),
        };
        assert_eq!(conf.auth(1), closed);
        // A listener without allow_anonymous refuses anonymous clients.
        assert_eq!(conf.auth(2), ListenerAuth { allow_anonymous: false, ..open.clone() });
        let ids = conf.listener_client_ids();
        let rules = |prefix: &str, allow| ClientIdRules {
            allow_zero_length_clientid: allow,
            auto_id_prefix: prefix.to_owned(),
        };
        assert_eq!(ids.get(&ListenerId(0)), Some(&rules("auto-", true)));
        assert_eq!(ids.get(&ListenerId(1)), Some(&rules("dev-", false)));
        assert_eq!(ids.get(&ListenerId(2)), Some(&rules("auto-", true)));
    }

    #[test]
    fn without_per_listener_settings_every_listener_has_the_global_security() {
        let conf = conf("listener 1\npassword_file /pw\nlistener 2\nallow_anonymous true\n");
        let global = ListenerAuth { allow_anonymous: true, password_file: Some("/pw".to_owned()), acl_file: None };
        assert_eq!((conf.auth(0), conf.auth(1)), (global.clone(), global));
        assert!(conf.listener_client_ids().is_empty());
        assert_error(
            "listener 1\npassword_file /a\nlistener 2\npassword_file /b\n",
            4,
            "Duplicate password_file value in configuration.",
        );
    }

    #[test]
    fn per_listener_settings_before_the_first_listener_configure_the_default_one() {
        // Local only mode: the loopback listeners take them.
        let local = conf("per_listener_settings true\nallow_anonymous false\npassword_file /pw\n");
        assert!(local.local_only);
        for index in 0..local.listeners.len() {
            assert!(!local.auth(index).allow_anonymous);
            assert_eq!(local.auth(index).password_file.as_deref(), Some("/pw"));
        }
        // Unset, allow_anonymous is true in local only mode.
        assert!(conf("per_listener_settings true\n").auth(0).allow_anonymous);
        // With listeners, they open the default listener, as in Mosquitto.
        let with = conf("per_listener_settings true\npassword_file /pw\nlistener 1884\n");
        let ports: Vec<u16> = with.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [1884, 1883]);
        assert_eq!(with.auth(1).password_file.as_deref(), Some("/pw"));
        assert_eq!(with.auth(0).password_file, None);
        assert_eq!((with.warnings.len(), with.warnings[0].key.as_str()), (1, "password_file"));
    }

    #[test]
    fn per_listener_settings_must_come_before_security_settings() {
        let reason = "per_listener_settings must be set before any other security settings.";
        assert_error("listener 1\nallow_anonymous true\nper_listener_settings true\n", 3, reason);
        assert_error("acl_file /acl\nper_listener_settings true\n", 2, reason);
        // Other keys may come first; false may come anywhere.
        assert!(conf("listener 1\nmax_keepalive 10\nper_listener_settings true\n").per_listener_settings);
        assert!(!conf("allow_anonymous true\nper_listener_settings false\n").per_listener_settings);
    }

    #[test]
    fn listener_allow_anonymous_overrides_the_global_setting_on_its_listener() {
        let conf = conf(
            "allow_anonymous true
listener 1
listener_allow_anonymous false
listener 2
             listener 3
listener_allow_anonymous true
",
        );
        assert!(!conf.uniform_auth());
        let anonymous: Vec<bool> = (0..3).map(|i| conf.auth(i).allow_anonymous).collect();
        assert_eq!(anonymous, [false, true, true]);
        // Without allow_anonymous the global default is false.
        let closed = self::conf(
            "listener 1
listener 2
listener_allow_anonymous true
",
        );
        assert_eq!((closed.auth(0).allow_anonymous, closed.auth(1).allow_anonymous), (false, true));
        assert!(
            self::conf(
                "listener 1
allow_anonymous true
"
            )
            .uniform_auth()
        );
    }

    #[test]
    fn under_per_listener_settings_the_listener_keys_are_the_plain_ones() {
        let conf = conf(
            "per_listener_settings true
listener 1
listener_allow_anonymous true
listener_auto_id_prefix one-
             listener 2
allow_anonymous true
listener_allow_anonymous false
",
        );
        assert_eq!((conf.auth(0).allow_anonymous, conf.auth(1).allow_anonymous), (true, false));
        let ids = conf.listener_client_ids();
        assert_eq!(ids[&ListenerId(0)].auto_id_prefix, "one-");
        assert_eq!(ids[&ListenerId(1)].auto_id_prefix, "auto-");
    }

    #[test]
    fn listener_auto_id_prefix_gives_its_listener_its_own_prefix() {
        let conf = conf(
            "auto_id_prefix g-
allow_zero_length_clientid false
listener 1
listener 2
listener_auto_id_prefix l-
",
        );
        let ids = conf.listener_client_ids();
        assert_eq!(ids.keys().copied().collect::<Vec<_>>(), [ListenerId(1)]);
        assert_eq!(
            ids[&ListenerId(1)],
            ClientIdRules { allow_zero_length_clientid: false, auto_id_prefix: "l-".to_owned() }
        );
        assert_eq!(conf.core.auto_id_prefix, "g-");
        let long = "x".repeat(51);
        assert_error(
            &format!(
                "listener 1
listener_auto_id_prefix {long}
"
            ),
            2,
            "Invalid listener_auto_id_prefix value: longer than 50 bytes.",
        );
        assert_error(
            "listener 1
listener_auto_id_prefix a
listener_auto_id_prefix b
",
            3,
            "Duplicate listener_auto_id_prefix value in configuration.",
        );
    }

    #[test]
    fn listener_keys_need_a_listener_line() {
        for key in ["listener_allow_anonymous true", "listener_auto_id_prefix x-"] {
            let name = key.split(' ').next().unwrap_or_default();
            let reason = format!("The '{name}' option requires a listener to be defined first.");
            assert_error(
                &format!(
                    "allow_anonymous true
{key}
"
                ),
                2,
                &reason,
            );
        }
        assert_error(
            "listener 1
listener_allow_anonymous maybe
",
            2,
            "Invalid listener_allow_anonymous value (maybe): expected true or false.",
        );
    }

    #[test]
    fn clientid_prefixes_takes_the_rest_of_the_line_once() {
        assert_eq!(
            conf(
                "clientid_prefixes secure-
"
            )
            .core
            .clientid_prefixes
            .as_deref(),
            Some("secure-")
        );
        assert_eq!(conf("").core.clientid_prefixes, None);
        assert_error(
            "clientid_prefixes
",
            1,
            "Empty clientid_prefixes value in configuration.",
        );
        assert_error(
            "clientid_prefixes a
clientid_prefixes b
",
            2,
            "Duplicate clientid_prefixes value in configuration.",
        );
    }

    #[test]
    fn per_listener_duplicates_are_errors_within_one_listener_only() {
        let conf = conf("per_listener_settings true\nlistener 1\nacl_file /a\nlistener 2\nacl_file /b\n");
        assert_eq!(conf.auth(1).acl_file.as_deref(), Some("/b"));
        assert_error(
            "per_listener_settings true\nlistener 1\npassword_file /a\npassword_file /b\n",
            4,
            "Duplicate password_file value in configuration.",
        );
    }
}
