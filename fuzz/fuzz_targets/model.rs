//! The core against the reference model of `culex-conformance`: the input
//! is read as a sequence of operations ([`Op::decode`]: connect, subscribe,
//! unsubscribe, publish, acknowledge, disconnect, drop, time passes, over
//! three clients and a small alphabet of topics and filters), run through
//! `culex_core::sim::Simulation` and through the model; every connection
//! must observe exactly what the model says (see `spec/MODEL.md`).
#![no_main]

use culex_conformance::differential::{decode_all, run};
use libfuzzer_sys::fuzz_target;

/// Operations per input at most: the same bound as the quickcheck
/// property, so a counterexample from one replays in the other.
const MAX_OPS: usize = 40;

fuzz_target!(|data: &[u8]| {
    if let Err(disagreement) = run(&decode_all(data, MAX_OPS)) {
        panic!("{disagreement}");
    }
});
