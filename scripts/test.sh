#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# runs every test, clippy and rustfmt, and stops whatever it started.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "system packages (redis-server, mosquitto, mosquitto-clients)"
scripts/install-deps.sh

step "toolchain components"
rustup component add clippy rustfmt >/dev/null 2>&1 || true

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "tests"
# Snapshots must match what is committed: a changed transcript fails until
# it is reviewed with `cargo insta review`.
export INSTA_UPDATE=no
export QUICKCHECK_TESTS="${QUICKCHECK_TESTS:-2000}"
cargo test --workspace --locked --no-fail-fast

step "loom models"
# Unoptimised: the models run in seconds either way, and a cold debug
# build of the runtime took 1m44s here against 2m56s for a release one.
LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg culex_loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p culex-runtime --features tokio --locked --lib loom

step "Debian package (release build); the end-to-end suite installs it"
# Built here, not inside the suite, so that the release build does not eat
# into the suite's time limit.
CULEX_DEB="$(scripts/deb.sh)"
export CULEX_DEB

step "end-to-end: real clients and redis-server against both binaries"
scripts/e2e.sh

step "conformance over TCP against both binaries"
scripts/conformance-tcp.sh

step "benchmarks compile"
# In the test profile, from what the tests built: whether they compile is
# the question here, and an optimised build of every bench takes minutes
# (scripts/bench.sh builds those it runs).
cargo test --workspace --benches --locked --no-run
