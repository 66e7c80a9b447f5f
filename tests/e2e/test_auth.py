"""Access control as a Mosquitto user configures it: password files made by
Debian's real `mosquitto_passwd` ($7$ PBKDF2 by default, $6$ with
`-H sha512`), ACL files, `allow_anonymous`, `per_listener_settings`, and a
reload of the password and ACL files on SIGHUP.

CONNACK codes are those Mosquitto 2.0 sends to MQTT 3.1.1 clients (checked
against Debian's mosquitto 2.0.11): a wrong password, an unknown user, a
missing password and an anonymous client where anonymous clients are not
allowed all get 5 (not authorised); Mosquitto sends 4 only for TLS
identity checks, which Culex does not offer.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from support import (LOOPBACK, Broker, MosquittoSub, Paho, connack, free_port, is_listening, mosquitto_pub, stays,
                     wait_until)

# Debian's mosquitto package installs it as /usr/bin/mosquitto_passwd.
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
NOT_AUTHORISED = 5

ACL = """\
# Anonymous clients.
topic read public/#
topic write anon-out/#

user alice
topic read news/#
topic readwrite alice/#

user editor
topic write news/#
topic write alice/#

pattern readwrite devices/%c/#
pattern read users/%u/#
"""


def passwd(path: Path, user: str, password: str, *hash_args: str, create: bool = False):
    """Adds or updates a user with the real mosquitto_passwd."""
    args = [MOSQUITTO_PASSWD, *hash_args, "-b"] + (["-c"] if create else []) + [str(path), user, password]
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def remove_user(path: Path, user: str):
    subprocess.run([MOSQUITTO_PASSWD, "-D", str(path), user], check=True, capture_output=True, timeout=30)


def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "passwd"
    passwd(path, "alice", "alice-pw", create=True)
    passwd(path, "bob", "bob-pw", "-H", "sha512")
    passwd(path, "editor", "editor-pw")
    lines = dict(line.split(":", 1) for line in path.read_text().splitlines())
    # Both schemes really are in the file.
    assert lines["alice"].startswith("$7$") and lines["bob"].startswith("$6$"), lines
    return path


def auth_broker(binary: str, tmp_path: Path, *, anonymous: bool, acl: str = ACL) -> Broker:
    pw = password_file(tmp_path)
    acl_path = tmp_path / "acl"
    acl_path.write_text(acl)
    # Reload tests re-read these files after start-up, from pytest's
    # directories that only root may enter: the broker keeps root instead
    # of dropping to `user mosquitto` (tests/e2e/test_process.py).
    extra = [f"password_file {pw}", f"acl_file {acl_path}", f"allow_anonymous {str(anonymous).lower()}", "user root"]
    return Broker(binary, tmp_path, extra=extra)


def client(port: int, client_id: str, username=None, password=None) -> Paho:
    return Paho(port, client_id, username=username, password=password).connect()


@pytest.fixture
def clients():
    made: list[Paho] = []
    yield made
    for c in made:
        c.close()


# ------------------------------------------------------------ passwords


def test_password_file_hashes_of_both_kinds_are_checked(binary, tmp_path):
    broker = auth_broker(binary, tmp_path, anonymous=False).start()
    try:
        assert connack(broker.port, "a", "alice", "alice-pw") == 0  # $7$
        assert connack(broker.port, "b", "bob", "bob-pw") == 0  # $6$
        assert connack(broker.port, "c", "alice", "wrong") == NOT_AUTHORISED
        assert connack(broker.port, "d", "bob", "alice-pw") == NOT_AUTHORISED
        assert connack(broker.port, "e", "mallory", "alice-pw") == NOT_AUTHORISED
        assert connack(broker.port, "f", "alice", None) == NOT_AUTHORISED
        assert connack(broker.port, "g") == NOT_AUTHORISED  # anonymous
        broker.wait_log(r"Client g refused: CONNACK 5")
        assert broker.running()
    finally:
        broker.stop()
    assert "alice-pw" not in broker.all_logs()


def test_anonymous_clients_are_let_in_only_when_allowed(binary, tmp_path):
    broker = auth_broker(binary, tmp_path, anonymous=True).start()
    try:
        assert connack(broker.port, "anon") == 0
        # A password file still judges whoever sends a user name.
        assert connack(broker.port, "x", "alice", "wrong") == NOT_AUTHORISED
    finally:
        broker.stop()


def test_a_user_name_without_a_password_file_is_anonymous(binary, tmp_path):
    closed = Broker(binary, tmp_path, extra=["allow_anonymous false"], name="closed").start()
    try:
        # As Mosquitto 2.0: nothing can check the name, so it is refused.
        assert connack(closed.port, "n", "anyone", "x") == NOT_AUTHORISED
        assert connack(closed.port, "m") == NOT_AUTHORISED
    finally:
        closed.stop()
    open_ = Broker(binary, tmp_path, name="open").start()
    try:
        assert connack(open_.port, "n", "anyone", "x") == 0
    finally:
        open_.stop()


# ------------------------------------------------------------ ACL


def test_publish_without_write_access_is_acknowledged_and_dropped(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=False).start()
    try:
        reader = client(broker.port, "reader", "alice", "alice-pw")
        clients.append(reader)
        assert reader.subscribe([("news/#", 1), ("alice/#", 1)]) == [1, 1]
        alice = client(broker.port, "writer", "alice", "alice-pw")
        clients.append(alice)
        # alice may read news/# but not write it: PUBACK comes, nothing goes out.
        alice.publish("news/flash", b"forged", qos=1)
        alice.publish("alice/marker", b"end", qos=1)
        got = reader.collect_until("alice/marker")
        assert [(m.topic, m.payload) for m in got] == [("alice/marker", b"end")]
        editor = client(broker.port, "editor", "editor", "editor-pw")
        clients.append(editor)
        editor.publish("news/flash", b"real", qos=1)
        assert (reader.expect().topic, reader.messages.qsize()) == ("news/flash", 0)
        assert broker.running()
    finally:
        broker.stop()


def test_subscribe_is_refused_only_when_nothing_it_matches_is_readable(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=True).start()
    try:
        alice = client(broker.port, "dev1", "alice", "alice-pw")
        clients.append(alice)
        assert alice.subscribe("secret/#") == [0x80]
        assert alice.subscribe("news/#", 1) == [1]
        assert alice.subscribe("news/+/today") == [0]
        assert alice.subscribe([("news/x", 2), ("other/#", 0)]) == [2, 0x80]
        # pattern lines: %c is the client id, %u the user name.
        assert alice.subscribe("devices/dev1/#") == [0]
        assert alice.subscribe("devices/dev2/#") == [0x80]
        assert alice.subscribe("users/alice/inbox") == [0]
        assert alice.subscribe("users/bob/inbox") == [0x80]
        # The lines before the first `user` are the anonymous clients'.
        anon = client(broker.port, "anon")
        clients.append(anon)
        assert anon.subscribe("public/#") == [0]
        assert anon.subscribe("news/#") == [0x80]
        assert anon.subscribe("users/alice/inbox") == [0x80]
        assert anon.subscribe("anon-out/#") == [0x80]
        assert broker.running()
    finally:
        broker.stop()


def test_wildcards_reaching_beyond_read_access_are_granted_and_filtered(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=True).start()
    try:
        alice = client(broker.port, "dev1", "alice", "alice-pw")
        clients.append(alice)
        anon = client(broker.port, "anon")
        clients.append(anon)
        editor = client(broker.port, "editor", "editor", "editor-pw")
        clients.append(editor)
        # Retained before the subscription: sent on SUBSCRIBE by the same rule.
        anon.publish("anon-out/retained", b"not for alice", qos=1, retain=True)
        editor.publish("news/retained", b"for alice", qos=1, retain=True)
        assert alice.subscribe("#") == [0]
        assert (alice.expect().payload, alice.messages.qsize()) == (b"for alice", 0)
        assert alice.subscribe("+/flash") == [0]
        anon.publish("anon-out/flash", b"hidden", qos=1)
        editor.publish("news/flash", b"shown", qos=1)
        editor.publish("alice/marker", b"end", qos=1)
        got = alice.collect_until("alice/marker")
        # news/flash matches both filters and arrives once.
        assert [(m.topic, m.payload) for m in got] == [("news/flash", b"shown"), ("alice/marker", b"end")]
        assert broker.running()
    finally:
        broker.stop()


def test_acl_with_one_denied_topic_delivers_everything_else(binary, tmp_path, cleanup):
    """`topic deny test/nosubscribe` under `topic readwrite #`: Mosquitto's
    own test ACL, with mosquitto_sub and mosquitto_pub."""
    acl = tmp_path / "acl"
    acl.write_text("topic deny test/nosubscribe\ntopic readwrite #\n")
    broker = Broker(binary, tmp_path, extra=[f"acl_file {acl}"]).start()
    try:
        everything = MosquittoSub(broker.port, ["#"])
        two_levels = MosquittoSub(broker.port, ["+/+"])
        for sub in (everything, two_levels):
            cleanup(sub.kill)
            sub.wait_subscribed()
        # The denied topic alone is refused (Mosquitto grants it and then
        # delivers nothing on it).
        denied = MosquittoSub(broker.port, ["test/nosubscribe"])
        cleanup(denied.kill)
        wait_until(lambda: "Subscribed (mid: 1): 128" in "\n".join(denied.lines), what="SUBACK 0x80")
        for topic in ("test/nosubscribe", "test/other", "a/b", "test/nosubscribe/x", "end/marker"):
            assert mosquitto_pub(broker.port, topic, topic).returncode == 0
        wait_until(lambda: any(m[2] == "end/marker" for m in two_levels.messages()), what="the marker")
        wait_until(lambda: any(m[2] == "end/marker" for m in everything.messages()), what="the marker")
        assert [m[2] for m in everything.messages()] == ["test/other", "a/b", "test/nosubscribe/x", "end/marker"]
        assert [m[2] for m in two_levels.messages()] == ["test/other", "a/b", "end/marker"]
    finally:
        broker.stop()


# ------------------------------------------------------------ per listener


def test_per_listener_settings_gives_each_listener_its_own_rules(binary, tmp_path, clients):
    pw = password_file(tmp_path)
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    open_port, closed_port = free_port(), free_port()
    broker = Broker(binary, tmp_path, port=open_port)
    broker.config.write_text(
        "per_listener_settings true\n"
        f"listener {open_port} {LOOPBACK}\n"
        "allow_anonymous true\n"
        "auto_id_prefix open-\n"
        f"listener {closed_port} {LOOPBACK}\n"
        f"password_file {pw}\n"
        f"acl_file {acl}\n"
        "allow_anonymous false\n"
        "log_type all\n"
    )
    broker.start()
    try:
        wait_until(lambda: is_listening(closed_port), what=f"listener {closed_port}")
        assert connack(open_port, "anon-open") == 0
        assert connack(closed_port, "anon-closed") == NOT_AUTHORISED
        assert connack(closed_port, "alice-bad", "alice", "wrong") == NOT_AUTHORISED
        assert connack(closed_port, "bob-ok", "bob", "bob-pw") == 0
        # The open listener has no password file: a name proves nothing there.
        assert connack(open_port, "named", "alice", "wrong") == 0
        alice = client(closed_port, "alice", "alice", "alice-pw")
        clients.append(alice)
        assert alice.subscribe("secret/#") == [0x80]
        anon = client(open_port, "anon")
        clients.append(anon)
        assert anon.subscribe("secret/#") == [0]
        # auto_id_prefix is the listener's too.
        nameless = client(open_port, "")
        clients.append(nameless)
        broker.wait_log(r"New client connected from \S+ as open-\S+ \(p2")
        assert broker.running()
    finally:
        broker.stop()


# ------------------------------------------------------------ reload


def reload(broker: Broker, count: int):
    """Sends SIGHUP and waits for the reload's outcome (the count-th)."""
    broker.send_signal(signal.SIGHUP)
    broker.wait_log(r"Reloading config\.", count=count)
    broker.wait_log(r"Password and ACL files reloaded\.|Reload failed", count=count)


def test_sighup_adds_a_user_and_keeps_connected_clients(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=False).start()
    try:
        reader = client(broker.port, "reader", "alice", "alice-pw")
        clients.append(reader)
        assert reader.subscribe("alice/#", 1) == [1]
        bob = client(broker.port, "bob", "bob", "bob-pw")
        clients.append(bob)
        assert connack(broker.port, "carol", "carol", "carol-pw") == NOT_AUTHORISED
        passwd(tmp_path / "passwd", "carol", "carol-pw")
        remove_user(tmp_path / "passwd", "bob")
        reload(broker, 1)
        assert "Reload failed" not in broker.log()
        assert connack(broker.port, "carol", "carol", "carol-pw") == 0
        # bob was removed from the file: as in Mosquitto, he is disconnected.
        wait_until(bob.disconnected.is_set, what="bob disconnected")
        broker.wait_log(r"Client bob disconnected, not authorised\.")
        # alice's line did not change: her client stays and keeps receiving.
        editor = client(broker.port, "editor", "editor", "editor-pw")
        clients.append(editor)
        editor.publish("alice/after", b"still here", qos=1)
        message = reader.expect()
        assert (message.topic, message.payload) == ("alice/after", b"still here")
        assert reader.disconnects == 0 and reader.client.is_connected()
    finally:
        broker.stop()


def test_sighup_revoking_read_access_stops_delivery_and_granting_it_resumes(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=False).start()
    try:
        reader = client(broker.port, "reader", "alice", "alice-pw")
        clients.append(reader)
        assert reader.subscribe([("news/#", 1), ("alice/#", 1)]) == [1, 1]
        editor = client(broker.port, "editor", "editor", "editor-pw")
        clients.append(editor)
        editor.publish("news/1", b"before", qos=1)
        assert reader.expect().payload == b"before"

        (tmp_path / "acl").write_text(ACL.replace("topic read news/#\n", ""))
        reload(broker, 1)
        editor.publish("news/2", b"after", qos=1)
        editor.publish("alice/marker", b"end", qos=1)
        got = reader.collect_until("alice/marker")
        assert [m.payload for m in got] == [b"end"]
        assert reader.disconnects == 0
        # A new subscription is judged by the new rules too.
        assert reader.subscribe("news/#") == [0x80]

        # The subscription was kept: read access granted back resumes it.
        (tmp_path / "acl").write_text(ACL)
        reload(broker, 2)
        editor.publish("news/3", b"again", qos=1)
        message = reader.expect()
        assert (message.topic, message.payload) == ("news/3", b"again")
    finally:
        broker.stop()


def test_sighup_with_a_broken_acl_file_keeps_the_old_rules(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=False).start()
    try:
        reader = client(broker.port, "reader", "alice", "alice-pw")
        clients.append(reader)
        assert reader.subscribe("news/#", 1) == [1]
        acl = tmp_path / "acl"
        broken = ACL.replace("topic read news/#", "topic readx news/#")
        acl.write_text(broken)
        line = broken.splitlines().index("topic readx news/#") + 1
        reload(broker, 1)
        broker.wait_log(rf"{acl}:{line}: Invalid topic access type \"readx\" in acl_file")
        broker.wait_log(r"Reload failed: the previous access settings stay in force\.")
        assert broker.running()
        editor = client(broker.port, "editor", "editor", "editor-pw")
        clients.append(editor)
        editor.publish("news/3", b"old rules", qos=1)
        assert reader.expect().payload == b"old rules"
        assert stays(lambda: reader.client.is_connected(), 0.3)
        # A password file that cannot be read fails the reload the same way.
        (tmp_path / "passwd").unlink()
        reload(broker, 2)
        broker.wait_log(rf"Unable to open {tmp_path / 'passwd'}")
        assert connack(broker.port, "alice2", "alice", "alice-pw") == 0
    finally:
        broker.stop()


def test_sighup_disconnects_anonymous_clients_once_they_are_refused(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=True).start()
    try:
        anon = client(broker.port, "anon")
        clients.append(anon)
        alice = client(broker.port, "alice", "alice", "alice-pw")
        clients.append(alice)
        broker.config.write_text(broker.config.read_text().replace("allow_anonymous true", "allow_anonymous false"))
        reload(broker, 1)
        wait_until(anon.disconnected.is_set, what="anonymous client disconnected")
        broker.wait_log(r"Client anon disconnected, not authorised\.")
        assert connack(broker.port, "anon2") == NOT_AUTHORISED
        assert stays(lambda: alice.client.is_connected(), 0.3)
    finally:
        broker.stop()


# ------------------------------------------------------------ check_retain_source

RETAIN_ACL = """\
user alice
topic readwrite r/#
user editor
topic readwrite r/#
"""


@pytest.mark.parametrize("check", [None, "true", "false"])
def test_check_retain_source_hides_retained_messages_whose_publisher_lost_write_access(binary, tmp_path, clients,
                                                                                        check):
    broker = auth_broker(binary, tmp_path, anonymous=False, acl=RETAIN_ACL)
    if check is not None:
        broker.config.write_text(broker.config.read_text() + f"check_retain_source {check}\n")
    broker.start()
    try:
        for user, topic in (("alice", "r/alice"), ("editor", "r/editor")):
            publisher = client(broker.port, f"{user}-pub", user, f"{user}-pw")
            clients.append(publisher)
            publisher.publish(topic, f"from {user}".encode(), qos=1, retain=True)
            publisher.disconnect()
        # alice may still read r/#, but no longer write there.
        (tmp_path / "acl").write_text("user alice\ntopic read r/#\nuser editor\ntopic readwrite r/#\n")
        reload(broker, 1)
        reader = client(broker.port, "reader", "editor", "editor-pw")
        clients.append(reader)
        reader.subscribe("r/#", 1)
        # The default (true) checks, as Mosquitto does.
        want = {b"from editor"} if check != "false" else {b"from alice", b"from editor"}
        payloads = lambda: {m.payload for m in reader.received}  # noqa: E731
        wait_until(lambda: payloads() >= want, what=lambda: f"retained {payloads()}, want {want}")
        assert stays(lambda: payloads() == want, 1.0), payloads()
    finally:
        assert broker.stop() == 0


def test_the_publisher_of_a_retained_message_survives_a_restart(binary, tmp_path, clients):
    broker = auth_broker(binary, tmp_path, anonymous=False, acl=RETAIN_ACL)
    store = tmp_path / "store"
    store.mkdir()
    broker.config.write_text(broker.config.read_text() + f"persistence true\npersistence_location {store}/\n")
    broker.start()
    try:
        publisher = client(broker.port, "alice-pub", "alice", "alice-pw")
        publisher.publish("r/alice", b"from alice", qos=1, retain=True)
        publisher.close()
        assert broker.stop() == 0
        (tmp_path / "acl").write_text("user alice\ntopic read r/#\nuser editor\ntopic readwrite r/#\n")
        broker.restart()
        reader = client(broker.port, "reader", "editor", "editor-pw")
        clients.append(reader)
        reader.subscribe("r/#", 1)
        assert stays(lambda: not reader.received, 1.0), [m.payload for m in reader.received]
        # The message is kept: alice's write access back, it is sent again.
        (tmp_path / "acl").write_text(RETAIN_ACL)
        reload(broker, 1)
        reader.subscribe("r/alice", 1)
        assert reader.expect().payload == b"from alice"
    finally:
        assert broker.stop() == 0
