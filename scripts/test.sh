#!/usr/bin/env bash
# Installs the dependencies, builds everything (the CUDA kernels too where nvcc is found; they are
# compiled, and their tests skip without a GPU), runs the whole test suite with CTest, then the fuzz
# targets for a minute each (scripts/fuzz.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DR1_CUDA=auto
cmake --build build -j"$(nproc)"
(cd build && ctest -j"$(nproc)" --output-on-failure --timeout 900)
# Each fuzz target for R1_FUZZ_SECONDS (60) from its committed corpus, in build-fuzz with clang,
# ASan and UBSan; a crash fails the run (tests/fuzz/README.md).
scripts/fuzz.sh
