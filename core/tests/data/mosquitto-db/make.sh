#!/usr/bin/env bash
# Regenerates the mosquitto.db fixtures of this directory with the
# installed Mosquitto (Debian's 2.0.11 when they were made). Each fixture
# is one broker run, on a free loopback port with its own temporary
# persistence directory, stopped with SIGTERM, which writes mosquitto.db
# at exit. Needs bash (raw MQTT goes through /dev/tcp), mosquitto,
# mosquitto_pub and mosquitto_sub. The files change from run to run only
# in their timestamps and in the heap bytes of the garbage user name.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
mosquitto=${MOSQUITTO:-/usr/sbin/mosquitto}
work=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

free_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 20000))
        if ! ss -ltnH "sport = :$port" | grep -q .; then
            echo "$port"
            return
        fi
    done
    echo "no free port" >&2
    exit 1
}

# Starts a broker with persistence in a fresh directory $dir.
start() {
    dir=$work/$1
    mkdir -p "$dir"
    port=$(free_port)
    cat >"$dir/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence true
persistence_location $dir/
autosave_interval 0
max_inflight_messages 3
log_dest file $dir/mosquitto.log
log_type all
# Run as root, Mosquitto would switch to the user "mosquitto", which may
# not write here; "root" keeps it as it is (ignored when not root).
user $(id -un)
CONF
    "$mosquitto" -c "$dir/mosquitto.conf" &
    pid=$!
    for _ in $(seq 50); do
        if ss -ltnH "sport = :$port" | grep -q .; then return; fi
        sleep 0.1
    done
    echo "mosquitto did not start" >&2
    cat "$dir/mosquitto.log" >&2
    exit 1
}

# Stops the broker (SIGTERM: it saves at exit) and keeps its file as $1.
stop_as() {
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
    cp "$dir/mosquitto.db" "$here/$1"
    chmod 0644 "$here/$1"
    echo "wrote $1 ($(stat -c %s "$here/$1") bytes)"
}

pub() { mosquitto_pub -p "$port" "$@"; }
sub() { mosquitto_sub -p "$port" -E "$@"; }

# Raw MQTT 3.1.1 on a file descriptor, for states the command-line
# clients never leave a session in (unacknowledged in-flight messages).
hex16() { printf '\\x%02x\\x%02x' $(($1 >> 8)) $(($1 & 255)); }
str() { printf '%s%s' "$(hex16 ${#1})" "$1"; }
# packet <fd> <first byte> <body as printf escapes> <body length>
packet() { printf "\\x$2$(printf '\\x%02x' "$4")$3" >&"$1"; }
connect() { # fd client-id [user]
    local flags=00 body len
    body="\\x00\\x04MQTT\\x04"
    len=$((10 + 2 + ${#2}))
    if [[ $# -gt 2 ]]; then flags=80; len=$((len + 2 + ${#3})); fi
    body="$body\\x$flags\\x00\\x00$(str "$2")"
    if [[ $# -gt 2 ]]; then body="$body$(str "$3")"; fi
    packet "$1" 10 "$body" "$len"
}
subscribe() { # fd mid filter qos
    packet "$1" 82 "$(hex16 "$2")$(str "$3")\\x0$4" $((2 + 2 + ${#3} + 1))
}
publish_qos2() { # fd mid topic payload
    packet "$1" 34 "$(str "$3")$(hex16 "$2")$4" $((2 + ${#3} + 2 + ${#4}))
}
pubrec() { packet "$1" 50 "$(hex16 "$2")" 2; }

# retained.db: retained messages only.
start retained
pub -r -q 0 -t r/0 -m "retained at QoS 0"
pub -r -q 1 -t r/1 -m "replaced"
pub -r -q 1 -t r/1 -m "retained at QoS 1"
pub -r -q 2 -t r/2 -m "retained at QoS 2"
pub -r -q 1 -t r/json -m '{"expired_at": 4102444800, "text": "expires in 2100"}'
pub -r -q 1 -t r/gone -m "cleared"
pub -r -q 1 -t r/gone -n
stop_as retained.db

# sessions.db: offline persistent sessions with queued messages; sess2
# has no user name and follows sess1 (user bob), which in Mosquitto
# 2.0.11-2.0.15 gives it a garbage user name; sess5 is an MQTT 5 session
# expiring 60 s after it went away; one message has a message expiry.
start sessions
sub -c -q 1 -i sess1 -u bob -t 'a/#'
sub -c -q 2 -i sess1 -u bob -t 'b/+'
sub -c -q 2 -i sess2 -t 'a/#'
sub -c -q 1 -i sess5 -u eve -V mqttv5 -x 60 -t 'a/1'
pub -q 1 -t a/1 -m "queued at QoS 1"
pub -q 2 -t a/2 -m "queued at QoS 2"
pub -q 0 -t a/0 -m "QoS 0, not queued"
pub -q 2 -r -t b/x -m "retained and queued"
pub -q 1 -V mqttv5 -D publish message-expiry-interval 3600 -t a/exp -m "expires in an hour"
stop_as sessions.db

# inflight.db: clients connected at shutdown, with messages in flight.
# raw-out (user "dave") subscribes and never completes what it receives,
# with at most 3 in flight: QoS 1 awaiting PUBACK, QoS 2 awaiting PUBREC,
# QoS 2 awaiting PUBCOMP (we sent PUBREC), then one queued. raw-in (no
# user name) publishes QoS 2 with packet id 7 and never sends PUBREL.
start inflight
exec 3<>"/dev/tcp/127.0.0.1/$port"
connect 3 raw-out dave
subscribe 3 1 out/1 1
subscribe 3 2 out/2 2
sleep 0.3
pub -q 1 -t out/1 -m "in flight at QoS 1"
pub -q 2 -t out/2 -m "in flight at QoS 2"
pub -q 2 -t out/2 -m "released at QoS 2"
pub -q 1 -t out/1 -m "queued behind"
sleep 0.3
pubrec 3 3
exec 4<>"/dev/tcp/127.0.0.1/$port"
connect 4 raw-in
publish_qos2 4 7 in/x "awaiting PUBREL"
sleep 0.5
stop_as inflight.db
exec 3>&- 4>&-
