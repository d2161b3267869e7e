#!/usr/bin/env bash
# Set-up command 1: install what is needed, build the default image, boot it once in QEMU.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-host.sh
# shellcheck source=scripts/runtime-env.sh
. scripts/runtime-env.sh
node bin/ossify.js build profiles/default.yaml
node bin/ossify.js run out/ossify-default-1.0.0/disk.raw --snapshot --expect 'OSSIFY-BOOT name=\S+ version=\S+ slot=a' --timeout 180
