"""The Debian package (scripts/deb.sh, docs/packaging.md): installed with
dpkg on this machine, its broker run the way its systemd unit runs it, then
removed and purged.

systemd need not be running: the test never calls systemctl. It starts
`/usr/sbin/culex -c /etc/culex/culex.conf` itself, as root, as the unit
does, with NOTIFY_SOCKET naming a socket it reads, as systemd sets it. It
adds `-p PORT` with a free port: the packaged configuration is in local
only mode, where `-p` replaces port 1883 and changes nothing else, so the
test does not depend on 1883 being free on the machine.

The package is `CULEX_DEB` (scripts/test.sh builds it first), or built
here with scripts/deb.sh. The test needs root and dpkg, refuses to run
where a culex package is installed already (it would replace and purge
it), and purges the package even when it fails.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from support import MosquittoSub, NotifySocket, Paho, drain, free_port, is_listening, kill_quietly, \
    mosquitto_pub, tail, wait_until

ROOT = Path(__file__).resolve().parents[2]
CONF = "/etc/culex/conf.d"
BINARY = "/usr/sbin/culex"
UNIT = "/lib/systemd/system/culex.service"
STORE = Path("/var/lib/culex")
LOG = Path("/var/log/culex/culex.log")
# Where the package, its maintainer scripts and deb-systemd-helper may put
# files: after a purge nothing of it may be left there.
WATCHED = ["/etc", "/lib/systemd", "/usr/lib/systemd", "/usr/sbin", "/usr/share/doc", "/usr/share/man/man8",
           "/var/lib/culex", "/var/log/culex", "/var/lib/systemd", "/run/culex"]
# Backups adduser's tools make of the user databases: new files, no trace of
# the package (the databases themselves are checked by the user's presence).
USER_DB_BACKUPS = {"/etc/passwd-", "/etc/group-", "/etc/shadow-", "/etc/gshadow-", "/etc/subuid-", "/etc/subgid-"}


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def package_state() -> str:
    """dpkg's status of the culex package ("" when dpkg never heard of it)."""
    result = run("dpkg-query", "-W", "-f=${Status}", "culex")
    return result.stdout.strip() if result.returncode == 0 else ""


def snapshot() -> set[str]:
    paths = set()
    for top in WATCHED:
        for dirpath, dirnames, filenames in os.walk(top):
            paths.add(dirpath)
            paths.update(os.path.join(dirpath, name) for name in dirnames + filenames)
    return paths


@pytest.fixture(scope="module")
def deb() -> Path:
    """The package under test: CULEX_DEB, or built now."""
    if os.geteuid() != 0:
        pytest.fail("the package test installs a package: run it as root")
    if shutil.which("dpkg") is None:
        pytest.fail("the package test needs dpkg (a Debian system)")
    given = os.environ.get("CULEX_DEB", "").strip()
    if given:
        path = Path(given)
    else:
        built = subprocess.run([str(ROOT / "scripts/deb.sh")], capture_output=True, text=True, timeout=900)
        assert built.returncode == 0, f"scripts/deb.sh failed:\n{built.stderr}"
        path = Path(built.stdout.strip().splitlines()[-1])
    assert path.is_file(), f"no package at {path}"
    return path


class Installed:
    """The installed broker, run as its unit runs it, with its notifications."""

    def __init__(self):
        # systemd's socket is a path anyone may write to, and the broker
        # sends to it after it dropped root: the directory must be open to
        # culex too (pytest's own are root's alone).
        self.dir = Path(tempfile.mkdtemp(prefix="culex-deb-"))
        self.dir.chmod(0o755)
        self.notify = NotifySocket(self.dir / "notify")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    def start(self):
        assert self.proc is None or self.proc.poll() is not None
        self.runs += 1
        output = self.dir / f"stderr-{self.runs}"
        # The environment systemd gives a service: a path and the socket.
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "NOTIFY_SOCKET": self.notify.address}
        with open(output, "wb") as out:
            self.proc = subprocess.Popen([BINARY, "-c", "/etc/culex/culex.conf", "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd="/")
        ready = self.notify.expect("READY", timeout=15)
        assert self.proc.poll() is None, f"culex exited with {self.proc.returncode}:\n{self.logs()}"
        return ready

    def stop(self, timeout: float = 15) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"culex still running {timeout}s after SIGTERM:\n{self.logs()}") from None

    def logs(self) -> str:
        text = ""
        for path in sorted(self.dir.glob("stderr-*")):
            text += f"--- {path.name} ---\n{path.read_text(errors='replace')}"
        if LOG.exists():
            text += f"--- {LOG} ---\n{tail(LOG.read_text(errors='replace'), 80)}"
        return text

    def close(self):
        kill_quietly(self.proc)
        self.notify.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def ids(pid: int) -> dict[str, list[str]]:
    """The Uid, Gid, Groups and CapEff lines of /proc/PID/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups", "CapEff"):
            fields[key] = value.split()
    return fields


def owner(path: Path) -> tuple[str, str, int]:
    st = path.lstat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name, st.st_mode & 0o7777


def test_the_package_installs_runs_as_its_unit_and_purges_clean(deb):
    state = package_state()
    if state and not state.endswith("not-installed"):
        pytest.fail(f"a culex package is on this machine already ({state}): the test would replace and purge it")
    user_existed = run("getent", "passwd", "culex").returncode == 0
    before = snapshot()
    broker = Installed()
    started = time.monotonic()
    try:
        installed = run("dpkg", "-i", str(deb))
        assert installed.returncode == 0, f"dpkg -i failed:\n{installed.stdout}\n{installed.stderr}"
        check_installed_files()
        check_the_unit()
        check_the_broker(broker)
        check_remove_and_purge(before)
    except BaseException:
        print(broker.logs())
        raise
    finally:
        broker.close()
        if package_state() and not package_state().endswith("not-installed"):
            purged = run("dpkg", "-P", "culex")
            print(f"cleanup: dpkg -P culex exited {purged.returncode}: {purged.stdout}{purged.stderr}")
        if not user_existed:
            # Debian keeps system users on purge; the test leaves the
            # machine as it found it.
            run("userdel", "culex")
            run("groupdel", "culex")
    print(f"package test: {time.monotonic() - started:.1f}s")


def check_installed_files():
    assert os.access(BINARY, os.X_OK)
    version = run(BINARY, "--version")
    assert version.returncode == 0 and "culex" in version.stdout, version
    user = pwd.getpwnam("culex")
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_dir == str(STORE), user
    for path in (STORE, LOG.parent):
        assert owner(path) == ("culex", "culex", 0o750), (path, owner(path))
    for path in ("/etc/culex/culex.conf", "/etc/logrotate.d/culex", UNIT):
        assert owner(Path(path)) == ("root", "root", 0o644), (path, owner(Path(path)))
    conffiles = run("dpkg-query", "-W", "-f=${Conffiles}", "culex").stdout
    for path in ("/etc/culex/culex.conf", "/etc/culex/conf.d/README", "/etc/logrotate.d/culex"):
        assert path in conffiles, conffiles
    for path in ("/usr/share/doc/culex/copyright", "/usr/share/doc/culex/changelog.gz",
                 "/usr/share/man/man8/culex.8.gz"):
        assert Path(path).is_file(), path


def check_the_unit():
    unit = Path(UNIT).read_text()
    for line in ("Type=notify", "NotifyAccess=main", "ExecStart=/usr/sbin/culex -c /etc/culex/culex.conf",
                 "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/culex /var/log/culex", "NoNewPrivileges=yes"):
        assert line in unit.splitlines(), line
    if shutil.which("systemd-analyze") is None:
        print("systemd-analyze is not installed: the unit is not verified")
        return
    # Without man(1) the Documentation= page cannot be looked up.
    man = [] if shutil.which("man") else ["--man=no"]
    verified = run("systemd-analyze", "verify", *man, UNIT)
    assert verified.returncode == 0 and "culex" not in verified.stderr, verified.stderr


def check_the_broker(broker: Installed):
    ready = broker.start()
    assert ready["STATUS"].startswith("Accepting connections"), ready
    assert is_listening(broker.port)
    assert "Running as user culex" in LOG.read_text(), broker.logs()
    culex = pwd.getpwnam("culex")
    status = ids(broker.proc.pid)
    assert status["Uid"] == [str(culex.pw_uid)] * 4 and status["Gid"] == [str(culex.pw_gid)] * 4, status
    assert int(status["CapEff"][0], 16) == 0, f"capabilities left after the drop: {status}"

    # A round trip with Mosquitto's clients.
    sub = MosquittoSub(broker.port, ["deb/#"], qos=1).wait_subscribed()
    try:
        published = mosquitto_pub(broker.port, "deb/hello", "from the package", qos=1)
        assert published.returncode == 0, published.stderr
        assert sub.wait_messages(1)[0] == (0, 1, "deb/hello", "from the package")
    finally:
        sub.stop()

    # A retained message and a persistent session, kept across a SIGTERM.
    session = Paho(broker.port, "deb-session", clean_session=False).connect()
    session.subscribe("deb/queued", qos=1)
    session.disconnect()
    publisher = Paho(broker.port, "deb-publisher").connect()
    publisher.publish("deb/retained", b"kept", qos=1, retain=True)
    publisher.publish("deb/queued", b"waiting", qos=1)
    publisher.close()
    assert broker.stop() == 0, broker.logs()
    broker.notify.expect("STOPPING")
    # The store is in /var/lib/culex, and the broker's user owns it.
    for name in ("mosquitto.db", "mosquitto.db.wal"):
        assert owner(STORE / name)[:2] == ("culex", "culex"), (name, owner(STORE / name))

    broker.start()
    session = Paho(broker.port, "deb-session", clean_session=False).connect()
    try:
        assert session.session_present, "the persistent session was not restored"
        got = [(m.topic, m.payload, m.qos) for m in drain(session, 1.0)]
        assert got == [("deb/queued", b"waiting", 1)], got
    finally:
        session.close()
    fresh = Paho(broker.port, "deb-fresh").connect()
    try:
        fresh.subscribe("deb/retained", qos=1)
        message = fresh.expect()
        assert (message.topic, message.payload, message.retain) == ("deb/retained", b"kept", True)
    finally:
        fresh.close()

    # SIGHUP, as `systemctl reload culex` sends it: RELOADING=1, then READY=1.
    # Sent after the log file was moved away, as the package's logrotate
    # does: the broker, now the culex user, opens a new one.
    rotated = LOG.with_name(LOG.name + ".1")
    LOG.rename(rotated)
    broker.proc.send_signal(signal.SIGHUP)
    reloading = broker.notify.expect("RELOADING")
    assert int(reloading["MONOTONIC_USEC"]) > 0, reloading
    reloaded = broker.notify.expect("READY")
    assert reloaded["STATUS"].startswith("Configuration reloaded"), reloaded
    wait_until(lambda: LOG.exists() and "Password and ACL files reloaded." in LOG.read_text(), 5,
               what="the reload in a new log file")
    assert owner(LOG)[:2] == ("culex", "culex"), owner(LOG)
    assert "as deb-session" in rotated.read_text() and "as deb-session" not in LOG.read_text()
    assert broker.stop() == 0, broker.logs()


def check_remove_and_purge(before: set[str]):
    removed = run("dpkg", "-r", "culex")
    assert removed.returncode == 0, f"dpkg -r failed:\n{removed.stdout}\n{removed.stderr}"
    assert package_state() == "deinstall ok config-files"
    assert not Path(BINARY).exists() and not Path(UNIT).exists()
    # Removing keeps the configuration, the store and the log.
    assert Path("/etc/culex/culex.conf").is_file()
    assert (STORE / "mosquitto.db").is_file() and LOG.is_file()

    purged = run("dpkg", "-P", "culex")
    assert purged.returncode == 0, f"dpkg -P failed:\n{purged.stdout}\n{purged.stderr}"
    assert package_state() in ("", "unknown ok not-installed")
    left = sorted(snapshot() - before - USER_DB_BACKUPS)
    assert left == [], f"left behind by the purge: {left}"
    # What Debian policy keeps: the system user (its files may remain elsewhere).
    assert run("getent", "passwd", "culex").returncode == 0

