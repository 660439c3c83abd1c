#!/usr/bin/env bash
# Sourced by run.sh and test.sh: makes sure what the build needs is installed,
# installing it on Debian/Ubuntu when running as root, or printing the exact
# line to run.
#   need_rust              the Rust toolchain
#   need_packages PKG...   Debian packages (checked with dpkg)
#   need_tauri_driver      tauri-driver (cargo install)
#   need_cargo_deny        cargo-deny 0.20 (cargo install): licences, sources, bans
#   need_aiortc DIR        a Python venv in DIR with aiortc (PyPI), a WebRTC peer we did
#                          not write, for the media interoperability tests

have() { command -v "$1" >/dev/null 2>&1; }

if [ -d "$HOME/.cargo/bin" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

# What building the desktop app needs (Tauri 2 on Linux), and its calls' sound:
# libopus (the voice codec), ALSA headers (cpal's microphone and speaker), cmake
# (the C parts of the WebRTC crypto backend, AWS-LC, may build with it), libvpx
# (the VP8 video codec).
APP_BUILD_PACKAGES="build-essential pkg-config libssl-dev libwebkit2gtk-4.1-dev libgtk-3-dev libayatana-appindicator3-dev librsvg2-dev libxdo-dev libsoup-3.0-dev libopus-dev libasound2-dev cmake libwebrtc-audio-processing-dev libclang-dev libvpx-dev"
# What the server's cluster tests need (they start their own redis-server), and the
# media relay tests (they start their own coturn on loopback).
TEST_PACKAGES="redis-server coturn xvfb"
# What the headless end-to-end tests need.
# imagemagick: the tests capture the window with its `import`.
E2E_PACKAGES="xvfb xauth x11-utils webkit2gtk-driver dbus dbus-x11 dunst libnotify-bin xdotool imagemagick curl nodejs"

need_rust() {
  if ! have cargo; then
    echo "Rust is not installed. Install it with:" >&2
    echo "  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
    exit 1
  fi
}

need_packages() {
  local missing=()
  for p in "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if ! have apt-get; then
    echo "Missing system packages: ${missing[*]} (install them with your package manager)" >&2
    exit 1
  fi
  if [ "$(id -u)" = 0 ]; then
    echo "Installing: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "Missing system packages. Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

need_tauri_driver() {
  if ! have tauri-driver; then
    echo "Installing tauri-driver (cargo install tauri-driver --locked)" >&2
    cargo install tauri-driver --locked --quiet
  fi
}

need_cargo_deny() {
  if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
    echo "Installing cargo-deny (cargo install cargo-deny --version ^0.20 --locked)" >&2
    # Its release profile asks for fat LTO and one codegen unit: minutes more
    # of build on two cores for a tool that runs for a second.
    CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      cargo install cargo-deny --version '^0.20' --locked --quiet
  fi
}

need_aiortc() {
  local dir="$1"
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import aiortc' 2>/dev/null; then
    return 0
  fi
  if ! python3 -m venv --help >/dev/null 2>&1; then
    need_packages python3-venv
  fi
  echo "Installing aiortc into $dir (pip)" >&2
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "aiortc>=1.9,<2"
}
