#!/usr/bin/env python3
"""Markdown table of medians from culex-load results (scripts/bench.sh).

usage: bench_table.py RESULTS.jsonl [...]

One line per scenario and metric; one column per broker with the median of
its runs; the last column is culex/mosquitto (the plain quotient: above 1
means a larger number for culex, which is better for rates and worse for
latencies and memory). A cell marked with ! had a run with an error, a
timeout or, at QoS 1/2, a lost message; the notes under the table say which.
"""

import json
import statistics
import sys

BROKERS = ["culex", "culex-async-std", "mosquitto"]

# row tag -> (title, [(metric path, label)])
RATE = ("delivered_per_s", "delivered msgs/s")
LOSS = ("loss_pct", "loss %")
LATENCY = [("latency_us.p50", "p50 µs"), ("latency_us.p99", "p99 µs"), ("latency_us.max", "max µs")]
ROWS = [
    ("fan-in", "fan-in: 4 publishers → 1 wildcard subscriber, QoS 0", [RATE, LOSS]),
    ("fan-out", "fan-out: 1 publisher → 10 subscribers, QoS 0", [RATE, LOSS]),
    ("qos1", "qos1: 64 in flight, subscriber acks", [("completed_per_s", "completed msgs/s"), RATE, LOSS]),
    ("qos2", "qos2: 64 in flight, subscriber acks", [("completed_per_s", "completed msgs/s"), RATE, LOSS]),
    ("latency-q0-1k", "latency QoS 0 at 1,000 msgs/s", LATENCY),
    ("latency-q0-10k", "latency QoS 0 at 10,000 msgs/s", LATENCY),
    ("latency-q1-1k", "latency QoS 1 at 1,000 msgs/s", LATENCY),
    ("latency-q1-10k", "latency QoS 1 at 10,000 msgs/s", LATENCY),
    (
        "connections",
        "connections: idle clients, 200 handshakes in flight",
        [
            ("connects_per_s", "connects/s"),
            ("handshake_us.p50", "handshake p50 µs"),
            ("handshake_us.p99", "handshake p99 µs"),
            ("listen_drops", "SYNs dropped (listen queue full)"),
            ("rss_per_conn_bytes", "broker RSS per connection, bytes"),
        ],
    ),
    ("presence-off", "presence off: connect/disconnect churn, 50 at once", [("connects_per_s", "connects/s")]),
    (
        "presence-on",
        "presence on (Redis): same churn",
        [("connects_per_s", "connects/s"), ("presence_left", "ids left in the hash")],
    ),
    ("expiry-plain", "expiry: 64 B non-JSON payloads, QoS 0", [RATE, LOSS]),
    ("expiry-json", "expiry: 64 B JSON payloads with expired_at, QoS 0", [RATE, LOSS]),
    ("expiry-off", "expiry off (message_expiry false): the same non-JSON payloads", [RATE, LOSS]),
]


def get(record, path):
    value = record
    for key in path.split("."):
        if isinstance(value, list) and key.isdigit():
            value = value[int(key)] if int(key) < len(value) else None
        elif isinstance(value, dict):
            value = value.get(key)
        else:
            return None
    return value


def problem(record):
    if record.get("error"):
        return record["error"]
    notes = []
    if record.get("timed_out"):
        notes.append("hit the deadline")
    if record.get("error_count"):
        notes.append("; ".join(record.get("errors") or []) or f"{record['error_count']} errors")
    if record.get("qos", 0) and record.get("lost"):
        notes.append(f"lost {record['lost']} at QoS {record['qos']}")
    if record.get("failed"):
        notes.append(f"{record['failed']} clients failed")
    return ", ".join(notes)


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 100:
        return f"{int(x):,}"
    if abs(x) < 10:
        return f"{x:.2f}"
    if abs(x) < 100:
        return f"{x:.1f}"
    return f"{x:,.0f}"


def main(paths):
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    cells = {}
    for r in records:
        tags = r.get("tags", {})
        cells.setdefault((tags.get("row"), tags.get("broker")), []).append(r)
    variants = sorted({r.get("tags", {}).get("variant", "?") for r in records})
    runs = max((len(v) for v in cells.values()), default=0)
    print(f"Medians of {runs} run(s), variant: {', '.join(variants)}.\n")
    print("| scenario | metric | " + " | ".join(BROKERS) + " | culex/mosquitto |")
    print("| --- | --- |" + " ---: |" * (len(BROKERS) + 1))
    notes = []
    for row, title, metrics in ROWS:
        if not any((row, b) in cells for b in BROKERS):
            continue
        for i, (path, label) in enumerate(metrics):
            medians = {}
            out = []
            for b in BROKERS:
                rs = cells.get((row, b), [])
                values = [v for v in (get(r, path) for r in rs) if isinstance(v, (int, float))]
                bad = [(r.get("tags", {}).get("run"), problem(r)) for r in rs]
                bad = [(run, p) for run, p in bad if p]
                if not values:
                    out.append("n/a" if not rs else "! " if bad else "–")
                else:
                    medians[b] = statistics.median(values)
                    out.append(fmt(medians[b]) + (" !" if bad else ""))
                if bad and i == 0:
                    for run, p in bad:
                        notes.append(f"{row}, {b}, run {run}: {p}")
            c, m = medians.get("culex"), medians.get("mosquitto")
            ratio = f"{c / m:.2f}" if c is not None and m else "–"
            print(f"| {title if i == 0 else ''} | {label} | " + " | ".join(out) + f" | {ratio} |")
    if notes:
        print("\n! " + "\n! ".join(notes))
    cpu_table(cells)


def cpu_table(cells):
    """Medians of CPU figures per scenario and broker: what each run was bound by."""
    print("\nCPU during the runs (medians, % of one core; waiting = runnable but not running):\n")
    print("| scenario | broker | broker CPU | broker waiting | tool CPU | tool waiting | CPU 0 busy | CPU 1 busy |")
    print("| --- | --- |" + " ---: |" * 6)
    for row, _, _ in ROWS:
        for b in BROKERS:
            rs = cells.get((row, b))
            if not rs:
                continue
            out = []
            for path in ["broker_cpu_pct", "broker_wait_pct", "tool_cpu_pct", "tool_wait_pct", "cpus_busy_pct.0", "cpus_busy_pct.1"]:
                values = [v for v in (get(r, path) for r in rs) if isinstance(v, (int, float))]
                out.append(f"{statistics.median(values):.0f}" if values else "–")
            print(f"| {row} | {b} | " + " | ".join(out) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
