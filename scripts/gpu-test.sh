#!/usr/bin/env bash
# The GPU build, on the GPU machine (CUDA 13, no abseil / gRPC / GoogleTest there): unpacks the
# Debian packages carried in .debs/ (scripts/fetch-gpu-debs.sh) into a private prefix, builds the
# kernels, the model, `r1` and the tests without the services (-DR1_SERVICES=OFF), and runs the
# CUDA tests and the CPU model tests. Extra arguments go to the CUDA test binary (--gtest_filter=…).
# Environment: R1_GPU_TARGETS (what to build; tests not built are not run), R1_GPU_MODEL_FILTER
# (a --gtest_filter for the GPU model tests), R1_GPU_AFTER (a command run afterwards in the same
# environment, e.g. a benchmark: R1_GPU_AFTER="build-gpu/bench/gpu/bench_gpu_load").
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/tmp/r1-deps
ls .debs/*.deb >/dev/null 2>&1 || { echo "error: no .debs/ here; run scripts/fetch-gpu-debs.sh first and carry .debs" >&2; exit 2; }
mkdir -p "$PREFIX/.unpacked"
for f in .debs/*.deb; do
  [ -e "$PREFIX/.unpacked/$(basename "$f")" ] || { dpkg -x "$f" "$PREFIX" && touch "$PREFIX/.unpacked/$(basename "$f")"; }
done
export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
export PKG_CONFIG_PATH="$PREFIX/usr/lib/x86_64-linux-gnu/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$PREFIX"
# NCCL: the pip package nvidia-nccl-cu13 there (headers and libnccl.so.2), if the toolkit lacks it.
NCCL_ROOT=$(python3 -c 'import nvidia.nccl, os; print(os.path.dirname(nvidia.nccl.__file__))' 2>/dev/null || true)
[ -n "$NCCL_ROOT" ] && export LD_LIBRARY_PATH="$NCCL_ROOT/lib:$LD_LIBRARY_PATH"
cmake -S . -B build-gpu -G Ninja -DR1_SERVICES=OFF -DR1_CUDA=on -DNCCL_ROOT="$NCCL_ROOT" \
  -DCMAKE_PREFIX_PATH="$PREFIX/usr;$PREFIX/usr/lib/x86_64-linux-gnu/cmake;$PREFIX/usr/share/cmake" \
  -DCMAKE_CXX_FLAGS="-isystem $PREFIX/usr/include" -DCMAKE_CUDA_FLAGS="-isystem $PREFIX/usr/include" >/dev/null
cmake --build build-gpu -j"$(nproc)" --target ${R1_GPU_TARGETS:-r1_cuda_tests r1_gpu_model_tests r1_gpu_engine_tests r1_nccl_tests r1_tests r1}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
status=0
[ -x build-gpu/tests/cuda/r1_cuda_tests ] && { build-gpu/tests/cuda/r1_cuda_tests "$@" || status=1; }
[ -x build-gpu/tests/cuda/r1_gpu_model_tests ] && {
  build-gpu/tests/cuda/r1_gpu_model_tests --gtest_filter="${R1_GPU_MODEL_FILTER:-*}" || status=1; }
[ -x build-gpu/tests/cuda/r1_gpu_engine_tests ] && { build-gpu/tests/cuda/r1_gpu_engine_tests || status=1; }
[ -x build-gpu/tests/cuda/r1_nccl_tests ] && { build-gpu/tests/cuda/r1_nccl_tests || status=1; }
[ -x build-gpu/tests/r1_tests ] && { build-gpu/tests/r1_tests --gtest_brief=1 || status=1; }
if [ "${R1_MEMCHECK:-0}" = 1 ]; then
  for t in r1_cuda_tests r1_gpu_model_tests; do
    compute-sanitizer --tool memcheck --leak-check full --error-exitcode 3 build-gpu/tests/cuda/$t \
      --gtest_filter="${R1_MEMCHECK_FILTER:-*}" >"build-gpu/memcheck-$t.log" 2>&1 || status=1
    echo "memcheck $t: $(grep -E 'ERROR SUMMARY' "build-gpu/memcheck-$t.log" | tail -1)"
  done
fi
if [ -n "${R1_GPU_AFTER:-}" ]; then bash -c "$R1_GPU_AFTER" || status=1; fi
exit $status
