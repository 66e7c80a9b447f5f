//! Properties of flow control over random workloads with simulated slow
//! readers (see `culex_core::congestion`):
//! - no QoS 1/2 message acknowledged to its publisher is dropped for a
//!   connected subscriber that keeps acknowledging: each gets every
//!   message, once, in order;
//! - what waits for a slow reader stays within its budget (plus its QoS 1
//!   window and what one read of the publishers can bring);
//! - holds always end: once the readers catch up, no publisher stays
//!   paused, also when clients publish to each other.

mod common;

use std::time::Duration;

use quickcheck::{Arbitrary, Gen, QuickCheck};

use common::payloads;
use culex_core::sim::{ClientOptions, Simulation};
use culex_core::{CloseReason, Config, ConnId, QoS};

/// The budget of unwritten bytes in these runs.
const BUDGET: usize = 600;

/// The most bytes that may wait for a slow reader: the budget, then a
/// window of two QoS 1 copies (never dropped for the budget) and what one
/// step of the workload can send before the broker hears it is behind:
/// eight messages of 50 bytes, or one read of a resumed publisher, as a
/// copy for one client plus an acknowledgement for the other.
const MOST_WAITING: usize = BUDGET + 2 * 50 + 2 * (8 * 50 + culex_core::sim::READ_CHUNK);

fn config() -> Config {
    Config {
        max_inflight_messages: 2,
        max_queued_messages: 4,
        max_unwritten_bytes: BUDGET,
        connection_messages: false,
        sys_interval: Duration::ZERO,
        ..Config::default()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Publisher `from` sends `count` messages on its topic.
    Publish { from: usize, count: u8 },
    /// Subscriber `sub` reads up to `bytes`.
    Read { sub: usize, bytes: u16 },
    /// Time passes (less than the stall bound), then every subscriber
    /// reads a little: each keeps acknowledging.
    Advance { ms: u16 },
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Self {
        match u8::arbitrary(g) % 4 {
            0 | 1 => Self::Publish { from: usize::arbitrary(g) % 2, count: u8::arbitrary(g) % 8 + 1 },
            2 => Self::Read { sub: usize::arbitrary(g) % 2, bytes: u16::arbitrary(g) % 400 + 1 },
            _ => Self::Advance { ms: u16::arbitrary(g) % 3000 },
        }
    }
}

/// Two publishers, each feeding its own slow subscriber at `qos`.
fn pipes(ops: &[Op], qos: QoS) -> Result<(), String> {
    let mut sim = Simulation::new(config());
    let subs: Vec<ConnId> = (0..2)
        .map(|i| {
            let sub = sim.connect(ClientOptions::new(&format!("s{i}")).reading(false).keep_alive(0));
            sim.subscribe(sub, &format!("t/{i}"), qos);
            sub
        })
        .collect();
    let pubs: Vec<ConnId> = (0..2).map(|i| sim.connect(ClientOptions::new(&format!("p{i}")).keep_alive(0))).collect();
    let mut sent = [0u32; 2];
    let mut got: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for op in ops {
        match *op {
            Op::Publish { from, count } => {
                for _ in 0..count {
                    sim.publish(pubs[from], &format!("t/{from}"), sent[from].to_string().as_bytes(), qos, false);
                    sent[from] += 1;
                }
            }
            Op::Read { sub, bytes } => sim.read(subs[sub], usize::from(bytes)),
            Op::Advance { ms } => {
                sim.advance(Duration::from_millis(u64::from(ms)));
                for &sub in &subs {
                    sim.read(sub, 200);
                }
            }
        }
        for (i, &sub) in subs.iter().enumerate() {
            got[i].extend(payloads(&mut sim, sub));
            // With QoS 1/2 only, the window bounds what waits.
            if sim.unread_len(sub) > BUDGET {
                return Err(format!("{} bytes wait for s{i}", sim.unread_len(sub)));
            }
        }
    }
    // The readers catch up: everything arrives, nothing stays held.
    for _ in 0..1000 {
        for &sub in &subs {
            sim.read(sub, usize::MAX);
        }
        sim.advance(Duration::from_millis(10));
        if subs.iter().all(|&s| sim.unread_len(s) == 0) && pubs.iter().all(|&p| !sim.is_paused(p)) {
            break;
        }
    }
    for (i, &sub) in subs.iter().enumerate() {
        got[i].extend(payloads(&mut sim, sub));
        let want: Vec<String> = (0..sent[i]).map(|n| n.to_string()).collect();
        if got[i] != want {
            return Err(format!("s{i} got {:?}, published {}", got[i], sent[i]));
        }
    }
    if pubs.iter().any(|&p| sim.is_paused(p)) {
        return Err("a publisher stays paused".to_owned());
    }
    match sim.broker().stats().counts.dropped_for_room() {
        0 => Ok(()),
        n => Err(format!("{n} copies dropped")),
    }
}

#[test]
fn acknowledging_subscribers_lose_nothing_at_qos1_and_qos2() {
    fn prop(ops: Vec<Op>) -> Result<(), String> {
        pipes(&ops, QoS::AtLeastOnce)?;
        pipes(&ops, QoS::ExactlyOnce)
    }
    QuickCheck::new().quickcheck(prop as fn(Vec<Op>) -> Result<(), String>);
}

#[test]
fn slow_qos0_readers_cost_their_budget_and_clients_publishing_to_each_other_are_released() {
    /// Two clients, each subscribed to the other's topic at QoS 0 and 1,
    /// both reading slowly.
    fn prop(ops: Vec<Op>) -> Result<(), String> {
        let mut sim = Simulation::new(config());
        let clients: Vec<ConnId> = (0..2)
            .map(|i| {
                let c = sim.connect(ClientOptions::new(&format!("c{i}")).reading(false).keep_alive(0));
                sim.subscribe(c, &format!("q0/{i}"), QoS::AtMostOnce);
                sim.subscribe(c, &format!("q1/{i}"), QoS::AtLeastOnce);
                sim.read(c, usize::MAX);
                c
            })
            .collect();
        for op in &ops {
            match *op {
                Op::Publish { from, count } => {
                    let to = 1 - from;
                    for n in 0..count {
                        let payload = [b'x'; 40];
                        let (topic, qos) = if n % 2 == 0 { ("q0", QoS::AtMostOnce) } else { ("q1", QoS::AtLeastOnce) };
                        sim.publish(clients[from], &format!("{topic}/{to}"), &payload, qos, false);
                    }
                }
                Op::Read { sub, bytes } => sim.read(clients[sub], usize::from(bytes)),
                Op::Advance { ms } => sim.advance(Duration::from_millis(u64::from(ms))),
            }
            for (i, &c) in clients.iter().enumerate() {
                if sim.unread_len(c) > MOST_WAITING {
                    return Err(format!("{} bytes wait for c{i}", sim.unread_len(c)));
                }
                // Reading nothing for 30 s while behind closes a client: the
                // only close flow control may make.
                if sim.closed(c).is_some_and(|reason| reason != CloseReason::NotReading) {
                    return Err(format!("c{i} closed: {:?}", sim.closed(c)));
                }
            }
        }
        // Both catch up: nothing stays held.
        for _ in 0..1000 {
            for &c in &clients {
                sim.read(c, usize::MAX);
            }
            sim.advance(Duration::from_millis(50));
            let open = clients.iter().filter(|&&c| sim.closed(c).is_none());
            if open.clone().all(|&c| !sim.is_paused(c) && sim.unread_len(c) == 0) {
                return Ok(());
            }
        }
        Err("a client stays paused".to_owned())
    }
    QuickCheck::new().quickcheck(prop as fn(Vec<Op>) -> Result<(), String>);
}
