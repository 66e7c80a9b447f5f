//! How many commands a Redis server ran, by command, from
//! `INFO commandstats`: read before and after a window, the difference is
//! what the broker (a cluster's nodes) asked of Redis in it.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Longest a reading may take: Redis answers INFO in well under a
/// millisecond.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest INFO reply taken: commandstats is one short line per command.
const MAX_REPLY: usize = 1 << 20;

/// The command that reads the counts: left out of every count.
const OWN: &str = "info";

/// Calls per command (lower case, `cmdstat_` stripped), since Redis started
/// or its stats were reset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<String, u64>);

impl Counts {
    /// Reads the counts of the Redis server at `addr` (one connection,
    /// closed after).
    pub async fn read(addr: SocketAddr) -> io::Result<Self> {
        let reply = timeout(READ_TIMEOUT, info(addr))
            .await
            .map_err(|_| io::Error::other(format!("redis {addr}: INFO commandstats took over {READ_TIMEOUT:?}")))??;
        Ok(Self::parse(&reply))
    }

    /// The counts of every Redis server in `addrs` (the masters of a Redis
    /// Cluster), summed by command.
    pub async fn read_all(addrs: &[SocketAddr]) -> io::Result<Self> {
        let mut sum = Self::default();
        for &addr in addrs {
            for (name, calls) in Self::read(addr).await?.0 {
                *sum.0.entry(name).or_insert(0) += calls;
            }
        }
        Ok(sum)
    }

    /// The counts in the text of an `INFO commandstats` reply.
    pub fn parse(text: &str) -> Self {
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some((name, fields)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else {
                continue;
            };
            let calls = fields.split(',').find_map(|f| f.strip_prefix("calls=")).and_then(|n| n.trim().parse().ok());
            if let Some(calls) = calls {
                counts.insert(name.to_ascii_lowercase(), calls);
            }
        }
        Self(counts)
    }

    /// The commands run since `before`, INFO itself left out, by command
    /// (those run at least once).
    pub fn since(&self, before: &Self) -> BTreeMap<String, u64> {
        self.0
            .iter()
            .filter(|(name, _)| name.as_str() != OWN)
            .map(|(name, &calls)| (name.clone(), calls.saturating_sub(before.0.get(name).copied().unwrap_or(0))))
            .filter(|&(_, calls)| calls > 0)
            .collect()
    }
}

/// The total of a [`Counts::since`].
pub fn total(by_command: &BTreeMap<String, u64>) -> u64 {
    by_command.values().sum()
}

/// A [`Counts::since`] as a JSON object.
pub fn to_json(by_command: &BTreeMap<String, u64>) -> Value {
    Value::Object(by_command.iter().map(|(k, &v)| (k.clone(), Value::from(v))).collect::<Map<_, _>>())
}

/// `INFO commandstats` over a fresh connection: the bulk string's text.
async fn info(addr: SocketAddr) -> io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n").await?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    // The header, `$LEN\r\n`, then LEN bytes and `\r\n`.
    loop {
        if let Some(end) = reply.windows(2).position(|w| w == b"\r\n") {
            let header = String::from_utf8_lossy(&reply[..end]).into_owned();
            let len: usize = header
                .strip_prefix('$')
                .and_then(|n| n.parse().ok())
                .filter(|&n| n <= MAX_REPLY)
                .ok_or_else(|| io::Error::other(format!("redis {addr}: unexpected INFO reply {header:?}")))?;
            let body = end + 2;
            while reply.len() < body + len {
                let n = stream.read(&mut chunk).await?;
                if n == 0 {
                    return Err(io::Error::other(format!("redis {addr} closed the connection mid-reply")));
                }
                reply.extend_from_slice(&chunk[..n]);
            }
            return Ok(String::from_utf8_lossy(&reply[body..body + len]).into_owned());
        }
        if reply.len() > 64 {
            return Err(io::Error::other(format!(
                "redis {addr}: no reply header in {:?}",
                String::from_utf8_lossy(&reply)
            )));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::other(format!("redis {addr} closed the connection")));
        }
        reply.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Commandstats\r\n\
        cmdstat_xadd:calls=10,usec=50,usec_per_call=5.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=30,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "# Commandstats\r\n\
        cmdstat_xadd:calls=25,usec=99,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_XREAD:calls=7,usec=70,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=5,usec=50,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn counts_are_parsed_and_subtracted_without_info() {
        let (before, after) = (Counts::parse(BEFORE), Counts::parse(AFTER));
        assert_eq!(before.0.get("xadd"), Some(&10));
        let since = after.since(&before);
        assert_eq!(since.into_iter().collect::<Vec<_>>(), [("xadd".to_owned(), 15), ("xread".to_owned(), 7)]);
        assert_eq!(total(&after.since(&before)), 22);
        assert_eq!(to_json(&after.since(&before)), serde_json::json!({"xadd": 15, "xread": 7}));
    }
}
