#!/usr/bin/env bash
# Installs the Debian packages listed in host-packages.txt (needs root or sudo) and the npm
# dependencies. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t pkgs < <(grep -v '^\s*#' scripts/host-packages.txt | grep -v '^\s*$')
sudo_=()
[ "$(id -u)" -eq 0 ] || sudo_=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_[@]}" apt-get update
"${sudo_[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}"
npm ci
