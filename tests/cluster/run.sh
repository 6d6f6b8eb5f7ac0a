#!/bin/bash
# One scenario of cluster.js on a simulated cluster of its own (tests/cluster/README.md):
#   run.sh SCENARIO
# builds the hosts (netns.sh up), runs the driver inside host `cli`, and removes every namespace
# and process of the run on the way out, whatever happened. Exit 77 (CTest's SKIP_RETURN_CODE)
# when this machine cannot make network namespaces, with the reason.
# Needs R1C_COORDINATOR, R1C_WORKER, R1C_R1, R1C_MODEL (and per scenario R1C_MPIRUN,
# R1C_WORKER_OTHER, R1C_OTHER_MODEL, R1C_LINKEM); CMake sets them (tests/cluster/CMakeLists.txt).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
scenario=${1:?usage: run.sh SCENARIO}
"$here/netns.sh" check || exit $?
"$here/netns.sh" sweep

export R1C_RUN=$$
export R1C_SUBNET=10.231.0.0/24
impairable=""
if [ "$scenario" = netem ]; then impairable=/impairable; fi
export R1C_HOSTS="coord=10.231.0.10 w0=10.231.0.11 w1=10.231.0.12$impairable w2=10.231.0.13 cli=10.231.0.100"
export R1C_LOGS=${R1C_LOGS:-${TMPDIR:-/tmp}/r1c-logs-$scenario-$$}
mkdir -p "$R1C_LOGS"
rm -f "$R1C_LOGS"/[0-9][0-9]-*.log  # a previous run's process logs
node=${R1C_NODE:-node}
command -v "$node" >/dev/null || { echo "run.sh: node (R1C_NODE='$node') not found"; exit 1; }

cleanup() { "$here/netns.sh" down "$R1C_RUN"; }
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
# shellcheck disable=SC2086
"$here/netns.sh" up "$R1C_RUN" $R1C_HOSTS || exit 1
# In the background and waited for, so that a signal runs the traps at once.
"$here/netns.sh" exec "$R1C_RUN" cli "$node" "$here/cluster.js" "$scenario" &
wait $!
