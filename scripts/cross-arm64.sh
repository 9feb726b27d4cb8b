#!/usr/bin/env bash
# Cross-compiles the addon for Linux arm64 (glibc) with the Debian cross compiler: every
# C++ source of native/sources.json that an arm64 build takes (the common ones; the per-ISA
# kernels are x86-64 only), with the include paths and defines of binding.gyp, then links
# laminate.node, whose N-API symbols resolve against node at load. It proves the sources
# build for arm64 and prints the newest glibc and libstdc++ symbol versions the binary
# needs. Loading it needs an arm64 Node (the release workflow's arm64 job).
#
#   bash scripts/cross-arm64.sh [out-dir]      (default /tmp/laminate-arm64)
#   JOBS=2 to compile in parallel; CXX=... to pick the compiler.
# Needs: apt-get install g++-aarch64-linux-gnu.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/laminate-arm64}
CXX=${CXX:-aarch64-linux-gnu-g++}
OBJDUMP=${OBJDUMP:-aarch64-linux-gnu-objdump}
command -v "$CXX" >/dev/null || { echo "cross-arm64: $CXX not found (apt-get install g++-aarch64-linux-gnu)" >&2; exit 2; }
mkdir -p "$OUT/obj"

ADDON_API=$(node -p "require('node-addon-api').include_dir")
NAPI_HEADERS=$(node -p "require('node-api-headers').include_dir")
CXXFLAGS=(-std=c++17 -O3 -fPIC -pthread -fno-math-errno -fexceptions -Wall -Wno-unused-parameter -DNAPI_VERSION=8
  -DNODE_ADDON_API_DISABLE_DEPRECATED -I"$ADDON_API" -I"$NAPI_HEADERS")

# One line per source: "<file>\t" (no extra flags: the per-ISA kernels are x86-64 only).
node -p 'require("./native/sources.json").common.map((f) => f + "\t").join("\n")' > "$OUT/sources.tsv"
. scripts/compile-sources.sh
compile_sources cross-arm64 "$OUT/sources.tsv"

"$CXX" -shared -pthread -o "$OUT/laminate.node" "$OUT"/obj/*.o -s
echo "cross-arm64: linked $OUT/laminate.node ($(stat -c %s "$OUT/laminate.node") bytes)"
newest() { "$OBJDUMP" -T "$OUT/laminate.node" | grep -o "$1_[0-9.]*" | sort -u -V | tail -1; }
echo "cross-arm64: needs $(newest GLIBC) and $(newest GLIBCXX)"
