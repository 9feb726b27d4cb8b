#!/usr/bin/env bash
# Packs what bench/gpu-check.sh needs on a GPU machine that has no Node.js and no network:
# this machine's node binary and node_modules, compressed, in .gpu/ (ignored by git; carry
# it to the GPU machine with the working tree).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu
node_bin="$(readlink -f "$(command -v node)")"
tar -C "$(dirname "$node_bin")" -cf - "$(basename "$node_bin")" | xz -T0 -6 > .gpu/node.tar.xz
tar -cf - node_modules | xz -T0 -6 > .gpu/node_modules.tar.xz
du -ch .gpu/*
