//! Feeds arbitrary bytes to the decoder of batches between nodes (peer
//! input, read from a Redis stream), and checks that every batch it
//! accepts encodes back to the same bytes (an encoding is the only one of
//! its frames) and decodes again to the same frames.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use culex_core::Message;
use culex_core::shard::ShardMessage;
use culex_core::shard::wire::{NodeFrame, decode_batch, encode_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(frames) = decode_batch(data) else {
        return;
    };
    let mut out = BytesMut::new();
    // Everything decoded is carried, so it encodes.
    if let Err(error) = encode_batch(&frames, &mut out) {
        panic!("{frames:?} decoded but does not encode: {error}");
    }
    assert_eq!(&out[..], data, "the encoding of a decoded batch is the batch");
    match decode_batch(&out) {
        Ok(again) => assert_eq!(comparable(&again), comparable(&frames), "round trip"),
        Err(error) => panic!("{frames:?} encodes to bytes that do not decode: {error}"),
    }
});

/// The frames with their expiries as bits beside them: `==` on the pair
/// compares expiries bit for bit (a NaN is carried, but is not `==` itself).
/// Expiries are those of published messages and of a handed session's
/// copies and incoming messages.
fn comparable(frames: &[NodeFrame]) -> (Vec<Option<u64>>, Vec<NodeFrame>) {
    let mut bits = Vec::new();
    let mut take = |message: &mut Arc<Message>| {
        bits.push(message.expires_at.map(f64::to_bits));
        Arc::make_mut(message).expires_at = None;
    };
    let rest = frames
        .iter()
        .cloned()
        .map(|mut frame| {
            match &mut frame.message {
                ShardMessage::Publish { message, .. } | ShardMessage::Retained { message, .. } => take(message),
                ShardMessage::Claimed { session: Some(session), .. } => {
                    session.copies.iter_mut().for_each(|(message, ..)| take(message));
                    session.incoming.iter_mut().filter_map(|(_, message)| message.as_mut()).for_each(&mut take);
                }
                _ => {}
            }
            frame
        })
        .collect();
    (bits, rest)
}
