#!/usr/bin/env bash
# Runs every test: unit tests, the in-process server/client flow tests, and the
# end-to-end tests that run the real binaries as processes on loopback.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-tools.sh

# The end-to-end tests run the real binaries; the test build makes them (each
# binary's package has integration tests), so everything is built once.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  echo "(cargo-nextest not found: using cargo test; install it with 'cargo install cargo-nextest --locked')"
  cargo test --workspace --no-fail-fast
fi
