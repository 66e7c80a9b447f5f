"""persistence true: retained messages, persistent sessions and the wills of
connected clients survive SIGTERM and kill -9; every acknowledged message
is delivered after a restart; damaged store files are moved aside."""

from __future__ import annotations

import random
import signal
import subprocess
import struct
import time
from pathlib import Path

import pytest

from support import LOOPBACK, Paho, RawClient, drain, free_port, is_listening, kill_quietly, publish_packet, wait_until


def persistent_broker(make_broker, tmp_path: Path, *extra: str, start: bool = True):
    store = tmp_path / "store"
    store.mkdir(exist_ok=True)
    # No queue limit: an offline session drops past it, as Mosquitto's.
    lines = ["persistence true", f"persistence_location {store}/", "max_queued_messages 0", *extra]
    return make_broker(extra=lines, start=start), store / "mosquitto.db"


@pytest.mark.parametrize("shards", [1, 2])
@pytest.mark.parametrize("stop", ["SIGTERM", "SIGTERM, log removed", "kill -9"])
def test_retained_messages_and_persistent_sessions_survive_a_restart(make_broker, tmp_path, cleanup, stop, shards):
    broker, path = persistent_broker(make_broker, tmp_path, f"shards {shards}")
    log = path.with_name(path.name + ".wal")
    sub = Paho(broker.port, "p-sub", clean_session=False).connect()
    sub.subscribe("p/#", qos=2)
    sub.disconnect()
    pub = Paho(broker.port, "p-pub").connect()
    cleanup(pub.close)
    pub.publish("p/retained", b"kept", qos=1, retain=True)
    pub.publish("p/q1", b"one", qos=1)
    pub.publish("p/q2", b"two", qos=2)
    pub.close()
    if stop.startswith("SIGTERM"):
        assert broker.stop() == 0
        # A stop moves the write-ahead log into the store: the store file
        # alone holds everything.
        assert log.stat().st_size == 16, "the log was not emptied at the stop"
        if stop.endswith("log removed"):
            log.unlink()
    else:
        broker.kill9()
        assert log.stat().st_size > 16, "nothing was committed through the log"
    broker.restart()

    sub = Paho(broker.port, "p-sub", clean_session=False).connect()
    cleanup(sub.close)
    assert sub.session_present, "the persistent session was not restored"
    got = [(m.topic, m.payload, m.qos) for m in drain(sub, 1.0)]
    assert got == [("p/retained", b"kept", 1), ("p/q1", b"one", 1), ("p/q2", b"two", 2)]
    # The subscription itself survived: a new message reaches it.
    again = Paho(broker.port, "p-pub2").connect()
    cleanup(again.close)
    again.publish("p/new", b"after", qos=1)
    assert sub.expect().payload == b"after"
    # The retained message is sent to a new subscriber, flagged retained.
    fresh = Paho(broker.port, "p-fresh").connect()
    cleanup(fresh.close)
    fresh.subscribe("p/#", qos=1)
    message = fresh.expect()
    assert (message.topic, message.payload, message.retain) == ("p/retained", b"kept", True)


class RawPublisher:
    """Publishes numbered QoS 1 and 2 messages one at a time and records
    those the broker acknowledged (PUBACK, or PUBREC for QoS 2)."""

    def __init__(self, port: int, client_id: str):
        self.raw = RawClient(port, client_id, clean=True)
        self.raw.connect(timeout=3)
        self.raw.sock.settimeout(3)
        self.next_id = 1

    def publish(self, topic: str, payload: bytes, qos: int) -> bool:
        pid = self.next_id
        self.next_id = self.next_id % 65535 + 1
        self.raw.send(publish_packet(topic, payload, qos=qos, packet_id=pid))
        head = self.raw._recv_exact(4)
        expected = 0x40 if qos == 1 else 0x50
        if head[0] != expected or struct.unpack("!H", head[2:4])[0] != pid:
            raise AssertionError(f"unexpected answer {head!r} to {payload!r}")
        if qos == 2:
            # The message is the broker's from PUBREC on; PUBREL may be lost.
            try:
                self.raw.send(bytes([0x62, 2]) + struct.pack("!H", pid))
                self.raw._recv_exact(4)
            except OSError:
                pass
        return True

    def close(self):
        self.raw.close()


@pytest.mark.parametrize("shards", [1, 2])
def test_every_acknowledged_message_survives_kill_9_during_publishing(make_broker, tmp_path, cleanup, shards):
    """A bounded loop: publishers send numbered QoS 1 and 2 messages to an
    offline persistent subscriber while the broker is killed at random;
    after the last restart the subscriber gets every acknowledged message,
    QoS 2 exactly once, each publisher's messages in order. With 2 shards
    the publishers and the subscriber are spread over both."""
    broker, _ = persistent_broker(make_broker, tmp_path, f"shards {shards}")
    sub = Paho(broker.port, "k-sub", clean_session=False).connect()
    sub.subscribe("k/#", qos=2)
    sub.disconnect()
    rng = random.Random(7)
    acked: dict[bytes, int] = {}
    deadline = time.monotonic() + 40
    cycles = 0
    for cycle in range(12):
        if time.monotonic() > deadline:
            break
        cycles += 1
        publishers = [RawPublisher(broker.port, f"k-pub{cycle}-{n}") for n in range(2)]
        kill_at = time.monotonic() + rng.uniform(0.2, 1.0)
        sequence = 0
        try:
            while time.monotonic() < kill_at:
                for n, publisher in enumerate(publishers):
                    sequence += 1
                    qos = 1 + (sequence % 2)
                    payload = f"{cycle}:{n}:{sequence}:{qos}".encode()
                    if publisher.publish(f"k/{n}", payload, qos):
                        acked[payload] = qos
        except (OSError, ConnectionError, AssertionError):
            pass
        broker.kill9()
        for publisher in publishers:
            publisher.close()
        broker.restart()
    assert cycles >= 3 and len(acked) > 100, f"too little happened: {cycles} cycles, {len(acked)} acknowledged"

    sub = Paho(broker.port, "k-sub", clean_session=False).connect()
    cleanup(sub.close)
    received = [m.payload for m in drain(sub, quiet=2.0)]
    missing = set(acked) - set(received)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    twice = [p for p in set(received) if received.count(p) > 1 and p.endswith(b":2")]
    assert not twice, f"QoS 2 messages delivered twice: {twice[:5]}"
    # Per publisher (cycle and number), sequence numbers never go back.
    last: dict[bytes, int] = {}
    for payload in received:
        cycle, n, sequence, _ = payload.split(b":")
        key = cycle + b":" + n
        assert int(sequence) >= last.get(key, 0), f"out of order: {payload!r} after {last[key]}"
        last[key] = int(sequence)


def test_wills_of_clients_connected_at_a_crash_are_published_once_at_restart(make_broker, tmp_path, cleanup):
    broker, _ = persistent_broker(make_broker, tmp_path)
    watcher = Paho(broker.port, "w-watch", clean_session=False).connect()
    watcher.subscribe("wills/#", qos=1)
    watcher.disconnect()
    device = Paho(broker.port, "w-dev", will=("wills/w-dev", b"gone", 1, False)).connect()
    cleanup(device.close)
    # A clean session's CONNACK does not wait for the disk: give the
    # commit holding its will a moment, then the broker dies.
    time.sleep(0.5)
    broker.kill9()
    device.close()
    broker.restart()
    broker.wait_log(r"will of w-dev")
    assert broker.stop() == 0
    broker.restart()
    watcher = Paho(broker.port, "w-watch", clean_session=False).connect()
    cleanup(watcher.close)
    assert [(m.topic, m.payload) for m in drain(watcher, 1.0)] == [("wills/w-dev", b"gone")]


def damage(path: Path, kind: str):
    data = path.read_bytes() if path.exists() else b""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "zeros":
        path.write_bytes(bytes(max(len(data), 8192)))
    elif kind == "garbage":
        path.write_bytes(random.Random(1).randbytes(20_000))
    elif kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "bit flips":
        flipped = bytearray(data)
        rng = random.Random(3)
        for _ in range(16):
            at = rng.randrange(512, len(flipped))
            flipped[at] ^= 0xFF
        path.write_bytes(bytes(flipped))


@pytest.mark.parametrize("kind", ["zeros", "garbage", "truncated", "bit flips"])
def test_a_damaged_store_is_moved_aside_and_the_broker_starts_empty(make_broker, tmp_path, cleanup, kind):
    broker, path = persistent_broker(make_broker, tmp_path)
    pub = Paho(broker.port, "d-pub").connect()
    for n in range(50):
        pub.publish(f"d/{n}", b"x" * 200, qos=1, retain=True)
    pub.close()
    assert broker.stop() == 0
    damage(path, kind)
    broker.restart()
    aside = wait_until(lambda: list(path.parent.glob(path.name + ".corrupt-*")), 5, what="the file moved aside")
    # The file is moved before the line saying so is written.
    wait_until(lambda: str(path) in broker.log() and str(aside[0]) in broker.log(), 5,
               what=lambda: f"the log naming both paths:\n{broker.log()}")
    # The broker works, and keeps what it is given from now on.
    pub = Paho(broker.port, "d-pub").connect()
    cleanup(pub.close)
    pub.publish("d/new", b"fresh", qos=1, retain=True)
    pub.close()
    assert broker.stop() == 0
    broker.restart()
    sub = Paho(broker.port, "d-sub").connect()
    cleanup(sub.close)
    sub.subscribe("d/#", qos=1)
    assert [(m.topic, m.payload) for m in drain(sub, 1.0)] == [("d/new", b"fresh")]


def test_sigusr1_says_the_store_is_current(make_broker, tmp_path):
    broker, _ = persistent_broker(make_broker, tmp_path)
    broker.send_signal(signal.SIGUSR1)
    broker.wait_log(r"The store .*mosquitto.db is current \(\d+ bytes\)")


def test_a_mosquitto_database_is_imported(make_broker, tmp_path, cleanup):
    """Debian's mosquitto writes mosquitto.db (retained messages, a
    persistent session with queued QoS 1 and 2 messages); Culex started
    on the same location delivers them, with session present."""
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} {LOOPBACK}\nallow_anonymous true\npersistence true\n"
                    f"persistence_location {store}/\nuser root\n")
    mosquitto = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    cleanup(lambda: kill_quietly(mosquitto))
    wait_until(lambda: is_listening(port), 10, what="mosquitto listening")
    sub = Paho(port, "m-sub", clean_session=False).connect()
    sub.subscribe("m/#", qos=2)
    sub.disconnect()
    pub = Paho(port, "m-pub").connect()
    pub.publish("m/retained", b"kept", qos=1, retain=True)
    pub.publish("m/q1", b"one", qos=1)
    pub.publish("m/q2", b"two", qos=2)
    pub.close()
    mosquitto.send_signal(signal.SIGTERM)
    assert mosquitto.wait(timeout=10) == 0
    assert (store / "mosquitto.db").stat().st_size > 0

    broker, path = persistent_broker(make_broker, tmp_path)
    broker.wait_log(r"[Ii]mported")
    assert list(store.glob("mosquitto.db.mosquitto-*")), "the original is not kept beside the store"
    sub = Paho(broker.port, "m-sub", clean_session=False).connect()
    cleanup(sub.close)
    assert sub.session_present, "the imported session is not there"
    got = [(m.topic, m.payload, m.qos) for m in drain(sub, 1.0)]
    assert got == [("m/retained", b"kept", 1), ("m/q1", b"one", 1), ("m/q2", b"two", 2)]
    fresh = Paho(broker.port, "m-fresh").connect()
    cleanup(fresh.close)
    fresh.subscribe("m/#", qos=1)
    assert [(m.topic, m.payload, m.retain) for m in drain(fresh, 1.0)] == [("m/retained", b"kept", True)]
    # Imported once: a restart does not import again.
    assert broker.stop() == 0
    broker.restart()
    assert "mported" not in broker.log()
