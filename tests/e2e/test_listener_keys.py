"""Listener keys that change how clients are admitted and which topics they
see, as in Mosquitto 2.0.11 (and 2.1 for `accept_protocol_versions`,
`listener_allow_anonymous`, `listener_auto_id_prefix`): each set in a
configuration file and observed from real clients. Also a password file
with plain-text passwords, which stops start-up (and a reload) naming every
such line.

CONNACK codes are MQTT 3.1.1's, as paho or a raw socket receives them.
"""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from support import (LOOPBACK, Broker, MosquittoSub, Paho, RawClient, connack, connect_packet, free_port,
                     is_listening, mosquitto_pub, stays, wait_until)

NOT_AUTHORISED = 5
UNACCEPTABLE_PROTOCOL = 1

@pytest.fixture
def clients(cleanup):
    def track(client):
        cleanup(client.close if hasattr(client, "close") else client.kill)
        return client

    return track


def two_listeners(make_broker, second: list[str], common: list[str] = (), **kw) -> tuple[Broker, int, int]:
    """A running broker with a plain listener, then the broker-wide lines
    `common`, then a second listener with `second`. Returns it and the two
    ports."""
    other = free_port()
    broker = make_broker(extra=[*common, f"listener {other} {LOOPBACK}", *second], **kw)
    wait_until(lambda: is_listening(other), what=f"listener {other}")
    return broker, broker.port, other


# ------------------------------------------------------------ use_username_as_clientid


def test_use_username_as_clientid_replaces_the_client_id(make_broker, redis_server, redis_db, clients):
    broker, plain, named = two_listeners(make_broker, ["use_username_as_clientid true"], redis=redis_server)
    alice = clients(Paho(named, "given-id", username="alice", password="x").connect())
    broker.wait_log(r"New client connected from \S+ as alice \(p2, c1, k60, u'alice'\)")
    # Presence is written under the new id.
    wait_until(lambda: set(redis_db.hkeys("mqtt")) == {"alice"}, what="HKEYS mqtt == {alice}")
    # A second connection with the same user name takes the first over.
    clients(Paho(named, "other-id", username="alice", password="x").connect())
    wait_until(alice.disconnected.is_set, what="the first alice taken over")
    broker.wait_log(r"Client alice already connected, closing old connection\.")
    # No user name: not authorised. The plain listener keeps client ids.
    assert connack(named, "anonymous") == NOT_AUTHORISED
    clients(Paho(plain, "given-id", username="alice", password="x").connect())
    broker.wait_log(r"New client connected from \S+ as given-id ")


# ------------------------------------------------------------ clientid_prefixes


def test_clientid_prefixes_admits_only_ids_with_the_prefix(make_broker):
    broker = make_broker(extra=["clientid_prefixes secure-"])
    assert connack(broker.port, "secure-one") == 0
    assert connack(broker.port, "insecure") == NOT_AUTHORISED
    # As Mosquitto 2.0.11, an assigned id (auto-...) is checked too.
    assert connack(broker.port, "") == NOT_AUTHORISED
    broker.wait_log(r"Client insecure refused: CONNACK 5")


# ------------------------------------------------------------ max_qos


@pytest.mark.parametrize("key", ["max_qos", "maximum_qos"])
def test_max_qos_lowers_subscriptions_and_refuses_higher_publishes(make_broker, clients, key):
    broker, plain, limited = two_listeners(make_broker, [f"{key} 1"])
    sub = clients(Paho(limited, "sub").connect())
    assert sub.subscribe("t/#", 2) == [1]
    watcher = clients(Paho(plain, "watcher").connect())
    assert watcher.subscribe("t/#", 2) == [2]
    mosquitto_pub(plain, "t/a", "from plain", qos=2)
    message = sub.expect()
    assert (message.topic, message.payload, message.qos) == ("t/a", b"from plain", 1)
    assert watcher.expect().qos == 2
    publisher = clients(Paho(limited, "pub").connect())
    publisher.publish("t/b", b"qos 1 is fine", qos=1)
    assert watcher.expect().payload == b"qos 1 is fine"
    publisher.client.publish("t/c", b"qos 2 is not", qos=2)
    wait_until(publisher.disconnected.is_set, what="publisher disconnected for QoS 2")
    broker.wait_log(r"Too high QoS in PUBLISH from pub, disconnecting\.")
    assert stays(lambda: watcher.received[-1].payload == b"qos 1 is fine", 0.3)


def test_max_qos_refuses_a_higher_will_without_connack(make_broker):
    _, _, limited = two_listeners(make_broker, ["max_qos 0"])
    sock = socket.create_connection((LOOPBACK, limited), timeout=5)
    try:
        sock.sendall(connect_packet("willing", will=("w", "gone", 1, False)))
        try:
            answer = sock.recv(4)
        except ConnectionResetError:
            answer = b""
        assert answer == b"", f"no CONNACK, the connection is closed; got {answer!r}"
    finally:
        sock.close()
    assert RawClient(limited, "plain-will", will=("w", "gone", 0, False)).connect() == (0, 0)


# ------------------------------------------------------------ mount_point


def test_mount_point_prefixes_topics_both_ways(make_broker, clients, cleanup):
    broker, plain, mounted = two_listeners(make_broker, ["mount_point tenant/"])
    inside = clients(Paho(mounted, "inside").connect())
    assert inside.subscribe("#", 1) == [1]
    outside = MosquittoSub(plain, ["#"], qos=1, client_id="outside").wait_subscribed()
    cleanup(outside.kill)
    # mosquitto_pub on the mounted listener: the plain side sees the prefix.
    assert mosquitto_pub(mounted, "sensors/1", "in", qos=1).returncode == 0
    assert outside.wait_messages(1)[0][2:] == ("tenant/sensors/1", "in")
    message = inside.expect()
    assert (message.topic, message.payload) == ("sensors/1", b"in")
    # From the plain side: inside the mount point with the prefix, nothing else.
    assert mosquitto_pub(plain, "elsewhere", "out", qos=1).returncode == 0
    assert mosquitto_pub(plain, "tenant/cmd", "to inside", qos=1).returncode == 0
    message = inside.expect()
    assert (message.topic, message.payload) == ("cmd", b"to inside")
    assert [m[2] for m in outside.wait_messages(3)] == ["tenant/sensors/1", "elsewhere", "tenant/cmd"]
    # Unsubscribing on the mounted listener works (Mosquitto 2.0 cannot).
    inside.client.unsubscribe("#")
    inside.publish("marker", b"after the UNSUBSCRIBE", qos=1)  # PUBACK: the UNSUBSCRIBE was handled
    assert mosquitto_pub(plain, "tenant/ping", "x", qos=1).returncode == 0
    assert outside.wait_messages(5)[-1][2] == "tenant/ping"
    assert stays(lambda: inside.messages.empty(), 0.3)
    assert broker.running()


def test_mounted_retained_messages_and_sessions_survive_a_restart(make_broker, clients, tmp_path):
    broker, plain, mounted = two_listeners(make_broker, ["mount_point tenant/"],
                                           common=["persistence true", f"persistence_location {tmp_path}/"])
    session = Paho(mounted, "keeper", clean_session=False).connect()
    assert session.subscribe("a/#", 1) == [1]
    session.disconnect()
    assert mosquitto_pub(plain, "tenant/a/queued", "waiting", qos=1).returncode == 0
    assert mosquitto_pub(plain, "tenant/a/kept", "retained", qos=1, retain=True).returncode == 0
    assert broker.stop() == 0
    broker.start()
    wait_until(lambda: is_listening(mounted), what=f"listener {mounted}")
    session = clients(Paho(mounted, "keeper", clean_session=False).connect())
    assert session.session_present
    got = {session.expect().topic, session.expect().topic}
    assert got == {"a/queued", "a/kept"}
    fresh = clients(Paho(mounted, "fresh").connect())
    assert fresh.subscribe("a/+", 0) == [0]
    message = fresh.expect()
    assert (message.topic, message.payload, message.retain) == ("a/kept", b"retained", True)


# ------------------------------------------------------------ accept_protocol_versions


def test_accept_protocol_versions_refuses_other_versions_with_connack_1(make_broker):
    _, plain, v311_only = two_listeners(make_broker, ["accept_protocol_versions 4"])
    assert RawClient(v311_only, "old", v31=True).connect() == (0, UNACCEPTABLE_PROTOCOL)
    assert RawClient(v311_only, "new").connect() == (0, 0)
    assert RawClient(plain, "old", v31=True).connect() == (0, 0)


# ------------------------------------------------------------ listener_allow_anonymous / listener_auto_id_prefix


@pytest.mark.parametrize("everyone,first,second", [
    ("false", ["listener_allow_anonymous true"], []),
    ("true", [], ["listener_allow_anonymous false"]),
], ids=["opens-one", "closes-one"])
def test_listener_allow_anonymous_overrides_allow_anonymous(make_broker, everyone, first, second):
    broker = make_broker(start=False)
    open_port, closed_port = broker.port, free_port()
    lines = [f"allow_anonymous {everyone}", f"listener {open_port} {LOOPBACK}", *first,
             f"listener {closed_port} {LOOPBACK}", *second]
    broker.config.write_text("\n".join(lines) + "\n")
    broker.start()
    wait_until(lambda: is_listening(closed_port), what=f"listener {closed_port}")
    assert connack(open_port, "anon") == 0
    assert connack(closed_port, "anon") == NOT_AUTHORISED


def test_listener_auto_id_prefix_names_assigned_ids(make_broker, clients):
    broker, plain, prefixed = two_listeners(make_broker, ["listener_auto_id_prefix edge-"],
                                            common=["auto_id_prefix core-"])
    clients(Paho(prefixed, "").connect())
    broker.wait_log(r"New client connected from \S+ as edge-\S+ \(p2")
    clients(Paho(plain, "").connect())
    broker.wait_log(r"New client connected from \S+ as core-\S+ \(p2")


# ------------------------------------------------------------ plain-text password files


def test_plain_text_passwords_stop_start_up_naming_every_user(binary, tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "alice", "alice-pw"], check=True, timeout=30)
    pw.write_text(pw.read_text() + "bob:bob-secret\n# a comment\ncarol:carol-secret\n")
    port = free_port()
    conf = tmp_path / "culex.conf"
    conf.write_text(f"listener {port} {LOOPBACK}\npassword_file {pw}\n")
    log = tmp_path / "start.log"
    with open(log, "wb") as out:
        proc = subprocess.run([binary, "-c", str(conf)], stdin=subprocess.DEVNULL, stdout=out,
                              stderr=subprocess.STDOUT, timeout=10)
    text = log.read_text()
    assert proc.returncode != 0
    assert f"{pw}:2: passwords are not hashed for user bob (line 2), user carol (line 4)" in text, text
    assert "mosquitto_passwd -b" in text, text
    assert "bob-secret" not in text and "carol-secret" not in text
    assert not is_listening(port)


def test_plain_text_passwords_fail_a_reload_naming_every_user(make_broker, tmp_path):
    pw = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(pw), "alice", "alice-pw"], check=True, timeout=30)
    # root, so that the reload can read the file (the process is not shared).
    broker = make_broker(extra=[f"password_file {pw}", "user root"])
    assert connack(broker.port, "a", "alice", "alice-pw") == 0
    pw.write_text("dave:plain\nerin:also-plain\n")
    broker.send_signal(signal.SIGHUP)
    broker.wait_log(rf"{pw}:1: passwords are not hashed for user dave \(line 1\), user erin \(line 2\): "
                    r"plain-text passwords are not supported; run mosquitto_passwd -U on the file")
    broker.wait_log(r"Reload failed: the previous access settings stay in force\.")
    assert "also-plain" not in broker.log()
    assert connack(broker.port, "a", "alice", "alice-pw") == 0
