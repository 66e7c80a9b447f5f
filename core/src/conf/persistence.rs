//! The persistence section: where the store lives and how Mosquitto's
//! persistence keys map onto it.
//!
//! Mosquitto's names, defaults and checks (`src/conf.c` 2.0):
//! `persistence` (synonym `retained_persistence`) switches the store on;
//! `persistence_location` and `persistence_file` name it, joined as
//! `location/file`; `persistent_client_expiration` removes persistent
//! sessions not seen for that long. `autosave_interval` and
//! `autosave_on_changes` schedule Mosquitto's periodic saves: Culex
//! commits every change as it happens, so they are read, kept and
//! reported with a warning saying they change nothing.

use std::time::Duration;

use super::file::{INT_MAX, Line};
use super::{BrokerConf, ConfError, Warning};

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "autosave_interval",
    "autosave_on_changes",
    "persistence",
    "persistence_file",
    "persistence_location",
    "persistent_client_expiration",
    "retained_persistence",
];

/// The warning on the autosave keys.
const COMMITS_AS_IT_GOES: &str =
    "Culex commits every change as it happens, before acknowledging it, so this key changes nothing";

/// `persistence`, `persistence_location`, `persistence_file` and the
/// autosave keys, as read from the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistenceConf {
    /// `persistence` (or its synonym `retained_persistence`): keep retained
    /// messages and persistent sessions. Default false.
    pub enabled: bool,
    /// `persistence_location`: the store's directory, default the current
    /// directory.
    pub location: Option<String>,
    /// `persistence_file`: the store's file name, default `mosquitto.db`.
    pub file: Option<String>,
    /// `autosave_interval` in seconds (default 1800). Culex commits every
    /// turn of its loop, so it changes nothing; accepted for Mosquitto's
    /// files.
    pub autosave_interval: u64,
    /// `autosave_on_changes` (default false): likewise accepted only.
    pub autosave_on_changes: bool,
}

impl Default for PersistenceConf {
    fn default() -> Self {
        Self { enabled: false, location: None, file: None, autosave_interval: 1800, autosave_on_changes: false }
    }
}

impl PersistenceConf {
    /// The file name used without `persistence_file`, Mosquitto's.
    pub const DEFAULT_FILE: &'static str = "mosquitto.db";

    /// The store's path: `persistence_location` joined with
    /// `persistence_file`.
    pub fn path(&self) -> std::path::PathBuf {
        let file = self.file.as_deref().unwrap_or(Self::DEFAULT_FILE);
        match self.location.as_deref() {
            Some(location) if !location.is_empty() => std::path::Path::new(location).join(file),
            _ => std::path::PathBuf::from(file),
        }
    }
}

/// The persistence keys as written, applied at the end.
#[derive(Debug, Default)]
pub(super) struct PersistenceDraft {
    conf: PersistenceConf,
    client_expiration: Option<Duration>,
}

impl PersistenceDraft {
    /// Reads one line of this section.
    pub(super) fn handle(&mut self, line: &Line<'_>, warnings: &mut Vec<Warning>) -> Result<(), ConfError> {
        match line.key {
            "persistence" | "retained_persistence" => self.conf.enabled = line.boolean()?,
            "persistence_file" => set_once(&mut self.conf.file, line)?,
            "persistence_location" => set_once(&mut self.conf.location, line)?,
            "autosave_interval" => {
                self.conf.autosave_interval = line.int_negative_is_zero(INT_MAX)?.unsigned_abs();
                warnings.push(line.warning(COMMITS_AS_IT_GOES));
            }
            "autosave_on_changes" => {
                self.conf.autosave_on_changes = line.boolean()?;
                warnings.push(line.warning(COMMITS_AS_IT_GOES));
            }
            "persistent_client_expiration" => self.client_expiration = Some(client_expiration(line)?),
            _ => return Err(line.unknown()),
        }
        Ok(())
    }

    /// Sets the persistence section and the core's switches.
    pub(super) fn apply(self, conf: &mut BrokerConf) {
        conf.core.persistence = self.conf.enabled;
        conf.core.persistent_client_expiration = self.client_expiration;
        conf.persistence = self.conf;
    }
}

/// A path taken from the rest of the line; given twice is an error, as in
/// Mosquitto.
fn set_once(slot: &mut Option<String>, line: &Line<'_>) -> Result<(), ConfError> {
    if slot.is_some() {
        return Err(line.duplicate());
    }
    *slot = Some(line.text()?.to_owned());
    Ok(())
}

/// `persistent_client_expiration`: a whole number and a unit, `s`
/// (Mosquitto 2.1), `h`, `d`, `w`, `m` (30 days) or `y` (365 days).
fn client_expiration(line: &Line<'_>) -> Result<Duration, ConfError> {
    let word = line.word()?;
    let mut chars = word.chars();
    let unit = match chars.next_back() {
        Some('s') => 1,
        Some('h') => 3600,
        Some('d') => 86_400,
        Some('w') => 7 * 86_400,
        Some('m') => 30 * 86_400,
        Some('y') => 365 * 86_400,
        _ => 0,
    };
    match chars.as_str().parse::<u64>() {
        Ok(n) if unit > 0 && (1..=INT_MAX.unsigned_abs()).contains(&n) => Ok(Duration::from_secs(n * unit)),
        _ => Err(line.error(format!(
            "Invalid persistent_client_expiration value ({word}): expected a whole number from 1 to 2147483647 \
             followed by s, h, d, w, m (30 days) or y (365 days), such as 14d."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::conf::testing::{assert_error, conf, warnings};

    const DAY: u64 = 86_400;

    fn expiration(value: &str) -> Option<Duration> {
        conf(&format!("persistent_client_expiration {value}\n")).core.persistent_client_expiration
    }

    #[test]
    fn defaults_are_mosquittos() {
        let conf = conf("");
        assert_eq!(conf.persistence, PersistenceConf::default());
        assert!(!conf.persistence.enabled);
        assert_eq!(conf.persistence.autosave_interval, 1800);
        assert!(!conf.persistence.autosave_on_changes);
        assert_eq!(conf.persistence.path(), Path::new("mosquitto.db"));
        assert!(!conf.core.persistence);
        assert_eq!(conf.core.persistent_client_expiration, None);
    }

    #[test]
    fn persistence_and_its_synonym_switch_the_store_and_the_core() {
        for key in ["persistence", "retained_persistence"] {
            let on = conf(&format!("{key} true\n"));
            assert!(on.persistence.enabled && on.core.persistence, "{key}");
            assert!(on.warnings.is_empty());
            let off = conf(&format!("{key} 0\n"));
            assert!(!off.persistence.enabled && !off.core.persistence, "{key}");
        }
        // One switch under two names: the last line wins.
        assert!(!conf("persistence true\nretained_persistence false\n").core.persistence);
        assert!(conf("retained_persistence false\npersistence 1\n").core.persistence);
    }

    #[test]
    fn persistence_errors_name_line_and_reason() {
        assert_error("\npersistence yes\n", 2, "Invalid persistence value (yes): expected true or false.");
        assert_error("retained_persistence on", 1, "Invalid retained_persistence value (on): expected true or false.");
        assert_error("persistence", 1, "Empty persistence value in configuration.");
        assert_error("persistence true false", 1, "Unexpected \"false\" after the persistence value.");
    }

    #[test]
    fn file_and_location_take_the_rest_of_the_line() {
        let conf = conf("persistence_location  /srv/my broker # data \npersistence_file culex.db\n");
        assert_eq!(conf.persistence.location.as_deref(), Some("/srv/my broker # data"));
        assert_eq!(conf.persistence.file.as_deref(), Some("culex.db"));
        assert_eq!(conf.persistence.path(), Path::new("/srv/my broker # data/culex.db"));
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn file_and_location_given_twice_or_empty_are_errors() {
        assert_error(
            "persistence_file a\npersistence_file b\n",
            2,
            "Duplicate persistence_file value in configuration.",
        );
        assert_error(
            "persistence_location /a\npersistence_location /a\n",
            2,
            "Duplicate persistence_location value in configuration.",
        );
        assert_error("persistence_file", 1, "Empty persistence_file value in configuration.");
        assert_error("persistence_location \t", 1, "Empty persistence_location value in configuration.");
    }

    #[test]
    fn path_joins_location_and_file_as_mosquitto_does() {
        let path = |location: Option<&str>, file: Option<&str>| {
            let conf = PersistenceConf {
                location: location.map(str::to_owned),
                file: file.map(str::to_owned),
                ..PersistenceConf::default()
            };
            conf.path()
        };
        // Mosquitto writes location + "/" + file: the same file, a slash or not.
        assert_eq!(path(Some("/var/lib/mosquitto/"), None), Path::new("/var/lib/mosquitto//mosquitto.db"));
        assert_eq!(path(Some("/var/lib/mosquitto"), None), Path::new("/var/lib/mosquitto/mosquitto.db"));
        assert_eq!(path(Some("data"), Some("culex.db")), Path::new("data/culex.db"));
        // Without a location (or an empty one) the file is in the current directory.
        assert_eq!(path(None, Some("culex.db")), Path::new("culex.db"));
        assert_eq!(path(Some(""), None), Path::new("mosquitto.db"));
    }

    #[test]
    fn debians_packaged_configuration_keeps_the_store_in_var_lib() {
        let conf = conf("persistence true\npersistence_location /var/lib/mosquitto/\n");
        assert!(conf.core.persistence);
        assert_eq!(conf.persistence.path(), Path::new("/var/lib/mosquitto/mosquitto.db"));
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn autosave_keys_are_kept_and_said_to_change_nothing() {
        let conf = conf("autosave_interval 60\nautosave_on_changes true\n");
        assert_eq!(conf.persistence.autosave_interval, 60);
        assert!(conf.persistence.autosave_on_changes);
        assert_eq!(
            warnings(&conf),
            vec![(1, "autosave_interval", COMMITS_AS_IT_GOES), (2, "autosave_on_changes", COMMITS_AS_IT_GOES)]
        );
        assert_eq!(
            conf.warnings[0].to_string(),
            "test.conf:1: autosave_interval: Culex commits every change as it happens, before acknowledging it, so \
             this key changes nothing"
        );
    }

    #[test]
    fn autosave_interval_clamps_negative_values_to_zero() {
        assert_eq!(conf("autosave_interval -5\n").persistence.autosave_interval, 0);
        assert_eq!(conf("autosave_interval 0\n").persistence.autosave_interval, 0);
        assert_eq!(conf("autosave_interval 2147483647\n").persistence.autosave_interval, 2_147_483_647);
    }

    #[test]
    fn autosave_errors_name_line_and_reason() {
        assert_error(
            "autosave_interval 30m",
            1,
            "Invalid autosave_interval value (30m): expected an integer from 0 to 2147483647.",
        );
        assert_error(
            "autosave_interval 2147483648",
            1,
            "Invalid autosave_interval value (2147483648): expected an integer from 0 to 2147483647.",
        );
        assert_error("autosave_interval", 1, "Empty autosave_interval value in configuration.");
        assert_error(
            "autosave_on_changes often",
            1,
            "Invalid autosave_on_changes value (often): expected true or false.",
        );
    }

    #[test]
    fn client_expiration_takes_mosquittos_units_and_2_1s_seconds() {
        assert_eq!(expiration("90s"), Some(Duration::from_secs(90)));
        assert_eq!(expiration("2h"), Some(Duration::from_secs(2 * 3600)));
        assert_eq!(expiration("14d"), Some(Duration::from_secs(14 * DAY)));
        assert_eq!(expiration("1w # a week"), Some(Duration::from_secs(7 * DAY)));
        assert_eq!(expiration("1m"), Some(Duration::from_secs(30 * DAY)));
        assert_eq!(expiration("2y"), Some(Duration::from_secs(2 * 365 * DAY)));
        assert_eq!(expiration("2147483647y"), Some(Duration::from_secs(2_147_483_647 * 365 * DAY)));
        assert_eq!(
            conf("persistent_client_expiration 1d\npersistent_client_expiration 3h\n")
                .core
                .persistent_client_expiration,
            Some(Duration::from_secs(3 * 3600))
        );
    }

    #[test]
    fn client_expiration_errors_name_line_and_reason() {
        for value in ["0d", "-1d", "14", "d", "14x", "1.5d", "14D", "2147483648h", "14dd", "é"] {
            assert_error(
                &format!("listener 1\npersistent_client_expiration {value}\n"),
                2,
                &format!(
                    "Invalid persistent_client_expiration value ({value}): expected a whole number from 1 to \
                     2147483647 followed by s, h, d, w, m (30 days) or y (365 days), such as 14d."
                ),
            );
        }
        assert_error("persistent_client_expiration", 1, "Empty persistent_client_expiration value in configuration.");
        assert_error(
            "persistent_client_expiration 1d 2d",
            1,
            "Unexpected \"2d\" after the persistent_client_expiration value.",
        );
    }
}
