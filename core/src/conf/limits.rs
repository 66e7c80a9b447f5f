//! The limits section: what one client may hold and send, how fast the
//! broker lets a slow one fall behind, and the broker-wide switches that
//! go straight into the core's [`Config`].

use std::time::Duration;

use super::ConfError;
use super::file::{INT_MAX, Line, to_usize};
use crate::Config;
use crate::codec::MAX_REMAINING_LENGTH;

/// The keys of this section.
pub(super) const KEYS: &[&str] = &[
    "check_retain_source",
    "global_max_clients",
    "global_max_connections",
    "max_inflight_bytes",
    "max_inflight_messages",
    "max_keepalive",
    "max_packet_size",
    "max_queued_bytes",
    "max_queued_messages",
    "max_subscriptions",
    "max_unwritten_bytes",
    "memory_limit",
    "message_expiry",
    "message_size_limit",
    "not_reading_timeout",
    "presence_topics",
    "queue_qos0_messages",
    "retain_available",
    "slow_subscriber_timeout",
    "sys_interval",
    "upgrade_outgoing_qos",
];

/// Reads one line of this section into `core`.
pub(super) fn handle(core: &mut Config, line: &Line<'_>) -> Result<(), ConfError> {
    match line.key {
        "max_inflight_messages" => {
            core.max_inflight_messages =
                u16::try_from(line.int_negative_is_zero(i64::from(u16::MAX))?).unwrap_or(u16::MAX);
        }
        "max_inflight_bytes" => core.max_inflight_bytes = to_usize(line.int_negative_is_zero(INT_MAX)?),
        "max_queued_messages" => core.max_queued_messages = to_usize(line.int_negative_is_zero(INT_MAX)?),
        "max_queued_bytes" => core.max_queued_bytes = to_usize(line.int_negative_is_zero(INT_MAX)?),
        "message_expiry" => core.message_expiry = line.boolean()?,
        "check_retain_source" => core.check_retain_source = line.boolean()?,
        "memory_limit" => {
            let bytes = line.int_described(i64::MIN, i64::MAX, "a number of bytes, 0 for no limit")?;
            if bytes < 0 {
                return Err(line.error(format!("Invalid memory_limit value ({bytes}).")));
            }
            core.memory_limit = (bytes > 0).then(|| to_usize(bytes));
        }
        // Mosquitto 2.1: zero and negative values mean no limit.
        "global_max_clients" => core.max_clients = positive_limit(line)?,
        "global_max_connections" => core.max_connections = positive_limit(line)?,
        "max_subscriptions" => core.max_subscriptions = to_usize(line.int(0, INT_MAX)?),
        "max_unwritten_bytes" => core.max_unwritten_bytes = to_usize(line.int(0, INT_MAX)?),
        "slow_subscriber_timeout" => {
            core.slow_subscriber_timeout = Duration::from_secs(line.int(1, 3600)?.unsigned_abs());
        }
        "not_reading_timeout" => core.not_reading_timeout = Duration::from_secs(line.int(1, 3600)?.unsigned_abs()),
        "message_size_limit" => core.message_size_limit = to_usize(line.int(0, MAX_REMAINING_LENGTH as i64)?),
        "max_keepalive" => {
            core.max_keepalive = u16::try_from(line.int(0, i64::from(u16::MAX))?).unwrap_or(u16::MAX);
        }
        "queue_qos0_messages" => core.queue_qos0_messages = line.boolean()?,
        "presence_topics" => core.presence_topics = line.boolean()?,
        "sys_interval" => core.sys_interval = Duration::from_secs(line.int(0, 65_535)?.unsigned_abs()),
        "upgrade_outgoing_qos" => core.upgrade_outgoing_qos = line.boolean()?,
        "retain_available" => core.retain_available = line.boolean()?,
        // Mosquitto refuses values below 20; 0 (none) is its default.
        "max_packet_size" => {
            let limit = line.int_described(0, INT_MAX, "0 or an integer from 20 to 2147483647")?;
            if (1..20).contains(&limit) {
                return Err(line.error(format!("Invalid max_packet_size value ({limit}).")));
            }
            core.packet_size_limit = to_usize(limit);
        }
        _ => return Err(line.unknown()),
    }
    Ok(())
}

/// A count where zero and negative values mean no limit, as Mosquitto
/// reads `max_connections` and its global siblings.
pub(super) fn positive_limit(line: &Line<'_>) -> Result<Option<usize>, ConfError> {
    let n = line.int_described(i64::MIN, INT_MAX, "-1 (no limit) or an integer up to 2147483647")?;
    Ok((n > 0).then(|| to_usize(n)))
}

#[cfg(test)]
mod tests {
    use crate::conf::testing::{assert_error, conf};

    #[test]
    fn global_limits_are_broker_wide_and_positive() {
        let given = conf("listener 1\nglobal_max_clients 100\nlistener 2\nglobal_max_connections 10\n");
        assert_eq!((given.core.max_clients, given.core.max_connections), (Some(100), Some(10)));
        assert!(given.warnings.is_empty());
        for off in ["0", "-1", "-7"] {
            let conf = conf(&format!("global_max_clients {off}\nglobal_max_connections {off}\n"));
            assert_eq!((conf.core.max_clients, conf.core.max_connections), (None, None), "{off}");
        }
        assert_error(
            "global_max_connections many\n",
            1,
            "Invalid global_max_connections value (many): expected -1 (no limit) or an integer up to 2147483647.",
        );
    }

    #[test]
    fn memory_limit_takes_bytes_and_0_for_none() {
        assert_eq!(conf("").core.memory_limit, None);
        assert_eq!(conf("memory_limit 0\n").core.memory_limit, None);
        assert_eq!(conf("memory_limit 8589934592\n").core.memory_limit, Some(8_589_934_592));
        assert_error("memory_limit -1\n", 1, "Invalid memory_limit value (-1).");
    }

    #[test]
    fn upgrade_outgoing_qos_is_applied() {
        assert!(!conf("").core.upgrade_outgoing_qos);
        let given = conf("upgrade_outgoing_qos true\n");
        assert!(given.core.upgrade_outgoing_qos);
        assert!(given.warnings.is_empty());
        assert_error(
            "upgrade_outgoing_qos maybe\n",
            1,
            "Invalid upgrade_outgoing_qos value (maybe): expected true or false.",
        );
    }

    #[test]
    fn max_inflight_messages_is_checked_and_applied() {
        assert_eq!(conf("max_inflight_messages 1").core.max_inflight_messages, 1);
        assert_eq!(conf("max_inflight_messages 0").core.max_inflight_messages, 0);
        assert_eq!(conf("max_inflight_messages 65535").core.max_inflight_messages, 65535);
        assert_eq!(conf("max_inflight_messages -1").core.max_inflight_messages, 0);
        assert_eq!(conf("max_inflight_messages 5 # five").core.max_inflight_messages, 5);
        assert_error(
            "max_inflight_messages 65536",
            1,
            "Invalid max_inflight_messages value (65536): expected an integer from 0 to 65535.",
        );
        assert_error(
            "max_inflight_messages 20abc",
            1,
            "Invalid max_inflight_messages value (20abc): expected an integer from 0 to 65535.",
        );
        assert_error("max_inflight_messages 20 30", 1, "Unexpected \"30\" after the max_inflight_messages value.");
        assert_error("max_inflight_messages", 1, "Empty max_inflight_messages value in configuration.");
    }

    #[test]
    fn max_queued_messages_and_bytes_are_checked_and_applied() {
        assert_eq!(conf("max_subscriptions 10000\n").core.max_subscriptions, 10_000);
        let flow = conf("max_unwritten_bytes 65536\nslow_subscriber_timeout 2\nnot_reading_timeout 9\n");
        assert_eq!(flow.core.max_unwritten_bytes, 65_536);
        assert_eq!(flow.core.slow_subscriber_timeout, std::time::Duration::from_secs(2));
        assert_eq!(flow.core.not_reading_timeout, std::time::Duration::from_secs(9));
        assert!(!conf("message_expiry false\n").core.message_expiry);
        let conf = conf("max_queued_messages 5000\nmax_queued_bytes 1048576\n");
        assert_eq!((conf.core.max_queued_messages, conf.core.max_queued_bytes), (5000, 1_048_576));
        let negative = self::conf("max_queued_messages -5\nmax_queued_bytes -1\n");
        assert_eq!((negative.core.max_queued_messages, negative.core.max_queued_bytes), (0, 0));
        assert_error(
            "max_queued_messages 2147483648",
            1,
            "Invalid max_queued_messages value (2147483648): expected an integer from 0 to 2147483647.",
        );
        assert_error(
            "max_queued_bytes 1.5",
            1,
            "Invalid max_queued_bytes value (1.5): expected an integer from 0 to 2147483647.",
        );
    }

    #[test]
    fn message_size_limit_is_checked_and_applied() {
        assert_eq!(conf("message_size_limit 1024").core.message_size_limit, 1024);
        assert_eq!(conf("message_size_limit 268435455").core.message_size_limit, 268_435_455);
        assert_error(
            "message_size_limit 268435456",
            1,
            "Invalid message_size_limit value (268435456): expected an integer from 0 to 268435455.",
        );
        assert_error(
            "message_size_limit -1",
            1,
            "Invalid message_size_limit value (-1): expected an integer from 0 to 268435455.",
        );
    }

    #[test]
    fn max_keepalive_is_checked_and_applied() {
        assert_eq!(conf("max_keepalive 300").core.max_keepalive, 300);
        assert_eq!(conf("max_keepalive 0").core.max_keepalive, 0);
        assert_error(
            "max_keepalive 65536",
            1,
            "Invalid max_keepalive value (65536): expected an integer from 0 to 65535.",
        );
        assert_error("max_keepalive -1", 1, "Invalid max_keepalive value (-1): expected an integer from 0 to 65535.");
    }

    #[test]
    fn presence_topics_is_off_unless_set() {
        assert!(!conf("").core.presence_topics);
        let given = conf("listener 1883\npresence_topics true # each client's state\n");
        assert!(given.core.presence_topics && given.warnings.is_empty());
        assert!(!conf("presence_topics 0\n").core.presence_topics);
        assert_error("\npresence_topics yes\n", 2, "Invalid presence_topics value (yes): expected true or false.");
        assert_error("presence_topics\n", 1, "Empty presence_topics value in configuration.");
    }

    #[test]
    fn queue_qos0_messages_is_applied() {
        assert!(conf("queue_qos0_messages true").core.queue_qos0_messages);
        assert!(!conf("queue_qos0_messages false").core.queue_qos0_messages);
    }
}
