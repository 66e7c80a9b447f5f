"""Unix socket listeners (`listener 0 PATH`), as Mosquitto 2.0 serves them:
clients of the socket and of TCP see each other's messages, the listener
takes the settings that follow it, a stale socket file is replaced and the
file is removed at exit."""

from __future__ import annotations

import signal
import socket
import stat
import subprocess

import support
from support import LOOPBACK, MosquittoSub, mosquitto_pub


def unix_pub(path, topic, message):
    return mosquitto_pub(0, topic, message, extra=["--unix", str(path)])


def test_unix_socket_and_tcp_clients_exchange_messages(make_broker, tmp_path):
    path = tmp_path / "mqtt.sock"
    broker = make_broker(extra=[f"listener 0 {path}"])
    broker.wait_log(rf"Opening unix listen socket on path {path}\.")
    assert stat.S_ISSOCK(path.stat().st_mode)

    over_unix = MosquittoSub(0, ["t/#"], extra=["--unix", str(path)]).wait_subscribed()
    over_tcp = MosquittoSub(broker.port, ["t/#"]).wait_subscribed()
    try:
        assert unix_pub(path, "t/from-unix", "u").returncode == 0
        assert mosquitto_pub(broker.port, "t/from-tcp", "p").returncode == 0
        expected = [(0, 0, "t/from-unix", "u"), (0, 0, "t/from-tcp", "p")]
        assert over_unix.wait_messages(2) == expected
        assert over_tcp.wait_messages(2) == expected
    finally:
        over_unix.stop()
        over_tcp.stop()
    broker.wait_log(rf"New connection from {path}:0 on port 0\.")


def test_unix_socket_listener_takes_the_settings_that_follow(make_broker, tmp_path):
    path = tmp_path / "mqtt.sock"
    broker = make_broker(start=False)
    # The TCP listener allows anonymous clients; the socket's section does not.
    broker.config.write_text(f"per_listener_settings true\nlistener {broker.port} {LOOPBACK}\nallow_anonymous true\n"
                             f"listener 0 {path}\nallow_anonymous false\n")
    broker.start()
    refused = unix_pub(path, "t", "x")
    assert refused.returncode != 0
    assert "not authorised" in (refused.stderr + refused.stdout).lower()
    assert mosquitto_pub(broker.port, "t", "x").returncode == 0


def test_stale_socket_file_is_replaced_and_removed_at_exit(make_broker, tmp_path):
    path = tmp_path / "mqtt.sock"
    # A socket file left behind by a broker that was killed.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    # Removing the file at exit needs write access to pytest's directory,
    # which only root has: the broker keeps root.
    broker = make_broker(extra=[f"listener 0 {path}", "user root"])
    sub = MosquittoSub(0, ["t"], extra=["--unix", str(path)]).wait_subscribed()
    try:
        assert unix_pub(path, "t", "after restart").returncode == 0
        assert sub.wait_messages(1) == [(0, 0, "t", "after restart")]
    finally:
        sub.stop()
    assert broker.stop() == 0
    assert not path.exists()


def test_unix_socket_alone_is_not_local_only_mode(binary, tmp_path):
    path = tmp_path / "only.sock"
    config = tmp_path / "only.conf"
    config.write_text(f"listener 0 {path}\nallow_anonymous true\nlog_type all\n")
    log = tmp_path / "only.log"
    # No TCP port to wait for: the socket file says it is up.
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        support.wait_until(path.exists, what="the socket file")
        sub = MosquittoSub(0, ["t"], extra=["--unix", str(path)]).wait_subscribed()
        try:
            assert unix_pub(path, "t", "alone").returncode == 0
            assert sub.wait_messages(1) == [(0, 0, "t", "alone")]
        finally:
            sub.stop()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        text = log.read_text()
        assert "local only mode" not in text, text
        assert "Opening listen socket" not in text, text
    finally:
        support.kill_quietly(proc)
