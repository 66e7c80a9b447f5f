//! A fleet of 10,000 simulated devices against the core, in virtual time.
//!
//! Every device connects with a persistent session, subscribes to its
//! command topic and reports its state; a backend watches all states. Then
//! a third of the fleet goes silent and is dropped by keepalive, commands
//! are sent to every device (some already expired), and the silent devices
//! come back and receive what was queued for them.
//!
//! Run: `cargo run --release -p culex-core --example devices`

use std::time::{Duration, Instant};

use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{Config, ConnId, QoS};

const DEVICES: usize = 10_000;
const KEEP_ALIVE: u16 = 30;

fn device_id(n: usize) -> String {
    format!("door-{n:05}")
}

// The example measures its own run time; the core itself never reads a clock.
#[allow(clippy::disallowed_methods)]
fn main() {
    let started = Instant::now();
    let mut sim = Simulation::new(Config::default());
    let backend = sim.connect(ClientOptions::new("backend").keep_alive(0));
    sim.subscribe(backend, "devices/+/state", QoS::AtLeastOnce);

    let mut conns: Vec<ConnId> = (0..DEVICES)
        .map(|n| {
            let id = device_id(n);
            let conn = sim.connect(ClientOptions::new(&id).clean_session(false).keep_alive(KEEP_ALIVE));
            sim.subscribe(conn, &format!("devices/{id}/cmd"), QoS::AtLeastOnce);
            sim.publish(conn, &format!("devices/{id}/state"), b"{\"door\":\"closed\"}", QoS::AtLeastOnce, false);
            conn
        })
        .collect();
    report(&sim, "all connected and reporting");

    // Two thirds keep pinging; every third device goes silent.
    let silent = |n: usize| n.is_multiple_of(3);
    for _ in 0..3 {
        sim.advance(Duration::from_secs(20));
        for (n, conn) in conns.iter().enumerate() {
            if !silent(n) {
                sim.send(*conn, &culex_core::codec::Packet::PingReq);
            }
        }
    }
    report(&sim, "a third went silent (keepalive 30 s, dropped after 45 s)");

    // Commands for everyone; every tenth carries an expiry already past.
    let past = sim.now().unix.as_secs_f64() - 1.0;
    for n in 0..DEVICES {
        let payload = if n % 10 == 0 {
            format!("{{\"cmd\":\"open\",\"expired_at\":{past}}}")
        } else {
            "{\"cmd\":\"open\"}".to_owned()
        };
        sim.publish(backend, &format!("devices/{}/cmd", device_id(n)), payload.as_bytes(), QoS::AtLeastOnce, false);
    }
    report(&sim, "commands sent (silent devices have theirs queued)");

    // The silent devices come back and resume their sessions.
    for (n, conn) in conns.iter_mut().enumerate() {
        if silent(n) {
            sim.forget(*conn);
            *conn = sim.connect(ClientOptions::new(&device_id(n)).clean_session(false).keep_alive(KEEP_ALIVE));
        }
    }
    report(&sim, "silent devices reconnected and got their queued commands");

    let elapsed = started.elapsed();
    println!("{DEVICES} devices simulated in {:.2} s of real time", elapsed.as_secs_f64());
}

fn report(sim: &Simulation, phase: &str) {
    let stats = sim.stats();
    let broker = sim.broker().stats();
    println!(
        "t={:>4}s  {phase}\n         online={} sessions={} delivered={} expired={} offline-events={}",
        sim.now().instant.since_origin().as_secs(),
        sim.online().len(),
        broker.sessions,
        stats.delivered,
        stats.expired,
        stats.marked_offline,
    );
}
