//! The command line of `culex-load`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use culex_core::QoS;
use culex_core::conf::MAX_SHARDS;

/// What to play against the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Publishers on their own topics, one wildcard subscriber, QoS 0.
    FanIn,
    /// One publisher, many subscribers on its topic, QoS 0.
    FanOut,
    /// One publisher with a window of QoS 1 messages, one QoS 1 subscriber.
    Qos1,
    /// The same at QoS 2.
    Qos2,
    /// One paced publisher, one subscriber; end-to-end latency.
    Latency,
    /// Many idle clients connected at once; connects/s and broker memory.
    Connections,
    /// Connect, CONNACK, DISCONNECT churn; connects/s (presence on or off
    /// is the broker's configuration).
    Presence,
    /// One publisher, one subscriber, QoS 0, plain or JSON payloads.
    Expiry,
    /// QoS 0 publishers flooding fast subscribers and one that reads
    /// slowly; broker memory, and whether the slow one stays connected.
    SlowSubscriber,
    /// Content for a restart: persistent sessions with queued QoS 1
    /// messages, and retained messages.
    PersistFill,
    /// A broker that was just started: how long until it accepts, its
    /// memory then, its store on disk, and a sample of its content.
    Restart,
    /// Retained messages on distinct topics at QoS 1, then persistent
    /// session churn (connect, subscribe, disconnect): changes per second.
    PersistChanges,
    /// Independent publisher/subscriber pairs, each on its own topic,
    /// QoS 0 unless `--qos`: the load shards are for.
    Pairs,
}

impl Scenario {
    /// Every scenario, in the order of `--help`.
    pub const ALL: [Self; 13] = [
        Self::FanIn,
        Self::FanOut,
        Self::Qos1,
        Self::Qos2,
        Self::Latency,
        Self::Connections,
        Self::Presence,
        Self::Expiry,
        Self::SlowSubscriber,
        Self::PersistFill,
        Self::Restart,
        Self::PersistChanges,
        Self::Pairs,
    ];

    /// The name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Self::FanIn => "fan-in",
            Self::FanOut => "fan-out",
            Self::Qos1 => "qos1",
            Self::Qos2 => "qos2",
            Self::Latency => "latency",
            Self::Connections => "connections",
            Self::Presence => "presence",
            Self::Expiry => "expiry",
            Self::SlowSubscriber => "slow-subscriber",
            Self::PersistFill => "persist-fill",
            Self::Restart => "restart",
            Self::PersistChanges => "persist-changes",
            Self::Pairs => "pairs",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// How message payloads are encoded (see [`crate::payload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadKind {
    /// Binary, not JSON.
    Plain,
    /// A JSON object with a far-future `expired_at`.
    Json,
}

impl PayloadKind {
    /// The name on the command line and in the results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Json => "json",
        }
    }
}

/// Everything a run needs; unset values take the scenario's default.
#[derive(Debug, Clone)]
pub struct Options {
    /// The scenario.
    pub scenario: Scenario,
    /// The broker: always a loopback address (the first of `addrs`).
    pub addr: SocketAddr,
    /// Every node of the broker (`--port P1,P2,...`; one for a single
    /// broker): message scenarios spread their clients over them (see
    /// [`crate::scenario`]), the others use `addr` alone.
    pub addrs: Vec<SocketAddr>,
    /// How long to wait, once every client is ready, before publishing:
    /// time for the nodes of a cluster to learn each other's routes.
    pub settle: Duration,
    /// Messages published in all (message scenarios).
    pub messages: Option<u64>,
    /// Length of a paced run; with `rate` it sets the message count.
    pub duration: Option<Duration>,
    /// Hard limit of the whole run.
    pub deadline: Duration,
    /// The broker's process, to read its memory and CPU time from /proc.
    pub broker_pid: Option<u32>,
    /// Processes whose CPU time over a message scenario's timed phase is
    /// reported, summed by name (`--watch-pid NAME=PID`: a cluster's nodes,
    /// its Redis).
    pub watch: Vec<(String, u32)>,
    /// QoS of publications and subscriptions (`latency`, `pairs`; the
    /// other message scenarios fix it).
    pub qos: Option<QoS>,
    /// Messages per second in all; unpaced when unset.
    pub rate: Option<u64>,
    /// Publishing clients.
    pub publishers: Option<usize>,
    /// Subscribing clients.
    pub subscribers: Option<usize>,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Payload encoding.
    pub payload: Option<PayloadKind>,
    /// QoS 1/2 messages a publisher keeps unacknowledged.
    pub inflight: u16,
    /// Clients held open (`connections`).
    pub clients: usize,
    /// Connection handshakes in flight (`connections`, `presence`).
    pub concurrency: Option<usize>,
    /// Connect/disconnect cycles (`presence`).
    pub cycles: u64,
    /// Redis ports: the first to check the presence hash after
    /// `presence`; in a message scenario, each one's commands are counted
    /// (a cluster's, over one server or every master of a Redis Cluster).
    pub redis_ports: Vec<u16>,
    /// The presence hash.
    pub redis_key: String,
    /// After the publishers finish, how long a subscriber waits for more.
    pub drain: Duration,
    /// Largest write of an unpaced publisher.
    pub batch_bytes: usize,
    /// Free-form `key=value` labels copied into the result.
    pub tags: Vec<(String, String)>,
    /// Threads that run the clients: 1 is a current-thread runtime, more
    /// a multi-threaded one with that many workers.
    pub threads: usize,
    /// Slow subscribers (`slow-subscriber`; 0 runs the same flood without).
    pub slow_subscribers: Option<usize>,
    /// Bytes per second a slow subscriber reads.
    pub slow_read_bytes_per_sec: u64,
    /// `SO_RCVBUF` of a slow subscriber's socket, set before it connects.
    pub slow_rcvbuf_bytes: u32,
    /// The clean session flag of the subscribers (message scenarios):
    /// false makes them persistent sessions.
    pub clean_session: bool,
    /// The broker's store (file or directory): its size, and the flushes
    /// of the disk it is on, are reported.
    pub store_path: Option<PathBuf>,
    /// Persistent sessions (`persist-fill`, `restart`).
    pub sessions: u64,
    /// QoS 1 messages queued for each of them.
    pub queued: u64,
    /// Retained messages, one per topic.
    pub retained: u64,
    /// `pairs`: give both clients of each pair ids whose home shard among
    /// this many is the same (`culex_core::shard::home_shard`); `None`:
    /// ids as a fleet's, unrelated to shards.
    pub same_shard: Option<u16>,
}

impl Options {
    /// Defaults for `scenario` against `addr`.
    pub fn new(scenario: Scenario, addr: SocketAddr) -> Self {
        Self {
            scenario,
            addr,
            addrs: vec![addr],
            settle: Duration::ZERO,
            messages: None,
            duration: None,
            deadline: Duration::from_secs(60),
            broker_pid: None,
            watch: Vec::new(),
            qos: None,
            rate: None,
            publishers: None,
            subscribers: None,
            payload_bytes: 64,
            payload: None,
            inflight: 64,
            clients: 10_000,
            concurrency: None,
            cycles: 10_000,
            redis_ports: Vec::new(),
            redis_key: "mqtt".to_owned(),
            drain: Duration::from_secs(2),
            batch_bytes: 16 * 1024,
            tags: Vec::new(),
            threads: 1,
            slow_subscribers: None,
            slow_read_bytes_per_sec: 1_000_000,
            slow_rcvbuf_bytes: 8 * 1024,
            clean_session: true,
            store_path: None,
            sessions: 10_000,
            queued: 100,
            retained: 1_000_000,
            same_shard: None,
        }
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run this.
    Run(Box<Options>),
    /// Print the help.
    Help,
}

/// The help text.
pub const HELP: &str = "\
culex-load: end-to-end MQTT load over loopback; prints one JSON line per run.

usage: culex-load SCENARIO [--host 127.0.0.1] --port PORT[,PORT...] [options]

scenarios (defaults in brackets):
  fan-in       4 publishers on bench/in/N, 1 subscriber on bench/in/#, QoS 0 [1,000,000 messages]
  fan-out      1 publisher, 10 subscribers on bench/out, QoS 0 [100,000 messages]
  qos1, qos2   1 publisher with 64 in flight, 1 subscriber acking at the same QoS [100,000 / 50,000]
  latency      1 publisher paced at --rate [1000/s] for --duration-secs [5], QoS --qos [0]
  connections  --clients [10,000] idle clients, --concurrency [200] handshakes in flight
  presence     --cycles [10,000] connect/CONNACK/DISCONNECT cycles, --concurrency [50] at once
  expiry       1 publisher, 1 subscriber, QoS 0, --payload plain|json [plain], [200,000 messages]
  slow-subscriber
               8 publishers flooding bench/slow/N at QoS 0 for --duration-secs [10], 2 subscribers
               on bench/slow/# reading at full speed and --slow-subscribers [1] reading
               --slow-read-bytes-per-sec [1,000,000]; at most 5,000,000 messages per second of flood
  persist-fill content for a restart: --sessions [10,000] persistent sessions (clean session 0,
               --concurrency [200] at once) each subscribe at QoS 1 to its own topic and disconnect;
               --publishers [8] with --inflight [64] each then publish --queued [100] QoS 1
               messages per session and --retained [1,000,000] retained QoS 1 messages, one per
               topic (payload --payload-bytes)
  restart      a broker just started (--broker-pid required): polls connect + CONNACK every 5 ms;
               time from the process's start to its first CONNACK, RSS then and 1 s later, the
               store's size (--store-path), and a sample of the persist-fill content (the same
               --sessions, --queued, --retained): sessions present, queued and retained delivered
  persist-changes
               --publishers [4] with --inflight [64] each publish --messages [100,000] retained QoS 1
               messages to distinct topics, then --concurrency [50] workers run --cycles [10,000]
               persistent session cycles (CONNECT clean 0, SUBSCRIBE, DISCONNECT); changes per second
  pairs        --publishers [16] pairs, pair N a publisher on bench/pair/N and a subscriber to that
               topic alone; QoS --qos [0], [1,000,000 messages] in all, unpaced unless --rate;
               client ids arbitrary, as a fleet's (with N shards, about (N-1)/N of the pairs
               cross shards), or each pair's two on one shard with --same-shard

options:
  --host ADDR            loopback address of the broker [127.0.0.1]; anything else is refused
  --port PORT[,PORT...]  broker port (required); several: the nodes of one broker (a cluster),
                         message scenarios only: publisher I connects to port I mod N, subscriber
                         (and slow subscriber) J to port (J+1) mod N, so that with N > 1 a pair's
                         or qos1's messages cross nodes; `nodes` and `crossing_pct` (share of the
                         expected deliveries whose publisher and subscriber are on different
                         ports) say how they were spread
  --settle-ms N          message scenarios: wait this long once every client is ready, before
                         publishing (time for a cluster's nodes to learn the routes) [0]
  --messages N           messages published in all
  --duration-secs T      length of a paced run (latency)
  --deadline-secs T      hard limit of the whole run [60]
  --broker-pid PID       read the broker's VmRSS and CPU time from /proc/PID
  --watch-pid NAME=PID   message scenarios: CPU time of PID over the timed phase (the start until
                         every subscriber is done), summed by NAME: cpu_s.NAME, and per delivered
                         message cpu_us_per_delivered.NAME (repeatable: a cluster's nodes, Redis)
  --qos 0|1|2            QoS (latency, pairs)
  --rate N               messages per second in all (unpaced when absent, except latency)
  --publishers N, --subscribers N
  --payload-bytes N      payload size [64]
  --payload plain|json   payload encoding
  --inflight N           unacknowledged QoS 1/2 messages per publisher [64]
  --clients N            clients held open (connections)
  --concurrency N        handshakes in flight (connections, presence)
  --cycles N             connect/disconnect cycles (presence)
  --redis-port PORT      after presence, check that the presence hash on 127.0.0.1:PORT empties;
                         message scenarios: count the commands that Redis ran (INFO commandstats,
                         INFO itself left out) over the timed phase (redis_commands, per delivered
                         message, by command) and over --settle-ms (redis_idle_commands_per_s);
                         repeated, the sum over each port (the masters of a Redis Cluster)
  --redis-key KEY        the presence hash [mqtt]
  --drain-ms N           wait for stragglers after the last publish [2000]
  --batch-bytes N        largest write of an unpaced publisher [16384]
  --tag KEY=VALUE        label copied into the result (repeatable)
  --threads N            threads running the clients [1]; above 1, a multi-threaded runtime
  --slow-subscribers N   slow readers (slow-subscriber) [1]; 0 runs the flood without them
  --slow-read-bytes-per-sec N
                         read budget of a slow subscriber [1000000]
  --slow-rcvbuf-bytes N  SO_RCVBUF of a slow subscriber's socket [8192] (Linux doubles it)
  --clean-session 0|1    clean session flag of the subscribers (message scenarios) [1]
  --store-path PATH      the broker's store (file or directory): its size (restart) and the
                         flushes of its disk (/proc/diskstats) are reported
  --sessions N, --queued N, --retained N
                         persist-fill and restart content [10,000, 100, 1,000,000]
  --same-shard N         pairs: the two client ids of pair I have the same home shard among N
                         (culex_core::shard::home_shard), shard I mod N, found by trying numeric
                         suffixes (load-TAG-pub-I-K, load-TAG-sub-I-K, at most 64 N tries): no
                         message crosses shards in a broker of N shards. Without it, ids are
                         load-TAG-pub-I and load-TAG-sub-I, wherever they hash

every message scenario and persist-changes also report the broker's disk writes over the timed
phase (write_bytes of /proc/PID/io: page cache dirtied) per acknowledged message or change, and,
with --store-path, the bytes that reached the store's disk (/proc/diskstats, every process).
";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut scenario = None;
    let mut host: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let mut ports: Vec<u16> = Vec::new();
    let mut o = Options::new(Scenario::FanIn, SocketAddr::from(([127, 0, 0, 1], 0)));
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        if !arg.starts_with("--") {
            if scenario.is_some() {
                return Err(format!("unexpected argument {arg:?}"));
            }
            scenario = Some(Scenario::parse(&arg).ok_or_else(|| format!("unknown scenario {arg:?}"))?);
            continue;
        }
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--host" => host = parse_host(&value()?)?,
            "--port" => ports = port_list(&arg, &value()?)?,
            "--settle-ms" => o.settle = Duration::from_millis(number(&arg, &value()?)?),
            "--messages" => o.messages = Some(positive(&arg, &value()?)?),
            "--threads" => o.threads = threads(&arg, &value()?)?,
            "--slow-subscribers" => o.slow_subscribers = Some(number(&arg, &value()?)?),
            "--slow-read-bytes-per-sec" => o.slow_read_bytes_per_sec = positive(&arg, &value()?)?,
            "--slow-rcvbuf-bytes" => {
                o.slow_rcvbuf_bytes =
                    u32::try_from(positive(&arg, &value()?)?).map_err(|_| format!("{arg}: too large"))?;
            }
            "--duration-secs" => o.duration = Some(seconds(&arg, &value()?)?),
            "--deadline-secs" => o.deadline = seconds(&arg, &value()?)?,
            "--broker-pid" => o.broker_pid = Some(number(&arg, &value()?)?),
            "--qos" => {
                let bits: u8 = number(&arg, &value()?)?;
                o.qos = Some(QoS::from_bits(bits).ok_or("--qos takes 0, 1 or 2")?);
            }
            "--rate" => o.rate = Some(positive(&arg, &value()?)?),
            "--publishers" => o.publishers = Some(positive_usize(&arg, &value()?)?),
            "--subscribers" => o.subscribers = Some(positive_usize(&arg, &value()?)?),
            "--payload-bytes" => o.payload_bytes = number(&arg, &value()?)?,
            "--payload" => {
                o.payload = Some(match value()?.as_str() {
                    "plain" => PayloadKind::Plain,
                    "json" => PayloadKind::Json,
                    other => return Err(format!("--payload takes plain or json, not {other:?}")),
                });
            }
            "--inflight" => {
                o.inflight = number(&arg, &value()?)?;
                if o.inflight == 0 {
                    return Err("--inflight must be at least 1".to_owned());
                }
            }
            "--clients" => o.clients = positive_usize(&arg, &value()?)?,
            "--concurrency" => o.concurrency = Some(positive_usize(&arg, &value()?)?),
            "--cycles" => o.cycles = positive(&arg, &value()?)?,
            "--redis-port" => o.redis_ports.push(number(&arg, &value()?)?),
            "--redis-key" => o.redis_key = value()?,
            "--drain-ms" => o.drain = Duration::from_millis(number(&arg, &value()?)?),
            "--batch-bytes" => o.batch_bytes = positive_usize(&arg, &value()?)?,
            "--clean-session" => {
                o.clean_session = match value()?.as_str() {
                    "0" => false,
                    "1" => true,
                    other => return Err(format!("--clean-session takes 0 or 1, not {other:?}")),
                };
            }
            "--store-path" => o.store_path = Some(PathBuf::from(value()?)),
            "--sessions" => o.sessions = positive(&arg, &value()?)?,
            "--queued" => o.queued = number(&arg, &value()?)?,
            "--retained" => o.retained = number(&arg, &value()?)?,
            "--same-shard" => {
                let shards = positive(&arg, &value()?)?;
                o.same_shard = Some(
                    u16::try_from(shards)
                        .ok()
                        .filter(|&n| n <= MAX_SHARDS)
                        .ok_or_else(|| format!("{arg} takes at most {MAX_SHARDS} (the broker's most shards)"))?,
                );
            }
            "--watch-pid" => {
                let watch = value()?;
                let (name, pid) =
                    watch.split_once('=').ok_or_else(|| format!("--watch-pid takes NAME=PID, not {watch:?}"))?;
                if o.watch.len() >= MAX_WATCHED {
                    return Err(format!("--watch-pid: at most {MAX_WATCHED} processes"));
                }
                o.watch.push((name.to_owned(), number(&arg, pid)?));
            }
            "--tag" => {
                let tag = value()?;
                let (k, v) = tag.split_once('=').ok_or_else(|| format!("--tag takes KEY=VALUE, not {tag:?}"))?;
                o.tags.push((k.to_owned(), v.to_owned()));
            }
            _ => return Err(format!("unknown option {arg:?} (see --help)")),
        }
    }
    o.scenario = scenario.ok_or("no scenario given (see --help)")?;
    let first = *ports.first().ok_or("--port is required")?;
    o.addr = SocketAddr::new(host, first);
    o.addrs = ports.into_iter().map(|port| SocketAddr::new(host, port)).collect();
    if o.deadline.is_zero() {
        return Err("--deadline-secs must be positive".to_owned());
    }
    Ok(Command::Run(Box::new(o)))
}

/// A loopback address; `localhost` is 127.0.0.1. Host names are not
/// resolved, so nothing but loopback can be reached.
fn parse_host(text: &str) -> Result<IpAddr, String> {
    let ip = if text == "localhost" {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        text.parse::<IpAddr>().map_err(|_| format!("--host takes a loopback IP address, not {text:?}"))?
    };
    if !ip.is_loopback() {
        return Err(format!("refusing {ip}: culex-load only talks to loopback addresses"));
    }
    Ok(ip)
}

/// Most processes `--watch-pid` takes.
const MAX_WATCHED: usize = 64;

/// Most ports `--port` takes: far more nodes than a loopback run has.
const MAX_PORTS: usize = 64;

/// `--port P1,P2,...`: one or more ports.
fn port_list(arg: &str, text: &str) -> Result<Vec<u16>, String> {
    let ports = text.split(',').map(|p| number(arg, p)).collect::<Result<Vec<u16>, _>>()?;
    if ports.len() > MAX_PORTS {
        return Err(format!("{arg} takes at most {MAX_PORTS} ports"));
    }
    Ok(ports)
}

fn number<T: std::str::FromStr>(arg: &str, text: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("{arg}: not a valid number: {text:?}"))
}

fn positive(arg: &str, text: &str) -> Result<u64, String> {
    match number(arg, text)? {
        0 => Err(format!("{arg} must be positive")),
        n => Ok(n),
    }
}

fn positive_usize(arg: &str, text: &str) -> Result<usize, String> {
    usize::try_from(positive(arg, text)?).map_err(|_| format!("{arg}: too large"))
}

/// Most threads `--threads` accepts: far more than a loopback load needs.
const MAX_THREADS: usize = 256;

fn threads(arg: &str, text: &str) -> Result<usize, String> {
    match positive_usize(arg, text)? {
        n if n > MAX_THREADS => Err(format!("{arg} takes at most {MAX_THREADS}")),
        n => Ok(n),
    }
}

fn seconds(arg: &str, text: &str) -> Result<Duration, String> {
    let secs: f64 = number(arg, text)?;
    if !(secs.is_finite() && secs > 0.0 && secs < 86_400.0) {
        return Err(format!("{arg} must be between 0 and 86400 seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn full_line_parses() {
        let Command::Run(o) =
            parse(args("latency --host 127.0.0.1 --port 1884 --qos 1 --rate 10000 --tag broker=culex")).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(o.scenario, Scenario::Latency);
        assert_eq!(o.addr, SocketAddr::from(([127, 0, 0, 1], 1884)));
        assert_eq!(o.qos, Some(QoS::AtLeastOnce));
        assert_eq!(o.rate, Some(10_000));
        assert_eq!(o.tags, vec![("broker".to_owned(), "culex".to_owned())]);
    }

    #[test]
    fn non_loopback_hosts_are_refused() {
        for host in ["10.0.0.1", "0.0.0.0", "example.com", "::"] {
            let err = parse(args(&format!("fan-in --host {host} --port 1"))).unwrap_err();
            assert!(err.contains("loopback"), "{host}: {err}");
        }
        assert!(parse(args("fan-in --host ::1 --port 1")).is_ok());
        assert!(parse(args("fan-in --host localhost --port 1")).is_ok());
    }

    #[test]
    fn threads_and_slow_reader_options_parse() {
        let Command::Run(o) = parse(args(
            "slow-subscriber --port 1 --threads 4 --slow-subscribers 0 --slow-read-bytes-per-sec 5000 --slow-rcvbuf-bytes 4096",
        ))
        .unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.scenario, Scenario::SlowSubscriber);
        assert_eq!((o.threads, o.slow_subscribers), (4, Some(0)));
        assert_eq!((o.slow_read_bytes_per_sec, o.slow_rcvbuf_bytes), (5000, 4096));
        assert!(parse(args("fan-in --port 1 --threads 0")).unwrap_err().contains("positive"));
        assert!(parse(args("fan-in --port 1 --threads 100000")).unwrap_err().contains("at most"));
    }

    #[test]
    fn persistence_options_parse() {
        let Command::Run(o) =
            parse(args("restart --port 1 --store-path /tmp/x --sessions 10 --queued 5 --retained 0")).unwrap()
        else {
            panic!("not a run");
        };
        assert_eq!(o.scenario, Scenario::Restart);
        assert_eq!(o.store_path.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert_eq!((o.sessions, o.queued, o.retained), (10, 5, 0));
        let Command::Run(o) = parse(args("qos1 --port 1 --clean-session 0")).unwrap() else {
            panic!("not a run");
        };
        assert!(!o.clean_session);
        assert!(parse(args("qos1 --port 1 --clean-session 2")).is_err());
        assert!(parse(args("persist-fill --port 1 --sessions 0")).is_err());
    }

    #[test]
    fn pairs_options_parse() {
        let Command::Run(o) = parse(args("pairs --port 1 --publishers 8 --qos 1 --same-shard 2")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.scenario, Scenario::Pairs);
        assert_eq!((o.publishers, o.qos, o.same_shard), (Some(8), Some(QoS::AtLeastOnce), Some(2)));
        assert!(parse(args("pairs --port 1 --same-shard 0")).unwrap_err().contains("positive"));
        assert!(parse(args("pairs --port 1 --same-shard 1025")).unwrap_err().contains("at most"));
    }

    #[test]
    fn several_ports_parse() {
        let Command::Run(o) = parse(args("pairs --port 1884,1885,1886 --settle-ms 1500")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.addr, SocketAddr::from(([127, 0, 0, 1], 1884)));
        let ports: Vec<u16> = o.addrs.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, [1884, 1885, 1886]);
        assert_eq!(o.settle, Duration::from_millis(1500));
        let Command::Run(o) = parse(args("qos1 --port 1 --watch-pid nodes=10 --watch-pid redis=11")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.watch, [("nodes".to_owned(), 10), ("redis".to_owned(), 11)]);
        assert!(parse(args("qos1 --port 1 --watch-pid 10")).unwrap_err().contains("NAME=PID"));
        let Command::Run(o) = parse(args("qos1 --port 1 --redis-port 7001 --redis-port 7002")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!(o.redis_ports, [7001, 7002]);
        let Command::Run(o) = parse(args("qos1 --port 1884")).unwrap() else {
            panic!("not a run");
        };
        assert_eq!((o.addrs.len(), o.settle), (1, Duration::ZERO));
        assert!(parse(args("qos1 --port 1884,")).unwrap_err().contains("not a valid number"));
        let many = (1..=65).map(|p| p.to_string()).collect::<Vec<_>>().join(",");
        assert!(parse(args(&format!("qos1 --port {many}"))).unwrap_err().contains("at most"));
    }

    #[test]
    fn port_and_scenario_are_required() {
        assert!(parse(args("fan-in")).unwrap_err().contains("--port"));
        assert!(parse(args("--port 1")).unwrap_err().contains("scenario"));
        assert!(parse(args("nope --port 1")).unwrap_err().contains("unknown scenario"));
    }
}
