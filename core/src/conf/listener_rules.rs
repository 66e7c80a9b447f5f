//! The listener keys that change how a listener's clients are admitted
//! and which topics they see: `use_username_as_clientid`, `max_qos` (and
//! its other name `maximum_qos`), `mount_point` and Mosquitto 2.1's
//! `accept_protocol_versions`. They fill the listener's
//! [`ListenerRules`]; the broker applies them
//! ([`Config::listener_rules`](crate::Config::listener_rules)).
//!
//! Where they may stand follows Mosquitto: `use_username_as_clientid` and
//! `max_qos` before the first `listener` line configure the default
//! listener (and open it, with the warning of [`super::listeners`]);
//! `mount_point` (2.0) and `accept_protocol_versions` (2.1) need a
//! `listener` line first.
//!
//! Divergence, on purpose: an `accept_protocol_versions` value other than
//! 3, 4 and 5 stops start-up (Mosquitto 2.1 skips it silently).

use std::collections::BTreeMap;

use super::file::Line;
use super::listeners::{ListenersDraft, Section};
use super::{BrokerConf, ConfError, Warning};
use crate::topic::TopicName;
use crate::types::QoS;
use crate::{ListenerId, ListenerRules};

/// The keys of this section.
pub(super) const KEYS: &[&str] =
    &["accept_protocol_versions", "max_qos", "maximum_qos", "mount_point", "use_username_as_clientid"];

/// Reads one line of this section into the listener of `section`.
pub(super) fn handle(
    line: &Line<'_>,
    section: Section,
    listeners: &mut ListenersDraft,
    warnings: &mut Vec<Warning>,
) -> Result<(), ConfError> {
    match line.key {
        "use_username_as_clientid" => {
            let value = line.boolean()?;
            listeners.target(line, section).rules.use_username_as_clientid = value;
        }
        "max_qos" | "maximum_qos" => {
            let value = line.int(0, 2)?;
            let qos = u8::try_from(value).ok().and_then(QoS::from_bits).unwrap_or(QoS::ExactlyOnce);
            listeners.target(line, section).rules.max_qos = qos;
        }
        "mount_point" => {
            require_listener(line, section, "You must create a listener before using the mount_point option.")?;
            let value = line.text()?;
            if TopicName::new(value).is_err() {
                return Err(line.error(format!(
                    "Invalid mount_point value ({value}): a mount point is a topic name (no + or #, at most 65535 \
                     bytes)."
                )));
            }
            let rules = &mut listeners.current(section).rules;
            if rules.mount_point.replace(value.to_owned()).is_some() {
                return Err(line.duplicate());
            }
        }
        "accept_protocol_versions" => {
            let reason = "The 'accept_protocol_versions' option requires a listener to be defined first.";
            require_listener(line, section, reason)?;
            let (v31, v311) = protocol_versions(line)?;
            if !v31 && !v311 {
                warnings.push(line.warning(
                    "this listener accepts only MQTT 5, which Culex does not serve: every client of it is refused \
                     (CONNACK 0x01)",
                ));
            }
            let rules = &mut listeners.current(section).rules;
            rules.accept_mqtt31 = v31;
            rules.accept_mqtt311 = v311;
        }
        _ => return Err(line.unknown()),
    }
    Ok(())
}

/// Mosquitto 2.1 accepts these keys only after a `listener` line.
fn require_listener(line: &Line<'_>, section: Section, reason: &str) -> Result<(), ConfError> {
    match section {
        Section::Default => Err(line.error(reason)),
        Section::Listener(_) => Ok(()),
    }
}

/// Whether an `accept_protocol_versions` value lists MQTT 3.1 (3) and
/// 3.1.1 (4). Versions are separated by commas, blanks or both; 5 (MQTT 5)
/// is valid and changes nothing: Culex refuses MQTT 5 clients anyway.
fn protocol_versions(line: &Line<'_>) -> Result<(bool, bool), ConfError> {
    let words = line.words();
    let mut versions = words.iter().flat_map(|w| w.split(',')).filter(|v| !v.is_empty()).peekable();
    if versions.peek().is_none() {
        return Err(line.empty());
    }
    let (mut v31, mut v311) = (false, false);
    for version in versions {
        match version {
            "3" => v31 = true,
            "4" => v311 = true,
            "5" => {}
            other => {
                return Err(line.error(format!(
                    "Invalid accept_protocol_versions value ({other}): expected 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 \
                     (MQTT 5), separated by commas."
                )));
            }
        }
    }
    Ok((v31, v311))
}

impl BrokerConf {
    /// The rules of each listener (by its index) that sets any, for
    /// [`Config::listener_rules`](crate::Config::listener_rules).
    pub fn listener_rules(&self) -> BTreeMap<ListenerId, ListenerRules> {
        self.listeners
            .iter()
            .enumerate()
            .filter(|(_, listener)| listener.rules != ListenerRules::DEFAULT)
            .map(|(index, listener)| (ListenerId::at(index), listener.rules.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;
    use crate::conf::testing::{assert_error, conf, warnings};

    #[test]
    fn listener_keys_configure_the_listener_they_follow() {
        let conf = conf(
            "listener 1883\n\
             listener 1884\nuse_username_as_clientid true\nmax_qos 1\nmount_point tenant/a/\n\
             accept_protocol_versions 4\n",
        );
        assert_eq!(conf.listeners[0].rules, ListenerRules::DEFAULT);
        let rules = &conf.listeners[1].rules;
        assert!(rules.use_username_as_clientid);
        assert_eq!(rules.max_qos, QoS::AtLeastOnce);
        assert_eq!(rules.mount_point.as_deref(), Some("tenant/a/"));
        assert!(rules.accepts(Protocol::V311) && !rules.accepts(Protocol::V31));
        let all = conf.listener_rules();
        assert_eq!(all.keys().copied().collect::<Vec<_>>(), [ListenerId(1)]);
        assert!(conf.warnings.is_empty(), "{:?}", conf.warnings);
    }

    #[test]
    fn maximum_qos_is_max_qos_and_takes_0_to_2() {
        assert_eq!(conf("listener 1\nmaximum_qos 0\n").listeners[0].rules.max_qos, QoS::AtMostOnce);
        assert_error("listener 1\nmax_qos 3\n", 2, "Invalid max_qos value (3): expected an integer from 0 to 2.");
        assert_error(
            "listener 1\nmaximum_qos -1\n",
            2,
            "Invalid maximum_qos value (-1): expected an integer from 0 to 2.",
        );
    }

    #[test]
    fn before_any_listener_max_qos_and_use_username_open_the_default_listener() {
        let conf = conf("max_qos 1\nuse_username_as_clientid true\nlistener 1884\n");
        let ports: Vec<u16> = conf.listeners.iter().map(|l| l.port).collect();
        assert_eq!(ports, [1884, 1883]);
        assert_eq!(conf.listeners[1].rules.max_qos, QoS::AtLeastOnce);
        assert!(conf.listeners[1].rules.use_username_as_clientid);
        assert_eq!(warnings(&conf)[0].1, "max_qos");
    }

    #[test]
    fn mount_point_needs_a_listener_and_a_topic_name() {
        assert_error("mount_point a/\n", 1, "You must create a listener before using the mount_point option.");
        let reason = "Invalid mount_point value (a/#): a mount point is a topic name (no + or #, at most 65535 bytes).";
        assert_error("listener 1\nmount_point a/#\n", 2, reason);
        assert_error("listener 1\nmount_point\n", 2, "Empty mount_point value in configuration.");
        assert_error("listener 1\nmount_point a\nmount_point b\n", 3, "Duplicate mount_point value in configuration.");
        // The rest of the line, as Mosquitto reads strings.
        assert_eq!(
            conf("listener 1\nmount_point my room/\n").listeners[0].rules.mount_point.as_deref(),
            Some("my room/")
        );
    }

    #[test]
    fn accept_protocol_versions_takes_a_list() {
        for value in ["3,4", "3, 4", "4 3", "3,4,5", "4,3 # both"] {
            let rules = &conf(&format!("listener 1\naccept_protocol_versions {value}\n")).listeners[0].rules;
            assert!(rules.accepts(Protocol::V31) && rules.accepts(Protocol::V311), "{value}");
        }
        let v31 = &conf("listener 1\naccept_protocol_versions 3\n").listeners[0].rules;
        assert!(v31.accepts(Protocol::V31) && !v31.accepts(Protocol::V311));
        assert_error(
            "accept_protocol_versions 4\n",
            1,
            "The 'accept_protocol_versions' option requires a listener to be defined first.",
        );
        assert_error(
            "listener 1\naccept_protocol_versions 3,6\n",
            2,
            "Invalid accept_protocol_versions value (6): expected 3 (MQTT 3.1), 4 (MQTT 3.1.1) or 5 (MQTT 5), \
             separated by commas.",
        );
        assert_error(
            "listener 1\naccept_protocol_versions ,\n",
            2,
            "Empty accept_protocol_versions value in configuration.",
        );
    }

    #[test]
    fn a_listener_for_mqtt_5_only_warns_that_it_refuses_everyone() {
        let conf = conf("listener 1\naccept_protocol_versions 5\n");
        let rules = &conf.listeners[0].rules;
        assert!(!rules.accepts(Protocol::V31) && !rules.accepts(Protocol::V311));
        assert_eq!(warnings(&conf)[0].0, 2);
        assert!(warnings(&conf)[0].2.contains("every client of it is refused"));
    }
}
