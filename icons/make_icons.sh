#!/usr/bin/env bash
# Regenerates the app icons from a drawing (ImageMagick + python3). The results are committed;
# run this only to change the icon.
set -euo pipefail
cd "$(dirname "$0")"
# 1024 px master: a green disc with a white telephone glyph.
/usr/bin/convert -size 1024x1024 xc:none \
  -fill '#1f8f4e' -draw 'circle 512,512 512,40' \
  -fill white -font DejaVu-Sans-Bold -pointsize 820 -gravity center -annotate +0+30 '✆' \
  master.png 2>/dev/null || /usr/bin/convert -size 1024x1024 xc:none -fill '#1f8f4e' -draw 'circle 512,512 512,40' \
  -fill white -font DejaVu-Sans-Bold -pointsize 600 -gravity center -annotate +0+0 'C' master.png
for s in 32 128 256 512; do /usr/bin/convert master.png -resize ${s}x${s} "${s}x${s}.png"; done
cp 256x256.png 128x128@2x.png
cp 512x512.png icon.png
/usr/bin/convert master.png -define icon:auto-resize=256,128,64,48,32,16 icon.ico
# ICNS: a header and PNG entries (ic07 128, ic08 256, ic09 512), written by hand.
python3 - <<'PY'
import struct
entries = [(b'ic07', '128x128.png'), (b'ic08', '256x256.png'), (b'ic09', '512x512.png')]
body = b''.join(t + struct.pack('>I', 8 + len(open(f, 'rb').read())) + open(f, 'rb').read() for t, f in entries)
open('icon.icns', 'wb').write(b'icns' + struct.pack('>I', 8 + len(body)) + body)
PY
# Tray icons: small, same drawing, one per state — online (green), connecting (amber),
# offline or signed out (grey, faded).
/usr/bin/convert master.png -resize 64x64 tray-online.png
/usr/bin/convert tray-online.png -modulate 120,160,42 PNG32:tray-connecting.png
/usr/bin/convert tray-online.png -modulate 100,0 -channel A -evaluate multiply 0.75 +channel PNG32:tray-offline.png
rm master.png
