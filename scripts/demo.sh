#!/usr/bin/env bash
# Installs the dependencies, builds r1, writes a demo model (random weights, the real R1
# tokenizer and chat template) and serves it on http://127.0.0.1:11434 with the CPU backend:
# OpenAI-compatible /v1 and Ollama-compatible /api. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -G Ninja -DR1_CUDA=off >/dev/null
cmake --build build -j"$(nproc)" --target r1
MODEL=build/demo-model
[ -f "$MODEL/config.json" ] || build/cli/r1 make-tiny --out "$MODEL"
build/cli/r1 info --model "$MODEL"
cat <<'MSG'

Try, from another terminal:
  curl -s http://127.0.0.1:11434/v1/chat/completions -H 'content-type: application/json' \
    -d '{"model":"demo-model","messages":[{"role":"user","content":"Hello"}],"max_tokens":32}'
  curl -s http://127.0.0.1:11434/api/tags
MSG
exec build/cli/r1 serve --model "$MODEL" --listen 127.0.0.1:11434
