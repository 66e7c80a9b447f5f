#!/usr/bin/env bash
# End-to-end suite (tests/e2e, issue 4): real redis-server, real MQTT
# clients (mosquitto_pub / mosquitto_sub, paho-mqtt), loopback only, run
# against every Culex binary.
#
# Builds the binaries (unless CULEX_BINARIES names them), installs what is
# missing (Debian: redis-server, mosquitto-clients; PyPI: paho-mqtt 2.x,
# redis, pytest), quietly and idempotently, then runs pytest. Extra
# arguments go to pytest, e.g. `scripts/e2e.sh -k presence -x`.
# Exits non-zero when a test fails (or when no test ran).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${CULEX_BINARIES:-}" ]; then
  cargo build --locked --quiet -p culex-tokio -p culex-async-std --bins
fi

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v stdbuf >/dev/null || need+=(coreutils)
command -v python3 >/dev/null || need+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! python3 - <<'PY' 2>/dev/null; then
import sys
import paho.mqtt, redis, pytest  # noqa: F401
sys.exit(0 if int(paho.mqtt.__version__.split(".")[0]) >= 2 else 1)
PY
  pkgs=("paho-mqtt>=2,<3" "redis>=5" "pytest>=7")
  python3 -m pip install -q --disable-pip-version-check "${pkgs[@]}" 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${pkgs[@]}"
fi

export PYTHONDONTWRITEBYTECODE=1
# Every wait inside the suite is bounded; this bounds the whole run too.
exec timeout --signal=INT --kill-after=30 1200 \
  python3 -m pytest tests/e2e -q -p no:cacheprovider -rfE "$@"
