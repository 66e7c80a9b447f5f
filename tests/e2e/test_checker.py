"""The history checker (checker.py) on synthetic histories: a clean one
passes, and each kind of fault it exists for is reported."""

from __future__ import annotations

import threading

from checker import History, check, matches, parse, payload


def history(subscribers=("s1", "s2"), topic_filter="t/#", sub_qos=2) -> History:
    h = History()
    for s in subscribers:
        h.subscribed(s, topic_filter, sub_qos)
    return h


def publish(h: History, publisher: str, topic: str, qos: int, seqs):
    for seq in seqs:
        h.published(publisher, topic, qos, seq)


def deliver(h: History, subscriber: str, publisher: str, topic: str, qos: int, seqs):
    for seq in seqs:
        h.delivered(subscriber, topic, qos, payload(publisher, seq))


def clean_history() -> History:
    h = history()
    for qos in (0, 1, 2):
        for pub in ("p1", "p2"):
            publish(h, pub, f"t/{qos}", qos, range(20))
            for sub in ("s1", "s2"):
                deliver(h, sub, pub, f"t/{qos}", qos, range(20))
    return h


def test_a_clean_history_passes():
    report = check(clean_history())
    assert report.clean and report.complete, report
    assert (report.published, report.delivered) == (120, 240)


def test_a_lost_message_is_reported():
    h = history(subscribers=("s1",))
    publish(h, "p1", "t/a", 1, range(5))
    deliver(h, "s1", "p1", "t/a", 1, [0, 1, 3, 4])
    report = check(h)
    assert not report.clean and not report.complete
    assert report.lost == {("s1", "p1"): [("t/a", 2)]}


def test_a_qos2_duplicate_is_reported():
    h = history(subscribers=("s1",))
    publish(h, "p1", "t/a", 2, range(3))
    deliver(h, "s1", "p1", "t/a", 2, [0, 1, 1, 2])
    report = check(h)
    assert not report.clean
    assert report.duplicates == {("s1", "p1"): [("t/a", 2, 1)]}
    assert not report.out_of_order and not report.lost


def test_a_qos0_duplicate_is_reported():
    h = history(subscribers=("s1",))
    publish(h, "p1", "t/a", 0, range(2))
    deliver(h, "s1", "p1", "t/a", 0, [0, 1, 1])
    assert check(h).duplicates == {("s1", "p1"): [("t/a", 0, 1)]}


def test_a_reordering_is_reported():
    h = history(subscribers=("s1",))
    publish(h, "p1", "t/a", 1, range(4))
    deliver(h, "s1", "p1", "t/a", 1, [0, 2, 1, 3])
    report = check(h)
    assert not report.clean and report.complete
    assert report.out_of_order == {("s1", "p1"): [("t/a", 1, 1, 2)]}


def test_qos1_redeliveries_are_counted_duplicates_not_faults():
    # The spec's own example of a QoS 1 stream: 1,2,3,2,3,4.
    h = history(subscribers=("s1",))
    publish(h, "p1", "t/a", 1, range(1, 5))
    deliver(h, "s1", "p1", "t/a", 1, [1, 2, 3, 2, 3, 4])
    report = check(h)
    assert report.clean, report
    assert report.qos1_duplicates == {("s1", "p1"): 2}
    assert not report.duplicates and not report.out_of_order


def test_order_is_per_publisher_topic_and_qos():
    h = history(subscribers=("s1",))
    publish(h, "p1", "t/a", 1, [0, 2])
    publish(h, "p1", "t/b", 1, [1])
    publish(h, "p1", "t/a", 2, [3])
    publish(h, "p2", "t/a", 1, [0])
    # t/b's 1 after t/a's 2, QoS 2's 3 before QoS 1's 2, p2's 0 last: all fine.
    deliver(h, "s1", "p1", "t/a", 1, [0])
    deliver(h, "s1", "p1", "t/a", 2, [3])
    deliver(h, "s1", "p1", "t/a", 1, [2])
    deliver(h, "s1", "p1", "t/b", 1, [1])
    deliver(h, "s1", "p2", "t/a", 1, [0])
    assert check(h).clean


def test_only_whole_run_subscribers_lose_and_only_at_qos_1_or_more():
    h = history(subscribers=("whole",), sub_qos=1)
    h.subscribed("at0", "t/#", 0)
    h.subscribed("elsewhere", "u/#", 2)
    publish(h, "p1", "t/a", 1, range(3))
    publish(h, "p1", "t/a", 0, [3])
    deliver(h, "whole", "p1", "t/a", 1, range(3))
    deliver(h, "late", "p1", "t/a", 1, [2])  # not whole-run: nothing lost
    report = check(h)
    assert report.clean, report
    # "whole" misses the QoS 0 one, "at0" all (granted QoS 0): allowed, but not complete.
    assert report.missing_qos0 == {("whole", "p1"): [("t/a", 3)], ("at0", "p1"): [("t/a", n) for n in range(4)]}
    assert not report.complete


def test_a_garbled_payload_is_reported():
    h = history(subscribers=())
    h.delivered("s1", "t/a", 1, b"not a sequence number")
    report = check(h)
    assert not report.clean and report.garbled == [("s1", "t/a", b"not a sequence number")]


def test_recording_from_many_threads():
    h = history(subscribers=[f"s{i}" for i in range(4)])

    def run(sub):
        for seq in range(500):
            if sub == "s0":
                h.published("p", "t/x", 1, seq)
            h.delivered(sub, "t/x", 1, payload("p", seq))

    threads = [threading.Thread(target=run, args=(f"s{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    report = check(h)
    assert report.clean and report.complete, report
    assert (report.published, report.delivered) == (500, 2000)


def test_payloads_and_filters():
    assert parse(payload("host:1883/p", 42)) == ("host:1883/p", 42)
    assert parse(b"p:") is None and parse(b"42") is None
    assert matches("t/#", "t/a/b") and matches("t/+/b", "t/a/b") and matches("#", "x")
    assert matches("t/#", "t")
    assert not matches("t/+", "t/a/b") and not matches("t/a", "t") and not matches("t/+", "u/a")
