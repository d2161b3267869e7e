#!/usr/bin/env bash
# Installs what ossify needs (Debian packages in run-packages.txt, a Node.js >= 22.15, the npm
# dependencies) and compiles it (dist/). With --with-oracles, also the test oracles and
# test-only inputs in host-packages.txt. Needs root or sudo for apt-get. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
lists=(scripts/run-packages.txt)
[ "${1:-}" = "--with-oracles" ] && lists+=(scripts/host-packages.txt)
mapfile -t pkgs < <(cat "${lists[@]}" | grep -v '^\s*#' | grep -v '^\s*$' | sort -u)
sudo_=()
[ "$(id -u)" -eq 0 ] || sudo_=(sudo)
export DEBIAN_FRONTEND=noninteractive
# aarch64 profiles fetch their packages for arm64 (apt-get download PKG:arm64).
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  "${sudo_[@]}" dpkg --add-architecture arm64
fi
"${sudo_[@]}" apt-get update
"${sudo_[@]}" apt-get install -y --no-install-recommends "${pkgs[@]}"
./scripts/install-runtime.sh
# shellcheck source=scripts/runtime-env.sh
. scripts/runtime-env.sh
npm ci --no-audit --no-fund
npm run build
