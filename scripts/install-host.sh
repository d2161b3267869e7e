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
# npm 11.19 writes lock files without other platforms' optional packages (rollup's native
# builds) and then its own `npm ci` calls such a lock out of sync; fall back to an install
# that honours the same lock file rather than fail the whole set-up.
if ! npm ci; then
  echo "npm ci refused package-lock.json; installing with npm install from the same lock file" >&2
  npm install --no-audit --no-fund
fi
