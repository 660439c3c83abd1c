#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (protocol, server flows over
# loopback, a cluster of nodes on a real redis-server, client CLI, notifications on a private D-Bus, app commands on
# Tauri's mock runtime, processes end to end), the UI logic tests, and the
# desktop app end to end under Xvfb with WebDriver and a real notification daemon.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-tools.sh
need_rust
need_packages $APP_BUILD_PACKAGES $E2E_PACKAGES $TEST_PACKAGES
need_tauri_driver

# One build of everything (the integration tests make the binaries the end-to-end tests run).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  echo "== the server's invitation flow tests again, against two nodes on a private redis-server"
  CALLINVITE_TEST_CLUSTER=1 cargo nextest run -p callinvite-server --test invitations --no-fail-fast
else
  echo "(cargo-nextest not found: using cargo test)"
  cargo test --workspace --no-fail-fast
  CALLINVITE_TEST_CLUSTER=1 cargo test -p callinvite-server --test invitations
fi

echo "== UI logic"
node --test ui/tests/

echo "== desktop app end to end (Xvfb, WebDriver, dunst)"
tests/app/run.sh
