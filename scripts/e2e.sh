#!/usr/bin/env bash
# End-to-end suite (tests/e2e, issue 4): real redis-server, real MQTT
# clients (mosquitto_pub / mosquitto_sub, paho-mqtt), loopback only, run
# against every Culex binary.
#
# Builds the binaries (unless CULEX_BINARIES names them), installs what is
# missing (Debian: redis-server, mosquitto-clients, chromium,
# chromium-driver; PyPI: paho-mqtt 2.x, redis, pytest, selenium), quietly
# and idempotently, then runs pytest (a skipped test shows its reason).
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
# Every wait inside the suite is bounded; this bounds the whole run too.
exec timeout --signal=INT --kill-after=30 1800 \
  python3 -m pytest tests/e2e -q -p no:cacheprovider -rfEs --durations=15 "$@"
