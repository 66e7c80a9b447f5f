//! The persistence section: where the store lives and how Mosquitto's
//! persistence keys map onto it.

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
