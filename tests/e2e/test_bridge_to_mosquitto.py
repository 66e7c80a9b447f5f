"""Culex's own bridges (`connection` sections), against Debian's mosquitto
as the remote and against a second Culex: out, in and both directions
with prefixes, QoS 0/1/2, retained messages, the state notifications and
their will, credentials, a remote killed and restarted mid-stream,
failover to the second address and back, a queue kept across a restart,
and two brokers bridged both ways on `#` without a loop."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

from support import BROKER_HOST, LOOPBACK, Mosquitto, Paho, drain, kill_quietly


def bridge(name: str, port: int, *lines: str) -> list[str]:
    """A `connection` section to 127.0.0.1:`port` that retries every second."""
    return [f"connection {name}", f"address {LOOPBACK}:{port}", "restart_timeout 1", *lines]


def publish_in_background(publisher: Paho, total: int, topic_and_qos) -> threading.Event:
    """Publishes messages 0 to `total` - 1 (the number as payload, on the
    topic and at the QoS `topic_and_qos(n)` gives), each acknowledged
    before the next, in a thread of its own; the event is set once all
    were acknowledged."""
    done = threading.Event()

    def publish_all():
        for n in range(total):
            topic, qos = topic_and_qos(n)
            publisher.publish(topic, str(n).encode(), qos=qos, timeout=30)
            time.sleep(0.005)
        done.set()

    threading.Thread(target=publish_all, daemon=True).start()
    return done


def client(port: int, name: str, cleanup, **kw) -> Paho:
    c = Paho(port, name, **kw).connect()
    cleanup(c.close)
    return c


def test_out_in_and_both_topics_cross_with_prefixes_qos_and_retain(make_broker, tmp_path, cleanup):
    remote = Mosquitto(tmp_path, cleanup, "remote").start()
    at_remote = client(remote.port, "at-remote", cleanup)
    at_remote.subscribe([("site/#", 2), ("chat/#", 2), ("$SYS/broker/connection/#", 1)])
    culex = make_broker(extra=bridge(
        "site", remote.port,
        "topic sensors/# out 1 edge/ site/",
        "topic cmd/# in 2 local/ remote/",
        "topic chat/# both 2",
    ))
    culex.wait_log(rf"Connecting bridge site \({LOOPBACK}:{remote.port}\)", timeout=10)
    remote.wait_log(f"New bridge connected from {LOOPBACK}")
    state = at_remote.expect(timeout=10)
    assert (state.topic, state.payload, state.retain) == (f"$SYS/broker/connection/{BROKER_HOST}.site/state", b"1", False)
    at_culex = client(culex.port, "at-culex", cleanup)
    at_culex.subscribe([("local/#", 2), ("chat/#", 2)])

    # out, with its prefixes swapped, at the lower of the two QoS.
    on_culex = client(culex.port, "culex-pub", cleanup)
    on_culex.publish("edge/sensors/t", b"21.5", qos=2)
    on_culex.publish("edge/elsewhere", b"not bridged", qos=1)
    got = [(m.topic, m.payload, m.qos) for m in drain(at_remote)]
    assert got == [("site/sensors/t", b"21.5", 1)], got

    # in, QoS 2 end to end.
    on_remote = client(remote.port, "remote-pub", cleanup)
    on_remote.publish("remote/cmd/open", b"1", qos=2)
    got = [(m.topic, m.payload, m.qos) for m in drain(at_culex)]
    assert got == [("local/cmd/open", b"1", 2)], got

    # both, once on each side, no echo.
    on_culex.publish("chat/a", b"from culex", qos=1)
    on_remote.publish("chat/b", b"from remote", qos=0)
    for side in (at_culex, at_remote):
        got = sorted((m.topic, m.payload) for m in drain(side))
        assert got == [("chat/a", b"from culex"), ("chat/b", b"from remote")], (side.client_id, got)

    # A retained message crosses retained: a late subscriber gets it there.
    on_culex.publish("edge/sensors/kept", b"r", qos=1, retain=True)
    drain(at_remote)
    late = client(remote.port, "late", cleanup)
    late.subscribe("site/sensors/kept", 1)
    kept = late.expect(timeout=5)
    assert (kept.payload, kept.retain) == (b"r", True)


def test_the_state_goes_to_0_by_will_when_culex_dies_and_back_to_1(make_broker, tmp_path, cleanup):
    remote = Mosquitto(tmp_path, cleanup, "remote").start()
    culex = make_broker(extra=bridge("state", remote.port, "topic x out 0"))
    remote.wait_log(f"New bridge connected from {LOOPBACK}")
    topic = f"$SYS/broker/connection/{BROKER_HOST}.state/state"
    watcher = client(remote.port, "watcher", cleanup)
    watcher.subscribe(topic, 1)
    assert watcher.expect(timeout=5).payload == b"1"
    # Here too, retained: "0" at start, then "1".
    local = client(culex.port, "local", cleanup)
    local.subscribe(topic, 1)
    assert local.expect(timeout=5).payload == b"1"
    culex.kill9()
    assert watcher.expect(timeout=10).payload == b"0"
    culex.restart()
    assert watcher.expect(timeout=10).payload == b"1"


def test_credentials_are_sent_and_a_refusal_is_logged(make_broker, tmp_path, cleanup):
    passwords = tmp_path / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "bridge", "s3cret"], check=True)
    remote = Mosquitto(tmp_path, cleanup, "remote", f"allow_anonymous false\npassword_file {passwords}\n").start()
    good = make_broker(extra=bridge("good", remote.port, "topic c/# out 1",
                                    "remote_username bridge", "remote_password s3cret"))
    remote.wait_log(f"as {BROKER_HOST}.good (p2, c0, k60, u'bridge')")
    bad = make_broker(extra=bridge("bad", remote.port, "topic c/# out 1",
                                   "remote_username bridge", "remote_password wrong"))
    # Mosquitto answers a wrong password with "not authorised".
    bad.wait_log(r"Connection Refused: not authorised$", timeout=10)
    watcher = Paho(remote.port, "watcher", username="bridge", password="s3cret").connect()
    cleanup(watcher.close)
    watcher.subscribe("c/#", 1)
    client(good.port, "pub", cleanup).publish("c/1", b"ok", qos=1)
    assert watcher.expect(timeout=5).payload == b"ok"


def test_a_remote_killed_and_restarted_mid_stream_loses_no_qos1_message(make_broker, tmp_path, cleanup):
    # Mosquitto saves its store when stopped: what it acknowledged to the
    # bridge survives its restart.
    remote = Mosquitto(tmp_path, cleanup, "remote", "allow_anonymous true\npersistence true\n").start()
    tail = Paho(remote.port, "tail", clean_session=False).connect()
    tail.subscribe("s/#", 1)
    tail.disconnect()
    culex = make_broker(extra=bridge("stream", remote.port, "topic s/# out 1"))
    remote.wait_log(f"New bridge connected from {LOOPBACK}")
    publisher = client(culex.port, "pub", cleanup)
    total = 300
    stream = publish_in_background(publisher, total, lambda n: ("s/n", 1))
    time.sleep(0.4)
    remote.stop(signal.SIGTERM)
    time.sleep(0.5)
    remote.start()
    assert stream.wait(60), "the publisher never had every message acknowledged"
    tail = Paho(remote.port, "tail", clean_session=False).connect()
    cleanup(tail.close)
    got = [int(m.payload) for m in drain(tail, 2.0)]
    firsts = list(dict.fromkeys(got))
    assert firsts == list(range(total)), f"missing {sorted(set(range(total)) - set(got))[:20]}, order {firsts[:20]}"


def test_failover_to_the_second_address_and_back_to_the_primary(make_broker, tmp_path, cleanup):
    primary = Mosquitto(tmp_path, cleanup, "primary")
    secondary = Mosquitto(tmp_path, cleanup, "secondary").start()
    culex = make_broker(extra=[
        "connection fo", f"addresses {LOOPBACK}:{primary.port} {LOOPBACK}:{secondary.port}",
        "restart_timeout 1", "topic f/# out 1",
    ])
    culex.wait_log(rf"Error creating bridge: .*", timeout=10)
    secondary.wait_log(f"as {BROKER_HOST}.fo")
    on_secondary = client(secondary.port, "s", cleanup)
    on_secondary.subscribe("f/#", 1)
    client(culex.port, "pub1", cleanup).publish("f/1", b"to secondary", qos=1)
    assert on_secondary.expect(timeout=5).payload == b"to secondary"
    primary.start()
    primary.wait_log(f"as {BROKER_HOST}.fo", timeout=20)
    on_primary = client(primary.port, "p", cleanup)
    on_primary.subscribe("f/#", 1)
    client(culex.port, "pub2", cleanup).publish("f/2", b"to primary", qos=1)
    assert on_primary.expect(timeout=5).payload == b"to primary"


def test_culex_to_culex_both_ways_on_everything_neither_loops_nor_duplicates(make_broker, cleanup):
    far = make_broker()
    near = make_broker(extra=bridge("pair", far.port, "topic # both 2"))
    far.wait_log(rf"New bridge connected from {LOOPBACK}:\d+ as {BROKER_HOST}\.pair \(p2, c0, k60\)\.", timeout=10)
    subs = [client(b.port, f"sub-{i}", cleanup) for i, b in enumerate((near, far))]
    for s in subs:
        s.subscribe("t/#", 2)
    for i, b in enumerate((near, far)):
        for qos in (0, 1, 2):
            client(b.port, f"pub-{i}-{qos}", cleanup).publish(f"t/{i}/{qos}", b"m", qos=qos)
    expected = sorted(f"t/{i}/{q}" for i in (0, 1) for q in (0, 1, 2))
    for s in subs:
        assert sorted(m.topic for m in drain(s, 1.5)) == expected, s.client_id


def test_the_bridge_queue_survives_a_restart_with_persistence(make_broker, cleanup, tmp_path):
    # The remote, a Culex with a persistent subscriber, is away at first.
    for side in ("far", "near"):
        (tmp_path / side).mkdir()
    far = make_broker(extra=["persistence true", f"persistence_location {tmp_path}/far/"])
    sub = Paho(far.port, "keeper", clean_session=False).connect()
    sub.subscribe("q/#", 1)
    sub.disconnect()
    far.stop()
    near = make_broker(extra=["persistence true", f"persistence_location {tmp_path}/near/",
                              *bridge("keep", far.port, "topic q/# out 1")])
    publisher = client(near.port, "pub", cleanup)
    for n in range(5):
        publisher.publish("q/n", str(n).encode(), qos=1)
    near.kill9()
    near.restart()
    far.restart()
    far.wait_log(rf"as {BROKER_HOST}\.keep", timeout=15)
    sub = Paho(far.port, "keeper", clean_session=False).connect()
    cleanup(sub.close)
    got = [int(m.payload) for m in drain(sub, 1.5)]
    assert list(dict.fromkeys(got)) == [0, 1, 2, 3, 4], got


def test_a_bad_bridge_line_stops_start_up_naming_file_and_line(make_broker):
    broker = make_broker(start=False, extra=bridge("v5", 1883, "topic # out 0", "bridge_protocol_version mqttv50"))
    proc = subprocess.run([broker.binary, "-c", str(broker.config)], capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0
    line = broker.config.read_text().splitlines().index("bridge_protocol_version mqttv50") + 1
    assert f"{broker.config}:{line}:" in proc.stderr + proc.stdout, proc.stderr + proc.stdout


def test_sighup_adds_changes_and_removes_a_bridge_without_a_restart(make_broker, tmp_path, cleanup):
    remote = Mosquitto(tmp_path, cleanup, "remote").start()
    watcher = client(remote.port, "watcher", cleanup)
    watcher.subscribe([("r/#", 1), (f"$SYS/broker/connection/{BROKER_HOST}.hup/state", 1)])
    # As root the broker would become `mosquitto`, who cannot read the
    # test's configuration file again.
    culex = make_broker(extra=["user root"])
    base = culex.config.read_text()
    publisher = client(culex.port, "pub", cleanup)

    culex.config.write_text(base + "\n".join(bridge("hup", remote.port, "topic a/# out 1 \"\" r/")) + "\n")
    culex.send_signal(signal.SIGHUP)
    assert watcher.expect(timeout=10).payload == b"1"
    publisher.publish("a/1", b"first", qos=1)
    assert (lambda m: (m.topic, m.payload))(watcher.expect(timeout=5)) == ("r/a/1", b"first")

    culex.config.write_text(base + "\n".join(bridge("hup", remote.port, "topic b/# out 1 \"\" r/")) + "\n")
    culex.send_signal(signal.SIGHUP)
    culex.wait_log(r"Bridge hup changed: restarting it\.")
    got = [(m.topic, m.payload) for m in drain(watcher, 1.5)]
    assert got[-1:] == [(f"$SYS/broker/connection/{BROKER_HOST}.hup/state", b"1")], got
    publisher.publish("b/2", b"second", qos=1)
    assert (lambda m: (m.topic, m.payload))(watcher.expect(timeout=5)) == ("r/b/2", b"second")

    culex.config.write_text(base)
    culex.send_signal(signal.SIGHUP)
    culex.wait_log(r"Bridge hup is no longer configured: stopping it\.")
    assert watcher.expect(timeout=5).payload == b"0"
    publisher.publish("b/3", b"not bridged", qos=1)
    assert drain(watcher, 1.0) == []


def test_a_culex_remote_killed_mid_stream_loses_no_qos1_or_qos2_message(make_broker, tmp_path, cleanup):
    # A PUBACK or PUBREC from a Culex with persistence means on disk: the
    # remote may be killed with SIGKILL.
    (tmp_path / "far").mkdir()
    far = make_broker(extra=["persistence true", f"persistence_location {tmp_path}/far/"])
    keeper = Paho(far.port, "keeper", clean_session=False).connect()
    keeper.subscribe("s/#", 2)
    keeper.disconnect()
    near = make_broker(extra=bridge("kill", far.port, "topic s/# out 2"))
    far.wait_log(rf"as {BROKER_HOST}\.kill", timeout=10)
    publisher = client(near.port, "pub", cleanup)
    total = 200
    stream = publish_in_background(publisher, total, lambda n: (f"s/{n % 2 + 1}", n % 2 + 1))
    time.sleep(0.3)
    far.kill9()
    time.sleep(0.3)
    far.restart()
    assert stream.wait(60), "the publisher never had every message acknowledged"
    keeper = Paho(far.port, "keeper", clean_session=False).connect()
    cleanup(keeper.close)
    got = [(m.qos, int(m.payload)) for m in drain(keeper, 2.0)]
    for qos in (1, 2):
        sent = [n for n in range(total) if n % 2 + 1 == qos]
        arrived = [n for q, n in got if q == qos]
        assert list(dict.fromkeys(arrived)) == sent, (qos, sorted(set(sent) - set(arrived))[:20])
        if qos == 2:
            assert len(arrived) == len(sent), "a QoS 2 message arrived twice"


def test_a_tls_bridge_with_a_client_certificate_and_its_failures(make_broker, tmp_path, cleanup):
    from test_tls import make_ca, make_leaf

    d = tmp_path / "certs"
    d.mkdir()
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_leaf(d, "server", "ca", "/CN=localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    make_leaf(d, "elsewhere", "ca", "/CN=elsewhere", "subjectAltName=DNS:elsewhere.example\nextendedKeyUsage=serverAuth")
    make_leaf(d, "bridge", "ca", "/CN=bridge", "extendedKeyUsage=clientAuth")
    tls = f"cafile {d}/ca.crt\nrequire_certificate true\n"
    remote = Mosquitto(tmp_path, cleanup, "remote",
                       f"allow_anonymous true\n{tls}certfile {d}/server.crt\nkeyfile {d}/server.key\n").start()
    client_keys = [f"bridge_cafile {d}/ca.crt", f"bridge_certfile {d}/bridge.crt", f"bridge_keyfile {d}/bridge.key"]
    culex = make_broker(extra=bridge("tls", remote.port, "topic t/# both 1", *client_keys))
    remote.wait_log(f"as {BROKER_HOST}.tls")
    certs = ["--cafile", f"{d}/ca.crt", "--cert", f"{d}/bridge.crt", "--key", f"{d}/bridge.key"]
    # Out: published here, received there by a TLS client.
    there = subprocess.Popen(["mosquitto_sub", "-h", LOOPBACK, "-p", str(remote.port), *certs, "-t", "t/out",
                              "-q", "1", "-C", "1", "-W", "15"], stdout=subprocess.PIPE, text=True)
    cleanup(lambda: kill_quietly(there))
    remote.wait_log("t/out", timeout=10)
    here = client(culex.port, "here", cleanup)
    here.subscribe("t/in", 1)
    here.publish("t/out", b"to the remote", qos=1)
    assert there.communicate(timeout=20)[0].strip() == "to the remote"
    # In: published there over TLS, received here.
    subprocess.run(["mosquitto_pub", "-h", LOOPBACK, "-p", str(remote.port), *certs, "-t", "t/in", "-q", "1",
                    "-m", "from the remote"], check=True, timeout=15)
    assert here.expect(timeout=10).payload == b"from the remote"
    # Messages of several TLS records, more than rustls keeps waiting at once.
    big = bytes(ord("a") + i % 26 for i in range(200_000))
    (d / "big").write_bytes(big)
    big_there = subprocess.Popen(["mosquitto_sub", "-h", LOOPBACK, "-p", str(remote.port), *certs, "-t", "t/big-out",
                                  "-q", "1", "-C", "1", "-W", "15"], stdout=subprocess.PIPE)
    cleanup(lambda: kill_quietly(big_there))
    remote.wait_log("t/big-out", timeout=10)
    here.subscribe("t/big-in", 1)
    here.publish("t/big-out", big, qos=1)
    assert big_there.communicate(timeout=20)[0].rstrip(b"\n") == big
    subprocess.run(["mosquitto_pub", "-h", LOOPBACK, "-p", str(remote.port), *certs, "-t", "t/big-in", "-q", "1",
                    "-f", str(d / "big")], check=True, timeout=15)
    assert here.expect(timeout=10).payload == big

    # No client certificate for a remote that requires one: refused, the
    # reason logged (under TLS 1.3 the remote says so after the handshake).
    anonymous = make_broker(extra=bridge("anonymous", remote.port, "topic t/# out 1", f"bridge_cafile {d}/ca.crt"))
    anonymous.wait_log(r"(TLS error on the connection to .*|Error creating bridge: .*)(CertificateRequired|"
                       r"HandshakeFailure)", timeout=10)
    assert f"as {BROKER_HOST}.anonymous" not in remote.log.read_text(errors="replace")

    # A CA that does not vouch for the remote: no connection, the reason logged.
    stranger = make_broker(extra=bridge("stranger", remote.port, "topic t/# out 1", f"bridge_cafile {d}/other-ca.crt"))
    stranger.wait_log(r"Error creating bridge: .*invalid peer certificate", timeout=10)

    # A remote certificate for another name: refused, unless bridge_insecure.
    named = Mosquitto(tmp_path, cleanup, "named",
                      f"allow_anonymous true\n{tls}certfile {d}/elsewhere.crt\nkeyfile {d}/elsewhere.key\n").start()
    strict = make_broker(extra=bridge("strict", named.port, "topic t/# out 1", *client_keys))
    strict.wait_log(r"Error creating bridge: .*(NotValidForName|not valid for)", timeout=10)
    lax = make_broker(extra=bridge("lax", named.port, "topic t/# out 1", *client_keys, "bridge_insecure true"))
    lax.wait_log(r"bridge_insecure: Bridge lax using insecure mode", timeout=10)
    named.wait_log(f"as {BROKER_HOST}.lax")


def test_a_bridge_tls_file_that_cannot_be_read_stops_start_up(make_broker, tmp_path):
    broker = make_broker(start=False, extra=bridge("bad", 1883, "topic # out 0", f"bridge_cafile {tmp_path}/none.crt"))
    proc = subprocess.run([broker.binary, "-c", str(broker.config)], capture_output=True, text=True, timeout=10)
    assert proc.returncode != 0
    line = broker.config.read_text().splitlines().index("connection bad") + 1
    assert f"{broker.config}:{line}: Unable to load bridge_cafile" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
