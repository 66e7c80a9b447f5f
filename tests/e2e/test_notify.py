"""sd_notify: with NOTIFY_SOCKET set, as systemd sets it for a unit with
Type=notify, the broker says when it is ready, reloading and stopping,
with STATUS lines (runtime-common/src/notify.rs), whichever binary."""

from __future__ import annotations

import signal
import time

from support import NotifySocket, Paho, is_listening, wait_until


def test_ready_reloading_and_stopping_reach_the_service_manager(make_broker, tmp_path, cleanup):
    notify = NotifySocket()
    cleanup(notify.close)
    store = tmp_path / "store"
    store.mkdir()
    # As root: the reload reads the configuration from the test's directory.
    extra = ["persistence true", f"persistence_location {store}/", "user root"]
    broker = make_broker(start=False, extra=extra)
    broker.start(env={"NOTIFY_SOCKET": notify.address})

    # The store is opened, then READY=1 once clients can connect.
    opening = notify.expect("STATUS", f"Opening the store {store}/mosquitto.db.")
    assert "READY" not in opening
    ready = notify.expect("READY")
    assert ready["STATUS"] == "Accepting connections: 0 open."
    assert is_listening(broker.port)
    client = Paho(broker.port, "n-1").connect()
    cleanup(client.close)

    # A reload: RELOADING=1 with the time it began, then READY=1 once the
    # new settings are in force.
    before = _monotonic_usec()
    broker.send_signal(signal.SIGHUP)
    reloading = notify.expect("RELOADING")
    assert before <= int(reloading["MONOTONIC_USEC"]) <= _monotonic_usec()
    reloaded = notify.expect("READY")
    assert reloaded["STATUS"] == "Configuration reloaded. Accepting connections: 1 open."
    broker.wait_log(r"Password and ACL files reloaded\.")

    # A reload that fails still ends with READY=1: the old settings stay.
    broker.config.write_text(broker.config.read_text() + "acl_file /nonexistent/acl\n")
    broker.send_signal(signal.SIGHUP)
    notify.expect("RELOADING")
    failed = notify.expect("READY")
    assert failed["STATUS"].startswith("Reload failed"), failed

    assert broker.stop() == 0
    stopping = notify.expect("STOPPING")
    assert stopping["STATUS"] == "Stopping: closing 1 client connections."


def test_a_missing_service_manager_is_logged_once_and_changes_nothing(make_broker, tmp_path, cleanup):
    broker = make_broker(start=False, extra=["user root"])
    broker.start(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    broker.send_signal(signal.SIGHUP)
    broker.wait_log(r"Password and ACL files reloaded\.")
    client = Paho(broker.port, "n-2").connect()
    cleanup(client.close)
    assert broker.stop() == 0
    warnings = [line for line in broker.log().splitlines() if "cannot notify the service manager" in line]
    assert len(warnings) == 1, broker.log()


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as systemd's MONOTONIC_USEC."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
