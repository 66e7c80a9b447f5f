"""Presence in a real Redis (with `requirepass` / `redis_auth`): `HSET mqtt
<id> 1` while a client's connection is up, `HDEL mqtt <id>` when it ends,
whatever the way it ends; what other services read with HKEYS / HMGET."""

from __future__ import annotations

import time

import pytest

from support import (REDIS_PASSWORD, MosquittoSub, Paho, RawClient, mosquitto_pub, stays, wait_until)

KEY = "mqtt"


def hkeys(db, key=KEY) -> set[str]:
    return set(db.hkeys(key))


def wait_online(db, expected: set[str], timeout: float = 5.0, key: str = KEY):
    """Waits until exactly `expected` is online in Redis."""
    wait_until(lambda: hkeys(db, key) == expected, timeout,
               what=lambda: f"HKEYS {key} == {sorted(expected)}, have {sorted(hkeys(db, key))}")


def index(db, broker, key: str = KEY) -> set[str]:
    """The ids `broker` holds online, as it recorded them (in every shard's
    index)."""
    return set().union(*(db.smembers(f"{key}:broker:{id}") for id in broker.presence_ids))


def assert_held(db, broker, ids: set[str], key: str = KEY, lease_ms: int = 30_000):
    """`broker` holds exactly `ids`, and its lease is live."""
    assert index(db, broker, key) == ids
    for id in broker.presence_ids:
        assert id in db.smembers(f"{key}:brokers")
        assert 0 < db.pttl(f"{key}:lease:{id}") <= lease_ms


@pytest.fixture
def clients(cleanup):
    made = []

    def track(client):
        made.append(client)
        cleanup(client.close if hasattr(client, "close") else client.kill)
        return client

    return track


def test_connect_and_clean_disconnect(broker, redis_db, clients):
    a = clients(Paho(broker.port, "a")).connect()
    b = clients(Paho(broker.port, "b")).connect()
    c = clients(MosquittoSub(broker.port, ["x"], client_id="c")).wait_subscribed()
    wait_online(redis_db, {"a", "b", "c"})
    assert redis_db.hmget(KEY, "a", "b", "c", "nobody") == ["1", "1", "1", None]
    assert_held(redis_db, broker, {"a", "b", "c"})
    a.disconnect()
    wait_online(redis_db, {"b", "c"})
    assert redis_db.hmget(KEY, "a", "b", "c") == [None, "1", "1"]
    assert index(redis_db, broker) == {"b", "c"}
    c.stop()
    b.disconnect()
    wait_online(redis_db, set())
    assert REDIS_PASSWORD not in broker.all_logs()


def test_killed_client_goes_offline(broker, redis_db, clients):
    dev = clients(MosquittoSub(broker.port, ["x"], client_id="killed"))
    dev.wait_subscribed()
    wait_online(redis_db, {"killed"})
    dev.kill()
    wait_online(redis_db, set())
    assert redis_db.hmget(KEY, "killed") == [None]


def test_dropped_connection_goes_offline(broker, redis_db):
    dev = RawClient(broker.port, "dropped")
    dev.connect()
    wait_online(redis_db, {"dropped"})
    dev.drop()
    wait_online(redis_db, set())


def test_keepalive_expiry_goes_offline(broker, redis_db):
    silent = RawClient(broker.port, "quiet", keepalive=1)
    silent.connect()
    wait_online(redis_db, {"quiet"})
    silent.wait_closed_by_broker(timeout=10)
    wait_online(redis_db, set())
    broker.wait_log(r"Client quiet has exceeded timeout, disconnecting\.")
    silent.close()


def test_protocol_error_goes_offline(broker, redis_db):
    bad = RawClient(broker.port, "garbage")
    bad.connect()
    wait_online(redis_db, {"garbage"})
    bad.send(b"\x10\x00")  # a second CONNECT: a protocol violation
    bad.wait_closed_by_broker(timeout=5)
    wait_online(redis_db, set())
    bad.close()


def _sentinel(broker, db, name="sentinel"):
    """A connect and disconnect after everything before it: once its HDEL
    has landed, every presence change before it has landed too."""
    s = RawClient(broker.port, name)
    s.connect()
    wait_until(lambda: db.hexists(KEY, name), 5, what=f"{name} online")
    s.disconnect()
    wait_until(lambda: not db.hexists(KEY, name), 5, what=f"{name} offline")


@pytest.mark.parametrize("rounds", [1, 20])
def test_takeover_ends_online(broker, redis_db, rounds):
    old = RawClient(broker.port, "device")
    old.connect()
    wait_online(redis_db, {"device"})
    conns = [old]
    for _ in range(rounds):
        new = RawClient(broker.port, "device")
        new.connect()
        conns.append(new)
    for c in conns[:-1]:
        c.wait_closed_by_broker(timeout=5)
    broker.wait_log(r"Updating client device to offline", count=rounds)
    _sentinel(broker, redis_db)
    assert redis_db.hmget(KEY, "device") == ["1"]
    assert index(redis_db, broker) == {"device"}
    conns[-1].disconnect()
    wait_online(redis_db, set())


def test_takeover_by_mosquitto_sub_with_paho_old(broker, redis_db, clients):
    old = clients(Paho(broker.port, "door")).connect()
    wait_online(redis_db, {"door"})
    clients(MosquittoSub(broker.port, ["x"], client_id="door")).wait_subscribed()
    assert old.disconnected.wait(5)
    _sentinel(broker, redis_db)
    assert hkeys(redis_db) == {"door"}


@pytest.mark.parametrize("first_to_leave", ["first writer", "last writer"])
def test_one_id_on_two_brokers_stays_online_until_both_let_go(make_broker, redis_server, redis_db, first_to_leave):
    """A device moved from one broker to another while the first still
    holds its old connection (a half-open socket), or the same id is on
    both: whichever broker lets go first, and whatever order their writes
    landed in, the entry stays for the broker still holding it."""
    one = make_broker(redis=redis_server, name="one")
    two = make_broker(redis=redis_server, name="two")
    first = RawClient(one.port, "mover")
    first.connect()
    wait_until(lambda: index(redis_db, one) == {"mover"}, 5, what="held by one")
    last = RawClient(two.port, "mover")
    last.connect()
    wait_until(lambda: index(redis_db, two) == {"mover"}, 5, what="held by two, written last")
    (leaving, leaving_broker), (staying, staying_broker) = sorted(
        [(first, one), (last, two)], key=lambda pair: (pair[1] is one) != (first_to_leave == "first writer"))
    leaving.drop()
    leaving_broker.wait_log(r"Updating client mover to offline")
    _sentinel(leaving_broker, redis_db, "sentinel")
    assert redis_db.hmget(KEY, "mover") == ["1"]
    assert index(redis_db, leaving_broker) == set()
    assert_held(redis_db, staying_broker, {"mover"})
    staying.disconnect()
    wait_online(redis_db, set())


def test_a_broker_left_down_is_swept_once_its_lease_lapses(make_broker, redis_server, redis_db):
    """kill -9 of a broker that does not come back: once its lease lapses,
    a live broker's renewal removes its entries, except those the live
    broker holds too, and forgets the dead broker."""
    lease = ["redis_lease 3"]
    dead = make_broker(redis=redis_server, name="dead", extra=lease)
    live = make_broker(redis=redis_server, name="live", extra=lease)
    gone = [RawClient(dead.port, cid) for cid in ("g1", "g2", "both")]
    here = [RawClient(live.port, cid) for cid in ("h1", "both")]
    try:
        for c in gone + here:
            c.connect()
        wait_online(redis_db, {"g1", "g2", "both", "h1"})
        assert_held(redis_db, dead, {"g1", "g2", "both"}, lease_ms=3000)
        dead.kill9()
        started = time.monotonic()
        assert stays(lambda: hkeys(redis_db) == {"g1", "g2", "both", "h1"}, 1.5), "swept before the lease lapsed"
        wait_online(redis_db, {"both", "h1"}, timeout=8)
        assert time.monotonic() - started < 6, "lease 3 s plus one renewal interval (0.5 s), and some slack"
        # A broker (or shard) that holds no one does not renew its lease.
        holding = {id for id in live.presence_ids if redis_db.scard(f"{KEY}:broker:{id}")}
        assert holding and redis_db.smembers(f"{KEY}:brokers") == holding
        assert not any(redis_db.exists(f"{KEY}:broker:{id}") for id in dead.presence_ids)
    finally:
        for c in gone + here:
            c.close()


def test_a_paused_broker_writes_its_entries_again(make_broker, redis_server, redis_db):
    """SIGSTOP past the lease: the other broker sweeps the paused one's
    entries; after SIGCONT its next renewal finds its lease lapsed and it
    writes everyone it holds again, without any client doing anything."""
    import signal

    lease = ["redis_lease 3"]
    paused = make_broker(redis=redis_server, name="paused", extra=lease)
    live = make_broker(redis=redis_server, name="live", extra=lease)
    clients = [RawClient(paused.port, "p1"), RawClient(paused.port, "p2"), RawClient(live.port, "l1")]
    try:
        for c in clients:
            c.connect()
        wait_online(redis_db, {"p1", "p2", "l1"})
        paused.proc.send_signal(signal.SIGSTOP)
        try:
            wait_online(redis_db, {"l1"}, timeout=8)
        finally:
            paused.proc.send_signal(signal.SIGCONT)
        wait_online(redis_db, {"p1", "p2", "l1"}, timeout=5)
        paused.wait_log(r"presence lease lapsed in Redis")
        assert_held(redis_db, paused, {"p1", "p2"}, lease_ms=3000)
    finally:
        for c in clients:
            c.close()


def test_custom_redis_key(make_broker, redis_server, redis_db):
    broker = make_broker(redis=redis_server, redis_key="devices")
    c = RawClient(broker.port, "k1")
    c.connect()
    wait_online(redis_db, {"k1"}, key="devices")
    assert not redis_db.exists(KEY)
    c.disconnect()
    wait_online(redis_db, set(), key="devices")


def test_wrong_redis_password_is_a_clear_error_and_mqtt_keeps_working(make_broker, redis_server, redis_db):
    wrong = "not-the-Right-pw-42"
    broker = make_broker(redis=redis_server, redis_auth=wrong)
    sub = Paho(broker.port, "still-works").connect()
    try:
        sub.subscribe("t", 1)
        assert mosquitto_pub(broker.port, "t", "m", qos=1).returncode == 0
        assert sub.expect().payload == b"m"
        broker.wait_log(r"(?im)^.*(presence|redis).*(auth|password).*$", timeout=10)
        assert wrong not in broker.log() and REDIS_PASSWORD not in broker.log()
        assert hkeys(redis_db) == set()
    finally:
        sub.close()


def test_thousand_clients_connecting_and_leaving_concurrently(broker, redis_db):
    """1,000 clients, 50 at a time: a quarter stay, a quarter leave with
    DISCONNECT, a quarter drop the connection, a quarter are taken over by
    a second connection that stays. Redis must end with exactly the clients
    still connected, then with nobody."""
    from concurrent.futures import ThreadPoolExecutor

    n = 1000
    kept: dict[str, RawClient] = {}
    leftovers: list[RawClient] = []

    def one(i: int):
        cid = f"c{i:04d}"
        client = RawClient(broker.port, cid)
        assert client.connect(timeout=10) == (0, 0)
        kind = i % 4
        if kind == 0:
            return cid, client, None
        if kind == 1:
            client.disconnect()
            return cid, None, None
        if kind == 2:
            client.drop()
            return cid, None, None
        second = RawClient(broker.port, cid)
        assert second.connect(timeout=10) == (0, 0)
        return cid, second, client

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=50) as pool:
        for cid, stay, old in pool.map(one, range(n)):
            if stay is not None:
                kept[cid] = stay
            if old is not None:
                leftovers.append(old)
    try:
        truth = set(kept)
        assert len(truth) == n // 2
        wait_online(redis_db, truth, timeout=20)
        assert stays(lambda: hkeys(redis_db) == truth, 0.5)
        assert_held(redis_db, broker, truth)
        # Everyone leaves, half cleanly, half not.
        with ThreadPoolExecutor(max_workers=50) as pool:
            list(pool.map(lambda kv: kv[1].disconnect() if int(kv[0][1:]) % 8 == 0 else kv[1].drop(), kept.items()))
        wait_online(redis_db, set(), timeout=20)
        assert index(redis_db, broker) == set()
    finally:
        for c in list(kept.values()) + leftovers:
            c.close()
    assert time.monotonic() - start < 30


def test_redis_outage_heals_and_no_client_notices(make_redis, make_broker):
    """Redis stops (losing everything) while clients come and go and
    messages flow; once it is back the hash is exactly the truth, and no MQTT
    client saw anything."""
    import threading

    server = make_redis().start()
    db = server.client()
    broker = make_broker(redis=server)
    watch = Paho(broker.port, "watch").connect()
    pub = Paho(broker.port, "pub").connect()
    raw: dict[str, RawClient] = {}
    stop = threading.Event()
    published: list[int] = []

    def publish_loop():
        for seq in range(2000):  # bounded; ~50 ms apart
            if stop.is_set():
                return
            pub.publish("load/seq", str(seq).encode(), qos=1, timeout=5)
            published.append(seq)
            time.sleep(0.05)

    def connect(cid):
        raw[cid] = RawClient(broker.port, cid)
        raw[cid].connect()

    try:
        watch.subscribe("load/#", 1)
        thread = threading.Thread(target=publish_loop, daemon=True)
        thread.start()
        for cid in ("a", "b", "gone"):
            connect(cid)
        wait_online(db, {"watch", "pub", "a", "b", "gone"})

        server.stop()
        received_at_stop = len(watch.received)
        raw.pop("a").disconnect()
        raw.pop("gone").drop()
        connect("c")
        old_b = raw.pop("b")
        connect("b")  # takeover while Redis is away
        old_b.wait_closed_by_broker(timeout=5)
        for _ in range(5):  # flapping ends connected
            connect("e")
            raw.pop("e").disconnect()
        connect("e")
        broker.wait_log(r"presence store unavailable", timeout=10)
        # MQTT goes on while Redis is down.
        wait_until(lambda: len(watch.received) >= received_at_stop + 10, 5, what="messages during the outage")

        server.start()  # empty: no persistence
        truth = {"watch", "pub", "b", "c", "e"}
        wait_online(db, truth, timeout=15)
        assert stays(lambda: hkeys(db) == truth, 0.5)
        assert index(db, broker) == truth
        stop.set()
        thread.join(timeout=10)
        assert watch.disconnects == 0 and pub.disconnects == 0
        wait_until(lambda: len(watch.received) >= len(published), 5, what="all published messages")
        assert [int(m.payload) for m in watch.received] == published
        assert REDIS_PASSWORD not in broker.all_logs()
    finally:
        stop.set()
        watch.close()
        pub.close()
        for c in raw.values():
            c.close()
        db.close()


@pytest.mark.parametrize("loss", ["restart", "flush"])
def test_redis_losing_its_data_without_client_activity_heals(make_redis, make_broker, loss):
    """Redis comes back empty, or is flushed with the connection up, and no
    client connects or leaves afterwards: the hash must still heal to the
    truth (the broker re-asserts who is online on every reconnection, and
    when a renewal finds its lease gone: every 5 s with the default lease)."""
    server = make_redis().start()
    db = server.client()
    broker = make_broker(redis=server)
    quiet = [RawClient(broker.port, f"q{i}") for i in range(3)]
    try:
        for c in quiet:
            c.connect()
        wait_online(db, {"q0", "q1", "q2"})
        if loss == "restart":
            server.stop()
            server.start()
        else:
            db.flushdb()
        assert hkeys(db) == set()
        wait_online(db, {"q0", "q1", "q2"}, timeout=15)
        assert_held(db, broker, {"q0", "q1", "q2"})
    finally:
        for c in quiet:
            c.close()
        db.close()


def test_kill_9_then_restart_clears_stale_entries(make_broker, redis_server, redis_db):
    broker = make_broker(redis=redis_server)
    # An entry written by another, live, broker sharing the hash, which
    # holds k2 too.
    redis_db.hset(KEY, "other", "1")
    redis_db.sadd(f"{KEY}:brokers", "otherbroker")
    redis_db.sadd(f"{KEY}:broker:otherbroker", "other", "k2")
    redis_db.set(f"{KEY}:lease:otherbroker", "1", px=120_000)
    stale = {"k1", "k2", "k3"}
    conns = [RawClient(broker.port, cid) for cid in sorted(stale)]
    paho = Paho(broker.port, "k4").connect()
    try:
        for c in conns:
            c.connect()
        wait_online(redis_db, stale | {"k4", "other"})
        broker.kill9()
        assert broker.proc.returncode == -9
        # Nobody is left to remove them: the entries are stale.
        assert hkeys(redis_db) == stale | {"k4", "other"}
        for c in conns:
            c.close()
        paho.close()
        # Same config, same port: same broker id; the port is free at once.
        broker.restart()
        back = RawClient(broker.port, "k1")  # one device comes straight back
        back.connect()
        fresh = RawClient(broker.port, "fresh")
        fresh.connect()
        wait_online(redis_db, {"other", "k1", "k2", "fresh"}, timeout=5)
        assert stays(lambda: hkeys(redis_db) == {"other", "k1", "k2", "fresh"}, 0.5)
        assert redis_db.smembers(f"{KEY}:broker:otherbroker") == {"other", "k2"}
        assert index(redis_db, broker) == {"k1", "fresh"}
        back.disconnect()
        fresh.disconnect()
        wait_online(redis_db, {"other", "k2"})
    finally:
        for c in conns:
            c.close()
        paho.close()
