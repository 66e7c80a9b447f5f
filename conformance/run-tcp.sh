#!/usr/bin/env bash
# Runs the conformance scenarios over TCP against a broker this script
# starts and stops itself, on a free loopback port, configured with
# spec/broker.conf.
#
#   conformance/run-tcp.sh NAME [--record] [tcp options...] -- BROKER COMMAND...
#
# In BROKER COMMAND, {port} becomes the port and {conf} a mosquitto.conf
# holding spec/broker.conf plus `listener {port} 127.0.0.1` and
# `allow_anonymous true`. Options before `--` go to `culex-conformance tcp`
# (e.g. --record, --redis HOST:PORT, --extensions expiry, --only TEXT);
# with --websocket the listener is also given `protocol websockets`, so the
# scenarios run over WebSocket.
# Examples:
#
#   conformance/run-tcp.sh mosquitto --record -- mosquitto -c {conf}
#   conformance/run-tcp.sh culex --extensions expiry -- target/debug/culex -c {conf}
#   conformance/run-tcp.sh culex-async-std -- target/debug/culex-async-std -c {conf}
#   conformance/run-tcp.sh culex-ws --websocket -- target/debug/culex -c {conf}
#
# Extra configuration lines (e.g. redis_host) may be given in the
# environment variable CONFORMANCE_EXTRA_CONF, one per line.
#
# BROKER COMMAND also goes to `culex-conformance tcp` (after its own `--`):
# the scenarios that stop the broker (`shutdown`, `restart`, `crash`) each
# run on a broker it starts with that command on a port of its own, with
# this configuration plus the scenario's settings and an empty
# persistence_location; it stops it with SIGTERM or SIGKILL and starts it
# again, waiting until it listens.
#
# Exit status: that of culex-conformance (0 when nothing failed except known
# deviations), or 2 when the broker did not start.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:?usage: conformance/run-tcp.sh NAME [tcp options...] -- BROKER COMMAND...}
shift
options=()
websocket=false
while [ $# -gt 0 ] && [ "$1" != "--" ]; do
  [ "$1" = "--websocket" ] && websocket=true
  options+=("$1")
  shift
done
[ "${1:-}" = "--" ] || { echo "run-tcp.sh: missing -- BROKER COMMAND" >&2; exit 2; }
shift
[ $# -gt 0 ] || { echo "run-tcp.sh: missing BROKER COMMAND" >&2; exit 2; }

work=$(mktemp -d)
broker_pid=""
cleanup() {
  if [ -n "$broker_pid" ] && kill -0 "$broker_pid" 2>/dev/null; then
    kill "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
conf="$work/broker.conf"
{
  echo "listener $port 127.0.0.1"
  if $websocket; then echo "protocol websockets"; fi
  echo "allow_anonymous true"
  grep -v '^\s*#' spec/broker.conf
  printf '%s\n' "${CONFORMANCE_EXTRA_CONF:-}"
} > "$conf"
chmod a+rx "$work" && chmod a+r "$conf"

template=("$@")
command=()
for arg in "$@"; do
  arg=${arg//\{port\}/$port}
  command+=("${arg//\{conf\}/$conf}")
done

cargo build -q -p culex-conformance
"${command[@]}" > "$work/broker.log" 2>&1 &
broker_pid=$!

# Wait (at most 10 s) for the broker to listen.
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    break
  fi
  if ! kill -0 "$broker_pid" 2>/dev/null; then
    echo "run-tcp.sh: the broker exited at start:" >&2
    cat "$work/broker.log" >&2
    exit 2
  fi
  sleep 0.1
done

status=0
cargo run -q -p culex-conformance -- tcp "127.0.0.1:$port" --name "$name" --broker-config "$conf" \
  "${options[@]}" -- "${template[@]}" || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- broker log (last 40 lines) ---" >&2
  tail -n 40 "$work/broker.log" >&2
fi
exit "$status"
