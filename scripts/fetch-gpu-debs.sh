#!/usr/bin/env bash
# Downloads, here, the Debian packages the GPU machine lacks (abseil, GoogleTest, nlohmann-json,
# CLI11, ICU) into .debs/, which travels with the working tree (`carry: [".debs"]`) and
# scripts/gpu-test.sh unpacks there. About 15 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .debs
cd .debs
apt-get download libabsl-dev libabsl20220623 libgtest-dev nlohmann-json3-dev libcli11-dev libicu-dev libicu72
