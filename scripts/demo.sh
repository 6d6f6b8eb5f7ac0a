#!/usr/bin/env bash
# Installs the dependencies, builds r1, and runs it on a bundled model: a summary of the model and
# a greedy generation from a prompt of token ids, with the CPU backend.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DR1_CUDA=off >/dev/null
cmake --build build -j"$(nproc)" --target r1
MODEL=tests/golden/models/golden-a-fp8
build/cli/r1 info --model "$MODEL"
echo "generate: prompt 1,2,3 -> 24 new tokens"
build/cli/r1 generate --model "$MODEL" --tokens 1,2,3 --max-new-tokens 24
