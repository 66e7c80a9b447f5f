"""Helpers for the end-to-end suite: real processes, real sockets, loopback only.

Everything here is bounded: every wait has a timeout, every loop a count.
Nothing sleeps to pass a test; waits poll a condition (Redis, a log, a
queue) until it holds or the time is up, and then fail with what was seen.
"""

from __future__ import annotations

import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Optional

import paho.mqtt.client as mqtt
import redis as redis_py

LOOPBACK = "127.0.0.1"
# The password every test Redis requires; tests check it never reaches a log.
REDIS_PASSWORD = "e2e-Redis-s3cret-Pw"
# Fixed host name for the brokers under test, so their broker id
# (`<host>:<first port>`, see runtime-common/src/settings.rs) is known.
BROKER_HOST = "e2e-host"


# ---------------------------------------------------------------- waiting


class Timeout(AssertionError):
    pass


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.02,
               what: str | Callable[[], str] = "condition"):
    """Polls `predicate` until it returns a truthy value (returned) or
    `timeout` seconds pass (raises, describing `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            desc = what() if callable(what) else what
            raise Timeout(f"timed out after {timeout}s waiting for {desc}")
        time.sleep(interval)


def stays(predicate: Callable[[], object], duration: float, interval: float = 0.05) -> bool:
    """True if `predicate` holds at every poll for `duration` seconds (a
    stability check after a condition was reached, never the main check)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


# ---------------------------------------------------------------- ports


def _own_share(low: int, high: int) -> range:
    """This test process's share of the ports [low, high): with
    pytest-xdist each worker has its own, so two never pick one port."""
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), 1)
    index = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0) % count
    size = (high - low) // count
    return range(low + index * size, low + (index + 1) * size)


# Where each share's next search starts: a port handed out is not handed
# out again before the rest of the share was (its process may not have
# bound it yet).
_next_in_share: dict[range, int] = {}


def _bindable(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, port))
            return True
    except OSError:
        return False


def _port_in(low: int, high: int, free: Callable[[int], bool]) -> int:
    """The next port of this process's share of [low, high) that is `free`
    right now, starting at random, a bounded number of tries."""
    share = _own_share(low, high)
    start = _next_in_share.setdefault(share, random.randrange(len(share)))
    for step in range(min(len(share), 500)):
        port = share[(start + step) % len(share)]
        if free(port):
            _next_in_share[share] = start + step + 1
            return port
    raise AssertionError(f"no free port in {share}")


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now, below the ephemeral range
    (so no client's own port takes it before its server binds it)."""
    return _port_in(10000, 20000, _bindable)


def free_cluster_port(taken: Iterable[int] = ()) -> int:
    """A port free right now for a Redis Cluster member, not in `taken`:
    its cluster bus listens 10000 above it, so both must be free and the
    port at most 55535."""
    return _port_in(20000, 30000, lambda port: port not in taken and _bindable(port) and _bindable(port + 10000))


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp*) in LISTEN state on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            addr, _, hexport = local.rpartition(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


IPV4_LOOPBACK_HEX = "0100007F"
IPV4_ANY_HEX = "00000000"
IPV6_ANY_HEX = "0" * 32


def is_listening(port: int) -> bool:
    return bool(listening_addresses(port))


# ---------------------------------------------------------------- processes


def kill_quietly(proc: Optional[subprocess.Popen], sig=signal.SIGKILL, timeout: float = 5.0):
    """Ends a process this suite started (by its pid), if still running."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            proc.kill()
            proc.wait(timeout=timeout)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


class RedisServer:
    """A real redis-server on 127.0.0.1 with `requirepass`, no persistence."""

    def __init__(self, workdir: Path, port: Optional[int] = None, password: str = REDIS_PASSWORD,
                 cluster: bool = False, node_timeout_ms: Optional[int] = None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.cluster = cluster
        self.node_timeout_ms = node_timeout_ms
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0

    def start(self, timeout: float = 10.0):
        assert self.proc is None or self.proc.poll() is not None, "redis already running"
        self.starts += 1
        logfile = self.workdir / f"redis-{self.port}-{self.starts}.log"
        # A member of a Redis Cluster keeps who its peers are in its
        # nodes file, across restarts; its data is gone as on one server.
        cluster = ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                   "--masterauth", self.password] if self.cluster else []
        if self.node_timeout_ms is not None:
            cluster += ["--cluster-node-timeout", str(self.node_timeout_ms)]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", LOOPBACK,
             "--requirepass", self.password, "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--logfile", str(logfile), "--daemonize", "no", *cluster],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}: "
                                     f"{logfile.read_text() if logfile.exists() else ''}")
            try:
                return self.client().ping()
            except redis_py.exceptions.RedisError:
                return False

        wait_until(up, timeout, what=f"redis-server on port {self.port}")
        return self

    def stop(self, timeout: float = 10.0):
        """Stops Redis without saving: it comes back empty."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=timeout)

    def flushall(self):
        self.client().flushall()

    def client(self) -> redis_py.Redis:
        return redis_py.Redis(host=LOOPBACK, port=self.port, password=self.password,
                              decode_responses=True, socket_timeout=3, socket_connect_timeout=3)


class RedisCluster:
    """A Redis Cluster of three masters, each a real redis-server on
    127.0.0.1. Without replicas a member down takes its slots down; with
    one replica per master (`replicas=1`, six members, a node timeout of
    one second) a replica takes over from a master that dies."""

    def __init__(self, workdir: Path, size: int = 3, replicas: int = 0):
        ports: list[int] = []
        for _ in range(size * (1 + replicas)):
            ports.append(free_cluster_port(ports))
        timeout = 1000 if replicas else None
        self.members = [RedisServer(Path(workdir) / f"member{i}", port=port, cluster=True, node_timeout_ms=timeout)
                        for i, port in enumerate(ports)]
        self.replicas = replicas
        self.port = self.members[0].port  # the one the brokers are told of
        self.password = self.members[0].password
        self.created = False

    def start(self, timeout: float = 20.0):
        for member in self.members:
            member.start()
        if not self.created:
            addresses = [f"{LOOPBACK}:{m.port}" for m in self.members]
            subprocess.run(["redis-cli", "-a", self.password, "--no-auth-warning", "--cluster", "create",
                            *addresses, "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                           check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, timeout=timeout)
            self.created = True
        wait_until(self.healthy, timeout, what="the Redis Cluster's slots all served")
        # A replica that never synchronised with its master does not take
        # over from it.
        wait_until(self.replicas_in_sync, timeout, what="every replica in sync with its master")
        return self

    def replicas_in_sync(self) -> bool:
        try:
            roles = [m.client().info("replication") for m in self.live()]
        except redis_py.exceptions.RedisError:
            return False
        return all(r.get("master_link_status") == "up" for r in roles if r.get("role") == "slave")

    def live(self) -> list[RedisServer]:
        return [m for m in self.members if m.proc is not None and m.proc.poll() is None]

    def healthy(self) -> bool:
        """Every live member says every slot is served."""
        try:
            return all("cluster_state:ok" in m.client().execute_command("CLUSTER", "INFO")
                       for m in self.live())
        except redis_py.exceptions.RedisError:
            return False

    def nodes(self) -> list[tuple[int, str]]:
        """Each member's port and flags, as a live member sees them."""
        lines = self.live()[-1].client().execute_command("CLUSTER", "NODES")
        lines = lines.splitlines() if isinstance(lines, str) else lines
        return [(int(line.split()[1].split("@")[0].rsplit(":", 1)[1]), line.split()[2]) for line in lines]

    def kill_master(self, named: bool = False) -> RedisServer:
        """SIGKILL of a master: the one the brokers are told of (`named`),
        or another; its replica takes over within a few seconds (see
        `failed_over`)."""
        masters = {port for port, flags in self.nodes() if "master" in flags}
        victim = next(m for m in self.members if m.port in masters and (m.port == self.port) == named)
        victim.proc.kill()
        victim.proc.wait(timeout=10)
        return victim

    def failed_over(self, victim: RedisServer) -> bool:
        """The cluster counts `victim` failed and serves every slot again."""
        try:
            return any(port == victim.port and "fail" in flags.split(",") for port, flags in self.nodes()) \
                and self.healthy()
        except redis_py.exceptions.RedisError:
            return False

    def stop(self, timeout: float = 10.0):
        """Stops every member without saving: the cluster comes back empty."""
        for member in self.members:
            member.stop(timeout)

    def flushall(self):
        for member in self.members:
            try:
                member.client().flushall()
            except redis_py.exceptions.ReadOnlyError:
                pass  # a replica: its master's flush reaches it

    def client(self) -> redis_py.RedisCluster:
        return redis_py.RedisCluster(host=LOOPBACK, port=self.port, password=self.password,
                                     decode_responses=True, socket_timeout=3, socket_connect_timeout=3)

    def keys_by_member(self) -> list[set[str]]:
        """Every key, by the member holding it."""
        return [set(m.client().keys("*")) for m in self.members]


class Broker:
    """One run (or several, see `restart`) of a Culex binary with a
    generated config file. stdout and stderr go to a log file per run."""

    def __init__(self, binary: str, workdir: Path, *, port: Optional[int] = None,
                 redis: Optional[RedisServer] = None, redis_auth: Optional[str] = None,
                 redis_key: Optional[str] = None, extra: Iterable[str] = (),
                 verbose: bool = True, host: str = BROKER_HOST, name: str = "broker"):
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.redis = redis
        self.host = host
        self.name = name
        self.proc: Optional[subprocess.Popen] = None
        self.runs = 0
        self.log_paths: list[Path] = []
        lines = [f"listener {self.port} {LOOPBACK}", "allow_anonymous true"]
        if verbose:
            lines.append("log_type all")
        if redis is not None:
            lines += [f"redis_host {LOOPBACK}", f"redis_port {redis.port}",
                      f"redis_auth {redis_auth if redis_auth is not None else redis.password}"]
        if redis_key is not None:
            lines.append(f"redis_key {redis_key}")
        lines += list(extra)
        # CULEX_E2E_SHARDS=N runs every broker of the suite with N shards.
        if os.environ.get("CULEX_E2E_SHARDS") and not any(l.startswith("shards ") for l in lines):
            lines.append(f"shards {os.environ['CULEX_E2E_SHARDS']}")
        # Without a number, `auto` (the default): one per CPU it may use.
        shards = next((l.split()[1] for l in lines if l.startswith("shards ")), "auto")
        self.shards = int(shards) if shards.isdigit() else max(1, len(os.sched_getaffinity(0)))
        self.config = self.workdir / f"{name}-{self.port}.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def broker_id(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def presence_ids(self) -> list[str]:
        """The ids it writes presence under: its own, or with several
        shards one per shard (`<id>/<shard>`)."""
        if self.shards == 1:
            return [self.broker_id]
        return [f"{self.broker_id}/{shard}" for shard in range(self.shards)]

    @property
    def log_path(self) -> Path:
        return self.log_paths[-1]

    def start(self, args: Optional[list[str]] = None, timeout: float = 10.0, env: Optional[dict] = None):
        """Starts the broker (`env`: variables added to the suite's) and
        waits until it listens."""
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.runs += 1
        path = self.workdir / f"{self.name}-{self.port}-run{self.runs}.log"
        self.log_paths.append(path)
        env = dict(os.environ, HOSTNAME=self.host, **(env or {}))
        env.pop("RUST_LOG", None)
        with open(path, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.config)] + (args or []),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.binary} exited with {self.proc.returncode} at start:\n{self.log()}")
            return is_listening(self.port)

        wait_until(ready, timeout, what=f"{self.binary} listening on {self.port}")
        return self

    def restart(self, **kw):
        return self.start(**kw)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        if not self.log_paths:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def all_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())

    def wait_log(self, pattern: str, timeout: float = 5.0, count: int = 1) -> list[re.Match]:
        """Waits until the current run's log has `count` matches of the regex."""
        rx = re.compile(pattern, re.M)

        def found():
            matches = list(rx.finditer(self.log()))
            return matches if len(matches) >= count else None

        return wait_until(found, timeout, what=lambda: f"log /{pattern}/ x{count} in:\n{tail(self.log())}")

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout: float = 10.0) -> int:
        """Sends `sig` and waits for the exit; returns the exit code."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
                raise AssertionError(f"broker did not exit within {timeout}s of {sig!r}:\n{tail(self.log())}")
        return self.proc.returncode

    def wait(self, timeout: float = 10.0) -> int:
        """Waits for an exit already asked for; returns the exit code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"broker still running after {timeout}s:\n{tail(self.log())}") from None

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------- paho


class Paho:
    """A paho-mqtt 2.x client on its own network thread, with waits.

    Automatic reconnection is off: a client that is disconnected stays
    disconnected, so a test sees exactly what the broker did."""

    def __init__(self, port: int, client_id: str, *, clean_session: bool = True, keepalive: int = 60,
                 protocol=mqtt.MQTTv311, will: Optional[tuple] = None, username: Optional[str] = None,
                 password: Optional[str] = None, transport: str = "tcp"):
        self.port = port
        self.client_id = client_id
        self.keepalive = keepalive
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=clean_session, protocol=protocol, reconnect_on_failure=False,
                                  transport=transport)
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(0)
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.messages: "queue.Queue[mqtt.MQTTMessage]" = queue.Queue()
        self.received: list[mqtt.MQTTMessage] = []
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connack = None
        self.session_present = None
        self.disconnects = 0
        self.subacks: dict[int, list] = {}
        self._lock = threading.Lock()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connack = reason_code
        self.session_present = flags.session_present
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self._lock:
            self.disconnects += 1
        self.disconnected.set()

    def _on_message(self, client, userdata, msg):
        with self._lock:
            self.received.append(msg)
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self._lock:
            self.subacks[mid] = [int(getattr(rc, "value", rc)) for rc in reason_codes]

    def begin_connect(self):
        """Sends the CONNECT without waiting for the CONNACK (`connected`
        is set once it comes)."""
        self.client.connect(LOOPBACK, self.port, self.keepalive)
        self.client.loop_start()
        return self

    def connect(self, timeout: float = 5.0, expect_ok: bool = True):
        self.begin_connect()
        if not self.connected.wait(timeout):
            raise Timeout(f"{self.client_id}: no CONNACK within {timeout}s")
        if expect_ok:
            assert not self.connack.is_failure, f"{self.client_id}: CONNACK {self.connack}"
        return self

    def subscribe(self, topic, qos: int = 0, timeout: float = 5.0) -> list:
        """Subscribes (topic or list of (topic, qos)) and waits for the SUBACK."""
        result, mid = self.client.subscribe(topic, qos) if isinstance(topic, str) else self.client.subscribe(topic)
        assert result == mqtt.MQTT_ERR_SUCCESS, f"subscribe failed: {result}"
        return wait_until(lambda: self.subacks.get(mid), timeout, what=f"SUBACK for {topic}")

    def publish(self, topic: str, payload, qos: int = 0, retain: bool = False, timeout: float = 5.0):
        """Publishes and waits until the flow is complete (sent for QoS 0,
        PUBACK for 1, PUBCOMP for 2)."""
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        assert info.is_published(), f"{self.client_id}: publish to {topic} not acknowledged within {timeout}s"
        return info

    def expect(self, timeout: float = 5.0) -> mqtt.MQTTMessage:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise Timeout(f"{self.client_id}: no message within {timeout}s") from None

    def collect_until(self, topic: str, timeout: float = 5.0, limit: int = 10_000) -> list[mqtt.MQTTMessage]:
        """Messages received up to and including the first on `topic` (a marker)."""
        got = []
        deadline = time.monotonic() + timeout
        for _ in range(limit):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                msg = self.messages.get(timeout=remaining)
            except queue.Empty:
                break
            got.append(msg)
            if msg.topic == topic:
                return got
        raise Timeout(f"{self.client_id}: marker {topic} not received; got {[(m.topic, m.payload) for m in got]}")

    def disconnect(self, timeout: float = 5.0):
        if self.client.is_connected():
            self.client.disconnect()
            self.disconnected.wait(timeout)
        self.client.loop_stop()

    def close(self):
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - best effort at teardown
            pass
        self.client.loop_stop()

    def __enter__(self) -> "Paho":
        return self

    def __exit__(self, *_exc):
        self.close()


# paho 2 reports a 3.1.1 CONNACK code as the MQTT 5 reason code of the same
# name (5 arrives as 135 "Not authorized"); names map back to the byte sent.
V311_CONNACK = {"Success": 0, "Unsupported protocol version": 1, "Client identifier not valid": 2,
                "Server unavailable": 3, "Bad user name or password": 4, "Not authorized": 5}


def drain(client: Paho, quiet: float = 0.8, limit: int = 100_000) -> list:
    """Every message `client` receives until none comes for `quiet` seconds
    (at most `limit`)."""
    got = []
    for _ in range(limit):
        try:
            got.append(client.expect(timeout=quiet))
        except Timeout:
            return got
    return got


def connack(port: int, client_id: str, username=None, password=None) -> int:
    """The CONNACK return code (MQTT 3.1.1) a paho client gets; the client
    is closed."""
    client = Paho(port, client_id, username=username, password=password)
    try:
        client.connect(expect_ok=False)
        return V311_CONNACK[client.connack.getName()]
    finally:
        client.close()


# ---------------------------------------------------------------- raw MQTT


def _encode_len(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


def connect_packet(client_id: str, keepalive: int = 60, clean: bool = True,
                   will: Optional[tuple] = None, v31: bool = False) -> bytes:
    flags = 0x02 if clean else 0
    payload = _str(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += _str(topic) + _str(message)
    proto = _str("MQIsdp") + b"\x03" if v31 else _str("MQTT") + b"\x04"
    body = proto + bytes([flags]) + struct.pack("!H", keepalive) + payload
    return b"\x10" + _encode_len(len(body)) + body


def publish_packet(topic: str, payload: bytes, qos: int = 0, packet_id: int = 1, retain: bool = False) -> bytes:
    body = _str(topic) + (struct.pack("!H", packet_id) if qos else b"") + payload
    return bytes([0x30 | (qos << 1) | int(retain)]) + _encode_len(len(body)) + body


def subscribe_packet(topic: str, qos: int = 0, packet_id: int = 1) -> bytes:
    body = struct.pack("!H", packet_id) + _str(topic) + bytes([qos])
    return b"\x82" + _encode_len(len(body)) + body


DISCONNECT = b"\xe0\x00"
PINGREQ = b"\xc0\x00"


class RawClient:
    """A minimal MQTT 3.1.1 client on a plain socket: it does only what the
    test tells it, so it can go silent (keepalive) or vanish mid-session."""

    def __init__(self, port: int, client_id: str, keepalive: int = 60, clean: bool = True,
                 will: Optional[tuple] = None, v31: bool = False):
        self.port = port
        self.client_id = client_id
        self.packet = connect_packet(client_id, keepalive, clean, will, v31)
        self.sock: Optional[socket.socket] = None

    def connect(self, timeout: float = 5.0) -> tuple[int, int]:
        """Connects and returns (session present, return code) from CONNACK."""
        self.sock = socket.create_connection((LOOPBACK, self.port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.sendall(self.packet)
        connack = self._recv_exact(4)
        assert connack[0] == 0x20 and connack[1] == 2, f"not a CONNACK: {connack!r}"
        return connack[2], connack[3]

    def _recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"{self.client_id}: closed by the broker after {data!r}")
            data += chunk
        return data

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_packet(self) -> tuple[int, bytes]:
        """One packet's first byte and body."""
        first = self._recv_exact(1)[0]
        length, shift = 0, 0
        while True:
            byte = self._recv_exact(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, self._recv_exact(length)

    def disconnect(self):
        """A clean DISCONNECT, then close."""
        try:
            self.sock.sendall(DISCONNECT)
        finally:
            self.sock.close()

    def drop(self):
        """Closes the socket without DISCONNECT (the broker sees the
        connection end, as when a device loses power and the OS closes)."""
        self.sock.close()

    def wait_closed_by_broker(self, timeout: float = 10.0) -> float:
        """Reads (and discards) until the broker closes; returns the time it took."""
        start = time.monotonic()
        self.sock.settimeout(timeout)
        deadline = start + timeout
        while time.monotonic() < deadline:
            try:
                chunk = self.sock.recv(4096)
            except ConnectionResetError:
                return time.monotonic() - start
            except socket.timeout:
                break
            if not chunk:
                return time.monotonic() - start
        raise Timeout(f"{self.client_id}: broker did not close the connection within {timeout}s")

    def close(self):
        if self.sock is not None:
            self.sock.close()


@contextmanager
def flooding(port: int, client_id: str, seconds: float = 30.0):
    """A client flooding the broker with QoS 0 messages nobody reads
    while the block runs (at most `seconds`)."""
    flooder = RawClient(port, client_id)
    flooder.connect()
    stop = threading.Event()
    batch = publish_packet("nobody/reads", b"x" * 100) * 80

    def flood():
        deadline = time.monotonic() + seconds
        while not stop.is_set() and time.monotonic() < deadline:
            flooder.send(batch)

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=seconds)
        flooder.close()


# ---------------------------------------------------------------- mosquitto clients


def mosquitto_pub(port: int, topic: str, message: Optional[str] = None, *, qos: int = 0, retain: bool = False,
                  client_id: Optional[str] = None, extra: Iterable[str] = (), timeout: float = 10.0
                  ) -> subprocess.CompletedProcess:
    args = ["mosquitto_pub", "-h", LOOPBACK, "-p", str(port), "-t", topic, "-q", str(qos)]
    args += ["-n"] if message is None else ["-m", message]
    if retain:
        args.append("-r")
    if client_id:
        args += ["-i", client_id]
    args += list(extra)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


class MosquittoSub:
    """mosquitto_sub in the background, its output read line by line.

    Messages are printed as `MSG|retain|qos|topic|payload`; `-d` shows the
    protocol exchange so a test can wait for the SUBACK."""

    def __init__(self, port: int, topics: Iterable[str], *, qos: int = 0, client_id: Optional[str] = None,
                 clean: bool = True, keepalive: int = 60, extra: Iterable[str] = ()):
        args = ["stdbuf", "-oL", "-eL", "mosquitto_sub", "-h", LOOPBACK, "-p", str(port), "-d",
                "-q", str(qos), "-k", str(keepalive), "-F", "MSG|%r|%q|%t|%p"]
        for t in topics:
            args += ["-t", t]
        if client_id:
            args += ["-i", client_id]
        if not clean:
            args.append("-c")
        args += list(extra)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def messages(self) -> list[tuple[int, int, str, str]]:
        out = []
        for line in list(self.lines):
            if line.startswith("MSG|"):
                _, retain, qos, topic, payload = line.split("|", 4)
                out.append((int(retain), int(qos), topic, payload))
        return out

    def wait_subscribed(self, timeout: float = 5.0):
        wait_until(lambda: any("received SUBACK" in l for l in list(self.lines)), timeout,
                   what=lambda: f"mosquitto_sub SUBACK; output: {self.lines}")
        return self

    def wait_messages(self, n: int, timeout: float = 5.0):
        return wait_until(lambda: (m := self.messages()) and len(m) >= n and m, timeout,
                          what=lambda: f"{n} messages at mosquitto_sub; output: {self.lines}")

    def kill(self, sig=signal.SIGKILL):
        kill_quietly(self.proc, sig)

    def stop(self):
        """SIGINT: mosquitto_sub disconnects cleanly and exits."""
        kill_quietly(self.proc, signal.SIGINT)


# ---------------------------------------------------------------- service manager


class NotifySocket:
    """A stand-in for systemd's notification socket (sd_notify(3)): a
    datagram socket whose messages are kept, each as a dict of its
    `KEY=VALUE` lines, in the order they came.

    Abstract (`@name`) by default; at `path` (made writable by anyone, as
    systemd's is, so that a broker that dropped root can still send)
    otherwise. Pass `address` to the broker as NOTIFY_SOCKET."""

    def __init__(self, path: Optional[Path] = None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"culex-e2e-notify-{os.getpid()}-{id(self)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            os.chmod(path, 0o666)
            self.address = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[dict[str, str]] = []
        # Messages before this index were matched by `expect` already.
        self.seen = 0
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while not self._closed.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)
            self.messages.append(fields)

    def expect(self, key: str, value: str = "1", timeout: float = 10.0) -> dict[str, str]:
        """The first message after those already matched that has
        `key=value`; later calls look only after it."""

        def found():
            for i in range(self.seen, len(self.messages)):
                if self.messages[i].get(key) == value:
                    self.seen = i + 1
                    return self.messages[i]
            return None

        return wait_until(found, timeout, what=lambda: f"{key}={value} on the notify socket; got {self.messages}")

    def close(self):
        self._closed.set()
        self._reader.join(timeout=2)
        self.sock.close()


class Mosquitto:
    """Debian's mosquitto on a port of its own, verbose, restartable."""

    def __init__(self, tmp_path, cleanup, name: str, extra: str = "allow_anonymous true\n"):
        self.port = free_port()
        self.dir = tmp_path / name
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        # Started as root, mosquitto would become `mosquitto`, who cannot
        # read the test's files.
        self.conf.write_text(f"listener {self.port} {LOOPBACK}\nuser root\n{extra}")
        self.log = self.dir / "mosquitto.log"
        self.proc = None
        cleanup(lambda: kill_quietly(self.proc))

    def start(self):
        self.proc = subprocess.Popen(["mosquitto", "-v", "-c", str(self.conf)], cwd=self.dir,
                                     stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        wait_until(lambda: is_listening(self.port), 10, what="mosquitto listening")
        return self

    def stop(self, sig=signal.SIGTERM):
        kill_quietly(self.proc, sig)

    def wait_log(self, text: str, timeout: float = 15.0):
        wait_until(lambda: text in self.log.read_text(errors="replace"), timeout,
                   what=lambda: f"{text!r} in mosquitto's log:\n{self.log.read_text(errors='replace')[-3000:]}")


def tools_present() -> list[str]:
    """The external programs the suite needs that are missing."""
    tools = ("redis-server", "mosquitto_pub", "mosquitto_sub", "mosquitto_passwd", "stdbuf", "openssl")
    return [t for t in tools if shutil.which(t) is None]
