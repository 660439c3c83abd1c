#!/usr/bin/env bash
# Measures the desktop app's cold start (launch → window mapped) and its idle
# memory (RSS of the app and its WebKit processes after 10 s idle), headless
# under Xvfb, beside the smallest Tauri app (bench/hello-tauri) measured the
# same way in the same run — so what the app itself adds is told apart from
# what Tauri and WebKit cost anyway. Prints the figures; it is a measurement,
# not a test.
#
# The window is found by polling every 20 ms (`xdotool search --onlyvisible`),
# so a figure is at most ~20 ms late; `xdotool search --sync` would add its own
# polling delay of up to half a second.
#
# Usage: scripts/measure-app.sh [path/to/callinvite-app [path/to/callinvite-hello]]
#   default: target/debug/…; build both first, with the same profile:
#   cargo build -p callinvite-desktop -p callinvite-hello   (add --release for release figures)
set -euo pipefail
cd "$(dirname "$0")/.."
APP=${1:-target/debug/callinvite-app}
HELLO=${2:-$(dirname "$APP")/callinvite-hello}
for bin in "$APP" "$HELLO"; do
  [ -x "$bin" ] || { echo "build it first: cargo build -p callinvite-desktop -p callinvite-hello (missing $bin)" >&2; exit 1; }
done
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

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Waits (polling every 20 ms, at most 30 s) for a visible window whose name
# matches $NAME; prints the ms since $1 (a now_ms taken at launch).
wait_window() {
  for _ in $(seq 1 1500); do
    if xdotool search --onlyvisible --name "$NAME" >/dev/null 2>&1; then
      echo $(( $(now_ms) - $1 ))
      return 0
    fi
    sleep 0.02
  done
  echo "no window named $NAME within 30 s" >&2
  return 1
}

# RSS of $PID and of the WebKit processes (all of them belong to it: one app
# runs at a time), in KiB.
rss() {
  local app web
  app=$(ps -o rss= -p "$PID" | tr -d ' ')
  web=$(pgrep -f 'WebKit(Web|Network)Process' | xargs -r ps -o rss= -p | awk '{s+=$1} END {print s+0}')
  echo "$app $web"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

runs=${RUNS:-5}
declare -A times
for what in hello app; do
  for i in $(seq 1 "$runs"); do
    DATA=$(mktemp -d)
    start=$(now_ms)
    if [ "$what" = app ]; then
      NAME='^callinvite'
      "$APP" --profile measure --data-dir "$DATA" --embedded-port 0 --log warn >/dev/null 2>&1 &
    else
      NAME='^callinvite-hello$'
      "$HELLO" >/dev/null 2>&1 &
    fi
    PID=$!
    t=$(wait_window "$start") || { kill "$PID" 2>/dev/null; exit 1; }
    times[$what]+="$t "
    if [ "$i" = "$runs" ]; then
      sleep 10
      read -r a w <<<"$(rss)"
      echo "$what: idle RSS after 10 s: process ${a} KiB, WebKit ${w} KiB, total $((a + w)) KiB"
      eval "rss_$what=$((a + w))"
    fi
    kill "$PID"; wait "$PID" 2>/dev/null || true
    rm -rf "$DATA"
    sleep 0.5
  done
  echo "$what: window mapped after (ms): ${times[$what]}"
done
m_app=$(echo "${times[app]}" | tr ' ' '\n' | grep . | median)
m_hello=$(echo "${times[hello]}" | tr ' ' '\n' | grep . | median)
echo "median cold start: app ${m_app} ms, hello-world Tauri ${m_hello} ms ($(awk "BEGIN {printf \"%.2f\", $m_app / $m_hello}")×)"
echo "idle memory: app $((rss_app / 1024)) MiB, hello-world $((rss_hello / 1024)) MiB ($(awk "BEGIN {printf \"%.2f\", $rss_app / $rss_hello}")×)"
