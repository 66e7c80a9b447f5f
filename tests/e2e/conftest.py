"""End-to-end suite for the Culex binaries (issue 4): real redis-server,
real MQTT clients (mosquitto_pub / mosquitto_sub, paho-mqtt), loopback only.

Binaries under test: `CULEX_BINARIES` (colon-separated paths); by default
`culex` and `culex-async-std` in `$CARGO_TARGET_DIR/debug` (or
`target/debug`), each one that exists. Every test that runs a broker runs
once per binary.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import support
from support import Broker, RedisCluster, RedisServer

ROOT = Path(__file__).resolve().parents[2]


def _binaries() -> list[str]:
    env = os.environ.get("CULEX_BINARIES", "").strip()
    if env:
        return [str(Path(p).resolve()) for p in env.split(":") if p]
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    if not target.is_absolute():
        target = ROOT / target
    return [str(target / "debug" / name) for name in ("culex", "culex-async-std")
            if (target / "debug" / name).exists()]


BINARIES = _binaries()


def pytest_configure(config):
    missing = support.tools_present()
    if missing:
        raise pytest.UsageError(f"missing programs: {', '.join(missing)} (scripts/e2e.sh installs them)")
    config.addinivalue_line("markers", "redis_cluster_on_one_binary: on a Redis Cluster, only the first binary")
    config.addinivalue_line("markers", "alone: bounds latency or load, so runs with no other test beside it "
                                       "(scripts/e2e.sh runs these after the others, one at a time)")
    if not BINARIES:
        raise pytest.UsageError("no Culex binary found: build with `cargo build --bins` or set CULEX_BINARIES")
    for binary in BINARIES:
        if not os.access(binary, os.X_OK):
            raise pytest.UsageError(f"not an executable: {binary}")


def pytest_collection_modifyitems(config, items):
    """A test marked `redis_cluster_on_one_binary` runs on a Redis Cluster
    (parameter `shared` "redis-cluster") with the first binary only."""
    kept, dropped = [], []
    for item in items:
        params = item.callspec.params if hasattr(item, "callspec") else {}
        once = item.get_closest_marker("redis_cluster_on_one_binary") is not None
        if once and params.get("shared") == "redis-cluster" and params.get("binary") != BINARIES[0]:
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def pytest_report_header(config):
    return [f"culex binaries: {', '.join(BINARIES)}"]


@pytest.fixture(params=BINARIES, ids=lambda p: Path(p).name)
def binary(request) -> str:
    """Path of the broker binary under test (each test runs once per binary)."""
    return request.param


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    """One real redis-server per test module, password required."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory):
    """A Redis Cluster of three local redis-servers per test module, for
    the modules that ask for one."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_with_replicas(tmp_path):
    """A Redis Cluster of three masters with a replica each, for one test
    (a test that kills a member)."""
    cluster = RedisCluster(tmp_path / "redis-cluster", replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_db(redis_server):
    """A client on the module's Redis, emptied before the test."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def make_redis(tmp_path):
    """A Redis of the test's own (for tests that stop and restart it)."""
    servers = []

    def make(**kw) -> RedisServer:
        server = RedisServer(tmp_path / f"redis{len(servers)}", **kw)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def make_broker(binary, tmp_path, request):
    """Factory: `make_broker(redis=..., extra=[...], start=True)`.

    At teardown every broker still running gets SIGTERM and must exit 0;
    the logs of a failed test are printed."""
    brokers: list[Broker] = []

    def make(start: bool = True, **kw) -> Broker:
        kw.setdefault("name", f"b{len(brokers)}")
        broker = Broker(binary, tmp_path / f"b{len(brokers)}", **kw)
        brokers.append(broker)
        if start:
            broker.start()
        return broker

    yield make
    failures = []
    for broker in brokers:
        if broker.running():
            try:
                rc = broker.stop()
            except AssertionError as e:  # did not exit
                failures.append(str(e))
                continue
            if rc != 0:
                failures.append(f"{broker.name} exited {rc} on SIGTERM")
    failed = getattr(request.node, "rep_call", None)
    if failures or (failed is not None and failed.failed):
        for broker in brokers:
            print(f"\n----- {broker.name} ({broker.binary}) log -----\n{support.tail(broker.all_logs(), 120)}")
    assert not failures, "; ".join(failures)


@pytest.fixture
def broker(make_broker, redis_server, redis_db):
    """A running broker with presence in the module's Redis (redis_auth set)."""
    return make_broker(redis=redis_server)


@pytest.fixture
def clients(cleanup):
    """Registers MQTT clients (anything with `close`) to close at teardown;
    returns each as given."""
    def track(client):
        cleanup(client.close)
        return client

    return track


@pytest.fixture
def cleanup():
    """Registers callables (closing clients, killing helpers) run at teardown."""
    actions = []
    yield actions.append
    for action in reversed(actions):
        try:
            action()
        except Exception:  # noqa: BLE001 - teardown is best effort
            pass

