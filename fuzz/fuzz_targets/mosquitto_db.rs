//! Feeds arbitrary bytes to the `mosquitto.db` importer, as they are and
//! behind a valid version 6 header (so that mutations reach the chunks
//! without having to keep the magic), at two moments, and checks that it
//! never panics and that what it returns holds together:
//! - every retained entry, copy and incoming message refers to a message
//!   in `state.messages`, and every message there is referred to;
//! - a retained entry's topic is its message's, never `$SYS`;
//! - a session's copies are numbered 1, 2, ... and its in-flight packet
//!   ids are distinct; it is offline since the moment of the import;
//! - the summary counts what the state holds;
//! - whether a file imports does not depend on the moment, and a later
//!   import keeps no session or message an earlier one did not.
#![no_main]

use std::collections::BTreeSet;

use culex_core::persistence::mosquitto_db::{Imported, MAGIC, import, is_mosquitto_db};
use culex_core::persistence::MessageId;
use culex_core::{PacketId, UnixTime};
use libfuzzer_sys::fuzz_target;

/// Around when the seed files were written, and a day later.
const EARLY: f64 = 1_796_424_300.0;
const LATE: f64 = 1_796_510_700.0;

fuzz_target!(|data: &[u8]| {
    check(data);
    if !is_mosquitto_db(data) {
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 6]);
        file.extend_from_slice(data);
        check(&file);
    }
});

fn check(file: &[u8]) {
    let early = import(file, UnixTime::from_secs_f64(EARLY));
    let late = import(file, UnixTime::from_secs_f64(LATE));
    match (&early, &late) {
        (Ok(early), Ok(late)) => {
            consistent(early, EARLY);
            consistent(late, LATE);
            assert!(file.is_empty() || is_mosquitto_db(file));
            let sessions = |i: &Imported| i.state.sessions.keys().cloned().collect::<BTreeSet<_>>();
            assert!(sessions(late).is_subset(&sessions(early)), "a session came back to life");
            let messages = |i: &Imported| i.state.messages.keys().copied().collect::<BTreeSet<_>>();
            assert!(messages(late).is_subset(&messages(early)), "a message came back to life");
        }
        (Err(early), Err(late)) => {
            assert_eq!(early, late, "the error depends on the moment");
            let _ = early.to_string();
        }
        _ => panic!("imports at one moment and not at another: {early:?} / {late:?}"),
    }
}

fn consistent(got: &Imported, now: f64) {
    let state = &got.state;
    let referenced: BTreeSet<MessageId> = state.references().collect();
    let held: BTreeSet<MessageId> = state.messages.keys().copied().collect();
    assert_eq!(referenced, held, "references and messages differ");
    for (topic, id) in &state.retained {
        assert_eq!(&state.messages[id].topic, topic);
        assert!(!topic.as_str().starts_with("$SYS"));
    }
    for session in state.sessions.values() {
        assert_eq!(session.offline_since, Some(now as u64));
        let seqs: Vec<u64> = session.copies.keys().copied().collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let ids: Vec<PacketId> = session.copies.values().filter_map(|c| c.state.packet_id()).collect();
        assert_eq!(ids.len(), ids.iter().collect::<BTreeSet<_>>().len(), "duplicate packet ids");
        assert_ne!(session.next_packet_id, Some(PacketId::MIN));
        if let Some(name) = &session.username {
            assert!(!name.is_empty() && !name.contains('\0'));
        }
    }
    assert!(state.unreleased.is_empty() && state.wills.is_empty() && state.last_batch == 0);
    let s = &got.summary;
    let copies = || state.sessions.values().flat_map(|s| s.copies.values());
    assert_eq!(s.retained, state.retained.len());
    assert_eq!(s.sessions, state.sessions.len());
    assert_eq!(s.messages, state.messages.len());
    assert_eq!(s.subscriptions, state.sessions.values().map(|s| s.subscriptions.len()).sum::<usize>());
    assert_eq!(s.incoming, state.sessions.values().map(|s| s.incoming.len()).sum::<usize>());
    assert_eq!(s.queued, copies().filter(|c| c.state.is_queued()).count());
    assert_eq!(s.in_flight, copies().filter(|c| !c.state.is_queued()).count());
    let _ = s.to_string();
}
