"""A Mosquitto bridge into Culex: Debian's mosquitto with a `connection`
section (`try_private` on, as by default) bridging `#` both ways to Culex.
Culex takes it as a bridge, as Mosquitto does: it logs "New bridge
connected", does not send the bridge back what it published (no loop, no
duplicate on either side), keeps the RETAIN flag for it (retained messages
reach the other broker's store), and lets it publish its state under
`$SYS/broker/connection/<name>/state`."""

from __future__ import annotations

import subprocess

from support import LOOPBACK, Paho, drain, free_port, is_listening, kill_quietly, wait_until


def start_mosquitto(tmp_path, cleanup, culex_port: int) -> int:
    port = free_port()
    conf = tmp_path / "edge.conf"
    conf.write_text(
        f"listener {port} {LOOPBACK}\nallow_anonymous true\n"
        "connection to-culex\n"
        f"address {LOOPBACK}:{culex_port}\n"
        "remote_clientid edge.to-culex\n"
        "topic # both 1\n"
        "restart_timeout 1\n"
    )
    log = tmp_path / "edge.log"
    edge = subprocess.Popen(["mosquitto", "-v", "-c", str(conf)], stdout=log.open("w"), stderr=subprocess.STDOUT)
    cleanup(lambda: kill_quietly(edge))
    wait_until(lambda: is_listening(port), 10, what="mosquitto listening")
    return port


def test_a_mosquitto_bridge_both_ways_on_everything_neither_loops_nor_duplicates(make_broker, tmp_path, cleanup):
    culex = make_broker()
    edge_port = start_mosquitto(tmp_path, cleanup, culex.port)
    culex.wait_log(r"New bridge connected from 127\.0\.0\.1:\d+ as edge\.to-culex \(p2, c0, k60\)\.", timeout=15)
    # The bridge announced itself: '1', retained, on Culex.
    watcher = Paho(culex.port, "watcher").connect()
    cleanup(watcher.close)
    watcher.subscribe("$SYS/broker/connection/+/state", 1)
    state = watcher.expect(timeout=10)
    assert (state.topic, state.payload, state.retain) == ("$SYS/broker/connection/edge.to-culex/state", b"1", True)

    at_edge = Paho(edge_port, "at-edge").connect()
    at_culex = Paho(culex.port, "at-culex").connect()
    for c in (at_edge, at_culex):
        cleanup(c.close)
        c.subscribe("t/#", 1)
    for port, name, payload in [(edge_port, "edge-pub", b"e"), (culex.port, "culex-pub", b"c")]:
        publisher = Paho(port, name).connect()
        cleanup(publisher.close)
        publisher.publish(f"t/from-{name[:-4]}", payload, qos=1)
    for c in (at_edge, at_culex):
        got = sorted((m.topic, m.payload) for m in drain(c))
        assert got == [("t/from-culex", b"c"), ("t/from-edge", b"e")], (c.client_id, got)

    # A retained message published on Culex is stored by Mosquitto too:
    # the bridge got it with RETAIN set.
    retainer = Paho(culex.port, "culex-retain").connect()
    cleanup(retainer.close)
    retainer.publish("t/kept", b"r", qos=1, retain=True)
    wait_until(lambda: any(m.topic == "t/kept" for m in drain(at_edge, 0.3)), 5, what="t/kept at the edge")
    late = Paho(edge_port, "late").connect()
    cleanup(late.close)
    late.subscribe("t/kept", 1)
    kept = late.expect(timeout=5)
    assert (kept.payload, kept.retain) == (b"r", True)
