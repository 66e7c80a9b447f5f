"""A Jepsen-style history checker for the cluster tests (pure Python, no broker).

A test records into a `History`, from any thread, what it knows happened:

- `published(publisher, topic, qos, seq)`: a publish the broker
  acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2; for QoS 0, sent);
- `delivered(subscriber, topic, qos, payload)`: a PUBLISH a subscriber
  received, `qos` as it came, the payload made by `payload(publisher, seq)`;
- `subscribed(subscriber, topic_filter, qos)`: a subscription (granted at
  `qos`) that was in place, and known everywhere, before the first publish
  and held to the end. Only these can lose messages: a subscriber that came
  late or left early is still checked for duplicates and order.

`check(history)` returns a `Report`; each finding is listed per
(subscriber, publisher):

- `lost`: (topic, seq) acknowledged and due at QoS >= 1 (the publish's QoS
  and the subscription's, whichever is lower) to a whole-run subscriber,
  never delivered to it;
- `missing_qos0`: the same at QoS 0 (allowed by the spec, so not in
  `clean`; a loopback test may still want none: see `complete`);
- `duplicates`: (topic, qos, seq) delivered again at QoS 0 or 2, a fault;
- `qos1_duplicates`: how many were delivered again at QoS 1 (at least once
  allows them: counted, not a fault);
- `out_of_order`: (topic, qos, seq, highest seq seen before) for a delivery
  of a seq not seen yet but lower than one delivered before;
- `garbled`: (subscriber, topic, payload) for deliveries whose payload
  `payload` did not make.

Order. [MQTT-4.6.0-6]: on an Ordered Topic (every topic, by default,
[MQTT-4.6.0-5]) a Server "MUST send PUBLISH packets to consumers (for the
same Topic and QoS) in the order that they were received from any given
Client". So order is judged per (subscriber, publisher, topic, QoS of the
delivery): one publisher's messages on one topic at different QoS may
interleave, and messages on different topics are never compared. A seq
delivered again is a duplicate (allowed at QoS 1, a fault at 0 and 2),
never an order violation: the spec's own comment under 4.6 says a QoS 1
subscriber may see 1,2,3,2,3,4, only the final copies being in order. A
seq not delivered before that is lower than the highest delivered is an
order violation at every QoS (QoS 0 may lose messages, not reorder them).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

Pair = tuple[str, str]  # (subscriber, publisher)


def payload(publisher: str, seq: int) -> bytes:
    """The payload a publisher sends for its message `seq`."""
    return f"{publisher}:{seq}".encode()


def parse(data: bytes) -> Optional[tuple[str, int]]:
    """(publisher, seq) from a payload made by `payload`, or None."""
    publisher, sep, seq = data.decode(errors="replace").rpartition(":")
    return (publisher, int(seq)) if sep and publisher and seq.isdigit() else None


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest)."""
    levels, names = topic_filter.split("/"), topic.split("/")
    for i, level in enumerate(levels):
        if level == "#":
            return True
        if i >= len(names) or (level != "+" and level != names[i]):
            return False
    return len(levels) == len(names)


class Publish(NamedTuple):
    publisher: str
    topic: str
    qos: int
    seq: int


class Delivery(NamedTuple):
    subscriber: str
    topic: str
    qos: int
    publisher: str
    seq: int


class History:
    """What happened, as the clients saw it; safe to record from any thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self.publishes: list[Publish] = []
        self.deliveries: list[Delivery] = []
        self.garbled: list[tuple[str, str, bytes]] = []
        self.subscriptions: list[tuple[str, str, int]] = []

    def published(self, publisher: str, topic: str, qos: int, seq: int):
        with self._lock:
            self.publishes.append(Publish(publisher, topic, qos, seq))

    def delivered(self, subscriber: str, topic: str, qos: int, data: bytes):
        parsed = parse(data)
        with self._lock:
            if parsed is None:
                self.garbled.append((subscriber, topic, data))
            else:
                self.deliveries.append(Delivery(subscriber, topic, qos, *parsed))

    def subscribed(self, subscriber: str, topic_filter: str, qos: int):
        with self._lock:
            self.subscriptions.append((subscriber, topic_filter, qos))

    def snapshot(self):
        with self._lock:
            return list(self.publishes), list(self.deliveries), list(self.garbled), list(self.subscriptions)


@dataclass
class Report:
    lost: dict[Pair, list[tuple[str, int]]] = field(default_factory=dict)
    missing_qos0: dict[Pair, list[tuple[str, int]]] = field(default_factory=dict)
    duplicates: dict[Pair, list[tuple[str, int, int]]] = field(default_factory=dict)
    qos1_duplicates: dict[Pair, int] = field(default_factory=dict)
    out_of_order: dict[Pair, list[tuple[str, int, int, int]]] = field(default_factory=dict)
    garbled: list[tuple[str, str, bytes]] = field(default_factory=list)
    published: int = 0
    delivered: int = 0

    @property
    def clean(self) -> bool:
        """Nothing lost at QoS >= 1, no forbidden duplicate, no reordering,
        no garbled payload."""
        return not (self.lost or self.duplicates or self.out_of_order or self.garbled)

    @property
    def complete(self) -> bool:
        """Every whole-run subscriber has every message due, QoS 0 too."""
        return not (self.lost or self.missing_qos0)

    def __str__(self) -> str:
        def short(d):
            return {k: (v[:5] + ["..."] if isinstance(v, list) and len(v) > 5 else v) for k, v in d.items()}

        return (f"published {self.published}, delivered {self.delivered}; "
                f"lost {short(self.lost)}; missing at QoS 0 {short(self.missing_qos0)}; "
                f"duplicates {short(self.duplicates)}; QoS 1 duplicates {self.qos1_duplicates}; "
                f"out of order {short(self.out_of_order)}; garbled {self.garbled[:5]}")


def check(history: History) -> Report:
    publishes, deliveries, garbled, subscriptions = history.snapshot()
    lost, missing0 = defaultdict(list), defaultdict(list)
    duplicates, qos1_duplicates, out_of_order = defaultdict(list), defaultdict(int), defaultdict(list)

    seen: set[tuple[str, str, str, int]] = set()  # (subscriber, publisher, topic, seq)
    highest: dict[tuple[str, str, str, int], int] = {}  # (subscriber, publisher, topic, qos) -> seq
    for d in deliveries:
        pair, key = (d.subscriber, d.publisher), (d.subscriber, d.publisher, d.topic, d.seq)
        if key in seen:
            if d.qos == 1:
                qos1_duplicates[pair] += 1
            else:
                duplicates[pair].append((d.topic, d.qos, d.seq))
            continue
        seen.add(key)
        stream = (d.subscriber, d.publisher, d.topic, d.qos)
        if stream in highest and d.seq < highest[stream]:
            out_of_order[pair].append((d.topic, d.qos, d.seq, highest[stream]))
        highest[stream] = max(d.seq, highest.get(stream, d.seq))

    granted: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for subscriber, topic_filter, qos in subscriptions:
        granted[subscriber].append((topic_filter, qos))
    for p in publishes:
        for subscriber, filters in granted.items():
            qos = max((q for f, q in filters if matches(f, p.topic)), default=None)
            if qos is None or (subscriber, p.publisher, p.topic, p.seq) in seen:
                continue
            (lost if min(qos, p.qos) >= 1 else missing0)[(subscriber, p.publisher)].append((p.topic, p.seq))

    return Report(dict(lost), dict(missing0), dict(duplicates), dict(qos1_duplicates), dict(out_of_order),
                  garbled, len(publishes), len(deliveries))
