#!/usr/bin/env bash
# Set-up command 2: install what is needed and run every test, including the QEMU boots and
# the registry tests (they start their own docker-registry on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-host.sh --with-oracles
# shellcheck source=scripts/runtime-env.sh
. scripts/runtime-env.sh
npm test
