"""The command line as in Mosquitto: no arguments, -c FILE, -p PORT, -v;
a bad config line stops start-up naming the file, the line and the reason."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from support import (BROKER_HOST, IPV4_ANY_HEX, IPV4_LOOPBACK_HEX, IPV6_ANY_HEX, RawClient, Timeout,
                     is_listening, kill_quietly, listening_addresses, mosquitto_pub, publish_packet, free_port,
                     wait_until)


class Run:
    """The binary with raw arguments, output to a file."""

    def __init__(self, binary: str, args: list[str], workdir: Path):
        self.log_path = workdir / f"run-{os.getpid()}-{len(list(workdir.iterdir()))}.log"
        env = dict(os.environ, HOSTNAME=BROKER_HOST)
        env.pop("RUST_LOG", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([binary] + args, cwd=workdir, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, port: int, timeout: float = 10.0):
        def ready():
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.log()}"
            return is_listening(port)

        wait_until(ready, timeout, what=f"listening on {port}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def run(binary, tmp_path, cleanup):
    def start(*args: str) -> Run:
        r = Run(binary, list(args), tmp_path)
        cleanup(lambda: kill_quietly(r.proc, signal.SIGTERM))
        return r

    return start


def _pub_works(port: int) -> bool:
    c = RawClient(port, "cli-pub")
    c.connect()
    c.send(publish_packet("cli/t", b"x", qos=1))
    ok = c._recv_exact(4) == b"\x40\x02\x00\x01"
    c.disconnect()
    return ok


def test_no_arguments_listens_on_loopback_1883_anonymous(run):
    if is_listening(1883):
        pytest.skip("port 1883 is taken on this machine")
    r = run()
    r.wait_listening(1883)
    addrs = listening_addresses(1883)
    assert IPV4_LOOPBACK_HEX in addrs
    assert IPV4_ANY_HEX not in addrs and IPV6_ANY_HEX not in addrs, addrs
    assert _pub_works(1883)  # anonymous, no config
    assert mosquitto_pub(1883, "cli/t", "hello", qos=1).returncode == 0
    assert "Updating client cli-pub to online" in r.log()  # presence goes to the log
    assert r.stop() == 0


def test_port_option_without_config(run):
    port = free_port()
    r = run("-p", str(port))
    r.wait_listening(port)
    addrs = listening_addresses(port)
    assert IPV4_LOOPBACK_HEX in addrs and IPV4_ANY_HEX not in addrs and IPV6_ANY_HEX not in addrs, addrs
    assert _pub_works(port)
    assert r.stop() == 0


def test_config_file_option(run, tmp_path):
    port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"# a comment\n\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_keepalive 100\n")
    r = run("-c", str(conf))
    r.wait_listening(port)
    assert listening_addresses(port) == {IPV4_LOOPBACK_HEX}
    assert RawClient(port, "cli-ka", keepalive=101).connect() == (0, 2)  # max_keepalive applied
    assert _pub_works(port)
    assert r.stop() == 0


def test_listener_requires_credentials_unless_anonymous_allowed(run, tmp_path):
    """As in Mosquitto 2: once a listener is configured, allow_anonymous
    defaults to false."""
    port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"listener {port} 127.0.0.1\n")
    r = run("-c", str(conf))
    r.wait_listening(port)
    assert RawClient(port, "anon").connect() == (0, 5)
    assert r.stop() == 0


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "-v"])
def test_verbose_option(run, tmp_path, verbose):
    port = free_port()
    conf = tmp_path / "c.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    r = run("-c", str(conf), *(["-v"] if verbose else []))
    r.wait_listening(port)
    assert _pub_works(port)
    wait_until(lambda: "Client cli-pub disconnected." in r.log(), 5, what="disconnect logged")
    assert ("Received PUBLISH from cli-pub" in r.log()) is verbose
    assert r.stop() == 0


BAD_CONFIGS = [
    # (lines, bad line number, a word the reason must contain)
    (["allow_anonymous true", "bogus_option 1"], 2, "bogus_option"),
    (["allow_anonymous true", "", "max_keepalive lots"], 3, "max_keepalive"),
    (["listener 70000 127.0.0.1"], 1, "70000"),
    (["allow_anonymous maybe"], 1, "allow_anonymous"),
    (["redis_host 127.0.0.1", "redis_port notaport"], 2, "notaport"),
    (["log_dest stderr", "log_dest dlt"], 2, "DLT"),
    (["log_timestamp_format %Y-%m-%d %Q"], 1, "%Q"),
    (["log_facility 8"], 1, "log_facility"),
    (["websockets_headers_size 70000"], 1, "65535"),
]


@pytest.mark.parametrize("lines,lineno,word", BAD_CONFIGS, ids=[c[2] for c in BAD_CONFIGS])
def test_bad_config_line_stops_startup(run, tmp_path, lines, lineno, word):
    port = free_port()
    conf = tmp_path / "bad.conf"
    conf.write_text("\n".join([f"listener {port} 127.0.0.1"] + lines) + "\n")
    lineno += 1  # the listener line comes first
    r = run("-c", str(conf))
    try:
        rc = r.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        raise Timeout(f"still running with a bad config:\n{r.log()}") from None
    out = r.log()
    assert rc != 0
    assert f"{conf}:{lineno}" in out, out
    assert word in out, out
    assert not is_listening(port)


def test_redis_auth_is_not_echoed_in_config_errors(run, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("allow_anonymous true\nredis_host 127.0.0.1\nredis_auth First-Secret-1\nredis_auth Second-Secret-2\n")
    r = run("-c", str(conf))
    assert r.proc.wait(timeout=10) != 0
    out = r.log()
    assert f"{conf}:4" in out, out
    assert "First-Secret-1" not in out and "Second-Secret-2" not in out


def test_missing_config_file(run, tmp_path):
    missing = tmp_path / "nope.conf"
    r = run("-c", str(missing))
    assert r.proc.wait(timeout=10) != 0
    assert str(missing) in r.log()


def test_bad_option(run):
    r = run("--no-such-option")
    assert r.proc.wait(timeout=10) != 0


def test_help_exits_0(run):
    r = run("--help")
    assert r.proc.wait(timeout=10) == 0
    out = r.log()
    assert "-c" in out and "-p" in out and "-v" in out
