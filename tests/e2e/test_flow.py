"""Flow control with real clients (docs/config.md, flow control): a fast
publisher never makes the broker drop what it acknowledged to a reading
subscriber, a subscriber that stops reading holds its publishers only for
the stall bound, a slow QoS 0 reader under a flood stays connected at a
bounded cost, and one that never reads is still disconnected. Both
binaries, Mosquitto's default limits (20 in flight, 1,000 queued)."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from support import PINGREQ, LOOPBACK, Broker, Paho, RawClient, _encode_len, _str, connect_packet, flooding, \
    publish_packet, wait_until

from test_abuse import rss_kib

# Latency and memory bounds: no other test runs beside these (conftest.py).
pytestmark = pytest.mark.alone

MESSAGES = 100_000

# Messages a publisher queues ahead of their acknowledgements.
AHEAD = 20_000


def subscribe_raw(port: int, client_id: str, topic: str, qos: int, rcvbuf: int) -> socket.socket:
    """A subscriber on a raw socket with a small receive buffer, left for
    the test to read (or not)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect((LOOPBACK, port))
    sock.sendall(connect_packet(client_id, keepalive=0))
    body = struct.pack("!H", 1) + _str(topic) + bytes([qos])
    sock.sendall(b"\x82" + _encode_len(len(body)) + body)
    sock.settimeout(5)
    got = b""
    while len(got) < 9:  # CONNACK (4) and SUBACK (5)
        chunk = sock.recv(9 - len(got))
        assert chunk, "closed before SUBACK"
        got += chunk
    return sock


def read_until_pingresp(sock: socket.socket, timeout: float) -> bool:
    """Reads packets (whatever else comes first) until a PINGRESP; false
    if the broker closes the connection or the time is up."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return False
        buf += chunk
        while len(buf) >= 2:
            length, shift, at = 0, 0, 1
            while at < len(buf) and at < 5:
                length |= (buf[at] & 0x7F) << shift
                shift += 7
                at += 1
                if not buf[at - 1] & 0x80:
                    break
            else:
                break
            if len(buf) < at + length:
                break
            if buf[0] == 0xD0:
                return True
            buf = buf[at + length:]
    return False


def publish_all(port: int, client_id: str, topic: str, count: int, qos: int, payload_size: int = 16) -> Paho:
    """A paho publisher with 64 messages in flight, publishing `count`
    numbered messages as fast as the broker takes them; returns once all
    are acknowledged."""
    publisher = Paho(port, client_id)
    publisher.client.max_inflight_messages_set(64)
    publisher.connect()
    deadline = time.monotonic() + 300
    infos = []

    def acknowledged(info):
        info.wait_for_publish(timeout=max(0.1, deadline - time.monotonic()))
        assert info.is_published(), "a message was never acknowledged"

    for n in range(count):
        # paho numbers queued messages with 16-bit ids: keep well below.
        if n >= AHEAD:
            acknowledged(infos[n - AHEAD])
        infos.append(publisher.client.publish(topic, str(n).rjust(payload_size, "0"), qos=qos))
    for info in infos[-AHEAD:]:
        acknowledged(info)
    return publisher


@pytest.mark.parametrize("qos", [1, 2])
def test_fast_publisher_to_one_acking_subscriber_loses_nothing(binary, tmp_path, qos):
    broker = Broker(binary, tmp_path, verbose=False).start()
    try:
        subscriber = Paho(broker.port, "acking").connect()
        assert subscriber.subscribe("flow/t", qos=qos) == [qos]
        publisher = publish_all(broker.port, "fast", "flow/t", MESSAGES, qos)
        wait_until(lambda: len(subscriber.received) >= MESSAGES, timeout=300,
                   what=lambda: f"{MESSAGES} messages, got {len(subscriber.received)}")
        time.sleep(0.5)
        payloads = [int(m.payload) for m in subscriber.received]
        assert payloads == list(range(MESSAGES)), "lost, duplicated or reordered"
        assert "being dropped" not in broker.log()
        publisher.close()
        subscriber.close()
    finally:
        broker.stop()


def test_a_subscriber_that_stops_reading_holds_its_publisher_only_for_the_stall_bound(binary, tmp_path):
    broker = Broker(binary, tmp_path, extra=["slow_subscriber_timeout 2"]).start()
    try:
        count = 20_000
        fast = Paho(broker.port, "keeps-up").connect()
        fast.subscribe("flow/#", qos=1)
        started = time.monotonic()
        publish_all(broker.port, "alone", "flow/a", count, 1).close()
        wait_until(lambda: len(fast.received) >= count, timeout=120)
        alone = time.monotonic() - started

        stuck = subscribe_raw(broker.port, "stuck", "flow/#", 1, rcvbuf=4096)
        started = time.monotonic()
        publish_all(broker.port, "with-stuck", "flow/b", count, 1).close()
        wait_until(lambda: len(fast.received) >= 2 * count, timeout=120)
        with_stuck = time.monotonic() - started
        broker.wait_log(r"Client stuck has acknowledged too little for 2 s: it no longer holds back publishers\.")
        broker.wait_log(r"Outgoing messages are being dropped for client stuck\.")
        # Held for the stall bound at most, then at the rate it had alone.
        assert with_stuck < 2 + 2 * alone + 5, f"{with_stuck:.1f} s with a stuck subscriber, {alone:.1f} s without"
        assert [int(m.payload) for m in fast.received[count:]] == list(range(count))
        assert "stuck is not reading" not in broker.log()
        stuck.close()
        fast.close()
    finally:
        broker.stop()


def test_a_slow_qos0_reader_under_a_flood_stays_connected_at_a_bounded_cost(binary, tmp_path):
    broker = Broker(binary, tmp_path, verbose=False, extra=["max_unwritten_bytes 1048576"]).start()
    try:
        slow = subscribe_raw(broker.port, "slow-reader", "flood/#", 0, rcvbuf=16384)
        received = 0
        stop = threading.Event()

        def read_slowly():
            """About 200 KB/s, in small reads."""
            nonlocal received
            slow.settimeout(0.5)
            while not stop.is_set():
                try:
                    chunk = slow.recv(4096)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                received += len(chunk)
                time.sleep(0.02)

        reader = threading.Thread(target=read_slowly, daemon=True)
        reader.start()
        baseline = rss_kib(broker.proc.pid)
        peak = baseline
        publishers = [RawClient(broker.port, f"flood-{i}") for i in range(4)]
        for p in publishers:
            assert p.connect() == (0, 0)
        payload = b"f" * 1000
        batch = b"".join(publish_packet(f"flood/{i}", payload) for i in range(50))
        deadline = time.monotonic() + 5
        sent = 0
        while time.monotonic() < deadline:
            for p in publishers:
                p.send(batch)
                sent += 50
            if sent % 5000 == 0:
                peak = max(peak, rss_kib(broker.proc.pid))
        peak = max(peak, rss_kib(broker.proc.pid))
        stop.set()
        reader.join(timeout=5)
        # Still connected: it answers a PINGREQ.
        slow.sendall(b"\xc0\x00")
        assert read_until_pingresp(slow, timeout=60), "the slow reader got no PINGRESP"
        growth_mib = (peak - baseline) / 1024
        assert growth_mib < 64, f"a slow reader under a flood cost {growth_mib:.0f} MiB"
        assert received > 100_000, f"the slow reader got only {received} bytes"
        assert "Outgoing messages are being dropped for client slow-reader." in broker.log()
        assert "slow-reader is not reading" not in broker.log()
        for p in publishers:
            p.close()
        slow.close()
    finally:
        broker.stop()


def test_a_flooding_client_does_not_keep_the_others_waiting(binary, tmp_path):
    """A client floods the broker with reads that are always there;
    another still gets its PINGRESPs in a fraction of a second (async-std
    has no cooperative budget: a connection task that never had to wait
    kept its thread, and the others waited up to a second)."""
    broker = Broker(binary, tmp_path, verbose=False).start()
    try:
        quiet = RawClient(broker.port, "quiet")
        quiet.connect()
        with flooding(broker.port, "flood"):
            waits = []
            for _ in range(100):
                start = time.monotonic()
                quiet.send(PINGREQ)
                assert quiet.read_packet() == (0xD0, b""), "a PINGRESP"
                waits.append(time.monotonic() - start)
            # The 99th percentile: one stall of a loaded machine is not the
            # starvation looked for (before: five waits of 0.7-1 s).
            assert sorted(waits)[-2] < 0.5, f"the longest waits: {sorted(waits)[-5:]}"
        quiet.close()
    finally:
        broker.stop()
