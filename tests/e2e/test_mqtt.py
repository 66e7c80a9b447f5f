"""MQTT behaviour seen by real clients: mosquitto_pub / mosquitto_sub and
paho-mqtt, against each binary, with presence going to a real Redis."""

from __future__ import annotations

import time
import uuid

import paho.mqtt.client as mqtt
import pytest

from support import PINGREQ, MosquittoSub, Paho, RawClient, mosquitto_pub, publish_packet


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def paho(broker, cleanup):
    """Factory of connected paho clients on the test's broker."""

    def make(client_id=None, connect=True, **kw) -> Paho:
        client = Paho(broker.port, client_id or uid("paho"), **kw)
        cleanup(client.close)
        return client.connect() if connect else client

    return make


@pytest.fixture
def mosq_sub(broker, cleanup):
    def make(topics, **kw) -> MosquittoSub:
        sub = MosquittoSub(broker.port, topics, **kw)
        cleanup(sub.kill)
        return sub

    return make


def barrier(client: Paho, prefix: str) -> list:
    """Publishes a marker to a topic `client` is subscribed to (under
    `prefix`) and returns everything it received up to the marker: the
    broker sends in order, so nothing sent before can still be on the way."""
    marker = f"{prefix}/zz-marker-{uuid.uuid4().hex[:6]}"
    client.publish(marker, b"marker", qos=1)
    got = client.collect_until(marker)
    return got[:-1]


# ------------------------------------------------------------ publish / subscribe


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_mosquitto_pub_to_paho_subscriber(broker, paho, qos):
    sub = paho("sub")
    assert sub.subscribe("e2e/q/#", 2) == [2]
    result = mosquitto_pub(broker.port, f"e2e/q/{qos}", f"hello qos {qos}", qos=qos)
    assert result.returncode == 0, result.stderr
    msg = sub.expect()
    assert (msg.topic, msg.payload, msg.qos, msg.retain) == (f"e2e/q/{qos}", f"hello qos {qos}".encode(), qos, False)


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_paho_publisher_to_mosquitto_sub(broker, paho, mosq_sub, qos):
    sub = mosq_sub(["e2e/p/+"], qos=2).wait_subscribed()
    pub = paho("pub")
    pub.publish(f"e2e/p/{qos}", f"from paho {qos}".encode(), qos=qos)
    assert sub.wait_messages(1) == [(0, qos, f"e2e/p/{qos}", f"from paho {qos}")]


@pytest.mark.parametrize("sub_qos", [0, 1])
def test_delivery_qos_is_the_lower_of_publish_and_subscription(broker, paho, sub_qos):
    sub = paho("sub")
    assert sub.subscribe("e2e/down", sub_qos) == [sub_qos]
    assert mosquitto_pub(broker.port, "e2e/down", "x", qos=2).returncode == 0
    assert sub.expect().qos == sub_qos


def test_many_messages_arrive_in_order_at_qos1(broker, paho):
    sub = paho("sub")
    sub.subscribe("e2e/order", 1)
    pub = paho("pub")
    for n in range(200):
        pub.client.publish("e2e/order", str(n).encode(), 1)
    got = [int(sub.expect().payload) for _ in range(200)]
    assert got == list(range(200))


def test_mqtt31_client(broker, paho):
    sub = paho("sub31", protocol=mqtt.MQTTv31)
    sub.subscribe("e2e/v31", 1)
    result = mosquitto_pub(broker.port, "e2e/v31", "old", qos=1, client_id="pub31", extra=["-V", "mqttv31"])
    assert result.returncode == 0, result.stderr
    assert sub.expect().payload == b"old"
    broker.wait_log(r"New client connected from 127\.0\.0\.1:\d+ as pub31 \(p1, c1, k60\)\.")


# ------------------------------------------------------------ retained


def test_retained_messages(broker, paho, mosq_sub):
    assert mosquitto_pub(broker.port, "ret/a", "one", qos=1, retain=True).returncode == 0
    assert mosquitto_pub(broker.port, "ret/b", "kept", qos=0, retain=True).returncode == 0
    # mosquitto_sub subscribing later gets both, with the retain flag.
    sub = mosq_sub(["ret/#"], qos=1)
    got = sorted(sub.wait_messages(2), key=lambda m: m[2])
    assert got == [(1, 1, "ret/a", "one"), (1, 0, "ret/b", "kept")]
    # A new value replaces the old one.
    assert mosquitto_pub(broker.port, "ret/a", "two", qos=1, retain=True).returncode == 0
    late = paho("late")
    late.subscribe("ret/#", 1)
    retained = barrier(late, "ret")
    assert sorted((m.topic, m.payload, m.retain) for m in retained) == [("ret/a", b"two", True), ("ret/b", b"kept", True)]
    # Live copies of a retained publish go out without the flag.
    assert mosquitto_pub(broker.port, "ret/a", "three", qos=1, retain=True).returncode == 0
    live = late.expect()
    assert (live.topic, live.payload, live.retain) == ("ret/a", b"three", False)
    # An empty retained payload clears it.
    assert mosquitto_pub(broker.port, "ret/a", None, qos=1, retain=True).returncode == 0
    assert late.expect().payload == b""
    third = paho("third")
    third.subscribe("ret/#", 1)
    assert [(m.topic, m.payload) for m in barrier(third, "ret")] == [("ret/b", b"kept")]


# ------------------------------------------------------------ wildcards


def test_wildcard_subscriptions(broker, paho):
    sub = paho("wild")
    assert sub.subscribe([("wc/+/temp", 1), ("wc/house/#", 1), ("wc/exact", 1)]) == [1, 1, 1]
    dollar = paho("dollar")
    dollar.subscribe([("#", 0), ("$other/#", 0)])
    pub = paho("pub")
    topics = {
        "wc/kitchen/temp": True,
        "wc/house": True,  # `#` matches its parent level
        "wc/house/a/b": True,
        "wc/house/temp": True,  # matches two filters: one copy
        "wc/kitchen/humid": False,
        "wc/a/b/temp": False,
        "wc/exactly": False,
        "wc/exact": True,
        "other/exact": False,
    }
    for topic in topics:
        pub.publish(topic, topic.encode(), qos=1)
    pub.publish("$other/x", b"dollar", qos=1)
    got = [m.topic for m in barrier(sub, "wc/house")]
    assert sorted(got) == sorted(t for t, match in topics.items() if match)
    # `#` does not match topics starting with `$`; `$other/#` does.
    seen = [m.topic for m in barrier(dollar, "dollarmark")]
    assert "$other/x" in seen
    assert seen.count("$other/x") == 1
    assert not [t for t in seen if t.startswith("$") and t != "$other/x"]


# ------------------------------------------------------------ persistent sessions


def test_persistent_session_paho(broker, paho):
    cid = uid("persist")
    first = paho(cid, clean_session=False)
    assert first.session_present is False
    first.subscribe("ps/#", 1)
    first.disconnect()
    # The publishes come on other connections: wait until the broker has
    # seen this one leave, or they may still reach it live.
    broker.wait_log(rf"Client {cid} disconnected\.")
    for n in (1, 2, 3):
        assert mosquitto_pub(broker.port, f"ps/{n}", f"queued {n}", qos=1).returncode == 0
    assert mosquitto_pub(broker.port, "ps/zero", "qos0 is not queued", qos=0).returncode == 0
    # mosquitto_pub exits once a QoS 0 PUBLISH is written, not handled:
    # wait until the broker has it, or it may reach the session live.
    broker.wait_log(r"Received PUBLISH from \S+ \(d0, q0, r0, 'ps/zero'")
    second = paho(cid, clean_session=False)
    assert second.session_present is True
    got = barrier(second, "ps")
    assert [(m.topic, m.payload, m.qos) for m in got] == [(f"ps/{n}", f"queued {n}".encode(), 1) for n in (1, 2, 3)]
    second.disconnect()
    # A clean session discards subscription and queue.
    third = paho(cid, clean_session=True)
    assert third.session_present is False
    assert mosquitto_pub(broker.port, "ps/4", "lost", qos=1).returncode == 0
    third.subscribe("other-barrier/#", 1)
    assert barrier(third, "other-barrier") == []


def test_persistent_session_mosquitto_clients(broker, mosq_sub):
    cid = uid("msub")
    first = mosq_sub(["pm/#"], qos=1, client_id=cid, clean=False).wait_subscribed()
    first.stop()
    assert first.proc.returncode == 0
    for n in range(5):
        assert mosquitto_pub(broker.port, "pm/t", f"m{n}", qos=2).returncode == 0
    second = mosq_sub(["pm/#"], qos=1, client_id=cid, clean=False)
    assert [m[3] for m in second.wait_messages(5)] == [f"m{n}" for n in range(5)]


# ------------------------------------------------------------ wills


def test_will_published_when_client_is_killed(broker, paho, mosq_sub):
    watcher = paho("watcher")
    watcher.subscribe("will/#", 1)
    dev = mosq_sub(["cmd/dev1"], client_id="dev1",
                   extra=["--will-topic", "will/dev1", "--will-payload", "dev1 gone", "--will-qos", "1"])
    dev.wait_subscribed()
    dev.kill()
    msg = watcher.expect()
    assert (msg.topic, msg.payload, msg.qos) == ("will/dev1", b"dev1 gone", 1)
    broker.wait_log(r"Socket error on client dev1, disconnecting\.")


def test_no_will_on_clean_disconnect(broker, paho, mosq_sub):
    watcher = paho("watcher")
    watcher.subscribe("will/#", 1)
    dev = mosq_sub(["cmd/dev2"], client_id="dev2", extra=["--will-topic", "will/dev2", "--will-payload", "x"])
    dev.wait_subscribed()
    dev.stop()  # SIGINT: DISCONNECT, then exit
    assert dev.proc.returncode == 0
    broker.wait_log(r"Client dev2 disconnected\.")
    with_will = paho("dev3", will=("will/dev3", b"y", 1, False))
    with_will.disconnect()
    broker.wait_log(r"Client dev3 disconnected\.")
    assert barrier(watcher, "will") == []


def test_retained_will(broker, paho):
    dev = RawClient(broker.port, "dev4", will=("will/dev4", b"offline", 1, True))
    dev.connect()
    dev.drop()
    broker.wait_log(r"Socket error on client dev4, disconnecting\.")
    later = paho("later")
    later.subscribe("will/dev4", 1)
    msg = later.expect()
    assert (msg.payload, msg.retain) == (b"offline", True)


# ------------------------------------------------------------ keepalive


def test_keepalive_expiry_closes_silent_client_and_sends_will(broker, paho):
    watcher = paho("watcher")
    watcher.subscribe("will/#", 1)
    silent = RawClient(broker.port, "silent1", keepalive=1, will=("will/silent1", b"timeout", 1, False))
    assert silent.connect() == (0, 0)
    elapsed = silent.wait_closed_by_broker(timeout=10)
    # 1.5 x keepalive, with slack for scheduling; never before the grace time.
    assert 1.4 <= elapsed <= 4.0, elapsed
    broker.wait_log(r"Client silent1 has exceeded timeout, disconnecting\.")
    assert watcher.expect().payload == b"timeout"


def test_keepalive_pings_keep_client_connected(broker):
    client = RawClient(broker.port, "pinger", keepalive=1)
    client.connect()
    start = time.monotonic()
    for _ in range(8):  # 8 x 0.5 s: well past 1.5 x keepalive
        time.sleep(0.5)
        client.send(PINGREQ)
        assert client._recv_exact(2) == b"\xd0\x00"
    assert time.monotonic() - start >= 3.5
    client.disconnect()
    broker.wait_log(r"Client pinger disconnected\.")
    assert "pinger has exceeded timeout" not in broker.log()


def test_max_keepalive_refuses_longer_keepalive(make_broker, redis_server, redis_db):
    broker = make_broker(redis=redis_server, extra=["max_keepalive 10"])
    assert RawClient(broker.port, "slow", keepalive=60).connect() == (0, 2)
    assert RawClient(broker.port, "ok", keepalive=10).connect() == (0, 0)


# ------------------------------------------------------------ takeover


def test_takeover_paho_by_mosquitto_sub(broker, paho, mosq_sub):
    old = paho("tk1")
    old.subscribe("tk/#", 1)
    new = mosq_sub(["tk/#"], qos=1, client_id="tk1").wait_subscribed()
    assert old.disconnected.wait(5), "old connection was not closed on takeover"
    broker.wait_log(r"Client tk1 already connected, closing old connection\.")
    assert mosquitto_pub(broker.port, "tk/x", "to the new one", qos=1).returncode == 0
    assert new.wait_messages(1) == [(0, 1, "tk/x", "to the new one")]
    assert old.received == []


def test_takeover_keeps_persistent_session(broker, paho):
    first = paho("tk2", clean_session=False)
    first.subscribe("tk2/#", 1)
    second = paho("tk2", clean_session=False)
    assert second.session_present is True
    assert first.disconnected.wait(5)
    assert mosquitto_pub(broker.port, "tk2/a", "kept", qos=1).returncode == 0
    assert second.expect().payload == b"kept"
    assert first.received == []


# ------------------------------------------------------------ bursts


def test_burst_from_many_clients_loses_nothing(broker, paho):
    """600 connections publish at the same moment, five times: every
    publisher gets its PUBACK and the subscriber gets every message (the
    broker must not drop an event when many are queued at once)."""
    sub = paho("burst-sub")
    sub.subscribe("burst/#", 1)
    n, rounds = 600, 5
    clients = [RawClient(broker.port, f"burst{i}") for i in range(n)]
    try:
        for c in clients:
            c.connect()
        for rnd in range(rounds):
            for i, c in enumerate(clients):
                c.send(publish_packet(f"burst/{i}", f"{rnd}-{i}".encode(), qos=1, packet_id=rnd + 1))
            missing = []
            for i, c in enumerate(clients):
                try:
                    assert c._recv_exact(4) == bytes([0x40, 2, 0, rnd + 1])
                except (OSError, ConnectionError, AssertionError):
                    missing.append(i)
            assert missing == [], f"round {rnd}: no PUBACK for {len(missing)} publishers"
            got = {sub.expect(timeout=10).payload for _ in range(n)}
            assert got == {f"{rnd}-{i}".encode() for i in range(n)}
    finally:
        for c in clients:
            c.close()
