#!/usr/bin/env bash
# Replays every conformance scenario over TCP against both Culex binaries,
# each started fresh with spec/broker.conf and presence in a redis-server
# of its own, so presence and expiry scenarios run too; then once more per
# binary over WebSocket (a `protocol websockets` listener, --websocket),
# recorded as <binary>-ws.
#
#   scripts/conformance-tcp.sh [--record]    # --record refreshes spec/results/*.tsv
set -euo pipefail
cd "$(dirname "$0")/.."

record=()
[ "${1:-}" = "--record" ] && record=(--record)

cargo build -q --locked -p culex-tokio -p culex-async-std -p culex-conformance
target=${CARGO_TARGET_DIR:-target}

work=$(mktemp -d)
redis_pid=""
cleanup() {
  [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

redis_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 1 50); do
  redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
  sleep 0.1
done

export CONFORMANCE_EXTRA_CONF="redis_host 127.0.0.1
redis_port $redis_port"

status=0
for binary in culex culex-async-std; do
  echo "--- conformance over TCP: $binary"
  conformance/run-tcp.sh "$binary" "${record[@]}" --redis "127.0.0.1:$redis_port" --extensions expiry \
    -- "$target/debug/$binary" -c '{conf}' || status=1
  echo "--- conformance over WebSocket: $binary"
  conformance/run-tcp.sh "$binary-ws" "${record[@]}" --broker "$binary over WebSocket" --websocket \
    --redis "127.0.0.1:$redis_port" --extensions expiry -- "$target/debug/$binary" -c '{conf}' || status=1
done
exit "$status"
