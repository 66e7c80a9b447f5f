#!/usr/bin/env python3
"""Markdown table of medians from culex-load results (scripts/bench.sh).

usage: bench_table.py RESULTS.jsonl [...]

One line per scenario and metric; one column per broker with the median of
its runs; the last column is culex/mosquitto (the plain quotient: above 1
means a larger number for culex, which is better for rates and worse for
latencies and memory). A cell marked with ! had a run with an error, a
timeout or, at QoS 1/2, a lost message; the notes under the table say which.
A cell marked with † had a run in which the load tool was saturated (per
thread, running or waiting for a CPU more than 90 % of the timed phase):
that rate is the tool's limit as much as the broker's.

With persistence rows in the results, a table of the persistence targets
follows (each Culex binary against Mosquitto, or against itself with
persistence off).

With node rows (nodes-*: Culex as a cluster of N nodes over Redis), a
table of its own follows: one column per Culex binary and number of nodes
and one for Mosquitto, then the ratios of the most nodes to the fewest and
of each Culex column to Mosquitto.
"""

import json
import math
import statistics
import sys

BROKERS = ["culex", "culex-async-std", "mosquitto"]

# A metric is (path in the result, label) or (path, label, kind), where kind
# is ("bool",) (counted over the runs), ("ratio", other row) (this row's
# median over the other row's, per broker) or ("zero", path) (only runs in
# which that other field is 0).
RATE = ("delivered_per_s", "delivered msgs/s")
LOSS = ("loss_pct", "loss %")
LOST = ("lost", "lost (taken by the broker, never delivered)")
QOS = [
    RATE,
    LOST,
    LOSS,
    ("duplicates", "duplicates"),
    ("out_of_order", "out of order"),
    ("completed_per_s", "completed (acknowledged) msgs/s"),
]
LATENCY = [("latency_us.p50", "p50 µs"), ("latency_us.p99", "p99 µs"), ("latency_us.max", "max µs")]
FAST_RATE = ("delivered_per_s", "fast subscribers: delivered msgs/s")
PERSIST_QOS = [
    RATE,
    ("delivered_per_s", "persistence on / off (target ≥ 0.5)", ("ratio", None)),
    LOST,
    LOSS,
    ("duplicates", "duplicates"),
    ("out_of_order", "out of order"),
    ("completed_per_s", "completed (acknowledged) msgs/s"),
    ("latency_us.p50", "publish → delivery p50 µs"),
    ("latency_us.p99", "publish → delivery p99 µs"),
    ("broker_write_bytes_per_op", "broker disk writes per acknowledged message, bytes (page cache dirtied)"),
    ("device_write_bytes_per_op", "store's disk writes per acknowledged message, bytes (reached the device, every process)"),
    ("ops_per_flush", "acknowledged messages per flush of the store's disk (every process's flushes)"),
    ("broker_cpu_pct", "broker CPU, % of one core"),
]
PERSIST_OFF = [
    RATE,
    LOST,
    LOSS,
    ("latency_us.p50", "publish → delivery p50 µs"),
    ("broker_write_bytes_per_op", "broker disk writes per acknowledged message, bytes"),
    ("broker_cpu_pct", "broker CPU, % of one core"),
]
RESTART = [
    ("ready_s", "restart: process start → first CONNACK, s (target ≤ Mosquitto's)"),
    ("listening_s", "process start → port accepts TCP, s"),
    ("broker_cpu_s_ready", "broker CPU time until the first CONNACK, s"),
    ("broker_rss_kib_ready", "RSS at the first CONNACK, KiB (target ≤ Mosquitto's)"),
    ("broker_rss_kib_settled", "RSS 1 s later, KiB"),
    ("store_bytes_stopped", "store on disk after SIGTERM, bytes"),
    ("store_bytes", "store on disk once restarted, bytes"),
    ("stop_s", "SIGTERM → exit after making the content, s"),
    ("fill_broker_rss_kib_after", "RSS with the content, before the stop, KiB"),
    ("fill_fill_s", "making the content, s"),
    ("fill_sessions_per_s", "content: persistent sessions made (CONNECT, SUBSCRIBE, DISCONNECT)/s"),
    ("fill_queued_per_s", "content: queued QoS 1 messages acknowledged/s"),
    ("fill_queued_broker_write_bytes_per_op", "content: disk writes per queued message, bytes"),
    ("fill_retained_per_s", "content: retained QoS 1 messages acknowledged/s"),
    ("fill_retained_broker_write_bytes_per_op", "content: disk writes per retained message, bytes"),
    ("fill_queued_acked", "content: queued messages acknowledged"),
    ("fill_retained_acked", "content: retained messages acknowledged"),
    ("sample_sessions_present", "after restart, sampled sessions present (of 3)"),
    ("sample_queued_received", "after restart, their queued messages delivered"),
    ("sample_retained_received", "after restart, sampled retained messages delivered (of 3)"),
]
CHANGES = [
    ("retained_changes_per_s", "retained QoS 1 messages to new topics: changes/s"),
    ("retained_broker_write_bytes_per_op", "disk writes per retained change, bytes"),
    ("retained_ops_per_flush", "retained changes per disk flush"),
    ("retained_broker_cpu_pct", "broker CPU, % of one core (retained)"),
    ("churn_cycles_per_s", "persistent session cycles (CONNECT clean 0, SUBSCRIBE, DISCONNECT)/s"),
    ("churn_cycle_us.p50", "session cycle p50 µs"),
    ("churn_cycle_us.p99", "session cycle p99 µs"),
    ("churn_broker_write_bytes_per_op", "disk writes per session cycle, bytes"),
    ("churn_ops_per_flush", "session cycles per disk flush"),
    ("churn_broker_cpu_pct", "broker CPU, % of one core (sessions)"),
]
ROWS = [
    ("fan-in", "fan-in: 4 publishers → 1 wildcard subscriber, QoS 0", [RATE, LOSS]),
    ("fan-in-16", "fan-in: 16 publishers → 1 wildcard subscriber, QoS 0", [RATE, LOSS, LOST]),
    ("fan-out", "fan-out: 1 publisher → 10 subscribers, QoS 0", [RATE, LOSS]),
    ("pairs", "pairs: 16 publishers, each with its own subscriber, QoS 0", [RATE, LOSS, LOST]),
    ("pairs-local", "pairs-local: the same, each pair's ids on one shard", [RATE, LOSS, LOST]),
    ("qos1", "qos1: 64 in flight, subscriber acks", QOS),
    ("qos2", "qos2: 64 in flight, subscriber acks", QOS),
    ("latency-q0-1k", "latency QoS 0 at 1,000 msgs/s", LATENCY),
    ("latency-q0-10k", "latency QoS 0 at 10,000 msgs/s", LATENCY),
    ("latency-q1-1k", "latency QoS 1 at 1,000 msgs/s", LATENCY),
    ("latency-q1-10k", "latency QoS 1 at 10,000 msgs/s", LATENCY),
    (
        "connections",
        "connections: idle clients, 200 handshakes in flight",
        [
            ("connects_per_s", "connects/s"),
            ("connects_per_s", "connects/s, runs without SYN drops (target ≥ 1.5x)", ("zero", "listen_drops")),
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
    (
        "slow-sub",
        "slow subscriber under flood: 8 QoS 0 publishers, 2 fast subscribers and 1 reading 1 MB/s",
        [
            FAST_RATE,
            ("delivered_per_s", "fast rate with the slow one / without (target ≥ 0.9)", ("ratio", "slow-sub-off")),
            ("loss_pct", "fast subscribers: loss %"),
            ("slow_stayed_connected", "slow subscriber stayed connected", ("bool",)),
            ("slow_received", "slow subscriber: msgs received"),
            ("broker_rss_peak_growth_kib", "broker RSS growth to the peak, KiB"),
            ("broker_rss_growth_kib", "broker RSS growth at the end, KiB"),
        ],
    ),
    (
        "slow-sub-off",
        "the same flood without the slow subscriber",
        [FAST_RATE, ("loss_pct", "fast subscribers: loss %"), ("broker_rss_peak_growth_kib", "broker RSS growth to the peak, KiB")],
    ),
    (
        "persist-qos1",
        "persist-qos1: persistence on, 64 in flight, subscriber with clean session 0 acks",
        [(m[0], m[1], ("ratio", "persist-qos1-off")) if len(m) > 2 else m for m in PERSIST_QOS],
    ),
    ("persist-qos1-off", "persist-qos1-off: the same, persistence off", PERSIST_OFF),
    (
        "persist-qos2",
        "persist-qos2: persistence on, 64 in flight, subscriber with clean session 0 acks",
        [(m[0], m[1], ("ratio", "persist-qos2-off")) if len(m) > 2 else m for m in PERSIST_QOS],
    ),
    ("persist-qos2-off", "persist-qos2-off: the same, persistence off", PERSIST_OFF),
    (
        "persist-qos1-fleet",
        "persist-qos1-fleet: persist-qos1 with 8 publishers (512 in flight)",
        [(m[0], m[1], ("ratio", "persist-qos1-fleet-off")) if len(m) > 2 else m for m in PERSIST_QOS],
    ),
    ("persist-qos1-fleet-off", "persist-qos1-fleet-off: the same, persistence off", PERSIST_OFF),
    ("persist-restart", "persist-restart: persistent sessions with queued messages and retained messages, SIGTERM, start", RESTART),
    ("persist-changes", "persist-changes: durable changes per second, persistence on", CHANGES),
]

# The node rows (scripts/bench.sh, --nodes): Culex as clusters of N nodes,
# Mosquitto alone. Redis's commands and the CPU times are over the tool's
# timed phase.
NODE_METRICS = [
    RATE,
    ("latency_us.p50", "publish → delivery p50 µs"),
    ("latency_us.p99", "publish → delivery p99 µs"),
    ("crossing_pct", "deliveries crossing nodes, %"),
    LOST,
    ("redis_commands_per_delivered", "Redis commands per delivered message (all)"),
    ("redis_commands_per_delivered_by_name.xadd", "of which XADD"),
    ("redis_commands_per_delivered_by_name.xread", "of which XREAD"),
    ("redis_commands_per_delivered_by_name.xdel", "of which XDEL"),
    ("cpu_us_per_delivered.nodes", "CPU of the nodes (all) per delivered message, µs"),
    ("cpu_us_per_delivered.redis", "CPU of Redis per delivered message, µs"),
    ("cpus_busy_pct.0", "CPU 0 busy, % (anyone)"),
    ("cpus_busy_pct.1", "CPU 1 busy, % (anyone)"),
    ("tool_cpu_pct", "load tool CPU, % of one core"),
]
NODE_ROWS = [
    ("nodes-qos1", "nodes-qos1: 1 publisher (64 in flight) → 1 subscriber, QoS 1"),
    ("nodes-qos1-cs0", "nodes-qos1-cs0: the same, the subscriber's session persistent"),
    ("nodes-pairs-q1", "nodes-pairs-q1: 16 pairs (64 in flight each), QoS 1"),
    ("nodes-latency-q1-1k", "nodes-latency-q1-1k: QoS 1 at 1,000 msgs/s"),
]

# The persistence targets: (label, row, path, how, threshold), how being
# "mosquitto ≥" (median over Mosquitto's at least threshold), "mosquitto ≤",
# "off ≥" (over the same broker's "-off" row) or "zero" (the median is 0).
TARGETS = [
    ("persist-qos1: delivered msgs/s ≥ 3x Mosquitto (persistence true)", "persist-qos1", "delivered_per_s", "mosquitto ≥", 3.0),
    ("persist-qos1: persistence on ≥ 50 % of off", "persist-qos1", "delivered_per_s", "off ≥", 0.5),
    ("persist-qos1: zero loss", "persist-qos1", "lost", "zero", 0),
    ("persist-qos2: delivered msgs/s ≥ 3x Mosquitto (persistence true)", "persist-qos2", "delivered_per_s", "mosquitto ≥", 3.0),
    ("persist-qos2: persistence on ≥ 50 % of off", "persist-qos2", "delivered_per_s", "off ≥", 0.5),
    ("persist-qos2: zero loss", "persist-qos2", "lost", "zero", 0),
    ("persist-qos1-fleet: delivered msgs/s ≥ 3x Mosquitto (persistence true)", "persist-qos1-fleet", "delivered_per_s", "mosquitto ≥", 3.0),
    ("persist-qos1-fleet: persistence on ≥ 50 % of off", "persist-qos1-fleet", "delivered_per_s", "off ≥", 0.5),
    ("persist-qos1-fleet: zero loss", "persist-qos1-fleet", "lost", "zero", 0),
    ("restart: start → first CONNACK ≤ Mosquitto's", "persist-restart", "ready_s", "mosquitto ≤", 1.0),
    ("restart: RSS at the first CONNACK ≤ Mosquitto's", "persist-restart", "broker_rss_kib_ready", "mosquitto ≤", 1.0),
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


def numbers(records, path):
    return [v for v in (get(r, path) for r in records) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def median_of(records, path):
    values = numbers(records, path)
    return statistics.median(values) if values else None


def bool_cell(records, path):
    values = [v for v in (get(r, path) for r in records) if isinstance(v, bool)]
    if not values:
        return "–"
    yes = sum(values)
    return "yes" if yes == len(values) else "no" if yes == 0 else f"{yes} of {len(values)} runs"


def kind_of(metric):
    return metric[2] if len(metric) > 2 else ("num",)


def metric_cells(cells, row, metric):
    """The cell text per broker and the medians behind them."""
    path, kind = metric[0], kind_of(metric)
    texts, medians = {}, {}
    for b in BROKERS:
        rs = cells.get((row, b), [])
        if not rs:
            texts[b] = "n/a"
            continue
        if kind[0] == "bool":
            texts[b] = bool_cell(rs, path)
            continue
        if kind[0] == "zero":
            rs = [r for r in rs if get(r, kind[1]) == 0]
        value = median_of(rs, path)
        if kind[0] == "ratio":
            if kind[1] is None:
                texts[b] = "–"
                continue
            other = median_of(cells.get((kind[1], b), []), path)
            value = value / other if value is not None and other else None
        if value is not None:
            medians[b] = value
        texts[b] = fmt(value) if kind[0] != "ratio" or value is None else f"{value:.2f}"
    return texts, medians


def ratio_cell(metric, medians):
    kind = kind_of(metric)
    c, m = medians.get("culex"), medians.get("mosquitto")
    if kind[0] in ("bool", "ratio") or c is None or not m:
        return "–"
    if kind[0] == "zero":
        return f"{c / m:.2f} ({'met' if c / m >= 1.5 else 'not met'})"
    return f"{c / m:.2f}"


def main(paths):
    records = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            records += [json.loads(line) for line in f if line.strip()]
    cells = {}
    node_cells = {}
    for r in records:
        tags = r.get("tags", {})
        if "nodes" in tags:
            node_cells.setdefault((tags.get("row"), tags.get("broker"), int(tags["nodes"])), []).append(r)
        else:
            cells.setdefault((tags.get("row"), tags.get("broker")), []).append(r)
    variants = sorted({r.get("tags", {}).get("variant", "?") for r in records})
    threads = sorted({str(r.get("tool_threads", "?")) for r in records})
    runs = max((len(v) for v in list(cells.values()) + list(node_cells.values())), default=0)
    print(f"Medians of {runs} run(s), variant: {', '.join(variants)}, load tool threads: {', '.join(threads)}.\n")
    if cells:
        main_table(cells)
    if node_cells:
        nodes_table(node_cells)


def main_table(cells):
    print("| scenario | metric | " + " | ".join(BROKERS) + " | culex/mosquitto |")
    print("| --- | --- |" + " ---: |" * (len(BROKERS) + 1))
    notes = []
    saturated = False
    for row, title, metrics in ROWS:
        if not any((row, b) in cells for b in BROKERS):
            continue
        for i, metric in enumerate(metrics):
            texts, medians = metric_cells(cells, row, metric)
            out = []
            for b in BROKERS:
                rs = cells.get((row, b), [])
                bad = [(r.get("tags", {}).get("run"), problem(r)) for r in rs]
                bad = [(run, p) for run, p in bad if p]
                text = texts[b]
                if i == 0 and any(r.get("tool_saturated") for r in rs):
                    text += " †"
                    saturated = True
                if bad:
                    text += " !"
                    if i == 0:
                        notes += [f"{row}, {b}, run {run}: {p}" for run, p in bad]
                out.append(text)
            print(f"| {title if i == 0 else ''} | {metric[1]} | " + " | ".join(out) + f" | {ratio_cell(metric, medians)} |")
    if notes:
        print("\n! " + "\n! ".join(notes))
    if saturated:
        print("\n† the load tool was saturated in a run of that cell (per thread, running or waiting for a CPU")
        print("more than 90 % of the timed phase): see the tool's CPU below.")
    targets_table(cells)
    cpu_table(cells)


def small(x):
    """A figure below 10 with 3 significant digits (trailing zeros dropped), never in exponent form."""
    text = f"{x:.{max(0, 2 - math.floor(math.log10(abs(x))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def nodes_table(node_cells):
    """The node rows: Mosquitto, then each Culex binary with each number of nodes."""
    counts = sorted({n for (_, b, n) in node_cells if b != "mosquitto"})
    culexes = [b for b in BROKERS if b != "mosquitto" and any(k[1] == b for k in node_cells)]
    columns = [("mosquitto", 1)] if any(k[1] == "mosquitto" for k in node_cells) else []
    columns += [(b, n) for b in culexes for n in counts]
    label = lambda b, n: "mosquitto" if b == "mosquitto" else f"{b}, {n} node{'s' if n > 1 else ''}"
    ratios = []
    for b in culexes:
        if len(counts) > 1:
            ratios.append((f"{b}: {counts[-1]} / {counts[0]} node{'s' if counts[0] > 1 else ''}", (b, counts[-1]), (b, counts[0])))
        if columns and columns[0][0] == "mosquitto":
            ratios += [(f"{label(b, n)} / mosquitto", (b, n), ("mosquitto", 1)) for n in counts]
    print("\nNodes over Redis (medians; Redis's commands and CPU times over the timed phase):\n")
    print("| scenario | metric | " + " | ".join(label(*c) for c in columns) + " | " + " | ".join(r[0] for r in ratios) + " |")
    print("| --- | --- |" + " ---: |" * (len(columns) + len(ratios)))
    notes = []
    for row, title in NODE_ROWS:
        if not any(k[0] == row for k in node_cells):
            continue
        for i, (path, name) in enumerate(NODE_METRICS):
            medians = {}
            out = []
            for c in columns:
                rs = node_cells.get((row, *c), [])
                value = median_of(rs, path)
                if value is None and path.startswith("redis_commands_per_delivered_by_name.") and median_of(rs, "redis_commands") is not None:
                    value = 0.0
                if not rs:
                    text = "n/a"
                elif value == 0:
                    text = "0"
                else:
                    text = small(value) if value is not None and abs(value) < 10 else fmt(value)
                if value is not None:
                    medians[c] = value
                bad = [(r.get("tags", {}).get("run"), problem(r)) for r in rs]
                bad = [(run, p) for run, p in bad if p]
                if bad:
                    text += " !"
                    if i == 0:
                        notes += [f"{row}, {label(*c)}, run {run}: {p}" for run, p in bad]
                if i == 0 and any(r.get("tool_saturated") for r in rs):
                    text += " †"
                out.append(text)
            cells_ratio = []
            for _, a, b in ratios:
                x, y = medians.get(a), medians.get(b)
                cells_ratio.append(f"{x / y:.2f}" if x is not None and y and path in (RATE[0], "latency_us.p50", "latency_us.p99", "cpu_us_per_delivered.nodes") else "–")
            print(f"| {title if i == 0 else ''} | {name} | " + " | ".join(out) + " | " + " | ".join(cells_ratio) + " |")
    if notes:
        print("\n! " + "\n! ".join(notes))


def targets_table(cells):
    """Each persistence target, for each Culex binary: the figure and whether it is met."""
    targets = [t for t in TARGETS if any((t[1], b) in cells for b in BROKERS)]
    if not targets:
        return
    culexes = [b for b in BROKERS if b != "mosquitto"]
    print("\nPersistence targets (medians; ratio to Mosquitto with persistence true in the same run, or to the")
    print("same broker with persistence off):\n")
    print("| target | " + " | ".join(culexes) + " |")
    print("| --- |" + " --- |" * len(culexes))
    for label, row, path, how, threshold in targets:
        out = []
        for b in culexes:
            value = median_of(cells.get((row, b), []), path)
            if value is None:
                out.append("n/a")
                continue
            if how == "zero":
                out.append(f"{fmt(value)} lost: {'met' if value == 0 else 'not met'}")
                continue
            other_row, other_broker = (row + "-off", b) if how == "off ≥" else (row, "mosquitto")
            other = median_of(cells.get((other_row, other_broker), []), path)
            if not other:
                out.append(f"{fmt(value)}, no {other_broker} figure")
                continue
            ratio = value / other
            met = ratio >= threshold if how.endswith("≥") else ratio <= threshold
            shown = f"{ratio:.0%}" if how == "off ≥" else f"{ratio:.2f}x"
            out.append(f"{shown} ({fmt(value)} vs {fmt(other)}): {'met' if met else 'not met'}")
        print(f"| {label} | " + " | ".join(out) + " |")


def cpu_table(cells):
    """Medians of CPU figures per scenario and broker: what each run was bound by."""
    print("\nCPU during the runs (medians, % of one core; waiting = runnable but not running;")
    print("tool running / waiting per thread = over its timed phase, per thread that could run, † above 0.9 together):\n")
    print(
        "| scenario | broker | broker CPU | broker waiting | tool CPU | tool waiting | tool threads"
        " | tool running per thread | tool waiting per thread | CPU 0 busy | CPU 1 busy |"
    )
    print("| --- | --- |" + " ---: |" * 9)
    columns = [
        ("broker_cpu_pct", "{:.0f}"),
        ("broker_wait_pct", "{:.0f}"),
        ("tool_cpu_pct", "{:.0f}"),
        ("tool_wait_pct", "{:.0f}"),
        ("tool_threads", "{:.0f}"),
        ("tool_cpu_util", "{:.2f}"),
        ("tool_wait_util", "{:.2f}"),
        ("cpus_busy_pct.0", "{:.0f}"),
        ("cpus_busy_pct.1", "{:.0f}"),
    ]
    for row, _, _ in ROWS:
        for b in BROKERS:
            rs = cells.get((row, b))
            if not rs:
                continue
            out = []
            for path, form in columns:
                value = median_of(rs, path)
                out.append(form.format(value) if value is not None else "–")
            if any(r.get("tool_saturated") for r in rs):
                out[5] += " †"
            print(f"| {row} | {b} | " + " | ".join(out) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
