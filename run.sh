#!/usr/bin/env bash
# Runs the callinvite desktop app. With no server configured it serves the
# built-in one on 127.0.0.1:7450 (or joins the one already there), so two
# profiles on one machine call each other with no setup:
#   ./run.sh --profile alice      # in one terminal
#   ./run.sh --profile bob        # in another
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-tools.sh
need_rust
need_packages $APP_BUILD_PACKAGES
exec cargo run -p callinvite-desktop -- "$@"
