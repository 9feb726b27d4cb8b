#!/usr/bin/env bash
# The GPU test suites on a simulator build with AddressSanitizer and UndefinedBehaviorSanitizer
# (npm run test:sanitize). A kernel that reads or writes past a device allocation, or loads a
# misaligned word, faults on a GPU; here the sanitizers stop the test run at that access and
# print where it is.
set -euo pipefail
cd "$(dirname "$0")/.."
npx cmake-js compile --out build-sanitize --CDLAMINATE_CUDA_SIM=ON --CDLAMINATE_SANITIZE=ON
runtime() { "${CXX:-g++}" -print-file-name="$1"; }
export LD_PRELOAD="$(runtime libasan.so) $(runtime libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export LAMINATE_CUDA_ADDON=build-sanitize/Release/laminate.node
# the build must load, and the GPU suites must run on it (they fail instead of skipping)
node -e "require('./$LAMINATE_CUDA_ADDON').cudaInfo()"
export LAMINATE_REQUIRE_SIM=1
# the sanitizers make the simulator about eight times slower: the tests get ten minutes each
npx vitest run --testTimeout 600000 test/gpu.test.ts test/exl2.test.ts
