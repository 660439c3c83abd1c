#!/usr/bin/env bash
# Sourced by run.sh and test.sh: makes sure the Rust toolchain (and, for tests,
# cargo-nextest) is there, installing what can be installed on Debian/Ubuntu,
# or printing the exact line to run.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if [ -d "$HOME/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

if ! have cargo; then
  echo "Rust is not installed. Install it with:" >&2
  echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
  exit 1
fi

# A C compiler is needed by a few crates' build scripts.
if ! have cc; then
  if have apt-get && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq build-essential pkg-config
  else
    echo "A C compiler is missing. Install it with:" >&2
    echo "  sudo apt-get install -y build-essential pkg-config" >&2
    exit 1
  fi
fi
