#!/usr/bin/env bash
# Builds everything with AddressSanitizer and UndefinedBehaviorSanitizer (GCC, CUDA off) in
# build-asan and runs the test suite there. The first sanitizer report ends the process that made
# it (halt_on_error), so the test fails and its log holds the report with a stack trace; leaks
# count as errors. Extra arguments go to ctest (e.g. -R tokenizer).
#
# Left out, for what they measure rather than what they run (their code paths run in the other
# client, integration and deploy tests, which are kept):
#  - `load`: hundreds of concurrent streams against time limits; the sanitizers' 2-5x slowdown
#    only makes them time out;
#  - `cluster`: fault scenarios on a simulated multi-host cluster that bound each process's RSS
#    growth (ASan's quarantine keeps freed memory resident by design) and the time to recover.
#
# Leaks inside Open MPI's own libraries (buffers it keeps until the process exits) are suppressed
# (build-asan/lsan.supp, written below); nothing of this project's is.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
BUILD=build-asan
cmake -S . -B "$BUILD" -G Ninja -DR1_CUDA=off -DR1_SANITIZE="address;undefined" >/dev/null
cat >"$BUILD/lsan.supp" <<'EOF'
leak:libmpi.so
leak:libopen-pal.so
leak:libopen-rte.so
leak:libhwloc.so
leak:libpmix.so
leak:libevent
EOF
export ASAN_OPTIONS=halt_on_error=1:abort_on_error=1:detect_leaks=1:strict_string_checks=1:check_initialization_order=1:detect_stack_use_after_return=0
export LSAN_OPTIONS=suppressions=$PWD/$BUILD/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# libgomp spins while it waits; with the sanitizers' slowdown on few cores that starves the
# other processes of a test (engine, workers, clients).
export OMP_WAIT_POLICY=passive
cmake --build "$BUILD" -j"$(nproc)"
cd "$BUILD"
ctest -j"$(nproc)" --output-on-failure --timeout 1800 -LE 'load|cluster' "$@"
