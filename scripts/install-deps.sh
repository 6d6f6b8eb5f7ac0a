#!/usr/bin/env bash
# Installs what r1serve builds and tests with, from Debian 12's packages and the npm registry.
# Idempotent; run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
PACKAGES=(cmake ninja-build g++ pkg-config git
          libabsl-dev libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
          libopenmpi-dev openmpi-bin libgloo-dev libicu-dev nlohmann-json3-dev libgtest-dev libgmock-dev libcli11-dev
          libboost-dev
          clang libclang-rt-dev llvm)  # libFuzzer + sanitizer runtimes, llvm-symbolizer (fuzz.sh)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v node >/dev/null 2>&1 || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# JavaScript packages the tests use (real client libraries, Hugging Face's tokenizer, Jinja).
if [ -f tests/js/package.json ]; then
  npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
fi
