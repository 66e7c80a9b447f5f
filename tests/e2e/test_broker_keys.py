"""Broker-wide Mosquitto keys that change what clients see:
`clientid_prefixes` and `upgrade_outgoing_qos`."""

from __future__ import annotations

from support import MosquittoSub, mosquitto_pub


def test_clientid_prefixes_admits_only_matching_ids(make_broker):
    broker = make_broker(extra=["clientid_prefixes door-"])
    assert mosquitto_pub(broker.port, "t", "x", client_id="door-7").returncode == 0
    refused = mosquitto_pub(broker.port, "t", "x", client_id="sensor-7")
    assert refused.returncode != 0
    assert "not authorised" in (refused.stdout + refused.stderr).lower()


def test_upgrade_outgoing_qos_delivers_at_the_subscriptions_qos(make_broker, cleanup):
    broker = make_broker(extra=["upgrade_outgoing_qos true"])
    sub = MosquittoSub(broker.port, ["t/#"], qos=2)
    cleanup(sub.stop)
    sub.wait_subscribed()
    assert mosquitto_pub(broker.port, "t/a", "zero", qos=0).returncode == 0
    assert sub.wait_messages(1) == [(0, 2, "t/a", "zero")]
