#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (protocol, server flows over
# loopback, a cluster of nodes on a real redis-server, client CLI, notifications on a private D-Bus, app commands on
# Tauri's mock runtime, processes end to end, calls with sound between real
# processes, through a lossy path and a coturn relay), the media engine against
# aiortc, the UI logic tests, and the desktop app end to end under Xvfb with
# WebDriver and a real notification daemon (a call answered from the notification,
# with a tone each way), then rustfmt, clippy and cargo-deny.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-tools.sh
need_rust
need_packages $APP_BUILD_PACKAGES $E2E_PACKAGES $TEST_PACKAGES
need_tauri_driver
need_cargo_deny
need_aiortc target/aiortc-venv

# One build of everything (the integration tests make the binaries the end-to-end tests run).
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
  echo "== the server's invitation flow tests again, against two nodes on a private redis-server"
  # --workspace with a filter, not -p: the same features as the build above, so nothing is built twice.
  CALLINVITE_TEST_CLUSTER=1 cargo nextest run --workspace --no-fail-fast -E 'package(callinvite-server) and binary(invitations)'
  echo "== the media engine against aiortc, a WebRTC implementation we did not write"
  AIORTC_PYTHON="$PWD/target/aiortc-venv/bin/python" cargo nextest run --workspace --no-fail-fast --run-ignored only -E 'binary(interop_aiortc)'
else
  echo "(cargo-nextest not found: using cargo test)"
  cargo test --workspace --no-fail-fast
  CALLINVITE_TEST_CLUSTER=1 cargo test -p callinvite-server --test invitations
  AIORTC_PYTHON="$PWD/target/aiortc-venv/bin/python" cargo test -p callinvite-media --test interop_aiortc -- --ignored
fi

echo "== the server as the desktop app embeds it (no default features): its unit tests, and its refusal of a cluster"
cargo test -p callinvite-server --no-default-features --lib

echo "== UI logic"
node --test ui/tests/

echo "== desktop app end to end (Xvfb, WebDriver, dunst)"
tests/app/run.sh

echo "== style: rustfmt, and clippy with warnings as errors"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
  echo "rustfmt and clippy are missing; install them with: rustup component add rustfmt clippy" >&2
  exit 1
fi
cargo fmt --all --check
# Not the hello-world yardstick app (bench/hello-tauri): nothing above builds it.
cargo clippy --workspace --all-targets --exclude callinvite-hello -- -D warnings
# The desktop app's embedded server: the server without its default features
# (no metrics port, TLS, command line or Redis cluster).
cargo clippy -p callinvite-server --no-default-features --lib -- -D warnings

echo "== dependencies: licences we can ship, crates.io only, no wildcard versions (deny.toml)"
cargo deny --log-level error check bans licenses sources
