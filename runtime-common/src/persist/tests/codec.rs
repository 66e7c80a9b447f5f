//! The value encodings: they round-trip, and any bytes decode to a value
//! or an error, never a panic.

use culex_core::persistence::{CopyState, MessageId, StoredCopy};
use culex_core::{PacketId, QoS};
use quickcheck::Gen;

use super::{quickcheck, scenario};
use crate::persist::codec::{self, VERSION};
use culex_core::persistence::SessionFields;

#[test]
fn persist_codec_round_trips() {
    let mut g = Gen::new(30);
    for _ in 0..200 {
        let message = scenario::message(&mut g);
        assert_eq!(codec::decode_message(&codec::encode_message(&message)).unwrap(), message);
    }
    for state in [
        CopyState::Queued(None),
        CopyState::Queued(PacketId::new(65_535)),
        CopyState::Sent(PacketId::MIN),
        CopyState::Released(PacketId::new(65_535).unwrap()),
    ] {
        let copy = StoredCopy { message: MessageId(u64::MAX), qos: QoS::ExactlyOnce, retain: true, state };
        assert_eq!(codec::decode_copy(&codec::encode_copy(&copy)).unwrap(), copy);
    }
    let session = SessionFields {
        username: Some("u".into()),
        offline_since: Some(7),
        next_packet_id: PacketId::new(9),
        epoch: u64::MAX,
    };
    assert_eq!(codec::decode_session(&codec::encode_session(&session)).unwrap(), session);
    // A value written before epochs reads as epoch 0, not known.
    let without = SessionFields { epoch: 0, ..session.clone() };
    assert_eq!(codec::decode_session(&codec::encode_session(&without)).unwrap(), without);
    assert_eq!(
        codec::decode_session(&codec::encode_session(&SessionFields::default())).unwrap(),
        SessionFields::default()
    );
    assert_eq!(codec::decode_incoming(&codec::encode_incoming(None)).unwrap(), None);
    assert_eq!(codec::decode_incoming(&codec::encode_incoming(Some(MessageId(3)))).unwrap(), Some(MessageId(3)));
}

#[test]
fn persist_codec_never_panics_on_garbage() {
    fn prop(bytes: Vec<u8>, versioned: bool) -> bool {
        let mut value = bytes;
        if versioned {
            value.insert(0, VERSION);
        }
        let _ = codec::decode_message(&value);
        let _ = codec::decode_will(&value);
        let _ = codec::decode_session(&value);
        let _ = codec::decode_copy(&value);
        let _ = codec::decode_incoming(&value);
        let _ = codec::decode_qos(&value);
        let _ = codec::decode_id("retained", &value);
        true
    }
    quickcheck(2000).quickcheck(prop as fn(Vec<u8>, bool) -> bool);
}

#[test]
fn persist_codec_refuses_unknown_versions() {
    let value = codec::encode_copy(&StoredCopy {
        message: MessageId(1),
        qos: QoS::AtMostOnce,
        retain: false,
        state: CopyState::Queued(None),
    });
    let mut newer = value.clone();
    newer[0] = VERSION + 1;
    let error = codec::decode_copy(&newer).unwrap_err().to_string();
    assert!(error.contains("unknown value version"), "{error}");
}

#[test]
fn persist_publishers_read_from_a_store_are_kept_once() {
    use std::sync::Arc;

    use culex_core::{ClientId, ListenerId, Message, Publisher, TopicName};

    let publisher = |id: &str| Publisher { client_id: ClientId::new(id), username: None, listener: ListenerId(0) };
    let retained = |id: &str| {
        let message = Message::new(TopicName::new("r").unwrap(), bytes::Bytes::new(), QoS::AtMostOnce, true);
        let encoded = codec::encode_message(&message.published_by(|| publisher(id)));
        codec::decode_message(&encoded).unwrap()
    };
    let mut publishers = codec::Publishers::default();
    let (a, b, c) = (
        publishers.share(retained("door-1")),
        publishers.share(retained("door-1")),
        publishers.share(retained("door-2")),
    );
    let (a, b, c) = (a.publisher.unwrap(), b.publisher.unwrap(), c.publisher.unwrap());
    assert!(Arc::ptr_eq(&a, &b), "the same publisher twice");
    assert_eq!(c.client_id.as_str(), "door-2");
    assert!(!Arc::ptr_eq(&a, &c));
}
