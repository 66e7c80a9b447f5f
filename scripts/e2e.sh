#!/usr/bin/env bash
# End-to-end suite (tests/e2e, issue 4): real redis-server, real MQTT
# clients (mosquitto_pub / mosquitto_sub, paho-mqtt), loopback only, run
# against every Culex binary.
#
# Builds the binaries (unless CULEX_BINARIES names them), installs what is
# missing (Debian: redis-server, mosquitto-clients, chromium,
# chromium-driver; PyPI: paho-mqtt 2.x, redis, pytest, pytest-xdist,
# selenium), quietly and idempotently, then runs pytest (a skipped test
# shows its reason).
# Extra arguments go to pytest, e.g. `scripts/e2e.sh -k presence -x`. The
# package test (test_deb.py) installs CULEX_DEB, or builds the package with
# scripts/deb.sh first.
# Exits non-zero when a test fails (or when no test ran).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CULEX_BINARIES:-}" ]; then
  cargo build --locked --quiet -p culex-tokio -p culex-async-std --bins
fi

scripts/install-deps.sh

export PYTHONDONTWRITEBYTECODE=1
# Most tests wait on processes and sockets more than they use a CPU, so
# they run side by side (pytest-xdist, E2E_WORKERS of them, 2 by default);
# those marked `alone` bound latency or memory, and run after, one at a
# time. Every wait inside the suite is bounded; `timeout` bounds each run.
run() {
  timeout --signal=INT --kill-after=30 1500 python3 -m pytest tests/e2e -q -p no:cacheprovider -rfEs --durations=15 "$@"
}
side_by_side=0 alone=0
run -n "${E2E_WORKERS:-2}" -m "not alone" "$@" || side_by_side=$?
run -m alone "$@" || alone=$?
# 5: no test selected, as `-k` may leave one of the runs; not both.
if [ "$side_by_side" -eq 5 ] && [ "$alone" -eq 5 ]; then exit 5; fi
for status in "$side_by_side" "$alone"; do
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"
done
