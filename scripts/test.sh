#!/usr/bin/env bash
# Installs the dependencies, builds everything (the CUDA kernels too where nvcc is found; they are
# compiled, and their tests skip without a GPU) and runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DR1_CUDA=auto
cmake --build build -j"$(nproc)"
cd build
ctest -j"$(nproc)" --output-on-failure --timeout 900
