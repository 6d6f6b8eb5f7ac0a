#!/bin/bash
# Open MPI's remote launcher for the simulated cluster (mpirun --mca plm_rsh_agent THIS): where
# mpirun would ssh to HOST and run its daemon, this runs the daemon on the simulated host that owns
# the address HOST, through netns.sh. mpirun passes R1C_RUN (the run id) down in its environment.
#   rsh_agent.sh [ssh-style options] HOST COMMAND...
set -euo pipefail
while [ $# -gt 0 ] && [ "${1#-}" != "$1" ]; do shift; done
[ $# -ge 2 ] || { echo "rsh_agent.sh: usage: rsh_agent.sh HOST COMMAND..." >&2; exit 2; }
: "${R1C_RUN:?rsh_agent.sh: R1C_RUN is not set}"
here=$(cd "$(dirname "$0")" && pwd)
addr=$1
shift
host=$("$here/netns.sh" host-of "$R1C_RUN" "$addr")
# mpirun writes the remote command for a shell (quoted words), as ssh would hand it to one.
exec "$here/netns.sh" exec "$R1C_RUN" "$host" sh -c "$*"
