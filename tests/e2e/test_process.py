"""The process keys, as Mosquitto 2.0 has them: started as root, the broker
drops to `user` (default `mosquitto`) once its listeners, log and store
are open; `pid_file` holds its process id while it runs."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
from pathlib import Path

import pytest

from support import LOOPBACK, MosquittoSub, free_port, is_listening, mosquitto_pub, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privileges are dropped only when started as root")


def ids(pid: int) -> tuple[int, int, set[int]]:
    """Real uid, real gid and supplementary groups of every thread of `pid`."""
    uids, gids, groups = set(), set(), set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines() if ":" in line)
        uids.update(int(x) for x in fields["Uid"].split())
        gids.update(int(x) for x in fields["Gid"].split())
        groups.update(int(x) for x in fields["Groups"].split())
    assert len(uids) == 1 and len(gids) == 1, (uids, gids)
    return uids.pop(), gids.pop(), groups


def start(binary: str, tmp_path: Path, lines: list[str]) -> tuple[subprocess.Popen, Path]:
    """The broker on `lines`; its log file is opened before any drop."""
    config = tmp_path / "process.conf"
    config.write_text("\n".join([*lines, "allow_anonymous true", "log_type all"]) + "\n")
    log = tmp_path / "process.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "-c", str(config)], stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=10)


def test_root_drops_to_mosquitto_by_default_and_serves_a_low_port(binary, tmp_path):
    mosquitto = pwd.getpwnam("mosquitto")
    low = next(p for p in range(900, 1000) if not is_listening(p))
    port = free_port()
    proc, log = start(binary, tmp_path, [f"listener {port} {LOOPBACK}", f"listener {low} {LOOPBACK}"])
    try:
        wait_until(lambda: is_listening(port) and is_listening(low), what="both listeners")
        wait_until(lambda: "Running as user mosquitto" in log.read_text(), what=lambda: log.read_text())
        uid, gid, _ = ids(proc.pid)
        assert (uid, gid) == (mosquitto.pw_uid, mosquitto.pw_gid)
        # Bound as root before the drop, the port below 1024 still serves.
        sub = MosquittoSub(low, ["t"]).wait_subscribed()
        try:
            assert mosquitto_pub(low, "t", "low").returncode == 0
            assert sub.wait_messages(1) == [(0, 0, "t", "low")]
        finally:
            sub.stop()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_user_root_keeps_root_with_mosquittos_warning(binary, tmp_path):
    port = free_port()
    proc, log = start(binary, tmp_path, [f"listener {port} {LOOPBACK}", "user root"])
    try:
        wait_until(lambda: is_listening(port), what="listener")
        assert ids(proc.pid)[:2] == (0, 0)
        wait_until(lambda: "Warning: Mosquitto should not be run as root/administrator." in log.read_text(),
                   what=lambda: log.read_text())
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_other_user_with_its_groups(binary, tmp_path):
    nobody = pwd.getpwnam("nobody")
    port = free_port()
    proc, log = start(binary, tmp_path, [f"listener {port} {LOOPBACK}", "user nobody"])
    try:
        wait_until(lambda: is_listening(port), what="listener")
        wait_until(lambda: "Running as user nobody" in log.read_text(), what=lambda: log.read_text())
        uid, gid, groups = ids(proc.pid)
        assert (uid, gid) == (nobody.pw_uid, nobody.pw_gid)
        assert 0 not in groups
        assert mosquitto_pub(port, "t", "x").returncode == 0
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_store_goes_to_the_user(binary, tmp_path):
    """Created as root, the store's files are given to `user` before the
    drop: that user can open them again (a start without root)."""
    nobody = pwd.getpwnam("nobody")
    store = tmp_path / "store"
    store.mkdir()
    port = free_port()
    lines = [f"listener {port} {LOOPBACK}", "user nobody", "persistence true", f"persistence_location {store}/"]
    for run in range(2):
        proc, log = start(binary, tmp_path, lines)
        try:
            wait_until(lambda: "Running as user nobody" in log.read_text(), what=lambda: log.read_text())
            for name in ("mosquitto.db", "mosquitto.db.wal"):
                st = (store / name).stat()
                assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid), (run, name)
            assert mosquitto_pub(port, "t", f"kept {run}", qos=1, retain=True).returncode == 0
            assert stop(proc) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_missing_user_stops_start_up(binary, tmp_path):
    port = free_port()
    proc, log = start(binary, tmp_path, [f"listener {port} {LOOPBACK}", "user no-such-user-here"])
    assert proc.wait(timeout=10) != 0
    assert "Unable to drop privileges to 'no-such-user-here' because this user does not exist." in log.read_text()


def test_pid_file_holds_the_pid_and_goes_at_exit(binary, tmp_path):
    port = free_port()
    pid_file = tmp_path / "culex.pid"
    # As root the file could not be removed by `mosquitto` in a root-owned
    # directory, as with Mosquitto: this broker keeps root.
    proc, _ = start(binary, tmp_path, [f"listener {port} {LOOPBACK}", f"pid_file {pid_file}", "user root"])
    try:
        wait_until(lambda: is_listening(port), what="listener")
        assert pid_file.read_text() == f"{proc.pid}\n"
        assert stop(proc) == 0
        assert not pid_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_pid_file_that_cannot_be_written_stops_start_up(binary, tmp_path):
    port = free_port()
    proc, log = start(binary, tmp_path, [f"listener {port} {LOOPBACK}", f"pid_file {tmp_path}/missing/dir/c.pid"])
    assert proc.wait(timeout=10) != 0
    assert f"Unable to write pid file {tmp_path}/missing/dir/c.pid" in log.read_text()
