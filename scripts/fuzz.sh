#!/usr/bin/env bash
# Builds the fuzz targets of tests/fuzz with clang's libFuzzer, AddressSanitizer and
# UndefinedBehaviorSanitizer in build-fuzz, then runs each for R1_FUZZ_SECONDS (default 60) from
# its committed seed corpus and regression inputs. What a run discovers goes to a scratch folder
# (build-fuzz/fuzz-work/TARGET/corpus), so the committed corpus never grows by itself. Fails on any
# crash, broken invariant, leak, timeout or out-of-memory, and says how to reproduce it; prints
# executions, exec/s and coverage per target.
#
#   R1_FUZZ_SECONDS=N   seconds per target (0: only replay the corpus and regression inputs)
#   R1_FUZZ_TARGETS="a b"   run only these targets
#   R1_FUZZ_JOBS=N      targets run at a time (default: the number of cores)
#   R1_FUZZ_WORK=DIR    scratch folder (default build-fuzz/fuzz-work), e.g. for two runs at once
# Needs clang and libclang-rt-dev (scripts/install-deps.sh), node and tests/js/node_modules (the
# tokenizer folders come from tests/tokenizer/prepare.js).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET=${R1_FUZZ_SECONDS:-60}
JOBS=${R1_FUZZ_JOBS:-$(nproc)}
BUILD=build-fuzz
WORK=${R1_FUZZ_WORK:-$BUILD/fuzz-work}

# Target → the most input bytes libFuzzer makes (-max_len), and the dictionaries it gets.
declare -A MAX_LEN=(
  [safetensors_header]=4096 [safetensors_index]=4096 [model_config]=4096
  [tokenizer_encode]=4096 [incremental_decode]=1024 [chat_template]=8192
  [openai_request]=8192 [ollama_request]=8192)
declare -A DICTS=(
  [safetensors_header]="json safetensors" [safetensors_index]="json safetensors"
  [model_config]="json config" [tokenizer_encode]="control_tokens" [incremental_decode]=""
  [chat_template]="json api control_tokens" [openai_request]="json api control_tokens"
  [ollama_request]="json api control_tokens")
ALL_TARGETS="safetensors_header safetensors_index model_config tokenizer_encode
             incremental_decode chat_template openai_request ollama_request"
TARGETS=${R1_FUZZ_TARGETS:-$ALL_TARGETS}

if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not found; run scripts/install-deps.sh (clang, libclang-rt-dev)" >&2
  exit 1
fi
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DR1_FUZZ=ON -DR1_CUDA=off >/dev/null
cmake --build "$BUILD" -j"$(nproc)"

# The tokenizer folders (R1 and V3) the tokenizer, chat and API targets load.
export R1_FUZZ_MODEL_DIR=$PWD/$BUILD/tests/tokenizer/reference
if [ ! -f "$R1_FUZZ_MODEL_DIR/r1/tokenizer.json" ] || [ ! -f "$R1_FUZZ_MODEL_DIR/v3/tokenizer.json" ]; then
  node tests/tokenizer/prepare.js "$R1_FUZZ_MODEL_DIR" >/dev/null
fi
# Leaks fail a run; the symbolizer (from llvm) makes the stacks readable.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_target() {
  local t=$1 dir=$WORK/$1
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts"
  local args=(-max_len="${MAX_LEN[$t]}" -timeout=25 -rss_limit_mb=3072 -print_final_stats=1
              -artifact_prefix="$dir/artifacts/")
  if [ "$SECONDS_PER_TARGET" -gt 0 ]; then
    args+=(-max_total_time="$SECONDS_PER_TARGET")
  else
    args+=(-runs=0)
  fi
  if [ -n "${DICTS[$t]}" ]; then
    for d in ${DICTS[$t]}; do cat "tests/fuzz/dicts/$d.dict"; done >"$dir/dict"
    args+=(-dict="$dir/dict")
  fi
  # The first folder receives new inputs; the committed ones are only read.
  local rc=0
  nice "$BUILD/tests/fuzz/r1_fuzz_$t" "${args[@]}" "$dir/corpus" "tests/fuzz/corpus/$t" \
    "tests/fuzz/regressions/$t" >"$dir/log" 2>&1 || rc=$?
  echo "$rc" >"$dir/rc"
}

summary() {
  local t=$1 log=$WORK/$1/log
  local execs rate cov
  # (A run that died while loading its corpus has no statistics: "?".)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1 || true)
  printf '%-20s %12s %9s   %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}"
}

echo "fuzzing: ${SECONDS_PER_TARGET}s per target, $JOBS at a time"
for t in $TARGETS; do
  if [ -z "${MAX_LEN[$t]+x}" ]; then
    echo "fuzz: unknown target '$t' (known: $ALL_TARGETS)" >&2
    exit 2
  fi
done
for t in $TARGETS; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run_target "$t" &
done
wait
failed=()
for t in $TARGETS; do
  [ "$(cat "$WORK/$t/rc" 2>/dev/null || echo 1)" = 0 ] || failed+=("$t")
done

printf '\n%-20s %12s %9s   %s\n' target executions exec/s coverage
for t in $TARGETS; do summary "$t"; done
if [ ${#failed[@]} -gt 0 ]; then
  for t in "${failed[@]}"; do
    echo
    echo "=== $t FAILED (full log: $WORK/$t/log)"
    grep -v '^#' "$WORK/$t/log" | tail -40
    for a in "$WORK/$t"/artifacts/*; do
      [ -e "$a" ] || continue
      echo "reproduce: R1_FUZZ_MODEL_DIR=$R1_FUZZ_MODEL_DIR $BUILD/tests/fuzz/r1_fuzz_$t $a"
      echo "once fixed, keep it: cp $a tests/fuzz/regressions/$t/<what-it-found>"
    done
  done
  echo "fuzz: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets passed"
