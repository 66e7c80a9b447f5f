"""SIGTERM / SIGINT: stop accepting, close every client, write their
presence to Redis, exit 0 within seconds; the port is reusable at once."""

from __future__ import annotations

import signal
import socket
import time

import pytest

from support import LOOPBACK, MosquittoSub, Paho, RawClient, is_listening, wait_until


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_closes_clients_writes_presence_and_exits_0(broker, redis_db, cleanup, sig):
    paho = Paho(broker.port, "s-paho").connect()
    cleanup(paho.close)
    raw = RawClient(broker.port, "s-raw")
    raw.connect()
    cleanup(raw.close)
    sub = MosquittoSub(broker.port, ["x"], client_id="s-mosq")
    cleanup(sub.kill)
    sub.wait_subscribed()
    wait_until(lambda: set(redis_db.hkeys("mqtt")) == {"s-paho", "s-raw", "s-mosq"}, 5, what="all online")

    start = time.monotonic()
    rc = broker.stop(sig, timeout=10)
    elapsed = time.monotonic() - start
    assert rc == 0, broker.log()
    assert elapsed < 5, f"took {elapsed:.1f}s to exit"
    # Presence was written before the process exited: no polling here.
    assert redis_db.hkeys("mqtt") == []
    assert all(redis_db.scard(f"mqtt:broker:{id}") == 0 for id in broker.presence_ids)
    assert paho.disconnected.wait(2), "paho client not disconnected"
    raw.wait_closed_by_broker(timeout=2)
    # Nothing listens any more.
    with pytest.raises(OSError):
        socket.create_connection((LOOPBACK, broker.port), timeout=1).close()

    # Immediate port reuse: the broker closed first, so its side of those
    # connections is in TIME_WAIT, and it must still bind at once.
    sub.kill()
    restart = time.monotonic()
    broker.restart(timeout=5)
    assert time.monotonic() - restart < 3
    again = Paho(broker.port, "s-again").connect()
    cleanup(again.close)
    wait_until(lambda: redis_db.hkeys("mqtt") == ["s-again"], 5, what="s-again online after restart")


def test_sigterm_with_redis_down_still_exits_0(make_redis, make_broker):
    server = make_redis().start()
    broker = make_broker(redis=server)
    clients = [RawClient(broker.port, f"d{i}") for i in range(3)]
    try:
        for c in clients:
            c.connect()
        db = server.client()
        wait_until(lambda: len(db.hkeys("mqtt")) == 3, 5, what="clients online")
        db.close()
        server.stop()
        c = RawClient(broker.port, "d-late")  # a change Redis cannot take
        c.connect()
        clients.append(c)
        start = time.monotonic()
        broker.send_signal(signal.SIGTERM)
        # While it waits for Redis, it no longer accepts and has closed every client.
        wait_until(lambda: not is_listening(broker.port), 2, what="listener closed after SIGTERM")
        for c in clients:
            c.wait_closed_by_broker(timeout=2)
        assert broker.running(), "exited before trying to write presence"
        with pytest.raises(OSError):
            socket.create_connection((LOOPBACK, broker.port), timeout=1).close()
        assert broker.wait(timeout=15) == 0
        assert time.monotonic() - start < 10
    finally:
        for c in clients:
            c.close()


def test_sigterm_without_redis_exits_0_quickly(make_broker):
    broker = make_broker()
    client = RawClient(broker.port, "solo")
    client.connect()
    start = time.monotonic()
    assert broker.stop(signal.SIGTERM) == 0
    assert time.monotonic() - start < 2
    client.wait_closed_by_broker(timeout=2)
    client.close()
    broker.restart(timeout=5)


def test_changes_just_before_sigterm_reach_redis(make_broker, redis_server, redis_db):
    """Clients leave and arrive right before SIGTERM, several times over:
    at exit Redis holds exactly the truth (nobody), written within the
    shutdown, not abandoned after a flush timeout."""
    broker = make_broker(redis=redis_server)
    for rnd in range(4):
        if rnd:
            broker.restart(timeout=5)
        stay = [RawClient(broker.port, f"r{rnd}-stay{i}") for i in range(10)]
        for c in stay:
            c.connect()
        for i in range(20):
            c = RawClient(broker.port, f"r{rnd}-flap{i}")
            c.connect()
            c.disconnect()
        start = time.monotonic()
        assert broker.stop(signal.SIGTERM) == 0
        elapsed = time.monotonic() - start
        assert redis_db.hkeys("mqtt") == [], f"round {rnd}: left in Redis at exit"
        assert elapsed < 2.5, f"round {rnd}: exit took {elapsed:.1f}s"
        for c in stay:
            c.close()
