"""Broker-wide Mosquitto keys that change what clients see:
`upgrade_outgoing_qos`, `retain_available`, `max_packet_size` and
`max_inflight_bytes`
(`clientid_prefixes` is in test_listener_keys.py, with the other keys that
admit clients)."""

from __future__ import annotations

import socket
import subprocess

from support import LOOPBACK, MosquittoSub, RawClient, free_port, mosquitto_pub


def test_upgrade_outgoing_qos_delivers_at_the_subscriptions_qos(make_broker, cleanup):
    broker = make_broker(extra=["upgrade_outgoing_qos true"])
    sub = MosquittoSub(broker.port, ["t/#"], qos=2)
    cleanup(sub.stop)
    sub.wait_subscribed()
    assert mosquitto_pub(broker.port, "t/a", "zero", qos=0).returncode == 0
    assert sub.wait_messages(1) == [(0, 2, "t/a", "zero")]


def test_retain_available_false_disconnects_retained_publishers(make_broker, cleanup):
    broker = make_broker(extra=["retain_available false"])
    sub = MosquittoSub(broker.port, ["t/#"])
    cleanup(sub.stop)
    sub.wait_subscribed()
    assert mosquitto_pub(broker.port, "t/plain", "kept").returncode == 0
    mosquitto_pub(broker.port, "t/retained", "refused", retain=True, qos=1)
    broker.wait_log(r"disconnected: retained messages are not available \(retain_available false\)\.")
    assert sub.wait_messages(1) == [(0, 0, "t/plain", "kept")]
    # A retained will is refused at CONNECT; a plain one is accepted.
    refused = mosquitto_pub(broker.port, "t/x", "x", extra=["--will-topic", "t/w", "--will-payload", "w",
                                                            "--will-retain"])
    assert refused.returncode != 0
    assert mosquitto_pub(broker.port, "t/x", "x", extra=["--will-topic", "t/w", "--will-payload", "w"]).returncode == 0
    assert [m[2] for m in sub.wait_messages(2)] == ["t/plain", "t/x"]


def test_max_packet_size_closes_larger_packets_only(make_broker, cleanup):
    broker = make_broker(extra=["max_packet_size 200"])
    sub = MosquittoSub(broker.port, ["t/#"])
    cleanup(sub.stop)
    sub.wait_subscribed()
    assert mosquitto_pub(broker.port, "t/small", "s" * 100).returncode == 0
    mosquitto_pub(broker.port, "t/big", "b" * 400)
    broker.wait_log(r"exceeds the limit of 200 bytes")
    assert sub.wait_messages(1) == [(0, 0, "t/small", "s" * 100)]
    assert all(m[2] != "t/big" for m in sub.messages())


def _publishes_within(client: RawClient, seconds: float) -> list[tuple[int, bytes]]:
    """(packet id, payload) of each PUBLISH that comes within `seconds`."""
    got = []
    client.sock.settimeout(seconds)
    try:
        while True:
            first, body = client.read_packet()
            if first >> 4 == 3:
                topic_len = int.from_bytes(body[:2], "big")
                packet_id = int.from_bytes(body[2 + topic_len:4 + topic_len], "big")
                got.append((packet_id, body[4 + topic_len:]))
    except socket.timeout:
        return got
    finally:
        client.sock.settimeout(5)


def test_max_inflight_bytes_holds_messages_until_acknowledged(make_broker, cleanup):
    broker = make_broker(extra=["max_inflight_bytes 100"])
    sub = RawClient(broker.port, "bytes-sub", clean=False)
    cleanup(sub.close)
    assert sub.connect() == (0, 0)
    sub.send(bytes([0x82, 6, 0, 1, 0, 1]) + b"t" + bytes([1]))
    assert sub.read_packet() == (0x90, bytes([0, 1, 1]))
    for n in range(3):
        assert mosquitto_pub(broker.port, "t", f"{n}" * 60, qos=1).returncode == 0
    # 0 and 60 bytes in flight let two go; 120 hold the third.
    first = _publishes_within(sub, 1.0)
    assert [payload for _, payload in first] == [b"0" * 60, b"1" * 60]
    sub.send(bytes([0x40, 2]) + first[0][0].to_bytes(2, "big"))
    assert [payload for _, payload in _publishes_within(sub, 1.0)] == [b"2" * 60]


def test_memory_limit_refuses_what_would_exceed_it(make_broker, cleanup, tmp_path):
    broker = make_broker(extra=["memory_limit 4000000"])
    broker.wait_log(r"memory_limit: the broker stops taking messages past 4000000 bytes of heap\.")
    sub = MosquittoSub(broker.port, ["t"], qos=1)
    cleanup(sub.stop)
    sub.wait_subscribed()
    assert mosquitto_pub(broker.port, "t", "small", qos=1).returncode == 0
    big = tmp_path / "big"
    big.write_bytes(b"x" * 6_000_000)
    # Reading it takes the heap past the limit: dropped unacknowledged,
    # the publisher disconnected, as Mosquitto does.
    refused = subprocess.run(["mosquitto_pub", "-h", LOOPBACK, "-p", str(broker.port), "-t", "t", "-q", "1",
                              "-i", "big-pub", "-f", str(big)], capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0, refused
    broker.wait_log(r"Client big-pub disconnected due to out of memory\.")
    # The heap back under the limit, traffic goes on; the subscriber never
    # saw the large message.
    assert mosquitto_pub(broker.port, "t", "after", qos=1).returncode == 0
    assert [m[3] for m in sub.wait_messages(2)] == ["small", "after"]
