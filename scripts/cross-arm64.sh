#!/usr/bin/env bash
# The linux-arm64 (glibc) prebuilt binary, cross-compiled with the Debian cross compiler:
# every C++ source of native/sources.json that an arm64 build takes (the common ones, and
# the NEON kernels of isaArm64 with their flags), with the include paths, defines and link
# flags of binding.gyp, linked into prebuilds/linux-arm64/laminate.glibc.node (where
# node-gyp-build looks on an arm64 Linux), its N-API symbols resolved by node at load. It
# prints the newest glibc symbol version the binary needs and fails above 2.28 (the oldest
# glibc Node 20 runs on) or on any libstdc++ symbol (linked statically). test/arm64.test.ts
# loads and runs it with an arm64 Node under qemu-user.
#
#   bash scripts/cross-arm64.sh [prebuilds-dir]      (default prebuilds/linux-arm64)
#   JOBS=2 to compile in parallel; CXX=... to pick the compiler; OBJ=... for the objects.
# Needs: apt-get install g++-aarch64-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${1:-prebuilds/linux-arm64}
OUT=${OBJ:-/tmp/laminate-arm64}
CXX=${CXX:-aarch64-linux-gnu-g++}
OBJDUMP=${OBJDUMP:-aarch64-linux-gnu-objdump}
command -v "$CXX" >/dev/null || { echo "cross-arm64: $CXX not found (apt-get install g++-aarch64-linux-gnu)" >&2; exit 2; }
mkdir -p "$OUT/obj" "$DEST"

ADDON_API=$(node -p "require('node-addon-api').include_dir")
NAPI_HEADERS=$(node -p "require('node-api-headers').include_dir")
CXXFLAGS=(-std=c++17 -O3 -fPIC -pthread -fno-math-errno -fexceptions -Wall -Wno-unused-parameter -DNAPI_VERSION=8
  -DNODE_ADDON_API_DISABLE_DEPRECATED -I"$ADDON_API" -I"$NAPI_HEADERS")

# One line per source: "<file>\t<extra flags>".
node -e '
const s = require("./native/sources.json");
for (const f of s.common) console.log(f + "\t");
for (const isa of Object.values(s.isaArm64)) for (const f of isa.sources) console.log(f + "\t" + isa.flags.join(" "));
' > "$OUT/sources.tsv"
. scripts/compile-sources.sh
compile_sources cross-arm64 "$OUT/sources.tsv"

# shellcheck disable=SC2046
"$CXX" -shared -pthread -o "$DEST/laminate.glibc.node" "$OUT"/obj/*.o $(node -p 'require("./native/sources.json").linuxLinkFlags.join(" ")') -s
echo "cross-arm64: linked $DEST/laminate.glibc.node ($(stat -c %s "$DEST/laminate.glibc.node") bytes)"
glibc=$("$OBJDUMP" -T "$DEST/laminate.glibc.node" | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tail -1)
echo "cross-arm64: needs $glibc"
if [ "$(printf '%s\n' "$glibc" GLIBC_2.28 | sort -V | tail -1)" != GLIBC_2.28 ]; then
  echo "cross-arm64: $glibc is newer than glibc 2.28" >&2; exit 1
fi
if "$OBJDUMP" -T "$DEST/laminate.glibc.node" | grep -q GLIBCXX; then
  echo "cross-arm64: the binary needs libstdc++ symbols (it should link it statically)" >&2; exit 1
fi
