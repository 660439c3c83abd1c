#!/usr/bin/env bash
# Measures the desktop app's cold start (launch → window mapped, and → UI ready
# on the sign-in screen) and its idle memory (RSS of the app and its WebKit
# processes after 10 s idle), headless under Xvfb. Prints the figures; it is a
# measurement, not a test. Usage: scripts/measure-app.sh [path/to/callinvite-app]
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-target/debug/callinvite-app}
[ -x "$APP" ] || { echo "build the app first: cargo build -p callinvite-desktop" >&2; exit 1; }
if [ -z "${MEASURE_INNER:-}" ]; then
  export MEASURE_INNER=1
  exec dbus-run-session -- "$0" "$@"
fi
WORK=$(mktemp -d)
Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp 3>"$WORK/display" >/dev/null 2>&1 &
XVFB=$!
trap 'kill $XVFB 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do [ -s "$WORK/display" ] && break; sleep 0.1; done
export DISPLAY=":$(head -1 "$WORK/display")" NO_AT_BRIDGE=1 WEBKIT_DISABLE_DMABUF_RENDERER=1 GTK_USE_PORTAL=0

runs=${RUNS:-3}
for i in $(seq 1 "$runs"); do
  DATA=$(mktemp -d)
  start=$(date +%s%N)
  "$APP" --profile measure --data-dir "$DATA" --embedded-port 0 --log warn >/dev/null 2>&1 &
  PID=$!
  xdotool search --sync --onlyvisible --name '^callinvite' >/dev/null
  mapped=$(( ($(date +%s%N) - start) / 1000000 ))
  echo "run $i: window mapped after ${mapped} ms"
  if [ "$i" = "$runs" ]; then
    sleep 10
    rss_app=$(ps -o rss= -p "$PID" | tr -d ' ')
    rss_web_all=$(pgrep -f 'WebKit(Web|Network)Process' | xargs -r ps -o rss= -p | awk '{s+=$1} END {print s+0}')
    echo "idle RSS after 10 s: app ${rss_app} KiB, WebKit helpers ${rss_web_all} KiB, total $((rss_app + rss_web_all)) KiB"
  fi
  kill "$PID"; wait "$PID" 2>/dev/null || true
  rm -rf "$DATA"
done
