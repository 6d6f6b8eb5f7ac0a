#!/usr/bin/env bash
# serve.sh: r1serve on one multi-GPU machine. Starts r1-coordinator (the OpenAI/Ollama HTTP APIs,
# optionally gRPC) and `mpirun -np N r1-worker` (one rank per GPU, rank and size from MPI), waits
# until the group is ready, and stops them all together: on SIGTERM/SIGINT (Ctrl-C), or as soon
# as either side ends on its own, everything it started is stopped and waited for.
#
#   deploy/mpirun/serve.sh --model DIR --gpus 8
#   deploy/mpirun/serve.sh --model DIR --gpus 2 --backend cpu --http 127.0.0.1:8000
#
# Exit code: 0 after a requested stop that ended cleanly; 1 when a process failed or ended early.
set -uo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

usage() {
  sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
  cat <<'TXT'
Options:
  --model DIR          the model folder (config.json, safetensors, tokenizer files); required
  --gpus N             worker ranks, one per GPU (default: the GPUs nvidia-smi lists)
  --backend B          auto | gpu | cpu (default auto: gpu when nvidia-smi lists GPUs). gpu: rank i
                       sees only GPU i (CUDA_VISIBLE_DEVICES) and runs on that GPU's NUMA node's
                       cores; cpu: ranks share the cores (OMP_NUM_THREADS = cores / N), no binding
  --http HOST:PORT     the HTTP APIs (default 127.0.0.1:8000)
  --grpc HOST:PORT     also the public gRPC API (default: off)
  --control HOST:PORT  where the workers reach the coordinator (default 127.0.0.1:50051)
  --kv-blocks N        KV cache blocks per rank (default: r1-coordinator's; `r1 plan` gives a value)
  --name NAME          the model's name in the APIs (default: the folder's name)
  --build DIR          a CMake build folder to take r1-coordinator and r1-worker from (default:
                       $R1_BUILD_DIR, else PATH, else build/ in this repository)
  --ready-timeout S    seconds to wait for the group to be ready (default 3600)
  --dry-run            print the two commands and their environment, start nothing
  -h, --help           this text
Arguments after -- go to r1-coordinator (e.g. --api-key KEY --max-context 32768).
The API key may also come from $R1_API_KEY.
TXT
}

die() {
  echo "serve.sh: error: $*" >&2
  exit 2
}

model="" gpus="" backend=auto http=127.0.0.1:8000 grpc="" control=127.0.0.1:50051 kv_blocks="" name=""
build="${R1_BUILD_DIR:-}" ready_timeout=3600 dry_run=0
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="${2:-}"; shift 2 || die "--model needs a folder" ;;
    --gpus) gpus="${2:-}"; shift 2 || die "--gpus needs a number" ;;
    --backend) backend="${2:-}"; shift 2 || die "--backend needs auto, gpu or cpu" ;;
    --cpu) backend=cpu; shift ;;
    --http) http="${2:-}"; shift 2 || die "--http needs HOST:PORT" ;;
    --grpc) grpc="${2:-}"; shift 2 || die "--grpc needs HOST:PORT" ;;
    --control) control="${2:-}"; shift 2 || die "--control needs HOST:PORT" ;;
    --kv-blocks) kv_blocks="${2:-}"; shift 2 || die "--kv-blocks needs a number" ;;
    --name) name="${2:-}"; shift 2 || die "--name needs a name" ;;
    --build) build="${2:-}"; shift 2 || die "--build needs a folder" ;;
    --ready-timeout) ready_timeout="${2:-}"; shift 2 || die "--ready-timeout needs seconds" ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (--help lists them; r1-coordinator's own flags go after --)" ;;
  esac
done

[ -n "$model" ] || die "--model DIR is required"
[ -f "$model/config.json" ] || die "--model $model: no config.json there"
model="$(cd "$model" && pwd)"
case "$backend" in auto|gpu|cpu) ;; *) die "--backend '$backend': auto, gpu or cpu" ;; esac
[[ "$ready_timeout" =~ ^[0-9]+$ ]] || die "--ready-timeout '$ready_timeout' is not a number of seconds"

gpu_count=0
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_count=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
fi
if [ "$backend" = auto ]; then
  if [ "$gpu_count" -gt 0 ]; then backend=gpu; else backend=cpu; fi
fi
if [ -z "$gpus" ]; then
  [ "$gpu_count" -gt 0 ] || die "--gpus N is needed: nvidia-smi lists no GPU"
  gpus=$gpu_count
fi
[[ "$gpus" =~ ^[1-9][0-9]*$ ]] || die "--gpus '$gpus' is not a positive number"
if [ "$backend" = gpu ] && [ "$dry_run" = 0 ] && [ "$gpus" -gt "$gpu_count" ]; then
  die "--gpus $gpus but nvidia-smi lists $gpu_count GPU(s)"
fi

# The binaries: --build DIR (a CMake build folder), else PATH, else this repository's build/.
find_binary() {  # NAME SUBDIR
  if [ -n "$build" ]; then
    [ -x "$build/$2/$1" ] || die "--build $build: no $2/$1 there"
    echo "$build/$2/$1"
  elif command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
  elif [ -x "$REPO/build/$2/$1" ]; then
    echo "$REPO/build/$2/$1"
  else
    die "$1 not found: pass --build DIR or put it on PATH"
  fi
}
[ -n "$build" ] && { [ -d "$build" ] || die "--build $build: no such folder"; build="$(cd "$build" && pwd)"; }
coordinator_bin=$(find_binary r1-coordinator coordinator/pool) || exit 2
worker_bin=$(find_binary r1-worker worker) || exit 2
mpirun_bin=$(command -v mpirun) || die "mpirun not found (Debian: apt-get install openmpi-bin)"

coordinator_cmd=("$coordinator_bin" --workers "$gpus" --listen "$control" --model "$model" --http-listen "$http")
[ -n "$grpc" ] && coordinator_cmd+=(--grpc-api-listen "$grpc")
[ -n "$kv_blocks" ] && coordinator_cmd+=(--kv-blocks "$kv_blocks")
[ -n "$name" ] && coordinator_cmd+=(--served-model-name "$name")
coordinator_cmd+=("${extra[@]}")

# Every rank gets these (mpirun -x): NVLink SHARP off (it needs fabric-manager multicast support
# that many machines and containers lack, and takes GPU memory the KV cache would rather have);
# OpenMP threads sleep when idle rather than spin on cores the other ranks and NCCL need.
worker_env=(NCCL_NVLS_ENABLE=0 "OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}")
mpirun_cmd=("$mpirun_bin" -np "$gpus")
[ "$(id -u)" = 0 ] && mpirun_cmd+=(--allow-run-as-root)
if [ "$backend" = gpu ]; then
  # Binding is per GPU, done by bind-rank.sh (CUDA_VISIBLE_DEVICES = local rank, cores of that
  # GPU's NUMA node), so mpirun itself binds nothing.
  mpirun_cmd+=(--bind-to none)
  launch=("$HERE/bind-rank.sh" "$worker_bin")
else
  # CPU ranks share the machine's cores: no binding, and no refusal when ranks outnumber cores.
  cores=$(nproc)
  threads=$(( cores / gpus ))
  [ "$threads" -ge 1 ] || threads=1
  worker_env+=("OMP_NUM_THREADS=${OMP_NUM_THREADS:-$threads}")
  mpirun_cmd+=(--bind-to none --oversubscribe)
  launch=("$worker_bin")
fi
for e in "${worker_env[@]}"; do mpirun_cmd+=(-x "$e"); done
mpirun_cmd+=("${launch[@]}" --model "$model" --coordinator "$control")

if [ "$dry_run" = 1 ]; then
  echo "backend: $backend, $gpus rank(s)"
  echo "coordinator: ${coordinator_cmd[*]}"
  echo "workers: ${mpirun_cmd[*]}"
  exit 0
fi

# Each side runs in a process group of its own (setsid), so a stop reaches every process it
# started (mpirun's daemons and ranks included), and a Ctrl-C in the terminal reaches only us.
coordinator_pid="" mpirun_pid="" stopping=0
setsid "${coordinator_cmd[@]}" &
coordinator_pid=$!
setsid "${mpirun_cmd[@]}" &
mpirun_pid=$!
echo "serve.sh: coordinator pid $coordinator_pid, mpirun pid $mpirun_pid ($gpus rank(s), $backend)"

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Stops both sides: the coordinator first (it drains, then tells the workers to shut down, so
# mpirun ends on its own), then whatever is left, by process group; bounded at every step.
stop_all() {
  local deadline
  if alive "$coordinator_pid"; then
    kill -TERM "$coordinator_pid" 2>/dev/null
    deadline=$(( SECONDS + 45 ))
    while alive "$coordinator_pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  fi
  deadline=$(( SECONDS + 10 ))
  while alive "$mpirun_pid" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  # mpirun forwards SIGTERM to its ranks and then exits.
  for pid in "$mpirun_pid" "$coordinator_pid"; do
    [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
  done
  deadline=$(( SECONDS + 15 ))
  while { alive "$mpirun_pid" || alive "$coordinator_pid"; } && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  for pid in "$mpirun_pid" "$coordinator_pid"; do
    [ -n "$pid" ] && kill -KILL -- "-$pid" 2>/dev/null
  done
  # Open MPI puts each rank in a process group of its own, inside mpirun's session: a rank that
  # outlived mpirun is found by that session.
  if [ -n "$mpirun_pid" ] && command -v pkill >/dev/null 2>&1; then
    pkill -KILL -s "$mpirun_pid" 2>/dev/null
  fi
  wait 2>/dev/null
}

trap 'stopping=1' TERM INT HUP

# /ready over bash's /dev/tcp (no curl needed): 200 once every rank has loaded its weights.
http_status() {  # HOST:PORT PATH
  local host="${1%:*}" port="${1##*:}" line=""
  [ "$host" = 0.0.0.0 ] && host=127.0.0.1
  { exec 3<>"/dev/tcp/$host/$port"; } 2>/dev/null || { echo 000; return; }
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$2" "$host" >&3
  IFS= read -r -t 5 line <&3 || true
  exec 3<&- 3>&-
  line="${line#HTTP/1.1 }"
  echo "${line%% *}"
}

ready_deadline=$(( SECONDS + ready_timeout ))
announced=0
status=0
while :; do
  if [ "$stopping" = 1 ]; then
    echo "serve.sh: stopping"
    break
  fi
  if ! alive "$coordinator_pid"; then
    wait "$coordinator_pid"
    echo "serve.sh: r1-coordinator exited ($?); stopping the workers" >&2
    status=1
    break
  fi
  if ! alive "$mpirun_pid"; then
    wait "$mpirun_pid"
    echo "serve.sh: mpirun exited ($?); stopping the coordinator" >&2
    status=1
    break
  fi
  if [ "$announced" = 0 ]; then
    if [ "$(http_status "$http" /ready)" = 200 ]; then
      echo "serve.sh: ready: http://$http (OpenAI: /v1, Ollama: /api)${grpc:+, gRPC $grpc}"
      announced=1
    elif [ "$SECONDS" -ge "$ready_deadline" ]; then
      echo "serve.sh: not ready after ${ready_timeout} s; stopping" >&2
      status=1
      break
    fi
  fi
  sleep 0.5
done
stop_all
exit "$status"
