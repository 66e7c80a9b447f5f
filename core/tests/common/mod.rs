//! Helpers shared by the simulation tests.

use culex_core::ConnId;
use culex_core::codec::{Packet, Publish};
use culex_core::sim::Simulation;

/// The payloads, as text, of the PUBLISH packets the client of `conn`
/// received since the last look.
pub(crate) fn payloads(sim: &mut Simulation, conn: ConnId) -> Vec<String> {
    sim.take_received(conn)
        .into_iter()
        .filter_map(|p| match p {
            Packet::Publish(Publish { payload, .. }) => Some(String::from_utf8_lossy(&payload).into_owned()),
            _ => None,
        })
        .collect()
}
