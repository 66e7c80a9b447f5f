"""Broker-wide Mosquitto keys that change what clients see:
`upgrade_outgoing_qos`, `retain_available` and `max_packet_size`
(`clientid_prefixes` is in test_listener_keys.py, with the other keys that
admit clients)."""

from __future__ import annotations

from support import MosquittoSub, mosquitto_pub


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
