#!/usr/bin/env bash
# Runs callinvite out of the box: the signaling server on 127.0.0.1:7450 and a
# demo call between two command-line clients (bob answers, alice calls). The
# server keeps running afterwards so you can place your own calls; Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/ensure-tools.sh

cargo build --workspace --bins
BIN=target/debug
LISTEN="${CALLINVITE_LISTEN:-127.0.0.1:7450}"
URL="ws://$LISTEN"

"$BIN/callinvite-server" --listen "$LISTEN" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do
  if "$BIN/callinvite" --server "$URL" --user probe presence probe >/dev/null 2>&1; then break; fi
  sleep 0.1
done

echo
echo "== demo: bob answers, alice calls bob, bob hangs up after 2 s =="
"$BIN/callinvite" --server "$URL" --user bob answer --accept --response "hi alice" --hangup-after 2s | sed 's/^/bob   | /' &
BOB=$!
sleep 0.5
"$BIN/callinvite" --server "$URL" --user alice call bob --content "demo-room" | sed 's/^/alice | /'
wait $BOB || true

cat <<TXT

The server is still running on $URL. Try, in two other terminals:
  $BIN/callinvite --user bob answer --accept --count 0
  $BIN/callinvite --user alice call bob --content hello
Press Ctrl-C to stop the server.
TXT
wait $SERVER
