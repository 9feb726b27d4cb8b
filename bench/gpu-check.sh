#!/usr/bin/env bash
# Everything that needs a GPU, as one command (npm run gpu:check): build the CUDA variant for
# the GPU present (and the CPU addon that the tests compare with, where none is built), run
# the GPU tests on it (npm run test:gpu), run the GPU benchmark (npm run bench:gpu). Every
# output goes to one folder: $OUT, else bench/results/gpu. Where the machine has no Node.js
# or node_modules, the archives that bench/gpu-pack.sh writes to .gpu/ are unpacked first.
# Takes a few minutes on an H100.
#   bash bench/gpu-check.sh             on a GPU machine
#   bash bench/gpu-check.sh --rehearse  the same steps on the simulator build (no GPU), with
#                                       the small benchmark shape: a dry run of this script
set -uo pipefail
cd "$(dirname "$0")/.."
rehearse=0
[ "${1:-}" = "--rehearse" ] && rehearse=1
out="${OUT:-bench/results/gpu}"
mkdir -p "$out"
export PATH="$PATH:/usr/local/cuda/bin"
if ! command -v node >/dev/null; then
  mkdir -p /tmp/laminate-node/bin
  tar -C /tmp/laminate-node/bin -xJf .gpu/node.tar.xz || { echo "no node, and no .gpu/node.tar.xz (bench/gpu-pack.sh)"; exit 1; }
  export PATH="/tmp/laminate-node/bin:$PATH"
fi
[ -d node_modules ] || tar -xJf .gpu/node_modules.tar.xz || { echo "no node_modules, and no .gpu/node_modules.tar.xz"; exit 1; }
# the packages' commands, run by node itself (the packed node comes without npm and npx)
bin() { node "node_modules/.bin/$1" "${@:2}"; }
echo "node $(node --version), $(nproc) cores"
if [ $rehearse -eq 0 ]; then
  nvidia-smi > "$out/nvidia-smi.txt" 2>&1
  arch="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d '. ')"
  echo "GPU compute capability: ${arch:-unknown}"
fi

t0=$(date +%s)
bin tsc -p tsconfig.json > "$out/build.log" 2>&1 && chmod +x dist/cli/main.js
cpu_build=0
if [ ! -f build/Release/laminate.node ]; then
  # the CPU addon (node-gyp-build finds it in build/Release), beside the CUDA build
  bin cmake-js compile --out build > "$out/build-cpu.log" 2>&1 &
  cpu_build=$!
fi
if [ $rehearse -eq 1 ]; then
  variant=build-sim
  bin cmake-js compile --out build-sim --CDLAMINATE_CUDA_SIM=ON >> "$out/build.log" 2>&1
else
  variant=build-cuda
  bin cmake-js compile --out build-cuda --CDLAMINATE_CUDA=ON ${arch:+--CDCMAKE_CUDA_ARCHITECTURES=$arch} >> "$out/build.log" 2>&1
fi
build=$?
if [ $cpu_build -ne 0 ]; then
  wait $cpu_build || { echo "the CPU addon did not build"; tail -30 "$out/build-cpu.log"; build=1; }
fi
echo "build: rc $build, $(( $(date +%s) - t0 )) s"
[ $build -eq 0 ] || { tail -30 "$out/build.log"; exit 1; }
export LAMINATE_CUDA_ADDON="$PWD/$variant/Release/laminate.node"
node -e "import('./dist/index.js').then((l) => console.log(JSON.stringify({ cpu: l.cpuInfo(), cuda: l.cudaInfo() })))" | tee "$out/cuda-info.json"
grep -q '"devices":\[{' "$out/cuda-info.json" || { echo "the CUDA build sees no GPU: nothing to check here"; exit 1; }

t0=$(date +%s)
bin vitest run test/gpu.test.ts test/exl2.test.ts --reporter=verbose > "$out/test-gpu.log" 2>&1
tests=$?
echo "test:gpu: rc $tests, $(( $(date +%s) - t0 )) s"
grep -E "✓|×|skipped|Tests|FAIL|Error" "$out/test-gpu.log" | tail -40

t0=$(date +%s)
bench_args=()
[ $rehearse -eq 1 ] && bench_args=(--shape small --steps 4 --batches 1,8 --prefill 64)
node bench/gpu.mjs --out "$out" "${bench_args[@]}" > "$out/bench-gpu.jsonl" 2> "$out/bench-gpu.err"
bench=$?
echo "bench:gpu: rc $bench, $(( $(date +%s) - t0 )) s"
cat "$out/bench-gpu.jsonl"
tail -5 "$out/bench-gpu.err"
exit $(( tests != 0 || bench != 0 ))
