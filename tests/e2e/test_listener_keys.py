"""Listener keys of Mosquitto that change what that listener's clients
may do: `max_qos` and `use_username_as_clientid`. Each applies to its
listener only; the broker's first listener keeps the defaults."""

from __future__ import annotations

from support import LOOPBACK, MosquittoSub, free_port, is_listening, mosquitto_pub, wait_until


def second_listener(make_broker, *lines: str):
    port = free_port()
    broker = make_broker(extra=[f"listener {port} {LOOPBACK}", *lines])
    wait_until(lambda: is_listening(port), what=f"listener {port}")
    broker.second = port
    return broker


def test_max_qos_lowers_subscriptions_and_disconnects_higher_publishers(make_broker, cleanup):
    broker = second_listener(make_broker, "max_qos 1")
    sub = MosquittoSub(broker.second, ["t/#"], qos=2)
    cleanup(sub.stop)
    sub.wait_subscribed()
    # mosquitto_sub -d prints the granted QoS: "Subscribed (mid: 1): 1".
    assert "Subscribed (mid: 1): 1" in sub.lines, sub.lines
    assert mosquitto_pub(broker.second, "t/one", "q1", qos=1).returncode == 0
    assert mosquitto_pub(broker.second, "t/two", "q2", qos=2).returncode != 0
    broker.wait_log(r"Too high QoS in PUBLISH from .*, disconnecting\.")
    # The first listener is not limited.
    assert mosquitto_pub(broker.port, "t/three", "q2", qos=2).returncode == 0
    assert [(m[1], m[2]) for m in sub.wait_messages(2)] == [(1, "t/one"), (1, "t/three")]


def test_use_username_as_clientid(make_broker, cleanup):
    broker = second_listener(make_broker, "use_username_as_clientid true")
    sub = MosquittoSub(broker.port, ["t"])
    cleanup(sub.stop)
    sub.wait_subscribed()
    named = mosquitto_pub(broker.second, "t", "x", client_id="given", extra=["-u", "door-7"])
    assert named.returncode == 0
    broker.wait_log(r"New client connected from .* as door-7 ")
    refused = mosquitto_pub(broker.second, "t", "x", client_id="given")
    assert refused.returncode != 0
    assert "not authorised" in (refused.stdout + refused.stderr).lower()
