#!/usr/bin/env bash
# Installs what the tests talk to: Debian's redis-server, mosquitto (the
# reference broker) and mosquitto-clients, openssl (the TLS tests make their
# certificates with it), dpkg-dev and binutils (the Debian package is built
# and installed), prometheus (its promtool), chromium and chromium-driver
# (the status page is tested in a real browser), and the Python clients
# (selenium drives the browser) and pytest with pytest-xdist (the tests run
# side by side). Quiet and idempotent: what is already there is not
# fetched again.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v stdbuf >/dev/null || need+=(coreutils)
command -v openssl >/dev/null || need+=(openssl)
command -v python3 >/dev/null || need+=(python3)
# scripts/deb.sh: the libraries the binary links, and strip.
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v strip >/dev/null || need+=(binutils)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# promtool checks the HTTP API's /metrics.
command -v promtool >/dev/null || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# The browser is large and only the status page test needs it: where it
# cannot be installed, that test is skipped (and says why), the rest runs.
browser=()
command -v chromium >/dev/null || browser+=(chromium)
command -v chromedriver >/dev/null || browser+=(chromium-driver)
if [ ${#browser[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${browser[@]}" >/dev/null; } \
    || echo "install-deps: could not install ${browser[*]}: the status page test will be skipped" >&2
fi
# Debian's packaged services must not hold the ports or the data the tests use.
for service in redis-server mosquitto prometheus; do
  if command -v systemctl >/dev/null && systemctl is-active --quiet "$service" 2>/dev/null; then
    systemctl stop "$service" || true
  fi
done

if ! python3 - <<'PY' 2>/dev/null; then
import sys
import paho.mqtt, redis, pytest, selenium, xdist  # noqa: F401
sys.exit(0 if int(paho.mqtt.__version__.split(".")[0]) >= 2 else 1)
PY
  pkgs=("paho-mqtt>=2,<3" "redis>=5" "pytest>=7" "pytest-xdist>=3,<4" "selenium>=4.11")
  python3 -m pip install -q --disable-pip-version-check "${pkgs[@]}" 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "${pkgs[@]}"
fi
