"""How many connections and clients the broker takes: `max_connections`
per listener, and Mosquitto 2.1's `global_max_connections` and
`global_max_clients` across the broker, seen by raw MQTT clients and
mosquitto_pub; with one shard and with two, whose limits hold for the
process (the client ids a and c live on shard 0, b on shard 1)."""

from __future__ import annotations

import pytest

from support import LOOPBACK, RawClient, free_port, is_listening, mosquitto_pub, wait_until


@pytest.fixture(params=[1, 2], ids=["1-shard", "2-shards"])
def make_broker(request, make_broker):
    """The suite's broker with one shard or two."""
    def make(extra=(), **kwargs):
        return make_broker(extra=[f"shards {request.param}", *extra], **kwargs)
    return make


def open_clients(cleanup, port: int, *ids: str, clean: bool = True) -> list[RawClient]:
    """Clients connected (CONNACK 0) and kept open until the test ends."""
    clients = []
    for client_id in ids:
        client = RawClient(port, client_id, clean=clean)
        cleanup(client.close)
        assert client.connect() == (0, 0), client_id
        clients.append(client)
    return clients


def refused_without_connack(port: int, client_id: str, clean: bool = True) -> bool:
    client = RawClient(port, client_id, clean=clean)
    try:
        client.connect()
    except (ConnectionError, OSError):
        return True
    finally:
        client.close()
    return False


def test_max_connections_limits_its_own_listener(make_broker, cleanup):
    limited = free_port()
    broker = make_broker(extra=[f"listener {limited} {LOOPBACK}", "max_connections 2"])
    wait_until(lambda: is_listening(limited), what=f"listener {limited}")
    first, _ = open_clients(cleanup, limited, "a", "b")
    assert refused_without_connack(limited, "c")
    broker.wait_log(r"Client connection from 127\.0\.0\.1:\d+ denied: max_connections exceeded\.")
    # The first listener has no limit.
    open_clients(cleanup, broker.port, "d", "e", "f")
    # A connection that ends makes room.
    first.disconnect()
    wait_until(lambda: not refused_without_connack(limited, "g"), what="room on the limited listener")


@pytest.mark.parametrize("value", ["0", "-1"])
def test_max_connections_zero_or_below_is_no_limit(make_broker, cleanup, value):
    broker = make_broker(extra=[f"max_connections {value}"])
    open_clients(cleanup, broker.port, *(f"c{n}" for n in range(5)))


def test_global_max_connections_counts_every_listener(make_broker, cleanup):
    second = free_port()
    broker = make_broker(extra=["global_max_connections 3", f"listener {second} {LOOPBACK}"])
    wait_until(lambda: is_listening(second), what=f"listener {second}")
    open_clients(cleanup, broker.port, "a", "b")
    (third,) = open_clients(cleanup, second, "c")
    assert refused_without_connack(second, "d")
    assert refused_without_connack(broker.port, "e")
    broker.wait_log(r"denied: max_connections exceeded\.", count=2)
    third.disconnect()
    wait_until(lambda: not refused_without_connack(broker.port, "f"), what="room after a disconnect")


def test_global_max_clients_counts_stored_sessions(make_broker, cleanup):
    broker = make_broker(extra=["global_max_clients 2"])
    # A persistent session that went away still counts.
    assert mosquitto_pub(broker.port, "t", "x", client_id="stored", extra=["--disable-clean-session"]).returncode == 0
    open_clients(cleanup, broker.port, "live")
    assert refused_without_connack(broker.port, "new")
    broker.wait_log(r"Client new refused: global_max_clients reached\.")
    # Known clients are never refused.
    assert mosquitto_pub(broker.port, "t", "x", client_id="stored", extra=["--disable-clean-session"]).returncode == 0
    assert mosquitto_pub(broker.port, "t", "x", client_id="live").returncode == 0
