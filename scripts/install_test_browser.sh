#!/usr/bin/env bash
# Installs the headless browser that the viewer tests run the trajectory viewer's JavaScript in
# (Debian's chromium), unless one is already there. Needs root or passwordless sudo on a
# Debian/Ubuntu machine; elsewhere, point RLALIGN_BROWSER at a Chromium or Chrome binary.
set -euo pipefail
if [[ -n "${RLALIGN_BROWSER:-}" ]] || command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "no chromium and no apt-get: install Chromium or Chrome and set RLALIGN_BROWSER" >&2
  exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if ! sudo -n true 2>/dev/null; then
    echo "installing chromium needs root (or passwordless sudo): apt-get install -y chromium" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq chromium >/dev/null
command -v chromium
