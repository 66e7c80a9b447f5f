//! The process keys: the user the broker runs as once its sockets and
//! files are open (`user`), where it writes its process id (`pid_file`),
//! the socket option of its client connections (`set_tcp_nodelay`), and
//! how many brokers it runs as one (`shards`).

use super::ConfError;
use super::file::Line;

/// The keys of this section.
pub(super) const KEYS: &[&str] = &["user", "pid_file", "set_tcp_nodelay", "shards"];

/// The most shards a process runs.
pub const MAX_SHARDS: u16 = 1024;

/// How many shards the process runs (see [`shard`](crate::shard)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shards {
    /// One per CPU the process may use.
    Auto,
    /// This many, 1 to [`MAX_SHARDS`].
    Count(u16),
}

impl Shards {
    /// The count, `cpus` standing for `auto`.
    pub fn count(self, cpus: usize) -> u16 {
        match self {
            Self::Auto => u16::try_from(cpus).unwrap_or(MAX_SHARDS).clamp(1, MAX_SHARDS),
            Self::Count(n) => n,
        }
    }
}

/// How the broker's process is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConf {
    /// Started as root, the broker drops to this user (its groups and
    /// primary group too) after binding its listeners and opening its log
    /// and store; `root` keeps root. Mosquitto: `user`, default
    /// `mosquitto`. `None` (a broker embedded in another program, see
    /// `Settings::embedded_defaults`) leaves the process as it is.
    pub user: Option<String>,
    /// A file the process id is written to at start and removed from at
    /// exit. Mosquitto: `pid_file`, default none.
    pub pid_file: Option<String>,
    /// Nagle's algorithm off on client connections. Mosquitto:
    /// `set_tcp_nodelay`, default false; Culex's default is true (small
    /// acknowledgements do not wait up to 40 ms for the peer's ack).
    pub set_tcp_nodelay: bool,
    /// Brokers run as one, each the home of part of the client ids, each
    /// on its own thread. Culex's key (Mosquitto has one thread): a number
    /// or `auto`, the default (one per CPU the process may use).
    pub shards: Shards,
}

impl Default for ProcessConf {
    fn default() -> Self {
        Self { user: Some("mosquitto".to_owned()), pid_file: None, set_tcp_nodelay: true, shards: Shards::Auto }
    }
}

impl ProcessConf {
    pub(super) fn handle(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        match line.key {
            "user" => self.user = Some(line.word()?.to_owned()),
            "pid_file" => self.pid_file = Some(line.text()?.to_owned()),
            "set_tcp_nodelay" => self.set_tcp_nodelay = line.boolean()?,
            "shards" => {
                self.shards = match line.word()? {
                    "auto" => Shards::Auto,
                    _ => {
                        let n = line.int_described(1, i64::from(MAX_SHARDS), "auto or an integer from 1 to 1024")?;
                        Shards::Count(u16::try_from(n).unwrap_or(1))
                    }
                };
            }
            _ => return Err(line.unknown()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::conf::testing::{assert_error, conf};

    #[test]
    fn user_defaults_to_mosquitto_and_pid_file_to_none() {
        let default = conf("");
        assert_eq!((default.process.user.as_deref(), default.process.pid_file.as_deref()), (Some("mosquitto"), None));
        let given = conf("user nobody\npid_file /run/culex 1.pid\n");
        assert_eq!(given.process.user.as_deref(), Some("nobody"));
        assert_eq!(given.process.pid_file.as_deref(), Some("/run/culex 1.pid"));
        assert!(given.warnings.is_empty());
        assert!(default.process.set_tcp_nodelay);
        assert!(!conf("set_tcp_nodelay false\n").process.set_tcp_nodelay);
    }

    #[test]
    fn shards_are_a_count_or_auto() {
        use super::Shards;
        assert_eq!(conf("").process.shards, Shards::Auto);
        assert_eq!(conf("shards 4\n").process.shards, Shards::Count(4));
        assert_eq!(conf("shards auto\n").process.shards, Shards::Auto);
        assert_eq!(Shards::Auto.count(8), 8);
        assert_eq!(Shards::Auto.count(0), 1);
        assert_eq!(Shards::Count(3).count(8), 3);
        let expected = "Invalid shards value (0): expected auto or an integer from 1 to 1024.";
        assert_error("shards 0\n", 1, expected);
        assert_error("shards 1025\n", 1, &expected.replace("(0)", "(1025)"));
        assert_error("shards many\n", 1, &expected.replace("(0)", "(many)"));
    }

    #[test]
    fn user_is_one_word() {
        assert_error("user a b\n", 1, "Unexpected \"b\" after the user value.");
        assert_error("pid_file\n", 1, "Empty pid_file value in configuration.");
    }
}
