#!/bin/bash
# Checks the golden password files against Debian's real Mosquitto broker:
# each case connects with mosquitto_pub (MQTT 3.1.1) and expects CONNACK 0
# ("ok") or a refusal ("refused"). Needs the mosquitto and mosquitto-clients
# packages; listens on a free loopback port only. Not run by CI.
set -u
cd "$(dirname "$0")"
fail=0

check() { # file user password expect
    local file=$1 user=$2 pass=$3 expect=$4 got
    if timeout 5 mosquitto_pub -V mqttv311 -h 127.0.0.1 -p "$port" -u "$user" -P "$pass" -t t -m x >/dev/null 2>&1; then
        got=ok
    else
        got=refused
    fi
    if [ "$got" = "$expect" ]; then echo "PASS $file $user: $got"; else echo "FAIL $file $user: expected $expect, got $got"; fail=1; fi
}

with_broker() { # file, then cases on stdin as: user<TAB>password<TAB>expect
    local file=$1 conf pid
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    conf=$(mktemp)
    printf 'listener %s 127.0.0.1\nallow_anonymous false\npassword_file %s\n' "$port" "$PWD/$file" >"$conf"
    /usr/sbin/mosquitto -c "$conf" >/dev/null 2>&1 &
    pid=$!
    sleep 0.7
    while IFS='|' read -r user pass expect; do
        check "$file" "$user" "$(printf '%b' "$pass")" "$expect"
    done
    kill "$pid"
    wait "$pid" 2>/dev/null
    rm -f "$conf"
}

with_broker pbkdf2.passwd <<'CASES'
alice|correct horse battery staple|ok
alice|correct horse battery stapl|refused
bob|hunter2|ok
bob|hunter3|refused
carol|one-iteration|ok
dave|thousand-iterations|ok
dave|thousand-iteration|refused
émile|pässwörd ✓ 密码|ok
émile|passwörd ✓ 密码|refused
raw|bin\xff\xfe\x80ary|ok
raw|binary|refused
empty||refused
nobody|hunter2|refused
CASES

with_broker sha512.passwd <<'CASES'
alice|correct horse battery staple|ok
alice|hunter2|refused
bob|hunter2|ok
émile|pässwörd ✓ 密码|ok
raw|bin\xff\xfe\x80ary|ok
raw|bin\xff\xfe\x80ar|refused
nobody|hunter2|refused
CASES

with_broker mixed.passwd <<'CASES'
dup|second-password|ok
dup|first-password|refused
bob|hunter2|ok
alice|correct horse battery staple|ok
CASES

exit $fail
