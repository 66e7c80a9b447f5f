"""Several shards in one process (`shards 2`): each client id has a home
shard, and clients of different shards see one broker: messages at every
QoS, retained messages, wills, persistent sessions, takeovers, `$SYS` and
presence in Redis."""

from __future__ import annotations

import socket
import time

import pytest

from support import (LOOPBACK, MosquittoSub, Paho, RawClient, drain, flooding, mosquitto_pub, publish_packet,
                     subscribe_packet, wait_until)

SHARDS = ["shards 2"]


def home(client_id: str, shards: int = 2) -> int:
    """The home shard of `client_id`: 64-bit FNV-1a of its bytes, modulo
    the shards (the core's `home_shard`)."""
    h = 0xCBF29CE484222325
    for byte in client_id.encode():
        h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
    return h % shards


def on_shard(shard: int, prefix: str, shards: int = 2) -> str:
    """A client id starting with `prefix` whose home is `shard`."""
    return next(f"{prefix}-{n}" for n in range(1000) if home(f"{prefix}-{n}", shards) == shard)


def test_messages_cross_shards_at_every_qos_in_each_publishers_order(make_broker, clients):
    broker = make_broker(extra=SHARDS)
    subs = [clients(Paho(broker.port, on_shard(s, "sub"))).connect() for s in (0, 1)]
    for sub in subs:
        sub.subscribe("t/#", qos=2)
    pubs = [clients(Paho(broker.port, on_shard(s, "pub"))).connect() for s in (0, 1)]
    for n in range(10):
        for s, pub in enumerate(pubs):
            for qos in (0, 1, 2):
                pub.publish(f"t/{s}/{qos}", f"{n}", qos=qos)
    for sub in subs:
        got = drain(sub)
        for s in (0, 1):
            for qos in (0, 1, 2):
                mine = [(m.payload.decode(), m.qos) for m in got if m.topic == f"t/{s}/{qos}"]
                assert mine == [(f"{n}", qos) for n in range(10)], f"{sub.client_id}, t/{s}/{qos}: {mine}"


def test_an_unsubscribed_client_of_another_shard_is_sent_nothing_more(make_broker, clients):
    broker = make_broker(extra=SHARDS)
    sub = clients(Paho(broker.port, on_shard(1, "sub"))).connect()
    sub.subscribe("u/#", qos=1)
    pub = clients(Paho(broker.port, on_shard(0, "pub"))).connect()
    pub.publish("u/1", "before", qos=1)
    assert sub.expect().payload == b"before"
    unsubscribed = []
    sub.client.on_unsubscribe = lambda *args: unsubscribed.append(args)
    sub.client.unsubscribe("u/#")
    wait_until(lambda: unsubscribed, what="UNSUBACK")
    for n in range(5):
        pub.publish("u/1", f"after {n}", qos=1)
    assert [m.payload for m in drain(sub, quiet=0.5)] == []


def expect_publish(client: RawClient, topic: str) -> tuple[int, bytes]:
    """The next packet, which must be a PUBLISH on `topic`: its flags and payload."""
    first, body = client.read_packet()
    assert first >> 4 == 3, f"{client.client_id}: expected a PUBLISH on {topic}, got {first:#x} {body!r}"
    topic_len = int.from_bytes(body[:2], "big")
    assert body[2:2 + topic_len].decode() == topic
    header = 2 + topic_len + (2 if first & 0x06 else 0)
    return first & 0x0F, body[header:]


def test_what_one_shard_acknowledged_is_known_to_the_others_at_once(make_broker):
    """A client that got a SUBACK or a PUBACK may act on it at once
    through a client of another shard: a PUBLISH sent the moment the
    SUBACK arrives reaches the new subscriber, a SUBSCRIBE sent the moment
    a retained message is acknowledged gets it, however busy the shard
    that acknowledged (a flood makes its turns long, so whatever it told
    the others late would be seen late)."""
    broker = make_broker(extra=SHARDS)
    sub = RawClient(broker.port, on_shard(1, "sub"))
    pub = RawClient(broker.port, on_shard(0, "pub"))
    sub.connect()
    pub.connect()
    with flooding(broker.port, on_shard(1, "flood")):
        for n in range(1, 31):
            sub.send(subscribe_packet(f"new/{n}", packet_id=n))
            assert sub.read_packet() == (0x90, n.to_bytes(2, "big") + b"\x00")
            pub.send(publish_packet(f"new/{n}", b"fresh"))
            assert expect_publish(sub, f"new/{n}") == (0, b"fresh")
    with flooding(broker.port, on_shard(0, "flood")):
        for n in range(1, 31):
            pub.send(publish_packet(f"kept/{n}", b"kept", qos=1, packet_id=n, retain=True))
            assert pub.read_packet() == (0x40, n.to_bytes(2, "big"))
            sub.send(subscribe_packet(f"kept/{n}", packet_id=n))
            assert sub.read_packet() == (0x90, n.to_bytes(2, "big") + b"\x00")
            assert expect_publish(sub, f"kept/{n}") == (0x01, b"kept")


def test_retained_messages_and_wills_cross_shards(make_broker, clients):
    broker = make_broker(extra=SHARDS)
    mosquitto_pub(broker.port, "r/kept", "value", qos=1, retain=True, client_id=on_shard(0, "pub"))
    late = clients(Paho(broker.port, on_shard(1, "late"))).connect()
    late.subscribe("r/#", qos=1)
    message = late.expect()
    assert (message.topic, message.payload, message.retain) == ("r/kept", b"value", True)
    watcher = clients(Paho(broker.port, on_shard(1, "watch"))).connect()
    watcher.subscribe("wills/#", qos=1)
    device = RawClient(broker.port, on_shard(0, "dev"), will=("wills/dev", b"gone", 1, False))
    device.connect()
    device.drop()
    message = watcher.expect()
    assert (message.topic, message.payload) == ("wills/dev", b"gone")


def test_a_persistent_session_gets_what_other_shards_published_while_it_was_away(make_broker, clients):
    broker = make_broker(extra=SHARDS)
    sub_id = on_shard(1, "keep")
    sub = clients(Paho(broker.port, sub_id, clean_session=False)).connect()
    sub.subscribe("q/#", qos=1)
    sub.disconnect()
    for n in range(5):
        mosquitto_pub(broker.port, "q/x", f"m{n}", qos=1, client_id=on_shard(0, "pub"))
    back = clients(Paho(broker.port, sub_id, clean_session=False)).connect()
    assert back.session_present
    assert [m.payload.decode() for m in drain(back)] == [f"m{n}" for n in range(5)]


def test_a_takeover_meets_the_first_connection_on_its_shard(make_broker, clients):
    broker = make_broker(extra=SHARDS)
    first = clients(Paho(broker.port, "same-id")).connect()
    second = clients(Paho(broker.port, "same-id")).connect()
    assert first.disconnected.wait(5), "the first connection was not taken over"
    assert second.connected.is_set() and not second.disconnected.is_set()


def test_user_names_as_client_ids_meet_on_the_user_names_shard(make_broker, clients):
    """With `use_username_as_clientid`, the user name is the client id and
    chooses the shard: two connections of one user that send client ids
    of different shards meet there, the second taking over the first, and
    a persistent session comes back whatever client id is sent."""
    broker = make_broker(extra=SHARDS + ["use_username_as_clientid true"])
    ids = [on_shard(0, "dev"), on_shard(1, "dev")]
    first = clients(Paho(broker.port, ids[0], username="owner", clean_session=False)).connect()
    first.subscribe("to/owner", qos=1)
    second = clients(Paho(broker.port, ids[1], username="owner", clean_session=False)).connect()
    assert first.disconnected.wait(5), "the first connection was not taken over"
    second.close()
    assert mosquitto_pub(broker.port, "to/owner", "while away", qos=1, extra=["-u", "publisher"]).returncode == 0
    back = clients(Paho(broker.port, on_shard(0, "other"), username="owner", clean_session=False)).connect()
    assert back.session_present
    assert back.expect().payload == b"while away"


def test_sys_counts_the_clients_of_every_shard(make_broker, clients):
    broker = make_broker(extra=SHARDS + ["sys_interval 1"])
    for s in (0, 1):
        for n in range(2):
            clients(Paho(broker.port, on_shard(s, f"c{n}"))).connect()
    watcher = clients(Paho(broker.port, on_shard(0, "sys"))).connect()
    watcher.subscribe("$SYS/broker/clients/connected")
    # Shard 0 publishes the totals, the others' at most one interval old.
    deadline = time.monotonic() + 6
    seen = []
    while time.monotonic() < deadline and (not seen or seen[-1] != "5"):
        seen.append(watcher.expect(timeout=3).payload.decode())
    assert seen[-1] == "5", seen


def test_each_shard_writes_its_presence_as_a_broker_of_its_own(make_broker, redis_server, redis_db, clients):
    broker = make_broker(redis=redis_server, extra=SHARDS)
    ids = [on_shard(s, "dev") for s in (0, 1)]
    for client_id in ids:
        clients(Paho(broker.port, client_id)).connect()
    wait_until(lambda: set(redis_db.hkeys("mqtt")) == set(ids), what=f"both online: {redis_db.hkeys('mqtt')}")
    assert broker.presence_ids == [f"{broker.broker_id}/{s}" for s in (0, 1)]
    assert redis_db.smembers("mqtt:brokers") == set(broker.presence_ids)
    for s, client_id in enumerate(ids):
        assert redis_db.smembers(f"mqtt:broker:{broker.presence_ids[s]}") == {client_id}


def test_a_connection_that_never_completes_its_connect_is_closed(make_broker):
    broker = make_broker(extra=SHARDS)
    sock = socket.create_connection((LOOPBACK, broker.port), timeout=15)
    sock.sendall(b"\x10\x20\x00\x04MQ")  # the start of a CONNECT, never finished
    started = time.monotonic()
    assert sock.recv(16) == b"", "closed without an answer"
    assert 9 < time.monotonic() - started < 14
    sock.close()


@pytest.mark.parametrize("stop", ["SIGTERM", "kill -9"])
def test_a_store_written_by_two_shards_restores_into_three(make_broker, tmp_path, cleanup, stop):
    """The shards share one store: the sessions of both shards, what was
    queued for them from both and the retained messages set through both
    come back after a restart with three shards, each session at its new
    home, each retained message on every shard."""
    store = tmp_path / "store"
    store.mkdir()
    broker = make_broker(extra=SHARDS + ["persistence true", f"persistence_location {store}/", "max_queued_messages 0"])
    subs = [on_shard(s, "keep") for s in (0, 1)]
    for client_id in subs:
        sub = Paho(broker.port, client_id, clean_session=False).connect()
        sub.subscribe("s/#", qos=2)
        sub.disconnect()
    for s in (0, 1):
        pub = Paho(broker.port, on_shard(s, "put")).connect()
        cleanup(pub.close)
        for qos in (1, 2):
            pub.publish(f"s/{s}/{qos}", f"from {s} at {qos}", qos=qos)
        pub.publish(f"r/{s}", f"retained {s}", qos=1, retain=True)
        pub.close()
    if stop == "kill -9":
        broker.kill9()
    else:
        assert broker.stop() == 0
    broker.config.write_text(broker.config.read_text().replace("shards 2", "shards 3"))
    broker.restart()
    expected = sorted((f"s/{s}/{qos}", f"from {s} at {qos}") for s in (0, 1) for qos in (1, 2))
    for client_id in subs:
        sub = Paho(broker.port, client_id, clean_session=False).connect()
        cleanup(sub.close)
        assert sub.session_present, f"{client_id}: the session was not restored"
        got = sorted((m.topic, m.payload.decode()) for m in drain(sub, 1.0) if m.topic.startswith("s/"))
        assert got == expected, f"{client_id}: {got}"
    for s in range(3):
        fresh = Paho(broker.port, on_shard(s, "fresh", 3)).connect()
        cleanup(fresh.close)
        fresh.subscribe("r/#", qos=1)
        got = sorted((m.topic, m.payload.decode()) for m in drain(fresh, 1.0))
        assert got == [("r/0", "retained 0"), ("r/1", "retained 1")], f"shard {s} of 3: {got}"


def test_mosquitto_clients_on_both_shards(make_broker, cleanup):
    broker = make_broker(extra=SHARDS)
    sub = MosquittoSub(broker.port, ["m/#"], client_id=on_shard(1, "msub"), qos=1)
    cleanup(sub.kill)
    sub.wait_subscribed()
    for n in range(3):
        mosquitto_pub(broker.port, "m/x", f"n{n}", qos=1, client_id=on_shard(0, "mpub"))
    got = sub.wait_messages(3)
    assert [payload for _, _, _, payload in got] == ["n0", "n1", "n2"]
