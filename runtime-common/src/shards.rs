//! Several brokers in one process (see [`culex_core::shard`]): each runs
//! the broker task of [`driver`](crate::driver) on its own, and the
//! runtime joins them.
//!
//! - A connection task hands its connection to its client id's home shard
//!   once the CONNECT is whole ([`Placer`]); until then it only reads.
//! - What a shard tells another goes on the receiver's [`ShardMail`]
//!   board, with a wake-up when the board was empty ([`ShardLinks`]): a
//!   shard never waits for another, which may be waiting for it. One board
//!   per receiving shard, each sender posting in order, keeps each pair's
//!   order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use culex_core::Identity;
use culex_core::bridge::BridgeId;
use culex_core::shard::{self, HomeKey, Placement, ShardBus, ShardId, ShardMessage};

use futures_lite::FutureExt;

use crate::cluster::NodeLink;
use crate::driver::Prepared;
use crate::link::Link;
use crate::outbox::Writers;
use crate::reports::ShardMail;
use crate::settings::Limits;
use crate::ws::Deframed;

/// How long a new connection may take to send its whole CONNECT when
/// there are several shards; once placed, its broker's own CONNECT
/// deadline applies.
pub const PLACING_TIMEOUT: Duration = Duration::from_secs(10);

/// One shard as a connection task sees it: where its events go, and the
/// board its writers post to.
#[derive(Debug, Clone)]
pub struct ShardEnd<S> {
    /// The shard's event queue.
    pub events: S,
    /// What its connections' outboxes share.
    pub writers: Arc<Writers>,
}

/// Every shard's end, by shard number.
#[derive(Debug)]
pub struct Route<S>(Arc<[ShardEnd<S>]>);

impl<S> Clone for Route<S> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<S> Route<S> {
    /// The shards' ends, shard 0 first.
    ///
    /// # Panics
    ///
    /// With no end at all.
    pub fn new(ends: Vec<ShardEnd<S>>) -> Self {
        assert!(!ends.is_empty(), "a route has one shard at least");
        Self(ends.into())
    }

    /// The route to the shards of `prepared`, whose broker tasks take
    /// their events from `events` (in the same order).
    pub fn of<O>(prepared: &[Prepared<O>], events: &[S]) -> Self
    where
        S: Clone,
    {
        Self::new(
            prepared
                .iter()
                .zip(events)
                .map(|(p, events)| ShardEnd { events: events.clone(), writers: p.writers.clone() })
                .collect(),
        )
    }

    /// Shard `shard`'s end (shard 0's past the last).
    pub fn end(&self, shard: usize) -> &ShardEnd<S> {
        self.0.get(shard).unwrap_or(&self.0[0])
    }

    /// How many shards there are.
    fn count(&self) -> u16 {
        u16::try_from(self.0.len()).unwrap_or(u16::MAX)
    }
}

/// A new connection's bytes until its CONNECT is whole.
#[derive(Debug)]
pub struct Placer {
    sent: BytesMut,
    shards: u16,
    max_packet: usize,
    key: HomeKey,
}

impl Placer {
    /// Takes `data`, read from the connection; once its shard is known,
    /// that shard and every byte read so far.
    pub fn feed(&mut self, data: &[u8]) -> Option<(usize, Bytes)> {
        self.sent.extend_from_slice(data);
        match shard::place(&self.sent, self.shards, self.max_packet, &self.key) {
            Placement::NeedMore => None,
            Placement::Home(home) => Some((usize::from(home.0), std::mem::take(&mut self.sent).freeze())),
        }
    }
}

/// A new connection's socket as [`place`] uses it: reads through the
/// connection's [`Link`] are the runtime's.
pub trait PlacingSocket {
    /// The next bytes read, raw; `None` at the end or on an error.
    fn read(&mut self) -> impl Future<Output = Option<Bytes>> + Send;
    /// Writes `bytes` whole; whether it could.
    fn write(&mut self, bytes: &[u8]) -> impl Future<Output = bool> + Send;
    /// Waits `duration`, on the runtime's timer.
    fn sleep(duration: Duration) -> impl Future<Output = ()> + Send;
}

/// The shard a new connection goes to, and what it read meanwhile
/// (starting with `first`, what its opening read through `link`): shard 0
/// at once with one shard, for a bridge's socket and on an `http_api`
/// listener; the home of the name of its certificate when that name is its
/// client id; else the home of what its CONNECT names ([`HomeKey`]), once
/// the CONNECT is whole ([`place`]). `opened` is the bridge it was opened
/// for, if any, and its identity. `None` if it ended or took longer than
/// [`PLACING_TIMEOUT`] (no broker knew it: dropping the socket is all).
pub async fn find_home<E, S: PlacingSocket>(
    route: &Route<E>,
    limits: &Limits,
    opened: (Option<BridgeId>, &Identity),
    mut socket: S,
    link: &mut Link,
    first: Deframed,
) -> Option<(usize, Deframed)> {
    let (bridge, identity) = opened;
    let shards = route.count();
    if shards == 1 || bridge.is_some() || limits.http_api {
        return Some((0, first));
    }
    let key = HomeKey::of(limits.use_username_as_clientid, identity);
    if let Some(home) = key.known_home(shards) {
        return Some((usize::from(home.0), first));
    }
    let placer = Placer { sent: BytesMut::new(), shards, max_packet: limits.max_packet, key };
    let timeout = async {
        S::sleep(PLACING_TIMEOUT).await;
        None
    };
    place(&mut socket, link, first, placer).or(timeout).await
}

/// Reads a new connection until its shard is known, writing the
/// WebSocket replies on the way: its shard and what was read through
/// `link` (starting with `first`, what its opening read), or `None` if it
/// ended first. [`find_home`] bounds it with [`PLACING_TIMEOUT`].
pub async fn place(
    socket: &mut impl PlacingSocket,
    link: &mut Link,
    first: Deframed,
    mut placer: Placer,
) -> Option<(usize, Deframed)> {
    let mut got = first;
    loop {
        let Deframed { data, reply, end } = std::mem::take(&mut got);
        if !reply.is_empty() && !socket.write(&reply).await {
            return None;
        }
        if let Some((home, data)) = placer.feed(&data) {
            return Some((home, Deframed { data, reply: BytesMut::new(), end }));
        }
        if end.is_some() {
            return None;
        }
        got = link.incoming(socket.read().await?);
    }
}

/// A broker task's ties to the other shards.
#[derive(Clone)]
pub struct ShardLinks {
    /// This shard.
    pub me: ShardId,
    /// Every shard's board, by shard number.
    pub mail: Arc<[ShardMail]>,
    /// Wakes shard `to`'s broker task to take its board.
    pub wake: Arc<dyn Fn(ShardId) + Send + Sync>,
    /// The connections open on each shard, as its broker task last
    /// counted them: shard 0 speaks for the process (the service
    /// manager's status, the stop line).
    pub open: Arc<[AtomicUsize]>,
    /// The link to the other nodes, whose shards are numbered from this
    /// process's shard count up.
    pub cluster: Option<Arc<NodeLink>>,
}

impl ShardLinks {
    /// Records `own`, this shard's open connections; those of every
    /// shard.
    pub fn open_connections(&self, own: usize) -> usize {
        if let Some(slot) = self.open.get(usize::from(self.me.0)) {
            slot.store(own, Ordering::Relaxed);
        }
        self.open.iter().map(|n| n.load(Ordering::Relaxed)).sum()
    }
}

/// A shard's [`ShardBus`]: it posts to the receiver's board as the broker
/// tells, so that a SUBACK or PUBACK leaves only after what it
/// acknowledges reached every shard it concerns, and wakes a receiver
/// whose board was empty at the end of the turn, so that the receiver
/// takes the turn's messages together (woken at once, it took a message at
/// a time: fan-out across shards ran at 0.84x, with 11 % of its QoS 0
/// copies dropped).
#[derive(Debug)]
pub struct MailBus {
    links: ShardLinks,
    to_wake: Vec<ShardId>,
    /// The link's writer is to be woken at the end of the turn.
    cluster_posted: bool,
}

impl MailBus {
    /// The bus of the shard `links` are of.
    pub fn new(links: ShardLinks) -> Self {
        Self { links, to_wake: Vec::new(), cluster_posted: false }
    }
}

impl ShardBus for MailBus {
    fn post(&mut self, to: ShardId, message: ShardMessage) {
        match self.links.mail.get(usize::from(to.0)) {
            Some(board) => {
                if board.post((self.links.me, message)) {
                    self.to_wake.push(to);
                }
            }
            None => {
                if let Some(cluster) = &self.links.cluster {
                    self.cluster_posted |= cluster.post(self.links.me, to, message);
                }
            }
        }
    }

    fn end_turn(&mut self) {
        for to in self.to_wake.drain(..) {
            (self.links.wake)(to);
        }
        if let Some(cluster) = self.links.cluster.as_ref().filter(|_| std::mem::take(&mut self.cluster_posted)) {
            cluster.nudge();
        }
    }
}

impl std::fmt::Debug for ShardLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardLinks").field("me", &self.me).field("shards", &self.mail.len()).finish_non_exhaustive()
    }
}

#[cfg(all(test, not(culex_loom)))]
mod tests {
    use bytes::BytesMut;
    use culex_core::sim::ClientOptions;

    use super::*;

    fn connect(id: &str) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        ClientOptions::new(id).connect_packet().encode(&mut bytes);
        bytes.to_vec()
    }

    /// The CONNECT may come cut anywhere: the placer waits for the whole
    /// of it, then hands over everything read, what followed included.
    #[test]
    fn a_connect_cut_anywhere_is_placed_once_whole() {
        let mut stream = connect("b");
        let connect_len = stream.len();
        stream.extend_from_slice(&[0xC0, 0x00]); // PINGREQ behind it
        let home = usize::from(shard::home_shard("b", 3).0);
        for cut in 1..stream.len() {
            let mut placer = Placer { sent: BytesMut::new(), shards: 3, max_packet: 1 << 20, key: HomeKey::ClientId };
            let (mut placed, mut after) = (None, Vec::new());
            for part in [&stream[..cut], &stream[cut..]] {
                match placed {
                    None => placed = placer.feed(part),
                    // Once placed, later reads go to the shard as they come.
                    Some(_) => after.extend_from_slice(part),
                }
            }
            let (shard, bytes) = placed.expect("placed once the CONNECT is whole");
            assert_eq!(shard, home);
            assert!(bytes.len() >= connect_len, "placed before the CONNECT was whole, cut at {cut}");
            assert_eq!([&bytes[..], &after].concat(), stream, "cut at {cut}");
        }
    }

    /// Any split of the stream into reads, many of them: the shard and the
    /// bytes handed over are those of the whole stream.
    #[test]
    fn any_split_into_reads_places_alike() {
        fn property(id: u8, cuts: Vec<u8>) -> bool {
            let id = format!("client-{id}");
            let mut stream = connect(&id);
            stream.extend_from_slice(&[0x30, 0x03, 0x00, 0x01, b't']);
            let mut placer = Placer { sent: BytesMut::new(), shards: 5, max_packet: 1 << 20, key: HomeKey::ClientId };
            let (mut placed, mut after, mut at) = (None, Vec::new(), 0);
            for cut in cuts.iter().map(|&c| usize::from(c % 8) + 1).chain([stream.len()]) {
                let part = &stream[at..(at + cut).min(stream.len())];
                at += part.len();
                match placed {
                    None => placed = placer.feed(part),
                    Some(_) => after.extend_from_slice(part),
                }
            }
            placed.is_some_and(|(shard, bytes)| {
                shard == usize::from(shard::home_shard(&id, 5).0) && [&bytes[..], &after].concat() == stream
            })
        }
        quickcheck::QuickCheck::new().quickcheck(property as fn(u8, Vec<u8>) -> bool);
    }

    /// Anything but a CONNECT with an id goes to shard 0, whose broker
    /// answers it as a broker alone would.
    #[test]
    fn what_is_not_a_connect_with_an_id_goes_to_shard_0() {
        for bytes in [connect(""), vec![0x30, 0x02, 0x00, 0x00], b"GET / HTTP/1.1\r\n\r\n".to_vec()] {
            let mut placer = Placer { sent: BytesMut::new(), shards: 4, max_packet: 1 << 20, key: HomeKey::ClientId };
            assert_eq!(placer.feed(&bytes).map(|(shard, _)| shard), Some(0), "{bytes:?}");
        }
    }
}
