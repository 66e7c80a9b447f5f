"""Session takeover across the nodes of a cluster (`cluster <name>`, three
nodes over one redis-server, the fixtures of test_cluster.py; the move of
a persistent session over a Redis Cluster too): every node
is one broker for its clients, so a client id connecting to node B while
it is connected, or has a persistent session, on node A:

- closes the connection on A (MQTT-3.1.4-2), as a takeover within one
  broker does;
- with clean session 0 on both connections, gets session present 1 on B
  and the session itself: its subscriptions and the QoS 1/2 messages
  queued for it at A (those in flight resent), without subscribing again;
- with clean session 1, discards the old session everywhere (session
  present 0, nothing of it arrives, not on B and not back on A);
- ends online in the presence hash (`HGET mqtt <id>`).

Each test observes this from the clients only (paho's on_connect flags and
on_disconnect, the messages they receive, the publishers' PUBACKs) and from
Redis; every wait is bounded."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time

import pytest

from checker import History, payload
from support import LOOPBACK, Paho, RawClient, stays, subscribe_packet, wait_until
# Fixtures (`make_node`, `nodes`) and helpers of the cluster suite.
from test_cluster import make_node, nodes, shared, shared_db  # noqa: F401 - fixtures, used by name
from test_cluster import ACK, CLUSTER, DELIVERY, ON_BOTH, PROPAGATION, client, is_probe, publish_seq, record, wait_complete
from test_cluster import wait_routed

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is installed by scripts/install-deps.sh"),
    pytest.mark.redis_cluster_on_one_binary,
]

# The presence hash (the default `redis_key`).
KEY = "mqtt"
# The old connection is closed within this once the new one has its CONNACK.
TAKEOVER = 5.0
# How long a test watches for messages that must not come.
QUIET = 1.5
# Sessions of a killed node taken over at once: more than one pipeline of
# epochs (512). Set higher to time a large takeover by hand (README).
MANY_SESSIONS = int(os.environ.get("CULEX_E2E_MANY_SESSIONS", "600"))
# By then the node that took sessions over asked their epochs
# (TAKEOVER_WAIT, 10 s, after the takeover), with a second to answer.
EPOCHS_ASKED = 11.0


# ---------------------------------------------------------------- helpers


def persistent(clients, node, client_id: str, history: History | None = None) -> Paho:
    """A connected clean-session-0 paho client on `node` (recording into
    `history` from its very first message, if given)."""
    c = clients(Paho(node.port, client_id, clean_session=False))
    if history is not None:
        record(c, history)
    return c.connect()


def leave(c: Paho, node):
    """A clean DISCONNECT, waiting until `node` has handled it (so that what
    is published next is queued for the session, not sent live)."""
    c.disconnect()
    node.wait_log(rf"Client {c.client_id} disconnected\.", timeout=TAKEOVER)


def wait_closed(old: Paho, node_name: str, by: str):
    assert old.disconnected.wait(TAKEOVER), (
        f"{old.client_id}: the connection on {node_name} was not closed within {TAKEOVER}s "
        f"of the same client id connecting to {by} (MQTT-3.1.4-2 across nodes)")


def data(c: Paho) -> list:
    """What `c` received, probes aside: (topic, payload, qos)."""
    return [(m.topic, m.payload, m.qos) for m in list(c.received) if not is_probe(m.topic)]


def first_copies(c: Paho, topic: str) -> list[bytes]:
    """The payloads `c` received on `topic`, each at its first arrival (a
    QoS 1 resend is allowed)."""
    seen, out = set(), []
    for m in list(c.received):
        if m.topic == topic and m.payload not in seen:
            seen.add(m.payload)
            out.append(m.payload)
    return out


def assert_online(db, client_id: str):
    """Presence ends online for `client_id`: it is (and, as the old node's
    offline write lands, stays) `1` in the hash."""
    wait_until(lambda: db.hget(KEY, client_id) == "1", PROPAGATION,
               what=lambda: f"HGET {KEY} {client_id} == '1', have {db.hget(KEY, client_id)!r}")
    assert stays(lambda: db.hget(KEY, client_id) == "1", 1.0), \
        f"{client_id} went offline after the takeover: HGET {KEY} {client_id} = {db.hget(KEY, client_id)!r}"


# ---------------------------------------------------------------- tests


def test_a_connection_on_another_node_closes_the_old_one(nodes, clients, shared_db):
    a, b, c = nodes
    old = clients(Paho(a.port, "dev-1")).connect()
    wait_until(lambda: shared_db.hget(KEY, "dev-1") == "1", TAKEOVER, what="dev-1 online (on A)")

    new = clients(Paho(b.port, "dev-1")).connect()
    assert new.session_present is False
    wait_closed(old, "A", "B")
    # A closed it once (no reconnection: paho's automatic one is off).
    assert old.disconnects == 1

    # The connection on B is the live one: it subscribes, is routed to
    # from C, and publishes.
    assert new.subscribe("one/#", 1) == [1]
    pub = client(clients, c, "pub-1C")
    wait_routed([pub], [new], "one/probe")
    watcher = client(clients, a, "watch-1A")
    assert watcher.subscribe("one/#", 1) == [1]
    wait_routed([new], [watcher], "one/from-b/probe")
    assert stays(lambda: new.client.is_connected() and not new.disconnected.is_set(), 1.0), \
        "dev-1 on B was disconnected after taking over"
    assert old.received == []

    a.wait_log(r"Updating client dev-1 to offline", timeout=TAKEOVER)
    assert_online(shared_db, "dev-1")


@ON_BOTH
def test_a_persistent_session_moves_to_the_node_its_client_connects_to(nodes, clients, shared_db):
    a, b, c = nodes
    cid = "dev-2"
    pub_c = client(clients, c, "pub-2C")
    first = persistent(clients, a, cid)
    assert first.session_present is False
    assert first.subscribe("move/#", 1) == [1]
    wait_routed([pub_c], [first], "move/probe")
    leave(first, a)

    # Offline at A: its session queues them; every one acknowledged.
    queued = History()
    publish_seq(pub_c, queued, "move/x", 1, 50)
    assert len(queued.publishes) == 50

    queued.subscribed(cid, "move/#", 1)
    second = persistent(clients, b, cid, queued)
    assert second.session_present is True, \
        f"{cid}: CONNACK on B says session present 0: the session held at A did not move"
    report = wait_complete(queued)
    assert report.clean, report
    expected = [payload("pub-2C", seq) for seq in range(50)]
    assert first_copies(second, "move/x") == expected
    assert {qos for _, _, qos in data(second)} == {1}

    # The subscription moved: B is routed to from A, without a new SUBSCRIBE.
    pub_a = client(clients, a, "pub-2A")
    wait_routed([pub_a], [second], "move/y/probe")
    after = History()
    record(second, after)
    after.subscribed(cid, "move/#", 1)
    publish_seq(pub_a, after, "move/y", 1, 20)
    report = wait_complete(after)
    assert report.clean, report
    assert_online(shared_db, cid)


def offline_with_queued(clients, node, publisher_node, cid: str, prefix: str) -> tuple[Paho, History]:
    """`cid`'s persistent session on `node`, subscribed to `<prefix>/#` and
    offline, with 50 QoS 1 messages on `<prefix>/x` queued in it by a
    publisher on `publisher_node` (`pub-<cid>`), each acknowledged."""
    pub = client(clients, publisher_node, f"pub-{cid}")
    first = persistent(clients, node, cid)
    assert first.subscribe(f"{prefix}/#", 1) == [1]
    wait_routed([pub], [first], f"{prefix}/probe")
    leave(first, node)
    queued = History()
    publish_seq(pub, queued, f"{prefix}/x", 1, 50)
    assert len(queued.publishes) == 50
    return pub, queued


def assert_got_queued(c: Paho, queued: History, cid: str, prefix: str, why: str):
    """`c`, `cid`'s new connection, got its session (else `why`): Session
    Present 1 and the 50 messages `offline_with_queued` queued on
    `<prefix>/x`, in order, and nothing of `queued` lost, duplicated
    beyond QoS 1 or out of order."""
    assert c.session_present is True, f"{cid}: {why}"
    report = wait_complete(queued)
    assert report.clean, report
    assert first_copies(c, f"{prefix}/x") == [payload(f"pub-{cid}", seq) for seq in range(50)]


def assert_draws(c: Paho, pub: Paho, cid: str, prefix: str):
    """`cid`'s subscription to `<prefix>/#`, its session now on `c`'s node,
    draws what `pub` publishes from now on: 20 QoS 1 messages on
    `<prefix>/y`, none lost, duplicated or out of order."""
    after = History()
    record(c, after)
    after.subscribed(cid, f"{prefix}/#", 1)
    wait_routed([pub], [c], f"{prefix}/y/probe")
    publish_seq(pub, after, f"{prefix}/y", 1, 20)
    report = wait_complete(after)
    assert report.clean, report


@ON_BOTH
def test_a_node_without_a_store_file_gets_its_sessions_back_from_redis(nodes, clients, shared_db):
    """Node A, without `persistence`, holds dev-7's persistent session with
    50 acknowledged QoS 1 messages queued when it is killed, and is
    started again at once, as on a machine of its own (no file to read),
    before the others count it gone: it reads its store back from Redis.
    dev-7 gets session present 1, every message, and its subscription
    still draws messages from the other nodes."""
    a, b, _ = nodes
    cid = "dev-7"
    pub, queued = offline_with_queued(clients, a, b, cid, "kept")
    assert shared_db.hexists(f"{{{CLUSTER}:store:{a.broker_id}}}:sessions", cid)

    a.kill9()
    a.restart()
    a.wait_log(r"Read this node's sessions from Redis \(1 stored\)\.", timeout=PROPAGATION)
    queued.subscribed(cid, "kept/#", 1)
    second = persistent(clients, a, cid, queued)
    assert_got_queued(second, queued, cid, "kept", "A restarted without its session")

    assert_draws(second, pub, cid, "kept")


@ON_BOTH
def test_the_sessions_of_a_node_that_never_comes_back_are_taken_over(nodes, clients, shared_db):
    """Node A, without `persistence`, holds dev-8's persistent session with
    50 acknowledged QoS 1 messages queued when it is killed for good, most
    of them still in its inbox. The node that counts it gone first takes
    its sessions over from A's store and inbox in Redis: the session's
    subscription draws what is published after, and dev-8, connecting to
    B, gets session present 1 and every message, in order. A's store is
    then gone from Redis."""
    a, b, c = nodes
    cid = "dev-8"
    _, queued = offline_with_queued(clients, a, b, cid, "orphan")

    a.kill9()
    taken = rf"took over 1 persistent session\(s\) of node {re.escape(a.broker_id)}, which is gone \(0 of them"
    wait_until(lambda: re.search(taken, b.log() + c.log()), PROPAGATION,
               what=f"B or C taking over A's sessions; B's log:\n{b.log()[-3000:]}")
    # Routed from the node that took it: what is published now is queued.
    pub_c = client(clients, c, "pub-8C")
    publish_seq(pub_c, queued, "orphan/y", 1, 20)

    queued.subscribed(cid, "orphan/#", 1)
    second = persistent(clients, b, cid, queued)
    assert_got_queued(second, queued, cid, "orphan", "A's session was not taken over")
    assert first_copies(second, "orphan/y") == [payload("pub-8C", seq) for seq in range(20)]
    store = f"{{{CLUSTER}:store:{a.broker_id}}}:sessions"
    wait_until(lambda: not shared_db.exists(store), PROPAGATION, what=f"{store} removed")


@ON_BOTH
def test_every_one_of_many_sessions_of_a_killed_node_is_taken_over(nodes, clients, shared_db):
    """Node A holds MANY_SESSIONS persistent sessions, more than one
    pipeline of epochs, each subscribed to `many/#` at QoS 1, when it is
    killed. The node that takes them over raises every client id's epoch
    and keeps every session: a QoS 1 message published there afterwards
    is queued for each, and each client connecting there gets session
    present 1 and that message, half of them at once and half after the
    node asked the sessions' epochs (10 s after the takeover: a session
    handed another's epoch would be fenced off then). The time the
    takeover took is printed."""
    a, b, c = nodes
    ids = [f"many-{i}" for i in range(MANY_SESSIONS)]
    for cid in ids:
        raw = RawClient(a.port, cid, clean=False)
        assert raw.connect() == (0, 0), f"{cid}: CONNACK on A"
        raw.send(subscribe_packet("many/#", 1))
        assert raw.read_packet() == (0x90, b"\x00\x01\x01"), f"{cid}: SUBACK granting QoS 1"
        raw.disconnect()
    store = f"{{{CLUSTER}:store:{a.broker_id}}}"

    def stored() -> tuple[int, int]:
        return shared_db.hlen(f"{store}:sessions"), shared_db.hlen(f"{store}:subscriptions")

    wait_until(lambda: stored() == (MANY_SESSIONS, MANY_SESSIONS), PROPAGATION,
               what=lambda: f"A's {MANY_SESSIONS} sessions and subscriptions in its store, have {stored()}")
    epochs = {cid: int(shared_db.get(f"{CLUSTER}:epoch:{cid}")) for cid in ids}

    a.kill9()
    taken = rf"took over {MANY_SESSIONS} persistent session\(s\) of node {re.escape(a.broker_id)}, which is gone " \
            r"\(0 of them by a connection elsewhere since\), in (\d+) ms\."
    wait_until(lambda: re.search(taken, b.log() + c.log()), PROPAGATION + 30,
               what=f"B or C taking over A's sessions; B's log:\n{b.log()[-3000:]}")
    taken_at = time.monotonic()
    taker = b if re.search(taken, b.log()) else c
    print(f"{MANY_SESSIONS} sessions taken over in {re.search(taken, taker.log()).group(1)} ms")
    raised = [cid for cid in ids if int(shared_db.get(f"{CLUSTER}:epoch:{cid}")) != epochs[cid] + 1]
    assert not raised, f"{len(raised)} epochs not raised by one, e.g. {raised[:5]}"

    pub = client(clients, taker, "pub-many")
    pub.publish("many/after", b"after", qos=1, timeout=ACK)
    for n, cid in enumerate(ids):
        if n == len(ids) // 2:
            time.sleep(max(0.0, taken_at + EPOCHS_ASKED - time.monotonic()))
        raw = clients(RawClient(taker.port, cid, clean=False))
        assert raw.connect() == (1, 0), f"{cid}: session present 1 on the node that took it over"
        first, body = raw.read_packet()
        assert first & 0xF6 == 0x32 and body.startswith(b"\x00\x0amany/after"), (first, body)
        assert body.endswith(b"after"), body
        raw.disconnect()
    wait_until(lambda: not shared_db.exists(f"{store}:sessions"), PROPAGATION, what=f"{store}:sessions removed")


@ON_BOTH
def test_the_sessions_of_a_node_that_died_while_no_other_ran_are_taken_over(nodes, make_node, clients, shared_db):
    """As a cluster stopped whole, whose last node died and never comes
    back under its name (a new host name): B and C are stopped, then A,
    holding dev-15's persistent session with 50 acknowledged QoS 1
    messages queued, is killed with no node left to notice. D, a new node,
    finds A registered and not alive, a node it never heard alive: it
    takes A's sessions over, so dev-15, connecting to D, gets session
    present 1 and every message, in order, and A's registration goes."""
    a, b, c = nodes
    cid = "dev-15"
    _, queued = offline_with_queued(clients, a, b, cid, "alone")
    for other in (b, c):
        assert other.stop() == 0
    # A took B's and C's (empty) stores over: it is the only node left.
    gone = [rf"took over 0 persistent session\(s\) of node {re.escape(o.broker_id)}" for o in (b, c)]
    wait_until(lambda: all(re.search(g, a.log()) for g in gone), PROPAGATION, what="A taking B and C over")
    a.kill9()
    alive = f"{CLUSTER}:alive:{a.broker_id}"
    wait_until(lambda: not shared_db.exists(alive), PROPAGATION, what=f"{alive} lapsed")

    d = make_node("D")
    taken = rf"took over 1 persistent session\(s\) of node {re.escape(a.broker_id)}, which is gone"
    wait_until(lambda: re.search(taken, d.log()), PROPAGATION,
               what=f"D taking over the sessions of A, which it never heard alive; D's log:\n{d.log()[-3000:]}")
    queued.subscribed(cid, "alone/#", 1)
    second = persistent(clients, d, cid, queued)
    assert_got_queued(second, queued, cid, "alone", "A's session was not taken over")
    assert_draws(second, client(clients, d, "pub-15D"), cid, "alone")
    wait_until(lambda: not shared_db.hexists(f"{CLUSTER}:nodes", a.broker_id), PROPAGATION,
               what="A's registration removed")


@ON_BOTH
def test_a_client_reconnecting_at_once_gets_the_session_of_its_killed_node(nodes, clients, shared_db):
    """As a client whose node died reconnects, through a load balancer,
    to another node at once: node A, without `persistence`, holds dev-9's
    persistent session with 50 acknowledged QoS 1 messages queued when it
    is killed for good, and dev-9 connects to B right away, before A is
    counted gone. B's CONNACK waits for A's takeover, which hands the
    session to B's claim: session present 1, every message, in order, and
    the subscription draws what is published after."""
    a, b, c = nodes
    cid = "dev-9"
    _, queued = offline_with_queued(clients, a, b, cid, "sudden")

    a.kill9()
    queued.subscribed(cid, "sudden/#", 1)
    second = clients(Paho(b.port, cid, clean_session=False))
    record(second, queued)
    second.connect(timeout=PROPAGATION)
    assert_got_queued(second, queued, cid, "sudden", "the session on A was not waited for")
    taken = rf"took over 1 persistent session\(s\) of node {re.escape(a.broker_id)}, which is gone \(1 of them"
    wait_until(lambda: re.search(taken, b.log() + c.log()), PROPAGATION,
               what=f"B or C taking A's session over for dev-9's claim; B's log:\n{b.log()[-3000:]}")

    assert_draws(second, client(clients, c, "pub-9C"), cid, "sudden")


@ON_BOTH
def test_a_client_reconnecting_while_its_killed_node_starts_again_gets_its_session(nodes, clients, shared_db):
    """As a node that crashed and is started again at once (by its
    supervisor), while its client reconnects elsewhere: node A holds
    dev-13's persistent session with 50 acknowledged QoS 1 messages
    queued when it is killed; dev-13 connects to B, whose claim waits for
    A; A starts again from its store before the others count it gone. B's
    claim asks A's new run, which hands the session over: session present
    1, every message, in order, and the subscription draws what is
    published after. Nobody takes A over."""
    a, b, c = nodes
    cid = "dev-13"
    _, queued = offline_with_queued(clients, a, b, cid, "crashed")
    epoch_key = f"{CLUSTER}:epoch:{cid}"
    taken_on_a = int(shared_db.get(epoch_key))

    a.kill9()
    queued.subscribed(cid, "crashed/#", 1)
    second = clients(Paho(b.port, cid, clean_session=False))
    record(second, queued)
    second.begin_connect()
    # B's connection took the next epoch: its claim is on its way to A's
    # run that was killed.
    wait_until(lambda: int(shared_db.get(epoch_key)) > taken_on_a, ACK,
               what=f"B's connection of {cid} taking its epoch")
    a.restart()
    assert second.connected.wait(PROPAGATION), f"{cid}: no CONNACK from B within {PROPAGATION}s"
    assert_got_queued(second, queued, cid, "crashed",
                      f"B's claim did not ask A's new run; B's log:\n{b.log()[-3000:]}")
    assert "and 1 persistent sessions." in a.log(), a.log()[-3000:]

    assert_draws(second, client(clients, c, "pub-13C"), cid, "crashed")
    # A started again before the others counted it gone: its sessions were
    # its own, for nobody to take over.
    taken = f"persistent session(s) of node {a.broker_id}"
    assert taken not in b.log() + c.log(), f"A was taken over; B's log:\n{b.log()[-3000:]}"


def acl_for_node_a(shared, *rules: str):
    """Sets the rules of Redis user `culex-a` on every member of `shared`."""
    for member in getattr(shared, "members", [shared]):
        member.client().execute_command("ACL", "SETUSER", "culex-a", *rules)


@ON_BOTH
def test_a_node_killed_and_started_again_delivers_no_qos2_message_twice(make_node, shared, clients, shared_db):
    """Node A holds dev-17's persistent session, subscribed at QoS 2 and
    offline, while a publisher on B sends it 400 QoS 2 messages. A's Redis
    user may not `XDEL` meanwhile, so A stores every message it reads
    from its inbox and cannot remove the entries, as in the moment between
    the two that a crash may hit. A is killed in the middle of them and
    started again: it reads its whole inbox again, from where its store
    says it read it, so dev-17, back on A, gets every message exactly
    once."""
    acl_for_node_a(shared, "reset", "on", f">{shared.password}", "~*", "&*", "+@all")
    a = make_node("A", extra=("redis_user culex-a",))
    b = make_node("B")
    cid = "dev-17"
    first = persistent(clients, a, cid)
    assert first.subscribe("twice/#", 2) == [2]
    pub = client(clients, b, f"pub-{cid}")
    wait_routed([pub], [first], "twice/probe")
    leave(first, a)
    history = History()
    history.subscribed(cid, "twice/#", 2)
    acl_for_node_a(shared, "-xdel")
    publishing = threading.Thread(target=publish_seq, args=(pub, history, "twice/x", 2, 400), kwargs={"window": 20})
    publishing.start()
    wait_until(lambda: len(history.publishes) >= 200, ACK, what="200 messages acknowledged")
    a.kill9()
    publishing.join(timeout=DELIVERY)
    assert len(history.publishes) == 400, f"{len(history.publishes)} of 400 acknowledged"
    inbox = f"{CLUSTER}:inbox:{a.broker_id}"
    assert shared_db.xlen(inbox) > 0, "A removed what it read: the test shows nothing"
    acl_for_node_a(shared, "+xdel")
    a.restart()

    second = persistent(clients, a, cid, history)
    assert second.session_present is True, f"{cid}: A restarted without its session"
    report = wait_complete(history)
    assert report.clean, report
    # The entries go once what they hold is stored again.
    wait_until(lambda: shared_db.xlen(inbox) == 0, PROPAGATION, what=f"{inbox} emptied")


@ON_BOTH
def test_a_rolling_restart_keeps_the_sessions_of_the_node_restarted(nodes, clients, shared_db):
    """As in a rolling restart: node A, holding dev-11's persistent session
    with 50 acknowledged QoS 1 messages queued, is stopped (SIGTERM), and
    dev-11 connects to B at once. A leaves its store in Redis for the
    others: B's CONNACK waits for A's takeover and says session present 1,
    with every message. A, started again, has the session no more; it
    follows dev-11 there."""
    a, b, c = nodes
    cid = "dev-11"
    pub, queued = offline_with_queued(clients, a, b, cid, "rolling")

    assert a.stop() == 0
    assert "its persistent sessions are for the others to take over" in a.log()
    queued.subscribed(cid, "rolling/#", 1)
    second = clients(Paho(b.port, cid, clean_session=False))
    record(second, queued)
    second.connect(timeout=PROPAGATION)
    assert_got_queued(second, queued, cid, "rolling", "the session of the stopped node was not taken over")
    taken = rf"took over 1 persistent session\(s\) of node {re.escape(a.broker_id)}, which is gone"
    wait_until(lambda: re.search(taken, b.log() + c.log()), PROPAGATION, what="B or C taking A's session over")
    leave(second, b)

    a.restart()
    a.wait_log(r"Restored \d+ retained messages and 0 persistent sessions\.", timeout=PROPAGATION)
    publish_seq(pub, History(), "rolling/y", 1, 5)
    third = persistent(clients, a, cid)
    assert third.session_present is True, f"{cid}: back on A, B's session did not follow"
    expected = [payload(f"pub-{cid}", seq) for seq in range(5)]
    wait_until(lambda: first_copies(third, "rolling/y") == expected, ACK,
               what=lambda: f"B's queued messages at A: {first_copies(third, 'rolling/y')}")


def test_a_clean_connection_elsewhere_discards_the_old_session(nodes, clients, shared_db):
    a, b, c = nodes
    cid = "dev-3"
    pub_c = client(clients, c, "pub-3C")
    first = persistent(clients, a, cid)
    assert first.subscribe("gone/#", 1) == [1]
    wait_routed([pub_c], [first], "gone/probe")
    leave(first, a)
    publish_seq(pub_c, History(), "gone/x", 1, 20)

    second = clients(Paho(b.port, cid, clean_session=True)).connect()
    assert second.session_present is False
    # Neither the queued messages nor new ones (the subscription went with
    # the session) reach it.
    publish_seq(pub_c, History(), "gone/x", 1, 5, first=20)
    assert stays(lambda: data(second) == [], QUIET), \
        f"{cid} (clean session on B) got messages of the discarded session: {data(second)[:5]}"
    assert_online(shared_db, cid)
    leave(second, b)

    # Gone everywhere: back on A, no session there either.
    third = persistent(clients, a, cid)
    assert third.session_present is False, \
        f"{cid}: back on A, CONNACK says session present 1: the clean connection on B did not discard it"
    assert stays(lambda: data(third) == [], QUIET), \
        f"{cid} got messages of the discarded session back on A: {data(third)[:5]}"


def test_takeover_back_and_forth_between_bursts(nodes, clients, shared_db):
    """The client moves while the messages of the burst before are in flight
    or queued: they follow its session, none lost, in order; and the next
    burst, published as soon as the CONNACK came, reaches it where it is
    (the CONNACK waited until every node knew the moved subscription)."""
    a, b, c = nodes
    cid = "flop"
    moves, burst = 10, 40
    history = History()
    pub = client(clients, c, "pub-5C")
    conns = [persistent(clients, a, cid, history)]
    assert conns[0].subscribe("flop/#", 1) == [1]
    wait_routed([pub], conns, "flop/probe")
    history.subscribed(cid, "flop/#", 1)
    for n in range(1, moves + 1):
        publish_seq(pub, history, "flop/data", 1, burst, first=(n - 1) * burst)
        node, old_name = (b, "A") if n % 2 else (a, "B")
        conns.append(persistent(clients, node, cid, history))
        assert conns[-1].session_present is True, f"move {n} to {node.name}: session present 0"
        wait_closed(conns[-2], old_name, node.name)
    report = wait_complete(history)
    assert not report.lost, f"acknowledged messages lost across the moves: {report}"
    assert not report.duplicates and not report.out_of_order, report
    # The probes are the only payloads the checker cannot read.
    assert all(b":probe" in entry[-1] for entry in report.garbled), report.garbled
    assert sum(1 for c in conns if c.client.is_connected()) == 1
    assert_online(shared_db, cid)


# Messages on their way to the old node as a session moves reach the
# session once, through the old node or the new one (each node's cut:
# docs/cluster.md, "A session moving loses nothing on its way"). Without
# the cuts, a move landing while a message is on its way loses it.
@ON_BOTH
def test_takeover_back_and_forth_under_load(nodes, clients, shared_db):
    a, b, c = nodes
    cid = "flip"
    moves, messages, window, pace = 12, 800, 10, 0.05  # ~200 messages a second
    history = History()
    pub = client(clients, c, "pub-4C")
    conns = [persistent(clients, a, cid, history)]
    assert conns[0].subscribe("flip/#", 1) == [1]
    wait_routed([pub], conns, "flip/probe")
    history.subscribed(cid, "flip/#", 1)

    stop, failure = threading.Event(), []

    def publish():
        try:
            for start in range(0, messages, window):
                if stop.is_set():
                    return
                publish_seq(pub, history, "flip/data", 1, window, first=start)
                time.sleep(pace)
        except BaseException as e:  # noqa: BLE001 - reported by the test thread
            failure.append(e)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        # The moves spread over the ~4 s of publishing (a pace, not a wait).
        for n in range(1, moves + 1):
            time.sleep(0.3)
            node, old_name = (b, "A") if n % 2 else (a, "B")
            conns.append(persistent(clients, node, cid, history))
            assert conns[-1].session_present is True, \
                f"move {n} to {node.name}: CONNACK says session present 0 (the session did not follow)"
            wait_closed(conns[-2], old_name, node.name)
    except BaseException:
        stop.set()
        publisher.join(timeout=2 * ACK)
        raise
    # Each window is acknowledged within ACK, or the publisher fails.
    publisher.join(timeout=messages / window * (ACK + pace))
    assert not publisher.is_alive(), "the publisher did not finish"
    assert not failure, f"publisher: {failure[0]}"
    assert len(history.publishes) == messages

    report = wait_complete(history)
    assert not report.lost, f"acknowledged messages lost across the moves: {report}"
    assert report.clean, report

    last = conns[-1]
    assert all(c.disconnected.is_set() for c in conns[:-1]), \
        [n for n, c in enumerate(conns[:-1]) if not c.disconnected.is_set()]
    assert stays(lambda: last.client.is_connected() and not last.disconnected.is_set(), 1.0), \
        f"the last connection of {cid} (on {b.name if moves % 2 else a.name}) was closed"
    assert sum(1 for c in conns if c.client.is_connected()) == 1
    assert_online(shared_db, cid)


# A takeover storm: one client id connecting to the three nodes at the
# same moment, round after round. Each connection takes an epoch; of the
# claims under way at once the later epoch wins, and the claims that give
# way pass the session on (docs/cluster.md, "Takeover").
@ON_BOTH
def test_a_takeover_storm_leaves_one_connection_with_the_session(nodes, clients, shared_db):
    a, b, c = nodes
    cid = "storm"
    first = persistent(clients, a, cid)
    assert first.subscribe("storm/#", 1) == [1]
    leave(first, a)
    pub = client(clients, c, "pub-storm")
    conns: list[Paho] = []

    def open_now() -> list[Paho]:
        return [c for c in conns if c.client.is_connected()]

    rounds, during = 5, 4
    for round_ in range(rounds):
        batch = [clients(Paho(node.port, cid, clean_session=False)) for node in nodes]
        # Each CONNECT is on its way before any CONNACK can come.
        for p in batch:
            assert p.client.connect(LOOPBACK, p.port, p.keepalive) == 0
        for p in batch:
            p.client.loop_start()
        conns.extend(batch)
        # Messages for the session while it moves, each acknowledged.
        publish_seq(pub, History(), "storm/during", 1, during, first=round_ * during)
        wait_until(lambda: len(open_now()) == 1 and all(p.connected.is_set() or p.disconnected.is_set()
                                                        for p in batch),
                   ACK, what=lambda: f"round {round_}: one connection left, have {len(open_now())}")
        assert stays(lambda: len(open_now()) == 1, 0.5), f"round {round_}: {len(open_now())} connections open"
        winner = open_now()[0]
        assert winner.session_present is True, f"round {round_}: the session did not follow the winner"

    assert_online(shared_db, cid)
    # The session is whole: its subscription holds where the winner is.
    winner = open_now()[0]
    publish_seq(pub, History(), "storm/x", 1, 10)
    expected = [payload("pub-storm", seq) for seq in range(10)]
    wait_until(lambda: first_copies(winner, "storm/x") == expected, ACK,
               what=lambda: f"the winner's messages: {first_copies(winner, 'storm/x')}")
    # Each message acknowledged during the storm reached one of the
    # client's connections: live, or queued for the session and sent to
    # the connection that took it next.
    sent = {payload("pub-storm", seq) for seq in range(rounds * during)}

    def missing() -> set[bytes]:
        return sent - {m for c in conns for m in first_copies(c, "storm/during")}

    wait_until(lambda: not missing(), ACK, what=lambda: f"messages of the storm never delivered: {sorted(missing())}")


# Each connection takes the next ownership epoch of its client id in
# Redis (`<cluster>:epoch:<id>`), and the session carries it
# (docs/cluster.md, "Ownership epochs").
@ON_BOTH
def test_a_node_restarted_from_its_store_drops_the_sessions_its_clients_took_elsewhere(
        make_node, clients, shared_db, tmp_path):
    """Node A, with a store, holds dev-6's persistent session when it is
    killed; B, counting A gone, takes the session over (from A's store in
    Redis) and dev-6 connects to B meanwhile. A, restarted, restores the
    session from its file, finds its epoch below the id's epoch in Redis
    and discards it, from memory and from its store: the client's session
    is B's, which follows the client back to A."""
    store = tmp_path / "store-A"
    store.mkdir()
    a = make_node("A", extra=("persistence true", f"persistence_location {store}/"))
    b = make_node("B")
    cid = "dev-6"
    epoch = f"{CLUSTER}:epoch:{cid}"
    first = persistent(clients, a, cid)
    assert first.subscribe("fence/#", 1) == [1]
    leave(first, a)
    # A counter starts at a node's clock, in milliseconds.
    wait_until(lambda: shared_db.get(epoch) is not None, PROPAGATION, what=f"{epoch} taken by the connection on A")
    taken = int(shared_db.get(epoch))
    assert taken > time.time() * 1000 - 60_000, taken
    time.sleep(0.5)  # A's store commits the session with its epoch
    a.kill9()

    b.wait_log(r"node \S+ is gone\.", timeout=PROPAGATION)
    # B takes A's sessions over from A's store in Redis, with the next epoch.
    b.wait_log(r"took over 1 persistent session\(s\) of node \S+, which is gone", timeout=PROPAGATION)
    second = persistent(clients, b, cid)
    assert second.session_present is True, "A's session was not taken over by B"
    assert second.subscribe("fence/#", 1) == [1]
    leave(second, b)
    assert int(shared_db.get(epoch)) == taken + 2

    a.restart()
    a.wait_log(rf"Client {cid}'s session was taken on another node since; discarding it here\.",
               timeout=PROPAGATION)
    assert a.stop() == 0
    a.start()
    a.wait_log(r"Restored \d+ retained messages and 0 persistent sessions\.", timeout=PROPAGATION)
    # A claim on A made before A read the registry waits for it, and asks B.

    pub = client(clients, b, "pub-6B")
    publish_seq(pub, History(), "fence/x", 1, 5)
    third = persistent(clients, a, cid)
    assert third.session_present is True, f"{cid}: back on A, B's session did not follow"
    expected = [payload("pub-6B", seq) for seq in range(5)]
    wait_until(lambda: first_copies(third, "fence/x") == expected, ACK,
               what=lambda: f"B's queued messages at A: {first_copies(third, 'fence/x')}")
    assert int(shared_db.get(epoch)) == taken + 3
