# shellcheck shell=bash
# Sourced by the set-up scripts: puts the project's Node.js (.runtime/, installed by
# scripts/install-runtime.sh when the host's node is too old) first on PATH, so npm, tsc,
# vitest and ossify all run on it.
_ossify_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -x "$_ossify_root/.runtime/bin/node" ]; then
  PATH="$_ossify_root/.runtime/bin:$PATH"
  export PATH
fi
unset _ossify_root
