//! The presence section: `redis_host`, `redis_port`, `redis_auth` (the
//! fork's keys) and Culex's `redis_user`, `redis_db`, `redis_key`,
//! `redis_lease`, `redis_cluster`.
//! Presence goes to Redis when `redis_host` is given; the other keys
//! without it are reported with a warning.

use std::fmt;
use std::time::Duration;

use super::file::{INT_MAX, Line, Loc};
use super::{ConfError, Warning};
use crate::presence::DEFAULT_LEASE;

/// Redis port when `redis_port` is not given.
pub const DEFAULT_REDIS_PORT: u16 = 6379;
/// Name of the presence hash when `redis_key` is not given (the fork's).
pub const DEFAULT_REDIS_KEY: &str = "mqtt";

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "cluster",
    "redis_auth",
    "redis_cluster",
    "redis_db",
    "redis_host",
    "redis_key",
    "redis_lease",
    "redis_port",
    "redis_user",
];

/// The bounds of `redis_lease`, in seconds.
const LEASE_SECONDS: (i64, i64) = (3, 86_400);

/// A password. Its `Debug` and `Display` print `<redacted>`, so it can sit
/// in structures that are logged; [`Secret::expose`] is the one way out.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The password itself, for the one place that sends it (Redis AUTH).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where presence goes: present when `redis_host` is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConf {
    /// `redis_host`: host name or address of the Redis server.
    pub host: String,
    /// `redis_port`, default 6379.
    pub port: u16,
    /// `redis_auth`: the password sent with AUTH; never logged.
    pub auth: Option<Secret>,
    /// `redis_user`: ACL user name sent with AUTH (Redis 6+); without it
    /// AUTH carries the password alone.
    pub user: Option<String>,
    /// `redis_db`: database selected after connecting, default 0.
    pub db: u32,
    /// `redis_key`: name of the presence hash, default `mqtt`.
    pub key: String,
    /// `redis_lease`: how long this broker's entries outlive its last
    /// contact with Redis, default 30 s.
    pub lease: Duration,
    /// `cluster`: the name of the cluster this broker is a node of; the
    /// nodes sharing this Redis under one name act as one broker
    /// (docs/cluster.md). `None`: the broker runs alone.
    pub cluster: Option<String>,
    /// `redis_cluster`: the Redis at `redis_host` is a member of a Redis
    /// Cluster; the others are learnt from it. Default false.
    pub redis_cluster: bool,
}

/// The Redis keys as written, checked at the end.
#[derive(Debug, Default)]
pub(super) struct RedisDraft {
    host: Option<String>,
    port: Option<u16>,
    auth: Option<Secret>,
    user: Option<String>,
    db: Option<(Loc, u32)>,
    key: Option<(Loc, String)>,
    lease: Option<Duration>,
    cluster: Option<(Loc, String)>,
    redis_cluster: Option<(Loc, bool)>,
    /// First `redis_*` line other than `redis_host`.
    first_other: Option<(Loc, String)>,
}

impl RedisDraft {
    /// Reads one line of this section.
    pub(super) fn handle(&mut self, line: &Line<'_>) -> Result<(), ConfError> {
        match line.key {
            "redis_host" => {
                let host = line.word()?;
                if self.host.is_some() {
                    return Err(line.duplicate());
                }
                self.host = Some(host.to_owned());
                return Ok(());
            }
            "redis_port" => self.port = Some(line.port()?),
            "redis_auth" => {
                // Never echo the value: every error here names the key only.
                let password = line.text()?;
                if self.auth.is_some() {
                    return Err(line.duplicate());
                }
                self.auth = Some(Secret::new(password));
            }
            "redis_user" => {
                let user = line.word()?;
                if self.user.is_some() {
                    return Err(line.duplicate());
                }
                self.user = Some(user.to_owned());
            }
            "redis_db" => self.db = Some((line.loc(), u32::try_from(line.int(0, INT_MAX)?).unwrap_or(0))),
            "redis_key" => {
                let key = line.word()?;
                if self.key.is_some() {
                    return Err(line.duplicate());
                }
                self.key = Some((line.loc(), key.to_owned()));
            }
            "redis_cluster" => self.redis_cluster = Some((line.loc(), line.boolean()?)),
            "redis_lease" => {
                let seconds = line.int(LEASE_SECONDS.0, LEASE_SECONDS.1)?;
                self.lease = Some(Duration::from_secs(u64::try_from(seconds).unwrap_or(0)));
            }
            "cluster" => {
                let name = line.word()?;
                if self.cluster.is_some() {
                    return Err(line.duplicate());
                }
                // Part of the Redis keys: a name that cannot break a key.
                if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                    return Err(line.error("The cluster name may hold letters, digits, '-', '_' and '.' only."));
                }
                self.cluster = Some((line.loc(), name.to_owned()));
                return Ok(());
            }
            _ => return Err(line.unknown()),
        }
        if self.first_other.is_none() {
            self.first_other = Some((line.loc(), line.key.to_owned()));
        }
        Ok(())
    }

    /// A `cluster` line without `redis_host`: the nodes would have nowhere
    /// to meet. With `redis_cluster`: a Redis Cluster has database 0 only,
    /// and the presence keys share the hash's slot through a `{...}` tag,
    /// which a brace in `redis_key` would break.
    pub(super) fn check(&self) -> Result<(), ConfError> {
        if let Some((loc, _)) = &self.cluster
            && self.host.is_none()
        {
            return Err(loc.error("cluster needs redis_host: the nodes of a cluster meet in Redis."));
        }
        if let Some((_, true)) = self.redis_cluster {
            if let Some((loc, db)) = &self.db
                && *db != 0
            {
                return Err(loc.error("redis_db must be 0 with redis_cluster: a Redis Cluster has database 0 only."));
            }
            if let Some((loc, key)) = &self.key
                && key.contains(['{', '}'])
            {
                return Err(loc.error("redis_key may not hold '{' or '}' with redis_cluster."));
            }
        }
        Ok(())
    }

    /// Presence settings, or `None` without `redis_host` (with a warning
    /// if other `redis_*` keys were given).
    pub(super) fn assemble(self, warnings: &mut Vec<Warning>) -> Option<RedisConf> {
        let Some(host) = self.host else {
            if let Some((loc, key)) = &self.first_other {
                warnings.push(loc.warning(key, "has no effect without redis_host: presence is not sent to Redis"));
            }
            return None;
        };
        Some(RedisConf {
            host,
            port: self.port.unwrap_or(DEFAULT_REDIS_PORT),
            auth: self.auth,
            user: self.user,
            db: self.db.map_or(0, |(_, db)| db),
            key: self.key.map_or_else(|| DEFAULT_REDIS_KEY.to_owned(), |(_, key)| key),
            lease: self.lease.unwrap_or(DEFAULT_LEASE),
            cluster: self.cluster.map(|(_, name)| name),
            redis_cluster: self.redis_cluster.is_some_and(|(_, on)| on),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::conf::testing::{assert_error, conf, error, warnings};

    #[test]
    fn seed_example_config_parses_into_redis_presence() {
        let conf = conf("redis_host 127.0.0.1\nredis_port 6379\nredis_auth doordu\n");
        let redis = conf.redis.unwrap();
        assert_eq!(redis.host, "127.0.0.1");
        assert_eq!(redis.port, 6379);
        assert_eq!(redis.auth.as_ref().map(Secret::expose), Some("doordu"));
        assert_eq!(redis.user, None);
        assert_eq!(redis.db, 0);
        assert_eq!(redis.key, "mqtt");
        assert_eq!(redis.lease, DEFAULT_LEASE);
        assert!(conf.warnings.is_empty());
    }

    #[test]
    fn every_redis_key_is_applied() {
        let conf = conf(
            "redis_host redis.local\nredis_port 6380\nredis_auth s3cret pass\nredis_user broker\nredis_db 3\n\
             redis_key online\nredis_lease 10\n",
        );
        assert_eq!(
            conf.redis,
            Some(RedisConf {
                host: "redis.local".to_owned(),
                port: 6380,
                auth: Some(Secret::new("s3cret pass")),
                user: Some("broker".to_owned()),
                db: 3,
                key: "online".to_owned(),
                lease: Duration::from_secs(10),
                cluster: None,
                redis_cluster: false,
            })
        );
    }

    #[test]
    fn redis_auth_takes_the_whole_line_hash_included() {
        let conf = conf("redis_host h\nredis_auth   p#ss word  \n");
        assert_eq!(conf.redis.unwrap().auth.unwrap().expose(), "p#ss word");
    }

    #[test]
    fn redis_keys_without_redis_host_warn() {
        let conf = conf("redis_port 6379\nredis_auth doordu\n");
        assert_eq!(conf.redis, None);
        assert_eq!(
            warnings(&conf),
            vec![(1, "redis_port", "has no effect without redis_host: presence is not sent to Redis")]
        );
    }

    #[test]
    fn redis_errors_name_line_and_reason() {
        assert_error("redis_host", 1, "Empty redis_host value in configuration.");
        assert_error("redis_host a b", 1, "Unexpected \"b\" after the redis_host value.");
        assert_error("redis_host a\nredis_host b\n", 2, "Duplicate redis_host value in configuration.");
        assert_error("redis_port 0", 1, "Invalid port value (0): expected an integer from 1 to 65535.");
        assert_error("redis_db -1", 1, "Invalid redis_db value (-1): expected an integer from 0 to 2147483647.");
        assert_error("redis_user a\nredis_user b\n", 2, "Duplicate redis_user value in configuration.");
        assert_error("redis_key a\nredis_key b\n", 2, "Duplicate redis_key value in configuration.");
        assert_error("redis_key", 1, "Empty redis_key value in configuration.");
        assert_error("redis_lease 2", 1, "Invalid redis_lease value (2): expected an integer from 3 to 86400.");
        assert_error("redis_auth", 1, "Empty redis_auth value in configuration.");
        assert_error(
            "port 1883\ncluster fleet\n",
            2,
            "cluster needs redis_host: the nodes of a cluster meet in Redis.",
        );
        assert_error(
            "redis_host h\ncluster a:b\n",
            2,
            "The cluster name may hold letters, digits, '-', '_' and '.' only.",
        );
        assert_error("redis_host h\ncluster a\ncluster b\n", 3, "Duplicate cluster value in configuration.");
        assert_error(
            "redis_host h\nredis_db 2\nredis_cluster true\n",
            2,
            "redis_db must be 0 with redis_cluster: a Redis Cluster has database 0 only.",
        );
        assert_error(
            "redis_host h\nredis_key {m}\nredis_cluster true\n",
            2,
            "redis_key may not hold '{' or '}' with redis_cluster.",
        );
        assert_error(
            "redis_host h\nredis_cluster yes\n",
            2,
            "Invalid redis_cluster value (yes): expected true or false.",
        );
    }

    #[test]
    fn a_redis_cluster_is_said_by_one_key() {
        let on = conf("redis_host 127.0.0.1\nredis_cluster true\nredis_db 0\n").redis.unwrap();
        assert!(on.redis_cluster);
        assert!(!conf("redis_host 127.0.0.1\nredis_cluster false\n").redis.unwrap().redis_cluster);
        assert!(!conf("redis_host 127.0.0.1\n").redis.unwrap().redis_cluster);
        // Braces and other databases are fine on one server.
        let one = conf("redis_host h\nredis_key {m}\nredis_db 2\n").redis.unwrap();
        assert_eq!((one.key.as_str(), one.db), ("{m}", 2));
    }

    #[test]
    fn a_cluster_is_named_beside_its_redis() {
        let named = conf("redis_host 127.0.0.1\ncluster fleet-1\n");
        assert_eq!(named.redis.and_then(|r| r.cluster).as_deref(), Some("fleet-1"));
        assert_eq!(conf("redis_host 127.0.0.1\n").redis.and_then(|r| r.cluster), None);
    }

    #[test]
    fn password_never_appears_in_debug_display_or_errors() {
        let text = "redis_host h\nredis_auth doordu\n";
        let conf = conf(text);
        assert!(!format!("{conf:?}").contains("doordu"));
        assert!(!format!("{:?}", conf.redis).contains("doordu"));
        let secret = Secret::new("doordu");
        assert_eq!(format!("{secret}"), "<redacted>");
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let e = error("redis_auth doordu\nredis_auth doordu\n");
        assert!(!e.to_string().contains("doordu"), "{e}");
        assert!(!format!("{e:?}").contains("doordu"));
        for warning in &self::conf("redis_auth doordu\n").warnings {
            assert!(!warning.to_string().contains("doordu"));
        }
    }
}
