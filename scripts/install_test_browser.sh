#!/usr/bin/env bash
# Installs what the tests drive the interface with, unless it is already there: the headless
# browser the viewer and compare-page tests run the pages' JavaScript in (Debian's chromium),
# and the terminal the chat test types into (tmux). Needs root or passwordless sudo on a
# Debian/Ubuntu machine; elsewhere, point RLALIGN_BROWSER at a Chromium or Chrome binary and
# install tmux.
set -euo pipefail
missing=()
if [[ -z "${RLALIGN_BROWSER:-}" ]] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
  missing+=(chromium)
fi
command -v tmux >/dev/null || missing+=(tmux)
if [[ ${#missing[@]} == 0 ]]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "missing ${missing[*]} and no apt-get: install them (Chromium or Chrome: set RLALIGN_BROWSER)" >&2
  exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  if ! sudo -n true 2>/dev/null; then
    echo "installing ${missing[*]} needs root (or passwordless sudo): apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  sudo=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
