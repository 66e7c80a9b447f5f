//! The model checker's Redis against the real one. The presence model
//! (`culex_model_check::presence::Redis`) follows the Lua scripts of
//! `culex_core::presence` line by line; this test holds it to them. A real
//! `redis-server` runs the scripts through the pipelines the runtimes send
//! (`culex_runtime::store::Scripts`), the model runs its mirror, and after
//! every command of random sequences over three brokers and three clients
//! both must hold the same hash, indexes, set of brokers and leases, and a
//! renewal must give the same answer.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use culex_core::presence::{PresenceCommand, PresenceKeys};
use culex_core::types::ClientId;
use culex_model_check::presence::Redis;
use culex_runtime::store::Scripts;

const BROKERS: u8 = 3;
const CLIENTS: u8 = 3;
const SEQUENCES: u64 = 150;
const STEPS: usize = 40;
const HASH: &str = "mqtt";

/// A `redis-server` of this test's own, on a free loopback port, without
/// persistence; stopped when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Self {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/install-deps.sh installs it)");
        Self { child, port }
    }

    /// A connection, once the server accepts one (within 10 s).
    fn connect(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port)).expect("a Redis URL");
        let started = Instant::now();
        loop {
            match client.get_connection() {
                Ok(conn) => return conn,
                Err(e) if started.elapsed() > Duration::from_secs(10) => panic!("redis-server did not start: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// xorshift64: sequences that are the same on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u8) -> u8 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % u64::from(n)) as u8
    }
}

/// One step: a script run by a broker, a lease running out, or a flush.
#[derive(Debug)]
enum Step {
    Run(u8, PresenceCommand),
    Lapse(u8),
    Flush,
}

fn random_step(rng: &mut Rng) -> Step {
    let broker = rng.below(BROKERS);
    let client = ClientId::new(format!("c{}", rng.below(CLIENTS)));
    match rng.below(20) {
        0..=6 => Step::Run(broker, PresenceCommand::Online(client)),
        7..=12 => Step::Run(broker, PresenceCommand::Offline(client)),
        13 | 14 => Step::Run(broker, PresenceCommand::ClearStale),
        15..=17 => Step::Run(broker, PresenceCommand::Renew(Duration::from_secs(60))),
        18 => Step::Lapse(broker),
        _ => Step::Flush,
    }
}

fn keys(broker: u8) -> PresenceKeys {
    PresenceKeys::new(HASH, &format!("b{broker}"))
}

/// Runs `step` on the real server; a renewal's answer as the model gives
/// it (whether the lease had lapsed).
fn run_real(conn: &mut redis::Connection, scripts: &Scripts, step: &Step) -> Option<bool> {
    match step {
        Step::Run(broker, command) => {
            let replies: Vec<i64> =
                scripts.batch_pipeline(&keys(*broker), std::slice::from_ref(command)).query(conn).expect("the script");
            replies.first().map(|&was_live| was_live == 0)
        }
        Step::Lapse(broker) => {
            let () = redis::cmd("DEL").arg(&keys(*broker).lease).query(conn).expect("DEL");
            None
        }
        Step::Flush => {
            let () = redis::cmd("FLUSHDB").query(conn).expect("FLUSHDB");
            None
        }
    }
}

fn run_model(model: &mut Redis, step: &Step) -> Option<bool> {
    match step {
        Step::Run(broker, command) => {
            let lapsed = model.apply(command, *broker);
            matches!(command, PresenceCommand::Renew(_)).then_some(lapsed)
        }
        Step::Lapse(broker) => {
            model.lapse(*broker);
            None
        }
        Step::Flush => {
            *model = Redis::default();
            None
        }
    }
}

/// What the real server holds, in the model's terms.
fn real_state(conn: &mut redis::Connection) -> Redis {
    let ids = |names: BTreeSet<String>| names.into_iter().map(ClientId::new).collect::<BTreeSet<_>>();
    let broker_of = |name: &str| name.strip_prefix('b').and_then(|n| n.parse::<u8>().ok()).expect("a broker name");
    let hash: BTreeSet<String> = redis::cmd("HKEYS").arg(HASH).query(conn).expect("HKEYS");
    let brokers: BTreeSet<String> = redis::cmd("SMEMBERS").arg(keys(0).brokers).query(conn).expect("SMEMBERS");
    let mut index = BTreeMap::new();
    let mut leases = BTreeSet::new();
    for broker in 0..BROKERS {
        let members: BTreeSet<String> = redis::cmd("SMEMBERS").arg(&keys(broker).index).query(conn).expect("SMEMBERS");
        if !members.is_empty() {
            index.insert(broker, ids(members));
        }
        let live: bool = redis::cmd("EXISTS").arg(&keys(broker).lease).query(conn).expect("EXISTS");
        if live {
            leases.insert(broker);
        }
    }
    Redis {
        hash: ids(hash),
        brokers: brokers.iter().map(|name| broker_of(name)).collect(),
        index,
        leases,
        foreign_delete: None,
    }
}

#[test]
fn the_models_redis_does_what_the_scripts_do_on_a_real_server() {
    let server = Server::start();
    let mut conn = server.connect();
    let scripts = Scripts::default();
    for load in scripts.load_commands() {
        let () = load.query(&mut conn).expect("SCRIPT LOAD");
    }
    let (mut renewals, mut lapsed, mut removals_kept) = (0, 0, 0);
    for seed in 1..=SEQUENCES {
        let () = redis::cmd("FLUSHDB").query(&mut conn).expect("FLUSHDB");
        let mut model = Redis::default();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut done = Vec::new();
        for _ in 0..STEPS {
            let step = random_step(&mut rng);
            let before = model.hash.clone();
            let real = run_real(&mut conn, &scripts, &step);
            let modelled = run_model(&mut model, &step);
            done.push(step);
            assert_eq!(real, modelled, "a renewal's answer differs after {done:?}");
            let held = Redis { foreign_delete: None, ..model.clone() };
            assert_eq!(real_state(&mut conn), held, "the states differ after {done:?}");
            assert_eq!(model.foreign_delete, None, "an entry held by a live broker was removed after {done:?}");
            renewals += usize::from(real.is_some());
            lapsed += usize::from(real == Some(true));
            let kept = matches!(done.last(), Some(Step::Run(_, PresenceCommand::Offline(c))) if before.contains(c) && model.hash.contains(c));
            removals_kept += usize::from(kept);
        }
    }
    // The sequences reach the cases that matter, not only the easy ones.
    assert!(renewals > 100 && lapsed > 20, "renewals {renewals}, lapsed {lapsed}");
    assert!(removals_kept > 20, "removals kept by another broker's hold: {removals_kept}");
}
