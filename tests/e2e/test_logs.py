"""Log lines people grep for keep Mosquitto's and the seed's wording, at the
default log level (no `log_type` line, no -v)."""

from __future__ import annotations

import re

import pytest

from support import RawClient, publish_packet, wait_until


@pytest.fixture
def quiet_broker(make_broker, redis_server, redis_db):
    return make_broker(redis=redis_server, verbose=False)


def positions(log: str, patterns: list[str]) -> list[int]:
    """Start offsets of each pattern's first match, in the given order; a
    pattern must match after the previous one."""
    out, at = [], 0
    for p in patterns:
        m = re.compile(p, re.M).search(log, at)
        assert m, f"/{p}/ not found after offset {at} in:\n{log}"
        out.append(m.start())
        at = m.end()
    return out


def test_connect_and_socket_error_lines(quiet_broker, redis_db):
    b = quiet_broker
    c = RawClient(b.port, "logdev")
    c.connect()
    local = c.sock.getsockname()[1]
    wait_until(lambda: redis_db.hexists("mqtt", "logdev"), 5, what="logdev online")
    c.drop()
    b.wait_log(r"Updating client logdev to offline")
    ts = r"^\d{10}: "
    positions(b.log(), [
        ts + rf"New connection from 127\.0\.0\.1:{local} on port {b.port}\.",
        ts + rf"New client connected from 127\.0\.0\.1:{local} as logdev \(p2, c1, k60\)\.",
        ts + r"Updating client logdev to online",
        ts + r"Socket error on client logdev, disconnecting\.",
        ts + r"Updating client logdev to offline",
    ])


def test_mqtt31_persistent_clean_disconnect_lines(quiet_broker):
    b = quiet_broker
    c = RawClient(b.port, "logold", keepalive=30, clean=False, v31=True)
    c.connect()
    local = c.sock.getsockname()[1]
    b.wait_log(r"Updating client logold to online")
    c.disconnect()
    b.wait_log(r"Updating client logold to offline")
    positions(b.log(), [
        rf"New connection from 127\.0\.0\.1:{local} on port {b.port}\.",
        rf"New client connected from 127\.0\.0\.1:{local} as logold \(p1, c0, k30\)\.",
        r"Updating client logold to online",
        r"Client logold disconnected\.",
        r"Updating client logold to offline",
    ])


def test_keepalive_and_takeover_lines(quiet_broker):
    b = quiet_broker
    silent = RawClient(b.port, "logka", keepalive=1)
    silent.connect()
    silent.wait_closed_by_broker(timeout=10)
    silent.close()
    b.wait_log(r"Client logka has exceeded timeout, disconnecting\.")
    b.wait_log(r"Updating client logka to offline")
    first = RawClient(b.port, "logtk")
    first.connect()
    second = RawClient(b.port, "logtk")
    second.connect()
    first.wait_closed_by_broker(timeout=5)
    b.wait_log(r"Updating client logtk to online", count=2)
    positions(b.log(), [
        r"Updating client logtk to online",
        r"Client logtk already connected, closing old connection\.",
        r"Updating client logtk to offline",
        r"Updating client logtk to online",
    ])
    first.close()
    second.disconnect()


def test_default_level_hides_debug_lines(quiet_broker):
    b = quiet_broker
    c = RawClient(b.port, "logpub")
    c.connect()
    c.send(publish_packet("t", b"x", qos=1))
    assert c._recv_exact(4) == b"\x40\x02\x00\x01"
    c.disconnect()
    b.wait_log(r"Client logpub disconnected\.")
    assert "Received PUBLISH" not in b.log()
