"""Logging destinations and timestamps (docs/config.md, logging):
`log_dest syslog` sends each line to the local syslog socket in glibc's
syslog(3) shape with `log_facility`'s facility, `log_dest topic`
publishes lines under `$SYS/broker/log/` as Mosquitto does (QoS 2, not
retained, E/W/N), and `log_timestamp_format` prints strftime timestamps
in local time. A Unix datagram socket stands in for /dev/log."""

from __future__ import annotations

import datetime
import re
import socket

import pytest

from support import MosquittoSub, Paho, mosquitto_pub, wait_until

SYSLOG_ENV = "CULEX_TEST_SYSLOG_SOCKET"


@pytest.fixture
def fake_syslog(tmp_path, monkeypatch):
    """A datagram socket where the broker's syslog lines arrive."""
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    monkeypatch.setenv(SYSLOG_ENV, str(path))
    received: list[str] = []

    def lines() -> list[str]:
        while True:
            try:
                received.append(sock.recv(65536).decode())
            except socket.timeout:
                return received

    yield lines
    sock.close()


def test_syslog_lines_carry_facility_severity_ident_and_text(make_broker, fake_syslog, cleanup):
    broker = make_broker(extra=["log_dest syslog", "log_dest stderr", "log_facility 3"])
    client = Paho(broker.port, "to-syslog")
    cleanup(client.close)
    client.connect()
    header = re.compile(r"^<(\d+)>([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) culex\[(\d+)\]: (\d+): (.*)$")

    def connected():
        for line in fake_syslog():
            m = header.match(line)
            if m and m.group(5).startswith("New client connected from ") and "as to-syslog" in line:
                return m
        return None

    m = wait_until(connected, what=lambda: f"the connection line in syslog: {fake_syslog()}")
    # local3 (19) * 8 + notice (5); the broker's pid; the line as on stderr.
    assert (int(m.group(1)), int(m.group(3))) == (19 * 8 + 5, broker.proc.pid)
    assert f"{m.group(4)}: {m.group(5)}" in broker.log()
    # Debug lines (log_type all) go out at LOG_DEBUG.
    client.disconnect()
    wait_until(lambda: any(l.startswith("<159>") for l in fake_syslog()), what=lambda: f"a debug line: {fake_syslog()}")


def test_syslog_default_facility_is_daemon(make_broker, fake_syslog):
    make_broker(extra=["log_dest syslog"], verbose=False)
    wait_until(lambda: any(l.startswith("<29>") and "culex version" in l for l in fake_syslog()),
               what=lambda: f"daemon.notice start line: {fake_syslog()}")
    assert not any(not l.startswith("<29>") for l in fake_syslog() if "culex version" in l)


def test_topic_destination_publishes_lines_as_mosquitto(make_broker, cleanup):
    broker = make_broker(extra=["log_dest topic", "log_dest stderr"])
    sub = MosquittoSub(broker.port, ["$SYS/broker/log/#"], qos=2, client_id="log-watch")
    cleanup(sub.stop)
    sub.wait_subscribed()
    assert mosquitto_pub(broker.port, "t", "x", client_id="probe").returncode == 0

    def probe_lines():
        lines = [m for m in sub.messages() if "probe" in m[3]]
        # The disconnect is logged last: wait for it, not for a count.
        return any(m[3].endswith("Client probe disconnected.") for m in lines) and lines

    got = wait_until(probe_lines, what=lambda: f"log lines: {sub.lines}")
    for retain, qos, topic, payload in got:
        assert (retain, qos, topic) == (0, 2, "$SYS/broker/log/N")
        assert re.match(r"^\d+: ", payload), payload
    texts = [p.split(": ", 1)[1] for _, _, _, p in got]
    assert any(t.startswith("New client connected from ") and " as probe " in t for t in texts), texts
    assert "Client probe disconnected." in texts
    # Debug lines (log_type all) are not published, as in Mosquitto.
    assert not any(t == "$SYS/broker/log/D" for _, _, t, _ in sub.messages())


def test_timestamp_format_prints_local_time(make_broker, monkeypatch):
    monkeypatch.setenv("TZ", "<+0530>-5:30")
    broker = make_broker(extra=["log_timestamp_format %Y-%m-%dT%H:%M:%S%z [%Z] %j"])
    m = broker.wait_log(r"^(\S+) \[(\S+)\] (\d{3}): culex version")[0]
    stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S%z")
    assert stamp.utcoffset() == datetime.timedelta(hours=5, minutes=30)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - stamp).total_seconds()) < 60
    assert m.group(2) == "+0530"
    assert int(m.group(3)) == stamp.timetuple().tm_yday


def test_subscribe_and_unsubscribe_log_types_log_each_filter(make_broker, cleanup):
    # Only these two types: notices ("New client connected") stay out.
    broker = make_broker(extra=["log_type subscribe", "log_type unsubscribe", "log_dest topic", "log_dest stderr"],
                         verbose=False)
    watch = MosquittoSub(broker.port, ["$SYS/broker/log/M/#"], qos=2, client_id="log-watch")
    cleanup(watch.stop)
    watch.wait_subscribed()
    client = Paho(broker.port, "subber")
    cleanup(client.close)
    client.connect()
    client.subscribe([("a/+", 1), ("b/#", 2)])
    client.client.unsubscribe("a/+")
    # Mosquitto's words: "ID QOS FILTER" and "ID FILTER".
    broker.wait_log(r"^\d+: subber 1 a/\+$")
    broker.wait_log(r"^\d+: subber 2 b/#$")
    broker.wait_log(r"^\d+: subber a/\+$")
    assert "New client connected" not in broker.log()
    got = wait_until(lambda: len([m for m in watch.messages() if "subber" in m[3]]) >= 3 and watch.messages(),
                     what=lambda: f"log lines: {watch.lines}")
    published = {(topic, payload.split(": ", 1)[1]) for _, _, topic, payload in got}
    assert ("$SYS/broker/log/M/subscribe", "subber 1 a/+") in published, published
    assert ("$SYS/broker/log/M/unsubscribe", "subber a/+") in published, published


def test_subscribe_lines_are_not_logged_by_default(make_broker, cleanup):
    broker = make_broker(verbose=False)
    client = Paho(broker.port, "quiet-subber")
    cleanup(client.close)
    client.connect()
    client.subscribe("a/+", 1)
    client.disconnect()
    broker.wait_log(r"Client quiet-subber disconnected\.")
    assert "quiet-subber 1 a/+" not in broker.log()


def test_sighup_reopens_the_log_file_after_logrotate_moved_it(make_broker, tmp_path, cleanup):
    """As Mosquitto: logrotate renames the file and sends SIGHUP; the lines
    after the signal go to a new file at the same path, the ones before
    stay in the renamed one, and none is lost in between."""
    import signal

    log = tmp_path / "culex.log"
    # As root the broker would drop to an unprivileged user, which may not
    # write in this test's directory (the package's /var/log/culex belongs
    # to that user).
    broker = make_broker(extra=["user root", f"log_dest file {log}", "log_dest stderr"])
    first = Paho(broker.port, "before-rotation")
    cleanup(first.close)
    first.connect()
    wait_until(lambda: log.exists() and "as before-rotation" in log.read_text(), what="the first line in the file")
    rotated = tmp_path / "culex.log.1"
    log.rename(rotated)
    second = Paho(broker.port, "between")
    cleanup(second.close)
    second.connect()
    broker.send_signal(signal.SIGHUP)
    broker.wait_log(r"Reloading config\.")
    third = Paho(broker.port, "after-rotation")
    cleanup(third.close)
    third.connect()
    wait_until(lambda: log.exists() and "as after-rotation" in log.read_text(), what="the line after SIGHUP in the new file")
    old, new = rotated.read_text(), log.read_text()
    assert "as before-rotation" in old and "as between" in old, old
    assert "Reloading config." in new and "as before-rotation" not in new and "as between" not in new, new
    assert "as after-rotation" not in old
