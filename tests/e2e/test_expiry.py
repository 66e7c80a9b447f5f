"""Payload expiry end to end: a JSON payload whose `expired_at` (or
`expiredAt`) has passed is never delivered; the publisher is acknowledged
either way."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from support import Paho, mosquitto_pub, wait_until


@pytest.fixture
def paho(broker, cleanup):
    def make(client_id=None, **kw) -> Paho:
        client = Paho(broker.port, client_id or f"p-{uuid.uuid4().hex[:8]}", **kw)
        cleanup(client.close)
        return client.connect()

    return make


def payload(**fields) -> bytes:
    return json.dumps(fields).encode()


def barrier(client: Paho, prefix: str) -> list:
    marker = f"{prefix}/zz-marker-{uuid.uuid4().hex[:6]}"
    client.publish(marker, b"marker", qos=1)
    return client.collect_until(marker)[:-1]


@pytest.mark.parametrize("field", ["expired_at", "expiredAt"])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_past_expiry_is_never_delivered_and_publisher_is_acked(broker, paho, qos, field):
    sub = paho("sub")
    sub.subscribe("exp/#", 2)
    pub = paho("pub")
    # wait_for_publish: PUBACK (QoS 1) / PUBCOMP (QoS 2) came back.
    pub.publish("exp/live", payload(**{field: time.time() - 30, "n": 1}), qos=qos)
    pub.publish("exp/live", payload(**{field: time.time() - 0.5, "n": 2}), qos=qos)
    assert barrier(sub, "exp") == []
    broker.wait_log(r"The message has already expired!")


def test_past_expiry_from_mosquitto_pub(broker, paho):
    sub = paho("sub")
    sub.subscribe("exp/#", 1)
    result = mosquitto_pub(broker.port, "exp/m", json.dumps({"expired_at": int(time.time()) - 5}), qos=1)
    assert result.returncode == 0, result.stderr  # got its PUBACK
    assert barrier(sub, "exp") == []


def test_future_and_non_expiring_payloads_are_delivered(broker, paho):
    sub = paho("sub")
    sub.subscribe("exp/#", 1)
    pub = paho("pub")
    now = time.time()
    payloads = [
        payload(expired_at=now + 3600),
        payload(expiredAt=now + 3600.25),
        payload(expired_at=int(now) + 3600, data={"nested": [1, 2]}),
        b"not json {\"expired_at\": 1}",
        payload(expired_at="1"),  # not a number
        payload(other=1),
        json.dumps([{"expired_at": 1}]).encode(),  # not an object
        b"",
    ]
    for p in payloads:
        pub.publish("exp/f", p, qos=1)
    assert [m.payload for m in barrier(sub, "exp")] == payloads


def test_queued_copy_expiring_while_subscriber_is_offline(broker, paho):
    sub = paho("offline-sub", clean_session=False)
    sub.subscribe("q/#", 1)
    sub.disconnect()
    pub = paho("pub")
    soon = time.time() + 1.5
    pub.publish("q/a", payload(expired_at=soon, n="soon"), qos=1)  # PUBACK although it will expire
    pub.publish("q/b", payload(expired_at=time.time() + 3600, n="later"), qos=1)
    pub.publish("q/c", payload(expired_at=soon, n="soon2"), qos=2)
    pub.publish("q/d", b"plain", qos=1)
    wait_until(lambda: time.time() > soon + 0.3, 5, what="the expiry moment to pass")
    back = paho("offline-sub", clean_session=False)
    assert back.session_present is True
    got = barrier(back, "q")
    assert [(m.topic, m.payload) for m in got] == [
        ("q/b", payload(expired_at=json.loads(got[0].payload)["expired_at"], n="later")),
        ("q/d", b"plain"),
    ]


def test_expired_retained_message_is_not_sent_on_subscribe(broker, paho):
    pub = paho("pub")
    soon = time.time() + 1.0
    pub.publish("rx/short", payload(expired_at=soon), qos=1, retain=True)
    pub.publish("rx/long", payload(expired_at=time.time() + 3600), qos=1, retain=True)
    wait_until(lambda: time.time() > soon + 0.3, 5, what="the expiry moment to pass")
    sub = paho("late")
    sub.subscribe("rx/#", 1)
    assert [m.topic for m in barrier(sub, "rx")] == ["rx/long"]
    # Removed from the store, not only skipped: a second subscriber sees the same.
    again = paho("later")
    again.subscribe("rx/#", 1)
    assert [m.topic for m in barrier(again, "rx")] == ["rx/long"]
