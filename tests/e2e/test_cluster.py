"""Several Culex processes (nodes) as one broker over one redis-server
(`cluster <name>`): messages cross nodes at every QoS (checked by the
history checker, checker.py), retained messages and their deletions reach
every node (one started later too), an UNSUBSCRIBE on one node stops
deliveries from the others, and with one node killed the others go on; the
node restarted is part of the broker again.

A node paused past its liveness (SIGSTOP) and a Redis restart: the nodes
join again and deliver both ways. Takeover across nodes is in
test_cluster_takeover.py.

The tests marked `ON_BOTH` run a second time with the nodes sharing a
Redis Cluster of three masters (`redis_cluster true`) rather than one
redis-server, with the first binary only. One test kills a master of a
Redis Cluster with replicas, with both binaries: the nodes go on once
its replica takes over."""

from __future__ import annotations

import itertools
import re
import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import paho.mqtt.client as mqtt
import pytest

from checker import History, Report, check, payload
from support import Paho, RedisCluster, stays, wait_until

pytestmark = [
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is installed by scripts/install-deps.sh"),
    pytest.mark.redis_cluster_on_one_binary,
]

CLUSTER = "e2e-cluster"
# Nodes see each other within about a second; a subscription, a retained
# message or a node's arrival is known everywhere well within this.
PROPAGATION = 10.0
# Every acknowledged message reaches its subscribers within this.
DELIVERY = 30.0
# A window of publishes is acknowledged within this (also while a killed
# node is not yet seen gone, about 4 s).
ACK = 10.0

_ids = itertools.count()

# Runs a test on one redis-server and on a Redis Cluster of three
# masters, the latter with the first binary only (conftest.py): what a
# Redis Cluster changes is in the link, which both binaries share. The
# failover test runs on a Redis Cluster with both.
ON_BOTH = pytest.mark.parametrize("shared", ["server", "redis-cluster"], indirect=True)


# ---------------------------------------------------------------- helpers


@pytest.fixture
def shared(request, redis_server):
    """The Redis the nodes share, emptied: the module's redis-server, or
    (parameter "redis-cluster") the module's Redis Cluster."""
    kind = getattr(request, "param", "server")
    if kind == "redis-cluster":
        redis = request.getfixturevalue("redis_cluster")
    elif kind == "redis-cluster-with-replicas":
        redis = request.getfixturevalue("redis_cluster_with_replicas")
    else:
        redis = redis_server
    redis.flushall()
    return redis


@pytest.fixture
def shared_db(shared):
    """A client on the shared Redis."""
    client = shared.client()
    yield client
    client.close()


@pytest.fixture
def make_node(make_broker, shared):
    """Factory: a node of the cluster on the shared Redis, with `extra`
    lines of configuration."""
    def make(name: str, extra: tuple[str, ...] = ()):
        extra = [f"cluster {CLUSTER}"] + (["redis_cluster true"] if isinstance(shared, RedisCluster) else []) \
            + list(extra)
        return make_broker(redis=shared, name=name, extra=extra)

    return make


@pytest.fixture
def nodes(make_node):
    """Nodes A, B and C, one broker."""
    return [make_node(name) for name in "ABC"]


def is_probe(topic: str) -> bool:
    return topic.rsplit("/", 1)[-1] == "probe"


def record(c: Paho, history: History):
    """From now on every message `c` receives (probes aside) is recorded in
    `history` too (paho calls this on its network thread)."""
    def on_message(cl, userdata, msg):
        if not is_probe(msg.topic):
            history.delivered(c.client_id, msg.topic, msg.qos, msg.payload)
        c._on_message(cl, userdata, msg)  # Paho's own: its queue and `received`

    c.client.on_message = on_message


def client(clients, node, client_id: str, history: History | None = None) -> Paho:
    """A connected clean-session paho client on `node`, recording what it
    receives into `history` if given."""
    c = clients(Paho(node.port, client_id))
    if history is not None:
        record(c, history)
    return c.connect()


def subscriber(clients, node, client_id: str, history: History, topic_filter: str, qos: int = 2,
               whole_run: bool = True) -> Paho:
    """A client on `node` subscribed to `topic_filter`, recording into `history`
    (as a whole-run subscriber unless told otherwise)."""
    sub = client(clients, node, client_id, history)
    assert sub.subscribe(topic_filter, qos) == [qos]
    if whole_run:
        history.subscribed(client_id, topic_filter, qos)
    return sub


def unsubscribe(c: Paho, topic_filter: str, timeout: float = 5.0):
    """UNSUBSCRIBE, waiting for the UNSUBACK."""
    acked = set()
    c.client.on_unsubscribe = lambda cl, userdata, mid, *rest: acked.add(mid)
    result, mid = c.client.unsubscribe(topic_filter)
    assert result == mqtt.MQTT_ERR_SUCCESS
    wait_until(lambda: mid in acked, timeout, what=f"{c.client_id}: UNSUBACK for {topic_filter}")


def wait_routed(publishers, subscribers, topic: str, timeout: float = PROPAGATION):
    """Publishes probes (QoS 1) on `topic` from every publisher, about five
    a second, until every subscriber has received one from each: then each
    publisher's node knows each subscription."""
    rounds = itertools.count()

    def seen(sub: Paho, pub: Paho) -> bool:
        prefix = f"{pub.client_id}:probe".encode()
        return any(m.topic == topic and m.payload.startswith(prefix) for m in list(sub.received))

    def routed():
        n = next(rounds)
        missing = [(p.client_id, s.client_id) for p in publishers for s in subscribers if not seen(s, p)]
        for pub in {p for p, _ in missing}:
            next(x for x in publishers if x.client_id == pub).publish(topic, f"{pub}:probe{n}", qos=1)
        return not missing

    wait_until(routed, timeout, interval=0.2,
               what=lambda: f"probes on {topic} from {[p.client_id for p in publishers]} "
                            f"at {[s.client_id for s in subscribers]}")


def publish_seq(pub: Paho, history: History, topic: str, qos: int, count: int, first: int = 0,
                window: int = 50, pace: float = 0.0):
    """Publishes seq first..first+count-1 on `topic`, `window` in flight at a
    time (`pace` seconds between windows), and records each acknowledged;
    each window must be acknowledged within ACK seconds."""
    for start in range(first, first + count, window):
        infos = []
        for seq in range(start, min(start + window, first + count)):
            info = pub.client.publish(topic, payload(pub.client_id, seq), qos)
            assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"{pub.client_id}: publish {seq}: rc {info.rc}"
            infos.append((seq, info))
        deadline = time.monotonic() + ACK
        for seq, info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            assert info.is_published(), f"{pub.client_id}: {topic} seq {seq} (QoS {qos}) not acknowledged in {ACK}s"
            history.published(pub.client_id, topic, qos, seq)
        if pace:
            time.sleep(pace)


def wait_complete(history: History, timeout: float = DELIVERY) -> Report:
    """Waits until every whole-run subscriber has every message due; returns
    the checker's report."""
    wait_until(lambda: check(history).complete, timeout, interval=0.1,
               what=lambda: f"every message delivered: {check(history)}")
    return check(history)


def retained_at(node, topic: str) -> list[bytes]:
    """The retained messages a new subscriber on `node` gets for `topic`:
    it subscribes to `topic` and to a marker of its own, then publishes the
    marker; whatever was retained comes before the marker."""
    client_id = f"look-{next(_ids)}"
    marker = f"marker/{client_id}"
    with Paho(node.port, client_id) as c:
        c.connect()
        c.subscribe([(topic, 1), (marker, 1)])
        c.publish(marker, b"end", qos=1)
        got = c.collect_until(marker, timeout=5)
    return [m.payload for m in got if m.topic != marker and m.retain]


# ---------------------------------------------------------------- tests


@ON_BOTH
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_crosses_nodes_at_every_qos(nodes, clients, qos):
    a, b, c = nodes
    history = History()
    subs = [subscriber(clients, node, f"sub-{node.name}", history, "q/#") for node in (b, c)]
    pub = client(clients, a, "pub-A")
    wait_routed([pub], subs, "q/probe")
    publish_seq(pub, history, "q/data", qos, 300)
    report = wait_complete(history)
    assert report.clean, report
    assert {d.qos for d in history.deliveries} == {qos}


@ON_BOTH
def test_retained_reaches_every_node(nodes, clients):
    a, b, c = nodes
    client(clients, a, "pub-A").publish("r/t", b"v1", qos=1, retain=True)
    wait_until(lambda: all(retained_at(n, "r/t") == [b"v1"] for n in (c, b, a)), PROPAGATION,
               what=lambda: f"v1 retained everywhere: {[retained_at(n, 'r/t') for n in nodes]}")
    # A later change, made on another node, wins everywhere.
    client(clients, c, "pub-C").publish("r/t", b"v2", qos=1, retain=True)
    wait_until(lambda: all(retained_at(n, "r/t") == [b"v2"] for n in nodes), PROPAGATION,
               what=lambda: f"v2 retained everywhere: {[retained_at(n, 'r/t') for n in nodes]}")
    # An empty retained message on B deletes it everywhere.
    client(clients, b, "pub-B").publish("r/t", b"", qos=1, retain=True)
    wait_until(lambda: all(retained_at(n, "r/t") == [] for n in nodes), PROPAGATION,
               what=lambda: f"no retained message anywhere: {[retained_at(n, 'r/t') for n in nodes]}")


def test_a_node_started_later_gets_the_retained_messages(nodes, make_node, clients):
    a, b, _ = nodes
    pub = client(clients, a, "pub-A")
    pub.publish("late/t", b"kept", qos=1, retain=True)
    wait_until(lambda: retained_at(b, "late/t") == [b"kept"], PROPAGATION, what="the retained message on B")
    d = make_node("D")
    wait_until(lambda: retained_at(d, "late/t") == [b"kept"], PROPAGATION,
               what=lambda: f"the retained message on D, which has {retained_at(d, 'late/t')}")
    # And D's subscriptions are known to the others.
    sub = client(clients, d, "sub-D")
    sub.subscribe("late/#", 1)
    wait_routed([pub], [sub], "late/probe")


def test_unsubscribe_stops_deliveries_from_other_nodes(nodes, clients):
    a, b, c = nodes
    before = History()
    pubs = [client(clients, node, f"pub-{node.name}") for node in (a, c)]
    keepers = [subscriber(clients, node, f"keep-{node.name}", before, "u/#", 1) for node in (a, c)]
    leaver = subscriber(clients, b, "leave-B", before, "u/#", 1)
    wait_routed(pubs, keepers + [leaver], "u/probe")
    for pub in pubs:
        publish_seq(pub, before, "u/data", 1, 50)
    assert wait_complete(before).clean, check(before)

    unsubscribe(leaver, "u/#")
    seen = len(leaver.received)
    after = History()
    for keeper in keepers:
        record(keeper, after)
        after.subscribed(keeper.client_id, "u/#", 1)
    for pub in pubs:
        publish_seq(pub, after, "u/data", 1, 50, first=50)
    assert wait_complete(after).clean, check(after)
    # The keepers have all of it: had B been sent any, the leaver would have it by now.
    assert [(m.topic, m.payload) for m in leaver.received[seen:] if not is_probe(m.topic)] == []

    # Subscribing again, B is routed to again.
    leaver.subscribe("u/#", 1)
    wait_routed(pubs, [leaver], "u/again/probe")


@ON_BOTH
def test_the_others_go_on_when_a_node_is_killed(nodes, clients):
    a, b, c = nodes
    history = History()
    sub_b = subscriber(clients, b, "sub-B", history, "k/#", 1)
    sub_c = subscriber(clients, c, "sub-C", history, "k/#", 1, whole_run=False)
    pub = client(clients, a, "pub-A")
    wait_routed([pub], [sub_b, sub_c], "k/probe")

    c.kill9()
    # 20 windows of 10 over about 6 s: before and after the others see C gone.
    publish_seq(pub, history, "k/data", 1, 200, window=10, pace=0.3)
    report = wait_complete(history)
    assert report.clean, report

    c.restart()
    again = History()
    record(sub_b, again)
    again.subscribed("sub-B", "k/#", 1)
    sub_c2 = subscriber(clients, c, "sub-C2", again, "k/#", 1)
    pub_c = client(clients, c, "pub-C")
    wait_routed([pub, pub_c], [sub_b, sub_c2], "k/again/probe")
    publish_seq(pub, again, "k/data", 1, 100, first=200)
    publish_seq(pub_c, again, "k/data", 1, 100)
    report = wait_complete(again)
    assert report.clean, report


def test_load_spread_over_nodes(nodes, clients):
    history = History()
    subs = [subscriber(clients, nodes[i % 3], f"sub{i}-{nodes[i % 3].name}", history, "load/#") for i in range(6)]
    pubs = [client(clients, nodes[i % 3], f"pub{i}-{nodes[i % 3].name}") for i in range(6)]
    wait_routed(pubs, subs, "load/probe")
    with ThreadPoolExecutor(len(pubs)) as pool:
        runs = [pool.submit(publish_seq, pub, history, f"load/{pub.client_id}", 1 + i % 2, 300)
                for i, pub in enumerate(pubs)]
        for run in runs:
            run.result(timeout=DELIVERY * 2)
    report = wait_complete(history, timeout=DELIVERY * 2)
    assert report.clean, report
    assert report.delivered >= 6 * 6 * 300, report


def spread(clients, nodes):
    """A subscriber to w/# on B and one on C, and a publisher on A whose
    node knows both subscriptions."""
    a, b, c = nodes
    history = History()
    sub_b = subscriber(clients, b, "sub-B", history, "w/#", 1)
    sub_c = subscriber(clients, c, "sub-C", history, "w/#", 1)
    pub = client(clients, a, "pub-A")
    wait_routed([pub], [sub_b, sub_c], "w/probe")
    return sub_b, sub_c, pub


def both_ways(clients, a, c, sub_b, sub_c, topic: str):
    """Publishers on A and C; B's and C's subscribers get all of both, in
    order, once the subscriptions are known again."""
    history = History()
    for sub in (sub_b, sub_c):
        record(sub, history)
        history.subscribed(sub.client_id, "w/#", 1)
    pub_a, pub_c = client(clients, a, f"pub-A-{topic}"), client(clients, c, f"pub-C-{topic}")
    wait_routed([pub_a, pub_c], [sub_b, sub_c], f"w/{topic}/probe")
    publish_seq(pub_a, history, f"w/{topic}", 1, 100)
    publish_seq(pub_c, history, f"w/{topic}", 1, 100)
    report = wait_complete(history)
    assert report.clean, report


@ON_BOTH
def test_a_node_paused_past_its_liveness_joins_again(nodes, clients):
    """SIGSTOP of C past its liveness: the others count it gone and publish
    the wills of its clients; resumed, C does not go on serving them as if
    nothing happened: it closes their connections without publishing the
    wills again, starts a new run, and serves the clients that connect
    again. Its persistent sessions are taken over by the node that counted
    it gone first; resumed, C discards its own copies (fenced off by their
    ownership epochs)."""
    a, b, c = nodes
    history = History()
    sub_b = subscriber(clients, b, "sub-B", history, "w/#", 1)
    watcher = client(clients, a, "watch-A")
    assert watcher.subscribe("wills/#", 1) == [1]
    sub_c = clients(Paho(c.port, "sub-C", will=("wills/sub-C", b"gone", 1, False))).connect()
    assert sub_c.subscribe("w/#", 1) == [1]
    pub = client(clients, a, "pub-A")
    wait_routed([pub], [sub_b, sub_c], "w/probe")
    moving = clients(Paho(c.port, "dev-p", clean_session=False)).connect()
    assert moving.subscribe("p/#", 1) == [1]
    moving.disconnect()
    c.wait_log(r"Client dev-p disconnected\.", timeout=ACK)
    time.sleep(1.5)  # a heartbeat writes the will to Redis (one a second)
    c.send_signal(signal.SIGSTOP)
    try:
        a.wait_log(r"node \S+:%d is gone" % c.port, timeout=ACK)
        b.wait_log(r"node \S+:%d is gone" % c.port, timeout=ACK)
        # The node that counted C gone first takes its sessions over from
        # C's store in Redis.
        taken = r"took over 1 persistent session\(s\) of node \S+:%d, which is gone" % c.port
        wait_until(lambda: re.search(taken, a.log() + b.log()), ACK, what="A or B taking over C's sessions")
        assert clients(Paho(b.port, "dev-p", clean_session=False)).connect().session_present is True
        # The others go on while it is stopped.
        publish_seq(pub, history, "w/data", 1, 50)
        report = wait_complete(history)
        assert report.clean, report
        wait_until(lambda: wills_seen([watcher], "wills/sub-C") == [1], PROPAGATION,
                   what="sub-C's will, published by the node that saw C gone")
    finally:
        c.send_signal(signal.SIGCONT)
    # It finds its liveness lapsed and its run reaped: its clients go, and
    # a new run joins, which the others take for a new node.
    c.wait_log(r"lapsed; joining again", timeout=ACK)
    c.wait_log(r"counted gone by the others; closing its \d+ client connections", timeout=ACK)
    assert sub_c.disconnected.wait(ACK), "sub-C still connected to C after C was counted gone"
    c.wait_log(r"Client dev-p's session was taken on another node since; discarding it here\.", timeout=ACK)
    a.wait_log(r"node \S+:%d joined" % c.port, timeout=ACK, count=2)
    sub_c2 = subscriber(clients, c, "sub-C2", History(), "w/#", 1, whole_run=False)
    both_ways(clients, a, c, sub_b, sub_c2, "after-pause")
    # The will went once: C did not publish it again as it closed sub-C.
    assert wills_seen([watcher], "wills/sub-C") == [1]


def test_qos0_for_other_nodes_is_dropped_while_redis_is_down(nodes, clients, shared):
    """With Redis down, a node keeps no QoS 0 message for the others
    waiting (they would pile up for as long as Redis is away): it drops
    them, says so, and says how many once Redis answers again."""
    a, b, _ = nodes
    sub = subscriber(clients, b, "sub-z", History(), "z/#", 0, whole_run=False)
    pub = client(clients, a, "pub-z")
    wait_routed([pub], [sub], "z/probe")
    shared.stop()
    try:
        sent = 0
        for _ in range(50):  # bounded: 50 bursts of 10, about 5 s
            for _ in range(10):
                pub.publish("z/data", f"m{sent}", qos=0)
                sent += 1
            if "dropped until Redis answers" in a.log():
                break
            time.sleep(0.1)
        a.wait_log(r"QoS 0 messages for other nodes are dropped until Redis answers", timeout=ACK)
        for n in range(100):
            pub.publish("z/data", f"late{n}", qos=0)
    finally:
        shared.start()
    (said,) = a.wait_log(r"(\d+) QoS 0 messages for other nodes were dropped while Redis was down", timeout=ACK)
    assert int(said.group(1)) >= 100, said.group(0)
    wait_routed([pub], [sub], "z/again/probe")
    late = [m for m in list(sub.received) if m.payload.startswith(b"late")]
    assert late == [], f"{len(late)} QoS 0 messages published while Redis was down reached B"


@ON_BOTH
def test_the_nodes_join_again_after_a_redis_restart(nodes, clients, shared):
    a, b, c = nodes
    sub_b, sub_c, pub = spread(clients, nodes)
    keeper = client(clients, b, "keep-B")
    assert keeper.subscribe("k/#", 1) == [1]
    wait_routed([pub], [keeper], "k/probe")
    pub.publish("k/kept", b"kept", qos=1, retain=True)

    def kept() -> int:
        return sum(1 for m in list(keeper.received) if m.topic == "k/kept")

    wait_until(lambda: kept() == 1, PROPAGATION, what="the retained message at B's subscriber")
    durable = clients(Paho(b.port, "durable-B", clean_session=False)).connect()
    assert durable.subscribe("k/#", 1) == [1]
    wait_routed([pub], [durable], "k/probe")
    # Redis comes back empty: no registration, no liveness, no inbox, no
    # copy of B's store.
    shared.stop()
    shared.start()
    for node in nodes:
        node.wait_log(r"lapsed; joining again", timeout=ACK)
    both_ways(clients, a, c, sub_b, sub_c, "after-restart")
    # B's next commit finds its store gone from Redis and writes it whole.
    pub.publish("k/after", b"after", qos=1)
    b.wait_log(r"Redis does not hold this node's store as this node wrote it", timeout=ACK)
    # Its subscription's row, which the commit itself did not touch: the
    # field is the client id after its length, then the filter.
    subscriptions = f"{{{CLUSTER}:store:{b.broker_id}}}:subscriptions"
    row = (len("durable-B").to_bytes(2, "big") + b"durable-Bk/#").decode()
    db = shared.client()
    try:
        wait_until(lambda: db.hexists(subscriptions, row), ACK, what=f"durable-B's subscription in {subscriptions}")
    finally:
        db.close()
    # Joining again, the nodes hand each other their retained messages for
    # their stores, not for their subscribers.
    assert kept() == 1, "a retained message reached a subscriber again as the nodes joined again"
    assert retained_at(c, "k/kept") == [b"kept"]


def test_what_a_node_publishes_while_the_nodes_join_again_arrives(nodes, clients, shared):
    """After a Redis restart each node starts a new run and takes the
    others for new nodes, whose routes come again one pass through Redis
    later: meanwhile it sends them every message, so a QoS 1 message
    acknowledged on A at any moment after the restart reaches the
    subscribers on B and C. Before, A acknowledged what it published in
    that moment and sent it nowhere."""
    sub_b, sub_c, pub = spread(clients, nodes)
    history = History()
    for sub in (sub_b, sub_c):
        record(sub, history)
        history.subscribed(sub.client_id, "w/#", 1)
    shared.stop()
    shared.start()
    # Windows of 50 from the restart until a second after every node
    # joined again: bounded by count and by time.
    joined_at, deadline = None, time.monotonic() + 30
    for window in range(400):
        assert time.monotonic() < deadline, "the nodes did not all join again within 30 s"
        publish_seq(pub, history, "w/rejoin", 1, 50, first=50 * window)
        if joined_at is None and all("lapsed; joining again" in node.log() for node in nodes):
            joined_at = time.monotonic()
        if joined_at is not None and time.monotonic() > joined_at + 1:
            break
    assert joined_at is not None, "the nodes did not all join again within 400 windows"
    report = wait_complete(history)
    assert report.clean, report


@pytest.mark.parametrize("shared", ["redis-cluster-with-replicas"], indirect=True)
@pytest.mark.parametrize("named", [False, True], ids=["another-master", "the-named-master"])
def test_the_nodes_go_on_after_a_redis_cluster_failover(nodes, clients, shared, shared_db, named):
    """kill -9 of a master of the Redis Cluster, also the one `redis_host`
    names: its replica takes over its slots, and the nodes deliver both
    ways again, through the member now serving them (connecting through
    the members they knew), with their clients still connected; presence
    answers through the cluster."""
    a, b, c = nodes
    sub_b, sub_c, pub = spread(clients, nodes)
    killed = shared.kill_master(named)
    wait_until(lambda: shared.failed_over(killed), 30,
               what=lambda: f"a replica serving the slots of the member on {killed.port}: {shared.nodes()}")
    both_ways(clients, a, c, sub_b, sub_c, "after-failover")
    # Every node reached Redis no better than the others during the
    # failover: none counted another gone, and the clients stayed.
    assert not any(s.disconnected.is_set() for s in (sub_b, sub_c, pub)), "a client was disconnected"
    for node in nodes:
        assert "counted gone" not in node.log() and " is gone." not in node.log(), node.name
    late = client(clients, b, "late-B")
    wait_until(lambda: shared_db.hget("mqtt", late.client_id) == "1", PROPAGATION,
               what="late-B online in the presence hash, after the failover")


def test_a_publish_on_another_node_right_after_suback_arrives(nodes, clients):
    """A SUBACK waits until every node took the new route in, so a message
    published anywhere once it came reaches the subscriber, as with one
    broker: no probes here."""
    a, b, c = nodes
    sub = client(clients, b, "sub-now")
    pubs = [client(clients, a, "pub-now-A"), client(clients, c, "pub-now-C")]
    for n in range(20):
        topic = f"now/{n}"
        assert sub.subscribe(topic, 1) == [1]
        for pub in pubs:
            pub.publish(topic, f"{pub.client_id}:{n}", qos=1)
        got = sorted(sub.expect(timeout=ACK).payload.decode() for _ in pubs)
        assert got == sorted(f"{pub.client_id}:{n}" for pub in pubs), (n, got)


@pytest.mark.parametrize("shared", ["redis-cluster"], indirect=True)
def test_presence_on_a_redis_cluster_keeps_the_hash_and_its_keys_in_one_slot(nodes, clients, shared, shared_db):
    """`HSET mqtt <id> 1` lands in the hash `mqtt` as on one server; the
    keys the presence scripts use beside it are tagged `{mqtt}`, so they
    sit on the hash's member, and the nodes' keys go wherever their slots
    are."""
    a, b, _ = nodes
    client(clients, a, "dev-rc")
    wait_until(lambda: shared_db.hget("mqtt", "dev-rc") == "1", PROPAGATION, what="dev-rc online")
    holding = [keys for keys in shared.keys_by_member() if "mqtt" in keys]
    assert len(holding) == 1, shared.keys_by_member()
    assert "{mqtt}:brokers" in holding[0]
    assert {k for k in holding[0] if k.startswith("{mqtt}:lease:")} == \
        {f"{{mqtt}}:lease:{id}" for node in nodes for id in node.presence_ids}
    assert shared_db.hgetall(f"{CLUSTER}:nodes").keys() == {node.broker_id for node in nodes}
    clients(Paho(b.port, "dev-rc")).connect()
    wait_until(lambda: b.log().count("Updating client dev-rc to online") == 1, PROPAGATION, what="dev-rc online at B")
    wait_until(lambda: shared_db.hget("mqtt", "dev-rc") == "1", PROPAGATION, what="dev-rc online again")
    assert stays(lambda: shared_db.hget("mqtt", "dev-rc") == "1", 1.0), "dev-rc went offline after moving to B"


def wills_seen(watchers, topic: str) -> list[int]:
    return [sum(1 for m in list(w.received) if m.topic == topic) for w in watchers]


@ON_BOTH
@pytest.mark.parametrize("restart", [False, True], ids=["stays-down", "restarted"])
def test_the_wills_of_a_killed_node_are_published_once(nodes, clients, shared_db, restart):
    """kill -9 of a node: its clients' wills are published once, by the
    first other node that sees it gone, or by the node itself when it is
    back first (its previous run's wills, which a store would otherwise
    publish); and its clients are offline in the presence hash well
    before its presence lease (30 s) would lapse."""
    a, b, c = nodes
    watchers = [client(clients, a, "watch-A"), client(clients, b, "watch-B")]
    for w in watchers:
        assert w.subscribe("wills/#", 1) == [1]
    # A client that leaves cleanly: its will is never published.
    polite = clients(Paho(c.port, "polite", will=("wills/polite", b"gone", 1, False))).connect()
    clients(Paho(c.port, "dev-w", will=("wills/dev-w", b"gone", 1, False))).connect()
    polite.disconnect()
    wait_until(lambda: "Client polite disconnected" in c.log(), ACK, what="polite's disconnect at C")
    time.sleep(1.5)  # a heartbeat writes the wills to Redis (one a second)
    c.kill9()
    back = None
    if restart:
        c.restart()
        back = clients(Paho(c.port, "back-C", will=("wills/back-C", b"gone", 1, False))).connect()
    wait_until(lambda: wills_seen(watchers, "wills/dev-w") == [1, 1], PROPAGATION * 2,
               what=lambda: f"the will at A and B once: {wills_seen(watchers, 'wills/dev-w')}")
    # Once: no other node publishes it again.
    time.sleep(2 * 1.0 + 1.0)
    assert wills_seen(watchers, "wills/dev-w") == [1, 1]
    assert wills_seen(watchers, "wills/polite") == [0, 0]
    wait_until(lambda: shared_db.hget("mqtt", "dev-w") is None, PROPAGATION,
               what="dev-w offline in the presence hash")
    if back is not None:
        # The others heard the restarted node's new run in place of the
        # killed one: they reap neither, so the client connected to it since
        # stays online, its will unpublished.
        assert stays(lambda: shared_db.hget("mqtt", "back-C") == "1", 6.0), "back-C swept offline"
        assert wills_seen(watchers, "wills/back-C") == [0, 0]
        assert back.client.is_connected()
