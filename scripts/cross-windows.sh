#!/usr/bin/env bash
# Cross-compiles the addon for Windows x64 with MinGW-w64 on Linux: every C++ source of
# native/sources.json (common and per-ISA with their flags; not CUDA), with the include
# paths and defines of binding.gyp, then links laminate.node against an import library
# made from node-api-headers' .def (the N-API symbols that node.exe exports).
# It proves the sources build for Windows; the release workflow builds the real binary
# with MSVC and tests it on Windows.
#
#   bash scripts/cross-windows.sh [out-dir]      (default /tmp/laminate-win64)
#   JOBS=2 to compile in parallel; CXX=... to pick the compiler.
# Needs: apt-get install g++-mingw-w64-x86-64 (the -posix variant: std::thread).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/laminate-win64}
if [ -z "${CXX:-}" ]; then
  if command -v x86_64-w64-mingw32-g++-posix >/dev/null; then CXX=x86_64-w64-mingw32-g++-posix; else CXX=x86_64-w64-mingw32-g++; fi
fi
DLLTOOL=${DLLTOOL:-x86_64-w64-mingw32-dlltool}
command -v "$CXX" >/dev/null || { echo "cross-windows: $CXX not found (apt-get install g++-mingw-w64-x86-64)" >&2; exit 2; }
mkdir -p "$OUT/obj"

ADDON_API=$(node -p "require('node-addon-api').include_dir")
NAPI_HEADERS=$(node -p "require('node-api-headers').include_dir")
NAPI_DEFS=$(dirname "$(node -p "require('node-api-headers').def_paths.node_api_def")")
CXXFLAGS=(-std=c++17 -O1 -fexceptions -Wall -Wno-unused-parameter -DNAPI_VERSION=8 -DNODE_ADDON_API_DISABLE_DEPRECATED
  -I"$ADDON_API" -I"$NAPI_HEADERS")

# One line per source: "<file>\t<extra flags>".
node -e '
const s = require("./native/sources.json");
for (const f of s.common) console.log(f + "\t");
for (const isa of Object.values(s.isa)) for (const f of isa.sources) console.log(f + "\t" + isa.flags.join(" "));
' > "$OUT/sources.tsv"

. scripts/compile-sources.sh
compile_sources cross-windows "$OUT/sources.tsv"

# Import library for the N-API functions node.exe exports, then the DLL.
cat "$NAPI_DEFS/node_api.def" > "$OUT/node.def"
"$DLLTOOL" -d "$OUT/node.def" -l "$OUT/libnode.a" -D node.exe
"$CXX" -shared -o "$OUT/laminate.node" "$OUT"/obj/*.o "$OUT/libnode.a" -static -static-libgcc -static-libstdc++ -s
echo "cross-windows: linked $OUT/laminate.node ($(stat -c %s "$OUT/laminate.node") bytes)"
if command -v x86_64-w64-mingw32-objdump >/dev/null; then
  echo "cross-windows: DLLs it imports: $(x86_64-w64-mingw32-objdump -p "$OUT/laminate.node" | awk '/DLL Name/ {print $3}' | sort -u | tr '\n' ' ')"
fi
