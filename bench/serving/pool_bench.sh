#!/usr/bin/env bash
# Generated tokens/s of a worker group (r1-coordinator --http-listen and 2 r1-workers on loopback,
# `r1 make-tiny`'s model: R1's tokenizer and vocabulary of 129280, tiny layers) under
# tests/load/serve_load.js, two ways in the same command:
#   rank0        the default: rank 0 chooses each row's token with the coordinator's sampler state
#                (worker.proto EngineChoice) and sends back the token, ~10 bytes
#   coordinator  --logits-to-coordinator: every row's 129280 float32 logits (517 KB) go to the
#                coordinator, which chooses there (the reference: how the group served before)
# Every stream is checked against its reference by the load script (same text, token by token).
#   bench/serving/pool_bench.sh            # BUILD=build, 64 clients, 20 s measured per way
# Environment: BUILD, R1_LOAD_CLIENTS, R1_LOAD_SECONDS, R1_LOAD_MAX_TOKENS.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
CLIENTS=${R1_LOAD_CLIENTS:-64}
MEASURE_S=${R1_LOAD_SECONDS:-20}
MODEL=$BUILD/bench/pool-bench-tiny
for bin in "$BUILD/cli/r1" "$BUILD/coordinator/pool/r1-coordinator" "$BUILD/worker/r1-worker"; do
  [ -x "$bin" ] || { echo "pool_bench: $bin not built (cmake --build $BUILD)" >&2; exit 2; }
done
[ -f "$MODEL/config.json" ] || "$BUILD/cli/r1" make-tiny --out "$MODEL" --seed 7 >/dev/null
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; pids=(); }
trap cleanup EXIT

declare -A RESULT
for mode in rank0 coordinator; do
  grpc_port=$(free_port)
  http_port=$(free_port)
  extra=()
  [ "$mode" = coordinator ] && extra=(--logits-to-coordinator)
  log=$BUILD/bench/pool-bench-$mode.log
  "$BUILD/coordinator/pool/r1-coordinator" --workers 2 --listen "127.0.0.1:$grpc_port" --model "$MODEL" \
    --http-listen "127.0.0.1:$http_port" --kv-blocks 4096 --max-context 1024 --max-batch-size 64 \
    --max-queued-requests 1024 --served-model-name tiny-r1 "${extra[@]}" >"$log" 2>&1 &
  coordinator=$!
  pids+=("$coordinator")
  for rank in 0 1; do
    LWS_WORKER_INDEX=$rank OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive "$BUILD/worker/r1-worker" \
      --coordinator "127.0.0.1:$grpc_port" --model "$MODEL" --rank-from-env --world-size 2 \
      >>"$log" 2>&1 &
    pids+=("$!")
  done
  for _ in $(seq 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$http_port/ready")" = 200 ] && break
    sleep 0.1
  done
  out=$(R1_LOAD_URL="http://127.0.0.1:$http_port" R1_LOAD_PID=$coordinator R1_LOAD_CLIENTS=$CLIENTS \
        R1_LOAD_SECONDS=$MEASURE_S R1_LOAD_WARMUP_S=5 R1_LOAD_DISCONNECT=1 R1_LOAD_RSS_TOLERANCE=100 \
        node tests/load/serve_load.js 2>&1) || { echo "$out" | tail -20; echo "pool_bench: the load failed ($mode)" >&2; exit 1; }
  echo "== $mode"
  echo "$out" | grep -E "clients,|requests done|errors |all checks|check\(s\) failed"
  RESULT[$mode]=$(echo "$out" | sed -n 's/.*tokens [0-9]* (\([0-9]*\)\/s.*/\1/p' | head -1)
  cleanup
done
echo "tokens/s: rank 0 chooses ${RESULT[rank0]}, logits to the coordinator ${RESULT[coordinator]}," \
     "ratio $(python3 -c "print(f'{${RESULT[rank0]:-0}/max(1,${RESULT[coordinator]:-0}):.2f}')")x"
