#!/usr/bin/env bash
# End-to-end comparison of culex, culex-async-std and Debian's mosquitto
# with the culex-load tool (bench/), over loopback only.
#
#   scripts/bench.sh                 full run: every scenario, every broker, 3 runs
#   scripts/bench.sh --quick         smoke run: small counts, 1 run
#   scripts/bench.sh --both-cores    the broker is not pinned (the load tool still is)
#
# Options: --runs N, --brokers "culex mosquitto", --rows "fan-in qos1",
# --out DIR (default target/bench), --bin-dir DIR (use the culex,
# culex-async-std and culex-load already built in DIR instead of building;
# BENCH_SOURCE=TEXT then says in OUT/machine.txt what they were built from),
# --load-threads N (culex-load --threads N: its clients on N threads;
# default 1), --load-cpus LIST (the load tool's CPUs for taskset; default
# CPU 1, or with N threads CPUs 1..N when the machine has that many besides
# CPU 0, else every CPU, the tool then running below the broker's
# priority so that it only takes what the broker leaves).
# Each broker is started fresh for every scenario and run, on a free
# loopback port, with the same configuration (written below); the broker is
# pinned to CPU 0 and the load tool to CPU 1 with taskset. Results: one JSON
# line per run in OUT/results.jsonl (OUT/results-both-cores.jsonl with
# --both-cores, -load-threads-N added with N above 1), then a Markdown
# table of medians (scripts/bench_table.py) on stdout and in OUT/table*.md.
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
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$RUNS" ] || RUNS=$([ $QUICK = 1 ] && echo 1 || echo 3)
[[ "$LOAD_THREADS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --load-threads takes a positive number" >&2; exit 2; }

# The rows of the table: name, then culex-load arguments. Counts are the
# issue's (fan-in 1,000,000 messages, 10,000 idle clients, 200 handshakes
# in flight) or sized so the full run fits in about 15 minutes on 2 cores.
if [ $QUICK = 1 ]; then
  N_FANIN=20000 N_FANOUT=2000 N_QOS1=5000 N_QOS2=2000 LAT_SECS=0.5 N_CONN=500 N_CHURN=500 N_EXPIRY=10000 FLOOD_SECS=2 FLOOD_CAP="--messages 200000"
else
  N_FANIN=1000000 N_FANOUT=100000 N_QOS1=100000 N_QOS2=50000 LAT_SECS=5 N_CONN=10000 N_CHURN=10000 N_EXPIRY=200000 FLOOD_SECS=10 FLOOD_CAP=""
fi
# A flood is not paced: a broker slower than the tool still has the
# publishers' socket buffers to work through after it, hence the longer
# deadline (and, in a quick run, a cap on the messages).
FLOOD="--duration-secs $FLOOD_SECS $FLOOD_CAP --deadline-secs 120"
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
)
ALL_ROWS="fan-in fan-in-16 fan-out qos1 qos2 latency-q0-1k latency-q0-10k latency-q1-1k latency-q1-10k connections presence-off presence-on expiry-plain expiry-json expiry-off slow-sub slow-sub-off"
[ -n "$ROWS" ] || ROWS="$ALL_ROWS"
for row in $ROWS; do
  [ -n "${ARGS[$row]:-}" ] || { echo "bench.sh: unknown row $row; rows: $ALL_ROWS" >&2; exit 2; }
done

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
    [ -z "${4:-}" ] || echo "$4"
  } > "$1"
}

BROKER_PID=""
REDIS_PID=""
cleanup() {
  [ -z "$BROKER_PID" ] || kill "$BROKER_PID" 2>/dev/null || true
  [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true
}
trap cleanup EXIT

REDIS_PORT=$(free_port)
"${PRIO[@]}" taskset -c "$BROKER_CPUS" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  > "$OUT/logs$SUFFIX/redis.log" 2>&1 &
REDIS_PID=$!
for _ in $(seq 50); do listening "$REDIS_PORT" && break; sleep 0.1; done
listening "$REDIS_PORT" || { echo "bench.sh: redis-server did not start" >&2; exit 1; }

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

stop_broker() {
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null || true
  BROKER_PID=""
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "variant: $VARIANT (broker on CPU $BROKER_CPUS, load tool on CPU $LOAD_CPUS with $LOAD_THREADS thread(s))"
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
      redis_port=""
      extra_conf=""
      if [ "$row" = expiry-off ]; then
        # Culex with its expiry check switched off: the "without" of the
        # expiry comparison (Mosquitto has neither the check nor the key).
        [ "$broker" != mosquitto ] || continue
        extra_conf="message_expiry false"
      fi
      if [ "$row" = presence-on ]; then
        # Mosquitto has no Redis presence: that comparison is presence-off.
        [ "$broker" != mosquitto ] || continue
        redis_port=$REDIS_PORT
        redis-cli -p "$REDIS_PORT" flushall > /dev/null
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
      # shellcheck disable=SC2086 # ARGS holds several words on purpose
      line=$("${TOOL_PRIO[@]}" taskset -c "$LOAD_CPUS" "$LOAD" ${ARGS[$row]} --threads "$LOAD_THREADS" \
        --host 127.0.0.1 --port "$port" --broker-pid "$BROKER_PID" "${extra[@]}" \
        --tag "row=$row" --tag "broker=$broker" --tag "run=$run" --tag "variant=$VARIANT" \
        2> "$OUT/logs$SUFFIX/$name.load.err") || true
      if [ -z "$line" ]; then
        line="{\"scenario\":\"$row\",\"tags\":{\"row\":\"$row\",\"broker\":\"$broker\",\"run\":\"$run\",\"variant\":\"$VARIANT\"},\"error\":\"culex-load printed nothing\"}"
      fi
      echo "$line" >> "$RESULTS"
      if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        echo "$name: the broker exited during the run (see $log)" | tee -a "$PROBLEMS" >&2
      fi
      if echo "$line" | grep -q -E '"error"|"error_count":[1-9]|"timed_out":true'; then
        echo "$name: $(echo "$line" | python3 -c 'import json,sys; r=json.load(sys.stdin); print({k: r.get(k) for k in ("error","errors","timed_out","lost") if r.get(k)})')" \
          | tee -a "$PROBLEMS" >&2
      fi
      stop_broker
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
