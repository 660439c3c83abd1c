#!/usr/bin/env bash
# Runs the desktop app's end-to-end tests headless: a private D-Bus session bus,
# Xvfb, the dunst notification daemon (with a scripted "menu" that picks the
# Accept action), tauri-driver + WebKitWebDriver, then node's test runner.
# Expects target/debug/{callinvite-app,callinvite-server,callinvite} to be built
# (cargo build -p callinvite-desktop -p callinvite-server -p callinvite-client: the page is
# built into callinvite-app, so a change under ui/ needs that build too).
# Arguments go to node's test runner: tests/app/run.sh --test-name-pattern=video, or
# tests/app/run.sh tests/app/look.test.mjs for one file.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${CALLINVITE_E2E_INNER:-}" ]; then
  export CALLINVITE_E2E_INNER=1
  exec dbus-run-session -- "$0" "$@"
fi

# The tests' npm packages (axe-core, the accessibility checker look.test.mjs injects into the
# page), pinned by tests/app/package-lock.json; node_modules is not committed.
if [ ! -f tests/app/node_modules/axe-core/axe.min.js ]; then
  (cd tests/app && npm ci --no-audit --no-fund --loglevel=error) || { echo "npm ci in tests/app failed (axe-core is needed)" >&2; exit 1; }
fi

WORK=$(mktemp -d)
cleanup() {
  # SIGTERM, never SIGKILL, for tauri-driver: it must stop WebKitWebDriver itself.
  [ -n "${DRIVER:-}" ] && kill -TERM "$DRIVER" 2>/dev/null && wait "$DRIVER" 2>/dev/null || true
  [ -n "${DUNST:-}" ] && kill "$DUNST" 2>/dev/null || true
  [ -n "${XVFB:-}" ] && kill "$XVFB" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# Xvfb picks a free display number itself and writes it to fd 3.
Xvfb -displayfd 3 -screen 0 1280x900x24 -nolisten tcp 3>"$WORK/display" >"$WORK/xvfb.log" 2>&1 &
XVFB=$!
for _ in $(seq 1 100); do [ -s "$WORK/display" ] && break; sleep 0.1; done
if [ ! -s "$WORK/display" ]; then
  echo "Xvfb did not start:" >&2; cat "$WORK/xvfb.log" >&2; exit 1
fi
export DISPLAY=":$(head -1 "$WORK/display")"
xdpyinfo >/dev/null 2>&1 || { echo "cannot reach Xvfb on $DISPLAY" >&2; exit 1; }
# Services the bus starts on demand (portals, a notification daemon) need the display too.
dbus-update-activation-environment DISPLAY NO_AT_BRIDGE=1 GTK_USE_PORTAL=0 >/dev/null 2>&1 || true
export GTK_USE_PORTAL=0

# dunst's "context" menu runs this script; it picks the Accept action.
cat >"$WORK/pick-accept.sh" <<'PICK'
#!/bin/sh
grep -m1 -i 'accept'
PICK
chmod +x "$WORK/pick-accept.sh"
cat >"$WORK/dunstrc" <<RC
[global]
    dmenu = $WORK/pick-accept.sh
    show_indicators = yes
RC
dunst -config "$WORK/dunstrc" >"$WORK/dunst.log" 2>&1 &
DUNST=$!
# Wait until our dunst owns the notification name (asking dunstctl earlier would
# make the bus start a second dunst of its own).
owns() {
  dbus-send --session --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
    org.freedesktop.DBus.NameHasOwner string:org.freedesktop.Notifications 2>/dev/null | grep -q true
}
for _ in $(seq 1 50); do owns && break; sleep 0.1; done
owns || { echo "dunst did not start:" >&2; cat "$WORK/dunst.log" >&2; exit 1; }

export NO_AT_BRIDGE=1 WEBKIT_DISABLE_COMPOSITING_MODE=1 WEBKIT_DISABLE_DMABUF_RENDERER=1
# Free ports for tauri-driver and WebKitWebDriver (not the fixed 4444/4445, so a
# second run on the same machine does not talk to the first one's driver).
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DRIVER_PORT=$(free_port)
NATIVE_PORT=$(free_port)
while [ "$NATIVE_PORT" = "$DRIVER_PORT" ]; do NATIVE_PORT=$(free_port); done
export WEBDRIVER_URL="http://127.0.0.1:$DRIVER_PORT"
tauri-driver --port "$DRIVER_PORT" --native-port "$NATIVE_PORT" >"$WORK/tauri-driver.log" 2>&1 &
DRIVER=$!
for _ in $(seq 1 100); do curl -s "$WEBDRIVER_URL/status" >/dev/null 2>&1 && break; sleep 0.1; done
curl -s "$WEBDRIVER_URL/status" >/dev/null 2>&1 || { echo "tauri-driver did not start:" >&2; cat "$WORK/tauri-driver.log" >&2; exit 1; }

status=0
# Extra arguments go to node's test runner, e.g. --test-name-pattern=video.
# Node 20's --test-timeout also bounds each test file as a whole (app.test.mjs takes ~2 min).
# Test files given (tests/app/run.sh tests/app/look.test.mjs) run alone; else all of tests/app/.
# (Node takes what follows the first file as files too, so the options go first.)
opts=()
files=()
for a in "$@"; do case "$a" in *.mjs) files+=("$a") ;; *) opts+=("$a") ;; esac; done
[ ${#files[@]} -gt 0 ] || files=(tests/app/)
node --test --test-concurrency=1 --test-timeout=300000 "${opts[@]}" "${files[@]}" || status=$?
if [ "$status" != 0 ]; then
  echo "--- tauri-driver log"; tail -50 "$WORK/tauri-driver.log" || true
  echo "--- dunst log"; tail -20 "$WORK/dunst.log" || true
fi
exit "$status"
