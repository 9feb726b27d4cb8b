#!/usr/bin/env bash
# The opt-in package of the prebuilt CUDA addon, laminate-cuda-<platform>-<arch>: the CUDA
# build (npm run build:cuda: cmake-js with nvcc, the CUDA runtime linked statically, glibc
# symbols no newer than 2.28 on Linux), stripped, with a package.json at laminate's version,
# packed with npm pack. Prints the packed and unpacked sizes. lib/native.ts loads it when
# installed beside laminate and a device asks for CUDA.
#
#   bash scripts/prebuild-cuda.sh [out-dir]      (default build-cuda-package)
# Needs nvcc (PATH or /usr/local/cuda/bin); builds build-cuda/ first when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-build-cuda-package}
export PATH="$PATH:/usr/local/cuda/bin"
[ -f build-cuda/Release/laminate.node ] || npm run build:cuda
node -e 'const a = require("./build-cuda/Release/laminate.node"); if (typeof a.cudaInfo !== "function") { console.error("build-cuda is not a CUDA build"); process.exit(1); }'
name="laminate-cuda-$(node -p 'process.platform + "-" + process.arch')"
rm -rf "$OUT" && mkdir -p "$OUT"
strip --strip-unneeded -o "$OUT/laminate.node" build-cuda/Release/laminate.node
cp packages/cuda/README.md "$OUT/README.md"
node -e '
const root = require("./package.json");
const [platform, arch] = [process.platform, process.arch];
const pkg = {
  name: process.argv[1],
  version: root.version,
  description: `The prebuilt CUDA addon of laminate ${root.version} for ${platform}-${arch} (needs only the NVIDIA driver)`,
  license: root.license,
  os: [platform],
  cpu: [arch],
  engines: root.engines,
  files: ["laminate.node", "README.md"],
  peerDependencies: { laminate: root.version },
};
require("fs").writeFileSync(process.argv[2], JSON.stringify(pkg, null, 2) + "\n");
' "$name" "$OUT/package.json"
(cd "$OUT" && npm pack --json > pack.json)
node -e '
const [p] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const mb = (b) => (b / 1e6).toFixed(1) + " MB";
console.log(`prebuild-cuda: ${process.argv[2]}/${p.filename}: ${mb(p.size)} packed, ${mb(p.unpackedSize)} unpacked`);
' "$OUT/pack.json" "$OUT"
if [ "$(uname -s)" = Linux ]; then
  glibc=$(objdump -T "$OUT/laminate.node" | grep -o 'GLIBC_[0-9.]*' | sort -u -V | tail -1)
  echo "prebuild-cuda: needs $glibc$(objdump -T "$OUT/laminate.node" | grep -q GLIBCXX && echo ' and libstdc++ symbols')"
fi
