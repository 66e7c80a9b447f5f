#!/usr/bin/env bash
# End-to-end comparison of culex, culex-async-std and Debian's mosquitto
# with the culex-load tool (bench/), over loopback only.
#
#   scripts/bench.sh                 full run: every scenario, every broker, 3 runs
#   scripts/bench.sh --quick         smoke run: small counts, 1 run
#   scripts/bench.sh --both-cores    the broker is not pinned (the load tool still is)
#   scripts/bench.sh --rows "persist-qos1 persist-qos2 persist-restart persist-changes"
#                                    the persistence rows (not in the default set)
#   scripts/bench.sh --rows "pairs pairs-local" --shards 2
#                                    the shard rows (not in the default set)
#   scripts/bench.sh --rows "nodes-qos1 nodes-pairs-q1 nodes-latency-q1-1k" --brokers "culex mosquitto"
#                                    the node rows: Culex as clusters of 1 and 3 nodes over Redis
#   scripts/bench.sh --rows "nodes-qos1 nodes-pairs-q1" --brokers culex --nodes 3 --redis-cluster
#                                    the same over a Redis Cluster of three masters
#
# Options: --runs N, --brokers "culex mosquitto", --rows "fan-in qos1",
# --out DIR (default target/bench), --bin-dir DIR (use the culex,
# culex-async-std and culex-load already built in DIR instead of building;
# BENCH_SOURCE=TEXT then says in OUT/machine.txt what they were built from),
# --load-threads N (culex-load --threads N: its clients on N threads;
# default 1), --load-cpus LIST (the load tool's CPUs for taskset; default
# CPU 1, or with N threads CPUs 1..N when the machine has that many besides
# CPU 0, else every CPU, the tool then running below the broker's
# priority so that it only takes what the broker leaves), --shards N
# (Culex's brokers with `shards N`; Mosquitto as it is), --nodes "1 3"
# (the node rows: Culex as a cluster of each of these numbers of nodes),
# --redis-cluster (the node rows over a Redis Cluster of three masters,
# `redis_cluster true`, rather than over one redis-server).
# Each broker is started fresh for every scenario and run, on a free
# loopback port, with the same configuration (written below); the broker is
# pinned to CPU 0 and the load tool to CPU 1 with taskset. Results: one JSON
# line per run in OUT/results.jsonl (OUT/results-both-cores.jsonl with
# --both-cores, -load-threads-N added with N above 1), then a Markdown
# table of medians (scripts/bench_table.py) on stdout and in OUT/table*.md.
#
# The persistence rows run each broker with "persistence true" and a fresh
# persistence_location (OUT/persist/NAME/, deleted after the run):
# persist-qos1 and persist-qos2 are the qos1 and qos2 flows to a subscriber
# with clean session 0, each bringing its "-off" row along (the same flow,
# persistence off) for the on/off ratio; persist-qos1-fleet is persist-qos1
# with 8 publishers (512 messages in flight, within Mosquitto's 1,000
# queued), likewise with its "-off" row; persist-restart makes content
# (persistent sessions with queued messages, retained messages), stops the
# broker with SIGTERM, starts it again and measures how it comes back;
# persist-changes measures retained-message and session changes per second.
# They are not in the default set: ask for them with --rows.
#
# The shard rows are 16 independent publisher/subscriber pairs, each on
# its own topic, QoS 0, unpaced: the load shards are for. pairs gives the
# clients ids as a fleet's (with N shards a pair crosses shards N-1 times
# in N); pairs-local gives both clients of a pair ids on the same shard
# among --shards N (1 without it), so no message crosses shards. They are
# not in the default set either: ask for them with --rows, with --shards N
# for the broker's shards (a number; Mosquitto runs as it is). The table
# script does not list them yet: their lines are in the results file.
#
# The node rows run each Culex broker as a cluster (`cluster NAME`, see
# tests/e2e/test_cluster.py) of every number of nodes in --nodes (default
# "1 3"): N processes with the same configuration apart from the listener
# port, over the script's redis-server (emptied first; a cluster of one
# has Redis and its heartbeats too but nothing crosses, so 1 against 3
# isolates crossing nodes), all on the broker's CPUs. The load tool gets
# every node's port: publisher I connects to node I mod N and subscriber J
# to node (J+1) mod N, so with N > 1 every delivery of these rows crosses
# nodes. The script waits until every node is
# registered in Redis and has seen the others (heartbeats each second),
# then the tool waits 1 s more once its clients are ready (--settle-ms) for
# the routes to cross, and counts the commands Redis ran over the timed
# phase (--redis-port), and the CPU time of the nodes and of Redis over it
# (--watch-pid; with --redis-cluster, every master's, summed). Mosquitto
# runs each row once, alone, with the same settle
# time, its CPU time and Redis's counted the same way. Rows:
# nodes-qos1 is qos1 (1 publisher, 64 in flight, 1 subscriber), nodes-
# qos1-cs0 the same with a persistent subscriber (clean session 0: each
# copy goes through its node's store in Redis), nodes-pairs-q1 is pairs
# at QoS 1 (16 pairs, 64 in flight each), nodes-latency-q1-1k is
# latency-q1-1k (QoS 1 at 1,000 msgs/s). Not in the default set.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
PINNED=1
RUNS=""
BROKERS="culex culex-async-std mosquitto"
ROWS=""
OUT=target/bench
BIN=""
LOAD_THREADS=1
LOAD_CPUS=""
SHARDS=""
NODES="1 3"
REDIS_CLUSTER=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --both-cores) PINNED=0 ;;
    --runs) RUNS="$2"; shift ;;
    --brokers) BROKERS="$2"; shift ;;
    --rows) ROWS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --bin-dir) BIN="$2"; shift ;;
    --load-threads) LOAD_THREADS="$2"; shift ;;
    --load-cpus) LOAD_CPUS="$2"; shift ;;
    --shards) SHARDS="$2"; shift ;;
    --nodes) NODES="$2"; shift ;;
    --redis-cluster) REDIS_CLUSTER=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$RUNS" ] || RUNS=$([ $QUICK = 1 ] && echo 1 || echo 3)
[[ "$LOAD_THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --load-threads takes a positive number" >&2; exit 2; }
for n in $NODES; do
  [[ "$n" =~ ^[1-9]$ ]] || { echo "bench.sh: --nodes takes numbers of nodes from 1 to 9, not $n" >&2; exit 2; }
done

# The rows of the table: name, then culex-load arguments. Counts are the
# issue's (fan-in 1,000,000 messages, 10,000 idle clients, 200 handshakes
# in flight) or sized so the full run fits in about 15 minutes on 2 cores.
if [ $QUICK = 1 ]; then
  N_FANIN=20000 N_FANOUT=2000 N_QOS1=5000 N_QOS2=2000 LAT_SECS=0.5 N_CONN=500 N_CHURN=500 N_EXPIRY=10000 FLOOD_SECS=2 FLOOD_CAP="--messages 200000"
  N_PAIRS=20000 N_PAIRS_Q1=20000
  N_SESSIONS=1000 N_QUEUED=10 N_RETAINED=10000 N_RCHANGES=5000 N_SCHURN=500
else
  N_FANIN=1000000 N_FANOUT=100000 N_QOS1=100000 N_QOS2=50000 LAT_SECS=5 N_CONN=10000 N_CHURN=10000 N_EXPIRY=200000 FLOOD_SECS=10 FLOOD_CAP=""
  N_PAIRS=1000000 N_PAIRS_Q1=500000
  # The restart content is the issue's: 10,000 persistent sessions with
  # 100 queued QoS 1 messages each (1,000,000 copies) and 1,000,000
  # retained messages, 64 B payloads.
  N_SESSIONS=10000 N_QUEUED=100 N_RETAINED=1000000 N_RCHANGES=100000 N_SCHURN=10000
fi
# A flood is not paced: a broker slower than the tool still has the
# publishers' socket buffers to work through after it, hence the longer
# deadline (and, in a quick run, a cap on the messages).
FLOOD="--duration-secs $FLOOD_SECS $FLOOD_CAP --deadline-secs 120"
# pairs-local puts each pair on one of the broker's shards.
case "${SHARDS:-1}" in
  *[!0-9]*) LOCAL_SHARDS="" ;;
  *) LOCAL_SHARDS="${SHARDS:-1}" ;;
esac
declare -A ARGS=(
  [fan-in]="fan-in --messages $N_FANIN"
  [fan-in-16]="fan-in --publishers 16 --messages $N_FANIN"
  [fan-out]="fan-out --messages $N_FANOUT"
  [qos1]="qos1 --messages $N_QOS1"
  [qos2]="qos2 --messages $N_QOS2"
  [latency-q0-1k]="latency --qos 0 --rate 1000 --duration-secs $LAT_SECS"
  [latency-q0-10k]="latency --qos 0 --rate 10000 --duration-secs $LAT_SECS"
  [latency-q1-1k]="latency --qos 1 --rate 1000 --duration-secs $LAT_SECS"
  [latency-q1-10k]="latency --qos 1 --rate 10000 --duration-secs $LAT_SECS"
  [connections]="connections --clients $N_CONN --concurrency 200"
  [presence-off]="presence --cycles $N_CHURN --concurrency 50"
  [presence-on]="presence --cycles $N_CHURN --concurrency 50"
  [expiry-plain]="expiry --payload plain --messages $N_EXPIRY"
  [expiry-json]="expiry --payload json --messages $N_EXPIRY"
  [expiry-off]="expiry --payload plain --messages $N_EXPIRY"
  [slow-sub]="slow-subscriber $FLOOD"
  [slow-sub-off]="slow-subscriber --slow-subscribers 0 $FLOOD"
  # Persistence (see the top): a subscriber with clean session 0, the
  # broker's disk writes and the flushes of its store's disk counted.
  [persist-qos1]="qos1 --messages $N_QOS1 --clean-session 0 --deadline-secs 120"
  [persist-qos1-off]="qos1 --messages $N_QOS1 --clean-session 0 --deadline-secs 120"
  [persist-qos2]="qos2 --messages $N_QOS2 --clean-session 0 --deadline-secs 120"
  [persist-qos2-off]="qos2 --messages $N_QOS2 --clean-session 0 --deadline-secs 120"
  [persist-qos1-fleet]="qos1 --publishers 8 --messages $N_QOS1 --clean-session 0 --deadline-secs 120"
  [persist-qos1-fleet-off]="qos1 --publishers 8 --messages $N_QOS1 --clean-session 0 --deadline-secs 120"
  [persist-restart]="persist-fill --sessions $N_SESSIONS --queued $N_QUEUED --retained $N_RETAINED --deadline-secs 900"
  [persist-changes]="persist-changes --messages $N_RCHANGES --cycles $N_SCHURN --deadline-secs 300"
  # Shards (see the top).
  [pairs]="pairs --publishers 16 --messages $N_PAIRS"
  [pairs-local]="pairs --publishers 16 --messages $N_PAIRS --same-shard ${LOCAL_SHARDS:-1}"
  # Nodes (see the top): the tool's ports, settle time and Redis are added.
  [nodes-qos1]="qos1 --messages $N_QOS1"
  [nodes-qos1-cs0]="qos1 --messages $N_QOS1 --clean-session 0 --deadline-secs 120"
  [nodes-pairs-q1]="pairs --publishers 16 --qos 1 --messages $N_PAIRS_Q1 --deadline-secs 120"
  [nodes-latency-q1-1k]="latency --qos 1 --rate 1000 --duration-secs $LAT_SECS"
)
# The restart probe: the same content, checked on a sample.
RESTART_PROBE="restart --sessions $N_SESSIONS --queued $N_QUEUED --retained $N_RETAINED --deadline-secs 600"
ALL_ROWS="fan-in fan-in-16 fan-out qos1 qos2 latency-q0-1k latency-q0-10k latency-q1-1k latency-q1-10k connections presence-off presence-on expiry-plain expiry-json expiry-off slow-sub slow-sub-off"
PERSIST_ROWS="persist-qos1 persist-qos1-off persist-qos2 persist-qos2-off persist-qos1-fleet persist-qos1-fleet-off persist-restart persist-changes"
SHARD_ROWS="pairs pairs-local"
NODE_ROWS="nodes-qos1 nodes-qos1-cs0 nodes-pairs-q1 nodes-latency-q1-1k"
[ -n "$ROWS" ] || ROWS="$ALL_ROWS"
for row in $ROWS; do
  [ -n "${ARGS[$row]:-}" ] || { echo "bench.sh: unknown row $row; rows: $ALL_ROWS $PERSIST_ROWS $SHARD_ROWS $NODE_ROWS" >&2; exit 2; }
done
if [[ " $ROWS " == *" pairs-local "* ]] && [ -z "$LOCAL_SHARDS" ]; then
  echo "bench.sh: pairs-local needs --shards as a number, not ${SHARDS}" >&2
  exit 2
fi
# persist-qos1, persist-qos2 and persist-qos1-fleet bring their "-off" rows along.
expanded=""
for row in $ROWS; do
  expanded="$expanded $row"
  case "$row" in
    persist-qos1|persist-qos2|persist-qos1-fleet) [[ " $ROWS " == *" $row-off "* ]] || expanded="$expanded $row-off" ;;
  esac
done
ROWS="${expanded# }"
# Whether a row runs with persistence true.
persistent_row() {
  case "$1" in persist-qos1|persist-qos2|persist-qos1-fleet|persist-restart|persist-changes) return 0 ;; *) return 1 ;; esac
}

command -v mosquitto >/dev/null && command -v redis-server >/dev/null ||
  { echo "bench.sh: needs mosquitto and redis-server (apt-get install -y mosquitto redis-server)" >&2; exit 1; }
[ "$(nproc)" -ge 2 ] || { echo "bench.sh: needs 2 CPUs to pin broker and load tool apart" >&2; exit 1; }

if [ -z "$BIN" ]; then
  echo "==> building release binaries" >&2
  packages=(-p culex-bench)
  [[ " $BROKERS " != *" culex "* ]] || packages+=(-p culex-tokio)
  [[ " $BROKERS " != *" culex-async-std "* ]] || packages+=(-p culex-async-std)
  cargo build --release --locked "${packages[@]}" >&2
  BIN="${CARGO_TARGET_DIR:-target}/release"
fi
# A private copy, so that a build running meanwhile cannot swap binaries
# in the middle of the comparison.
mkdir -p "$OUT/bin"
for b in culex-load $BROKERS; do
  [ "$b" != mosquitto ] || continue
  [ -x "$BIN/$b" ] || { echo "bench.sh: $BIN/$b is missing" >&2; exit 1; }
  cp "$BIN/$b" "$OUT/bin/$b"
done
SOURCE_BIN="$BIN"
BIN="$OUT/bin"
LOAD="$BIN/culex-load"

VARIANT=$([ $PINNED = 1 ] && echo pinned || echo both-cores)
SUFFIX=$([ $PINNED = 1 ] && echo "" || echo "-both-cores")
[ "$LOAD_THREADS" = 1 ] || SUFFIX="$SUFFIX-load-threads-$LOAD_THREADS"
[ -z "$SHARDS" ] || { VARIANT="$VARIANT-shards-$SHARDS"; SUFFIX="$SUFFIX-shards-$SHARDS"; }
mkdir -p "$OUT/logs$SUFFIX"
RESULTS="$OUT/results$SUFFIX.jsonl"
: > "$RESULTS"
PROBLEMS="$OUT/problems$SUFFIX.txt"
: > "$PROBLEMS"

# 10,000 clients need 10,000 descriptors in the broker and in the tool.
ulimit -n "$(ulimit -Hn)"

BROKER_CPUS=$([ $PINNED = 1 ] && echo 0 || echo 0,1)
if [ -z "$LOAD_CPUS" ]; then
  if [ "$LOAD_THREADS" = 1 ]; then
    LOAD_CPUS=1
  elif [ "$(nproc)" -gt "$LOAD_THREADS" ]; then
    LOAD_CPUS="1-$LOAD_THREADS"
  else
    LOAD_CPUS="0-$(( $(nproc) - 1 ))"
  fi
fi
cpus_of() { # LIST: the CPU numbers of a taskset list such as 0,2-3
  local part
  local -a parts
  IFS=, read -ra parts <<< "$1"
  for part in "${parts[@]}"; do
    if [[ $part == *-* ]]; then seq "${part%-*}" "${part#*-}"; else echo "$part"; fi
  done
}
# Whether the tool, on several threads, shares a CPU with the broker.
SHARED_CPU=0
if [ "$LOAD_THREADS" -gt 1 ] && [ -n "$(comm -12 <(cpus_of "$LOAD_CPUS" | sort) <(cpus_of "$BROKER_CPUS" | sort))" ]; then
  SHARED_CPU=1
fi
# Other work on this machine (compilers, fuzzers) would otherwise take the
# benchmark's CPUs at random moments, and every wake-up of a broker or of
# the tool would wait for it: broker, Redis and load tool therefore run
# with the real-time round-robin policy, the same for every broker (the
# tool one step higher, so that with --both-cores a broker thread on CPU 1
# never delays the tool). BENCH_SCHED=nice uses nice -10 instead,
# BENCH_SCHED=none neither.
SCHED="${BENCH_SCHED:-rr}"
PRIO=()
TOOL_PRIO=()
case "$SCHED" in
  rr)
    if chrt -r 10 true 2>/dev/null; then
      PRIO=(chrt -r 10)
      # A tool on several threads that shares the broker's CPU runs below
      # the broker: it must not take the CPU the broker is measured on.
      if [ $SHARED_CPU = 1 ]; then TOOL_PRIO=(chrt -r 5); else TOOL_PRIO=(chrt -r 20); fi
    else
      echo "bench.sh: chrt -r not allowed, running at default priority" >&2
    fi
    ;;
  nice) if nice -n -10 true 2>/dev/null; then PRIO=(nice -n -10) TOOL_PRIO=(nice -n -10); fi ;;
  none) ;;
  *) echo "bench.sh: BENCH_SCHED is rr, nice or none" >&2; exit 2 ;;
esac
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
listening() { ss -Hltn "sport = :$1" | grep -q LISTEN; }
# A port whose cluster bus port (10,000 above) is free too.
free_cluster_port() {
  python3 -c '
import socket
for port in range(30000, 40000):
    try:
        for p in (port, port + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", p)); s.close()
    except OSError:
        continue
    print(port); break'
}

# The same settings for every broker and row: Mosquitto's defaults for
# the limits towards a subscriber (max_inflight_messages 20,
# max_queued_messages 1000), so that nothing hides what a broker does
# when a subscriber falls behind, and:
#   set_tcp_nodelay true        Culex always sets TCP_NODELAY (it ignores the key), so Mosquitto does too
#   connection_messages false   and only errors and warnings are logged: no per-connection log line
write_conf() { # FILE PORT [REDIS_PORT] [EXTRA LINE]
  {
    echo "listener $2 127.0.0.1"
    echo "allow_anonymous true"
    echo "set_tcp_nodelay true"
    echo "connection_messages false"
    echo "log_type error"
    echo "log_type warning"
    if [ -n "${3:-}" ]; then
      echo "redis_host 127.0.0.1"
      echo "redis_port $3"
    fi
    # Several lines of extra settings are one argument.
    [ -z "${4:-}" ] || printf '%s\n' "$4"
  } > "$1"
}

BROKER_PID=""
REDIS_PID=""
NODE_PIDS=()
MEMBER_PIDS=()
cleanup() {
  [ -z "$BROKER_PID" ] || kill "$BROKER_PID" 2>/dev/null || true
  local pid
  for pid in "${NODE_PIDS[@]}" "${MEMBER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
"${PRIO[@]}" taskset -c "$BROKER_CPUS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  > "$OUT/logs$SUFFIX/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do listening "$REDIS_PORT" && break; sleep 0.1; done
listening "$REDIS_PORT" || { echo "bench.sh: redis-server did not start" >&2; exit 1; }

# With --redis-cluster, the node rows' Redis: three masters on the
# broker's CPUs, every slot served before any row starts.
MEMBER_PORTS=()
if [ $REDIS_CLUSTER = 1 ]; then
  for k in 0 1 2; do
    port=$(free_cluster_port)
    mkdir -p "$OUT/logs$SUFFIX/member$k"
    "${PRIO[@]}" taskset -c "$BROKER_CPUS" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --dir "$OUT/logs$SUFFIX/member$k" \
      > "$OUT/logs$SUFFIX/member$k/redis.log" 2>&1 &
    MEMBER_PIDS+=($!)
    MEMBER_PORTS+=("$port")
    for _ in $(seq 50); do listening "$port" && break; sleep 0.1; done
    listening "$port" || { echo "bench.sh: redis-server (cluster member) did not start" >&2; exit 1; }
  done
  redis-cli --cluster create "${MEMBER_PORTS[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes > /dev/null
  for _ in $(seq 100); do
    ok=1
    for port in "${MEMBER_PORTS[@]}"; do
      redis-cli -p "$port" cluster info | grep -q "cluster_state:ok" || ok=0
    done
    [ $ok = 0 ] || break
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "bench.sh: the Redis Cluster did not serve every slot" >&2; exit 1; }
fi

start_broker() { # NAME CONF LOG
  local bin
  case "$1" in
    culex) bin="$BIN/culex" ;;
    culex-async-std) bin="$BIN/culex-async-std" ;;
    mosquitto) bin=mosquitto ;;
  esac
  "${PRIO[@]}" taskset -c "$BROKER_CPUS" "$bin" -c "$2" > "$3" 2>&1 &
  BROKER_PID=$!
}

# SIGTERM, then SIGKILL after SECONDS (default 5): Mosquitto writes its
# whole database at exit. Sets STOP_S (how long it took) and STOP_KILLED.
STOP_S=""
STOP_KILLED=0
stop_broker() { # [SECONDS]
  local began
  began=$(date +%s.%N)
  STOP_KILLED=0
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq $(( ${1:-5} * 100 ))); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.01; done
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    STOP_KILLED=1
    kill -KILL "$BROKER_PID" 2>/dev/null || true
  fi
  wait "$BROKER_PID" 2>/dev/null || true
  STOP_S=$(echo "$(date +%s.%N) - $began" | bc)
  BROKER_PID=""
}

# One tool run against the running broker: prints its JSON line (or one
# saying that it printed nothing). ARGS... are culex-load's.
run_load() { # NAME ROW BROKER RUN ERR_FILE ARGS...
  local name=$1 row=$2 broker=$3 run=$4 err=$5 line
  shift 5
  line=$("${TOOL_PRIO[@]}" taskset -c "$LOAD_CPUS" "$LOAD" "$@" --threads "$LOAD_THREADS" \
    --host 127.0.0.1 --port "$port" --broker-pid "$BROKER_PID" \
    --tag "row=$row" --tag "broker=$broker" --tag "run=$run" --tag "variant=$VARIANT" 2> "$err") || true
  if [ -z "$line" ]; then
    line="{\"scenario\":\"$row\",\"tags\":{\"row\":\"$row\",\"broker\":\"$broker\",\"run\":\"$run\",\"variant\":\"$VARIANT\"},\"error\":\"culex-load printed nothing ($name)\"}"
  fi
  echo "$line"
}

# persist-restart, with the broker running on $port: make the content,
# stop the broker (SIGTERM), start it again on a fresh port and probe it
# at once. Sets RESTART_LINE to one JSON line: the probe's, with the
# fill's figures as fill_* and the stop's as stop_s, stop_killed,
# store_bytes_stopped. Not to be run in a subshell: BROKER_PID and port
# change.
RESTART_LINE=""
restart_row() { # NAME ROW BROKER RUN CONF LOG STORE
  local name=$1 row=$2 broker=$3 run=$4 conf=$5 log=$6 store=$7 fill probe stopped_bytes
  # shellcheck disable=SC2086 # ARGS holds several words on purpose
  fill=$(run_load "$name" "$row" "$broker" "$run" "$OUT/logs$SUFFIX/$name.fill.err" ${ARGS[$row]} --store-path "$store")
  stop_broker 600
  stopped_bytes=$(du -sb "$store" | cut -f1)
  port=$(free_port)
  write_conf "$conf" "$port" "" "$(persist_conf "$store")"
  start_broker "$broker" "$conf" "$log.restart"
  # shellcheck disable=SC2086 # RESTART_PROBE holds several words on purpose
  probe=$(run_load "$name" "$row" "$broker" "$run" "$OUT/logs$SUFFIX/$name.restart.err" $RESTART_PROBE --store-path "$store")
  RESTART_LINE=$(FILL="$fill" PROBE="$probe" STOP_S="$STOP_S" STOP_KILLED="$STOP_KILLED" STOPPED_BYTES="$stopped_bytes" python3 -c '
import json, os
probe, fill = json.loads(os.environ["PROBE"]), json.loads(os.environ["FILL"])
for key, value in fill.items():
    if key not in ("tags", "host", "port", "scenario"):
        probe["fill_" + key] = value
probe["stop_s"] = round(float(os.environ["STOP_S"]), 3)
probe["stop_killed"] = os.environ["STOP_KILLED"] == "1"
probe["store_bytes_stopped"] = int(os.environ["STOPPED_BYTES"])
# The run failed if either half did.
for key in ("error", "timed_out"):
    probe[key] = probe.get(key) or fill.get(key)
probe["error_count"] = (probe.get("error_count") or 0) + (fill.get("error_count") or 0)
probe["errors"] = (fill.get("errors") or []) + (probe.get("errors") or [])
if probe["stop_killed"]:
    probe["error_count"] += 1
    probe["errors"].append("the broker did not exit within 600 s of SIGTERM")
print(json.dumps({k: v for k, v in probe.items() if v is not None or k != "error"}))
')
}

# The settings of a persistent row: Mosquitto, run as root, drops to its
# own user, so the store's directory is open to it.
persist_conf() { # STORE_DIR
  printf 'persistence true\npersistence_location %s/' "$1"
}

# Appends a tool line to the results, saying what went wrong if anything.
record_line() { # NAME LINE LOG
  echo "$2" >> "$RESULTS"
  if echo "$2" | grep -q -E '"error"|"error_count":[1-9]|"timed_out":true'; then
    echo "$1: $(echo "$2" | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("error","errors","timed_out","lost") if r.get(k)})')" \
      | tee -a "$PROBLEMS" >&2
  fi
}

# Stops every node: SIGTERM, then SIGKILL after 5 s.
stop_nodes() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 500); do
    local alive=0
    for pid in "${NODE_PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 1 ] || break
    sleep 0.01
  done
  for pid in "${NODE_PIDS[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      echo "node $pid did not exit within 5 s of SIGTERM: killed" | tee -a "$PROBLEMS" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  NODE_PIDS=()
  BROKER_PID=""
}

# One run of a node row: Mosquitto alone, or a Culex broker as a cluster
# of each number of nodes in --nodes.
node_row() { # ROW BROKER RUN
  local row=$1 broker=$2 run=$3 n k counts name conf log ports line ok registered
  local -a node_ports extra
  if [ "$broker" = mosquitto ]; then counts=1; else counts=$NODES; fi
  for n in $counts; do
    if [ "$broker" = mosquitto ]; then name="$row-$broker-$run"; else name="$row-$broker-n$n-$run"; fi
    node_ports=()
    NODE_PIDS=()
    extra=(--settle-ms 1000 --tag "nodes=$n")
    [ $REDIS_CLUSTER = 0 ] || [ "$broker" = mosquitto ] || extra+=(--tag "redis=cluster")
    if [ "$broker" = mosquitto ]; then
      node_ports=("$(free_port)")
      conf="$OUT/logs$SUFFIX/$name.conf"
      write_conf "$conf" "${node_ports[0]}"
      start_broker "$broker" "$conf" "$OUT/logs$SUFFIX/$name.log"
      NODE_PIDS=("$BROKER_PID")
      BROKER_PID=""
    else
      local cluster_conf="cluster bench" redis_port=$REDIS_PORT
      local -a redis_ports=("$REDIS_PORT") redis_cli=(redis-cli -p "$REDIS_PORT")
      if [ $REDIS_CLUSTER = 1 ]; then
        redis_ports=("${MEMBER_PORTS[@]}")
        redis_port=${MEMBER_PORTS[0]}
        redis_cli=(redis-cli -c -p "$redis_port")
        cluster_conf=$(printf '%s\nredis_cluster true' "$cluster_conf")
      fi
      for k in "${redis_ports[@]}"; do redis-cli -p "$k" flushall > /dev/null; done
      [ -z "$SHARDS" ] || cluster_conf=$(printf '%s\nshards %s' "$cluster_conf" "$SHARDS")
      for k in $(seq 0 $(( n - 1 ))); do
        node_ports+=("$(free_port)")
        conf="$OUT/logs$SUFFIX/$name-node$k.conf"
        write_conf "$conf" "${node_ports[$k]}" "$redis_port" "$cluster_conf"
        start_broker "$broker" "$conf" "$OUT/logs$SUFFIX/$name-node$k.log"
        NODE_PIDS+=("$BROKER_PID")
        BROKER_PID=""
      done
      for k in "${redis_ports[@]}"; do extra+=(--redis-port "$k"); done
    fi
    ok=1
    for k in "${!node_ports[@]}"; do
      for _ in $(seq 100); do listening "${node_ports[$k]}" && break; sleep 0.05; done
      listening "${node_ports[$k]}" || ok=0
    done
    if [ $ok = 1 ] && [ "$broker" != mosquitto ]; then
      # Every node registered, then one heartbeat (1 s) for each to see the others.
      for _ in $(seq 100); do
        registered=$("${redis_cli[@]}" hlen bench:nodes)
        [ "$registered" != "$n" ] || break
        sleep 0.1
      done
      if [ "$registered" = "$n" ]; then sleep 1.2; else ok=0; fi
    fi
    if [ $ok = 0 ]; then
      echo "$name: not every node started or registered (see $OUT/logs$SUFFIX/$name*.log)" | tee -a "$PROBLEMS" >&2
      stop_nodes
      continue
    fi
    port=$(IFS=,; echo "${node_ports[*]}")
    # CPU time over the timed phase: every node (or Mosquitto), and Redis.
    for k in "${!NODE_PIDS[@]}"; do extra+=(--watch-pid "nodes=${NODE_PIDS[$k]}"); done
    if [ $REDIS_CLUSTER = 1 ] && [ "$broker" != mosquitto ]; then
      for k in "${MEMBER_PIDS[@]}"; do extra+=(--watch-pid "redis=$k"); done
    else
      extra+=(--watch-pid "redis=$REDIS_PID")
    fi
    # The tool reads the first node's memory and CPU (--broker-pid).
    BROKER_PID=${NODE_PIDS[0]}
    # shellcheck disable=SC2086 # ARGS holds several words on purpose
    line=$(run_load "$name" "$row" "$broker" "$run" "$OUT/logs$SUFFIX/$name.load.err" ${ARGS[$row]} "${extra[@]}")
    BROKER_PID=""
    record_line "$name" "$line"
    for k in "${!NODE_PIDS[@]}"; do
      kill -0 "${NODE_PIDS[$k]}" 2>/dev/null ||
        echo "$name: node $k exited during the run (see $OUT/logs$SUFFIX/$name*.log)" | tee -a "$PROBLEMS" >&2
    done
    stop_nodes
    printf '%s %s run %s done (%ss)\n' "$row" "$([ "$broker" = mosquitto ] && echo "$broker" || echo "$broker, $n node(s)")" "$run" "$(($(date +%s) - started))" >&2
  done
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "variant: $VARIANT (broker on CPU $BROKER_CPUS, load tool on CPU $LOAD_CPUS with $LOAD_THREADS thread(s))"
  [ $REDIS_CLUSTER = 0 ] || echo "redis: the node rows over a Redis Cluster of three masters (ports ${MEMBER_PORTS[*]})"
  echo "nproc: $(nproc)"
  echo "cpu: $(lscpu | sed -n 's/^Model name: *//p')"
  echo "kernel: $(uname -r)"
  echo "memory: $(free -g | awk '/^Mem:/ {print $2 " GiB"}')"
  echo "rustc: $(rustc --version)"
  echo "mosquitto: $(mosquitto -h 2>&1 | head -1)"
  echo "redis: $(redis-server --version)"
  echo "binaries: copied from $SOURCE_BIN"
  echo "source: ${BENCH_SOURCE:-$(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet 2>/dev/null || echo ' with uncommitted changes') in $(pwd)}"
  echo "quick: $QUICK, runs: $RUNS, priority: broker and Redis ${PRIO[*]:-default}, load tool ${TOOL_PRIO[*]:-default}"
  echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
  if [[ " $ROWS " == *" persist-"* ]]; then
    # What one durable commit costs this disk: 4 KiB written and
    # fdatasync'ed, 200 times, in OUT (where the stores are).
    python3 - "$OUT" <<'PY'
import os, statistics, sys, time
path = os.path.join(sys.argv[1], "fdatasync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
took = []
for i in range(200):
    os.write(fd, b"x" * 4096)
    began = time.perf_counter()
    os.fdatasync(fd)
    took.append((time.perf_counter() - began) * 1e3)
os.close(fd)
os.unlink(path)
took.sort()
print(f"fdatasync of a 4 KiB append in OUT ({os.statvfs(sys.argv[1]).f_bsize} B blocks): "
      f"median {statistics.median(took):.2f} ms, p90 {took[179]:.2f} ms, max {took[-1]:.2f} ms")
PY
  fi
  # Other processes on the CPUs skew every number: measure one second of it.
  read -r _ u1 n1 s1 i1 w1 q1 sq1 _ < /proc/stat; sleep 1; read -r _ u2 n2 s2 i2 w2 q2 sq2 _ < /proc/stat
  busy=$(( (u2 + n2 + s2 + q2 + sq2) - (u1 + n1 + s1 + q1 + sq1) )); idle=$(( (i2 + w2) - (i1 + w1) ))
  echo "CPU busy before the run (both CPUs, other processes): $(( 100 * busy / (busy + idle) ))%"
} > "$OUT/machine$SUFFIX.txt"
cat "$OUT/machine$SUFFIX.txt" >&2

started=$(date +%s)
for run in $(seq "$RUNS"); do
  for row in $ROWS; do
    for broker in $BROKERS; do
      if [[ "$row" == nodes-* ]]; then
        node_row "$row" "$broker" "$run"
        continue
      fi
      redis_port=""
      extra_conf=""
      if [ "$row" = expiry-off ]; then
        # Culex with its expiry check switched off: the "without" of the
        # expiry comparison (Mosquitto has neither the check nor the key).
        [ "$broker" != mosquitto ] || continue
        extra_conf="message_expiry false"
      fi
      store=""
      if persistent_row "$row"; then
        store=$(realpath -m "$OUT/persist$SUFFIX/$row-$broker-$run")
        rm -rf "$store"
        mkdir -p "$store"
        chmod 0777 "$store"
        extra_conf=$(persist_conf "$store")
      fi
      if [ "$row" = presence-on ]; then
        # Mosquitto has no Redis presence: that comparison is presence-off.
        [ "$broker" != mosquitto ] || continue
        redis_port=$REDIS_PORT
        redis-cli -p "$REDIS_PORT" flushall > /dev/null
      fi
      if [ -n "$SHARDS" ] && [ "$broker" != mosquitto ]; then
        extra_conf=$(printf '%s\nshards %s' "$extra_conf" "$SHARDS")
      fi
      port=$(free_port)
      name="$row-$broker-$run"
      conf="$OUT/logs$SUFFIX/$name.conf"
      log="$OUT/logs$SUFFIX/$name.log"
      write_conf "$conf" "$port" "$redis_port" "$extra_conf"
      start_broker "$broker" "$conf" "$log"
      for _ in $(seq 100); do listening "$port" && break; sleep 0.05; done
      if ! listening "$port"; then
        echo "$name: broker did not start (see $log)" | tee -a "$PROBLEMS" >&2
        stop_broker
        continue
      fi
      extra=()
      [ -z "$redis_port" ] || extra=(--redis-port "$redis_port")
      [ -z "$store" ] || extra+=(--store-path "$store")
      if [ "$row" = persist-restart ]; then
        restart_row "$name" "$row" "$broker" "$run" "$conf" "$log" "$store"
        line=$RESTART_LINE
      else
        # shellcheck disable=SC2086 # ARGS holds several words on purpose
        line=$(run_load "$name" "$row" "$broker" "$run" "$OUT/logs$SUFFIX/$name.load.err" ${ARGS[$row]} "${extra[@]}")
      fi
      record_line "$name" "$line"
      if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "$name: the broker exited during the run (see $log)" | tee -a "$PROBLEMS" >&2
      fi
      # Mosquitto writes its database at exit: give it time.
      stop_broker "$([ -n "$store" ] && echo 600 || echo 5)"
      [ -z "$store" ] || rm -rf "$store"
      printf '%s %s run %s done (%ss)\n' "$row" "$broker" "$run" "$(($(date +%s) - started))" >&2
    done
  done
done
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/machine$SUFFIX.txt"
echo "duration: $(( $(date +%s) - started )) s" >> "$OUT/machine$SUFFIX.txt"
echo "==> $(( $(date +%s) - started )) s for $RUNS run(s); results in $RESULTS" >&2
python3 scripts/bench_table.py "$RESULTS" | tee "$OUT/table$SUFFIX.md"
if [ -s "$PROBLEMS" ]; then
  echo "==> problems (also in $PROBLEMS):" >&2
  cat "$PROBLEMS" >&2
fi
