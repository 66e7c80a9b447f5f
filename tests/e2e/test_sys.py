"""`$SYS` (docs/sys.md): Debian's mosquitto 2.0 and Culex side by side
with `sys_interval 1`, read with `mosquitto_sub -t '$SYS/#'`: Culex
publishes every topic Mosquitto publishes (its heap topics aside), in
the same formats, retained. And `presence_topics` with real clients:
connect, takeover, DISCONNECT, a client killed without one."""

from __future__ import annotations

import re
import subprocess

from support import Mosquitto, MosquittoSub, Paho, RawClient, mosquitto_pub, stays, wait_until

# Mosquitto publishes these only when built with memory tracking (Debian's
# is); Culex does not count its heap unless `memory_limit` is set.
HEAP = {"$SYS/broker/heap/current", "$SYS/broker/heap/maximum"}

# Culex's own topics, without Redis, persistence or bridges.
CULEX_EXTRA = {"$SYS/broker/publish/messages/expired", "$SYS/broker/messages/inflight"}


def sys_tree(sub: MosquittoSub) -> dict[str, list[tuple[int, str]]]:
    """Each topic's messages (retain flag, payload), in order."""
    tree: dict[str, list[tuple[int, str]]] = {}
    for retain, _qos, topic, payload in sub.messages():
        tree.setdefault(topic, []).append((retain, payload))
    return tree


def updates(tree, topic="$SYS/broker/uptime") -> int:
    return len(tree.get(topic, []))


def test_culex_publishes_every_sys_topic_mosquitto_publishes(make_broker, tmp_path, cleanup):
    mosquitto = Mosquitto(tmp_path, cleanup, "mosquitto", "allow_anonymous true\nsys_interval 1\n").start()
    culex = make_broker(extra=["sys_interval 1"])
    subs = {}
    for name, port in (("mosquitto", mosquitto.port), ("culex", culex.port)):
        sub = MosquittoSub(port, ["$SYS/#"], client_id=f"sys-{name}")
        cleanup(sub.kill)
        subs[name] = sub.wait_subscribed()
    # Mosquitto updates every other second with `sys_interval 1`, and
    # publishes `clients/maximum` once a client is there: three updates
    # each are enough.
    wait_until(lambda: all(updates(sys_tree(s)) >= 3 for s in subs.values()), 15,
               what=lambda: {n: updates(sys_tree(s)) for n, s in subs.items()})
    theirs, ours = sys_tree(subs["mosquitto"]), sys_tree(subs["culex"])
    missing = sorted(set(theirs) - HEAP - set(ours))
    assert not missing, f"Culex lacks {missing}"
    extra = set(ours) - set(theirs)
    print(f"\nCulex's own $SYS topics: {sorted(extra)}")
    assert extra == CULEX_EXTRA, sorted(extra)

    # The same formats (Mosquitto's `clients/disconnected` may go
    # negative, mosquitto#2466).
    for tree, integer in ((theirs, r"-?\d+"), (ours, r"\d+")):
        assert all(re.fullmatch(r"\d+ seconds", p) for _, p in tree["$SYS/broker/uptime"])
        loads = [p for t, ms in tree.items() if t.startswith("$SYS/broker/load/") for _, p in ms]
        assert len({t for t in tree if t.startswith("$SYS/broker/load/")}) == 27
        assert all(re.fullmatch(r"\d+\.\d\d", p) for p in loads), loads
        # The first update says 0.00 for every load.
        assert all(ms[0][1] == "0.00" for t, ms in tree.items() if t.startswith("$SYS/broker/load/"))
        numbers = [p for t, ms in tree.items() if t not in HEAP and not t.startswith("$SYS/broker/load/")
                   and t not in ("$SYS/broker/uptime", "$SYS/broker/version") for _, p in ms]
        assert all(re.fullmatch(integer, p) for p in numbers), numbers
    assert [p for _, p in ours["$SYS/broker/version"]] == [f"culex version {culex_version(culex)}"]
    assert theirs["$SYS/broker/version"][0][1].startswith("mosquitto version 2.0")
    # The version once, the uptime every time.
    assert len(ours["$SYS/broker/uptime"]) >= 3
    assert [p for _, p in ours["$SYS/broker/clients/connected"]][-1] == "1"

    # Retained: a client subscribing now is sent every topic at once,
    # flagged retained, before the next update.
    late = MosquittoSub(culex.port, ["$SYS/#"], client_id="sys-late")
    cleanup(late.kill)
    late.wait_subscribed()
    wait_until(lambda: set(ours) <= {t for r, _, t, _ in late.messages() if r == 1}, 5,
               what=lambda: sorted(set(ours) - {t for r, _, t, _ in late.messages() if r == 1}))


def culex_version(broker) -> str:
    out = subprocess.run([broker.binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    return out.split()[-1]


STATE = "$SYS/broker/connection/client/+/state"


def states(sub: MosquittoSub, ignore=("watcher", "late")) -> list[tuple[str, str]]:
    """(client id, payload) of each state message, in order."""
    out = []
    for _retain, _qos, topic, payload in sub.messages():
        cid = topic.removeprefix("$SYS/broker/connection/client/").removesuffix("/state")
        if cid not in ignore:
            out.append((cid, payload))
    return out


def retained_states(port: int, cleanup, expected: int) -> dict[str, str]:
    """The retained states a new subscriber is sent (the `late` client's
    own aside)."""
    late = MosquittoSub(port, [STATE], client_id="late")
    cleanup(late.kill)
    late.wait_subscribed()
    wait_until(lambda: len(states(late)) >= expected, 5, what=lambda: late.lines)
    # Nothing more comes.
    assert stays(lambda: len(states(late)) == expected, 0.3), late.lines
    late.stop()
    return dict(states(late))


def test_presence_topics_follow_real_clients(make_broker, cleanup):
    broker = make_broker(extra=["presence_topics true"])
    watcher = MosquittoSub(broker.port, [STATE], client_id="watcher")
    cleanup(watcher.kill)
    watcher.wait_subscribed()

    first = Paho(broker.port, "dev-1", clean_session=False)
    cleanup(first.close)
    first.connect()
    wait_until(lambda: states(watcher) == [("dev-1", "1")], 5, what=lambda: watcher.lines)

    # Takeover: the old connection's 0 comes before the new one's 1.
    second = Paho(broker.port, "dev-1")
    cleanup(second.close)
    second.connect()
    wait_until(lambda: states(watcher)[1:] == [("dev-1", "0"), ("dev-1", "1")], 5, what=lambda: watcher.lines)
    assert first.disconnected.wait(5)
    assert retained_states(broker.port, cleanup, 1) == {"dev-1": "1"}

    # A clean DISCONNECT.
    second.disconnect()
    wait_until(lambda: states(watcher)[-1] == ("dev-1", "0"), 5, what=lambda: watcher.lines)

    # A device that vanishes: its socket closes without DISCONNECT.
    raw = RawClient(broker.port, "dev-2")
    raw.connect()
    wait_until(lambda: states(watcher)[-1] == ("dev-2", "1"), 5, what=lambda: watcher.lines)
    raw.drop()
    wait_until(lambda: states(watcher)[-1] == ("dev-2", "0"), 5, what=lambda: watcher.lines)

    # A process killed: the kernel closes its socket.
    killed = MosquittoSub(broker.port, ["x"], client_id="dev-3")
    cleanup(killed.kill)
    killed.wait_subscribed()
    wait_until(lambda: states(watcher)[-1] == ("dev-3", "1"), 5, what=lambda: watcher.lines)
    killed.kill()
    wait_until(lambda: states(watcher)[-1] == ("dev-3", "0"), 5, what=lambda: watcher.lines)

    # Clients may not write there.
    seen = len(states(watcher))
    result = mosquitto_pub(broker.port, "$SYS/broker/connection/client/dev-1/state", "1", retain=True,
                           client_id="liar")
    assert result.returncode == 0, result.stderr
    assert retained_states(broker.port, cleanup, 4) == {"dev-1": "0", "dev-2": "0", "dev-3": "0", "liar": "0"}
    assert ("dev-1", "1") not in states(watcher)[seen:]


def test_presence_topics_are_off_by_default(make_broker, cleanup):
    broker = make_broker()
    watcher = MosquittoSub(broker.port, ["$SYS/broker/connection/#"], client_id="watcher")
    cleanup(watcher.kill)
    watcher.wait_subscribed()
    client = Paho(broker.port, "dev-1")
    cleanup(client.close)
    client.connect()
    client.disconnect()
    assert stays(lambda: not watcher.messages(), 0.5), watcher.lines
