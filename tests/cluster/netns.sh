#!/bin/bash
# The simulated cluster's network: every host is a network namespace r1c-RUN-HOST with one cable
# (a veth pair, r1c-nic on the host) into a switch, the bridge r1c-br in its own namespace
# r1c-RUN-sw. Nothing is created in the machine's own namespace: no interface, address, route or
# firewall rule of the host is touched, and two runs never see each other. Addresses come from
# the caller (a private range, 10.231.0.0/24 in cluster.js). Processes started with `exec` also get
# their own hostname (a UTS namespace), so each host looks like a machine of its own.
#
#   netns.sh check                     can this machine build it? 0, or 77 (CTest's skip) and why
#   netns.sh up RUN HOST=ADDR[/impairable] ...
#                                      the switch and the hosts; an impairable host's cable can be
#                                      given latency and loss later (tc netem, or where the kernel
#                                      has no netem, r1c-linkem: $R1C_LINKEM)
#   netns.sh down RUN                  kill the processes in RUN's namespaces, delete them
#   netns.sh sweep                     `down` for every run whose owner process (RUN) is gone
#   netns.sh exec RUN HOST CMD...      run CMD on HOST
#   netns.sh link RUN HOST up|down     plug the host's cable in, or pull it out
#   netns.sh impair RUN HOST DELAY_MS LOSS_PCT   latency and loss on the host's outgoing frames
#   netns.sh clear RUN HOST            no impairment
#   netns.sh how RUN HOST              "netem" or "linkem": what impairs HOST's cable
#   netns.sh bytes RUN HOST            "RX TX": bytes the switch received from / sent to HOST
#   netns.sh host-of RUN ADDR          the host that owns ADDR (the rsh agent uses it)
# RUN is the owner's process id, so `sweep` can tell a dead run from a live one.
set -euo pipefail

PREFIX=r1c
SUBNET_BITS=24
ns() { echo "$PREFIX-$1-$2"; }
state_dir() { echo "${TMPDIR:-/tmp}/$PREFIX-$1"; }
die() { echo "netns.sh: $*" >&2; exit 1; }

cmd_check() {
  local probe="$PREFIX-probe-$$"
  local why=""
  if [ "$(id -u)" != 0 ]; then
    why="not root"
  elif ! command -v ip >/dev/null || ! command -v unshare >/dev/null; then
    why="iproute2 (ip) or unshare is missing"
  elif ! ip netns add "$probe" 2>/tmp/$probe.err; then
    why="cannot create a network namespace (no CAP_SYS_ADMIN/CAP_NET_ADMIN?): $(cat /tmp/$probe.err)"
  else
    if ! ip -n "$probe" link add "$PREFIX-pa" type veth peer name "$PREFIX-pb" 2>/tmp/$probe.err; then
      why="cannot create a veth pair: $(cat /tmp/$probe.err)"
    elif ! ip -n "$probe" link add "$PREFIX-br" type bridge 2>/tmp/$probe.err; then
      why="cannot create a bridge: $(cat /tmp/$probe.err)"
    elif ! ip netns exec "$probe" unshare --uts true 2>/tmp/$probe.err; then
      why="cannot enter the namespace with a hostname of its own: $(cat /tmp/$probe.err)"
    fi
    ip netns del "$probe" 2>/dev/null || true
  fi
  rm -f /tmp/$probe.err
  if [ -n "$why" ]; then
    echo "SKIPPED: the simulated cluster needs network namespaces: $why"
    exit 77
  fi
  echo "network namespaces, veth pairs and bridges: available"
}

# The host's cable as a TAP pair joined by r1c-linkem (running in the switch's namespace, so `down`
# finds it), for kernels without sch_netem.
linkem_cable() {
  local run=$1 host=$2 dir
  dir=$(state_dir "$run")
  [ -x "${R1C_LINKEM:-}" ] || die "the kernel has no netem and R1C_LINKEM (r1c-linkem) is not set"
  ip -n "$(ns "$run" "$host")" tuntap add dev "$PREFIX-nic" mode tap
  ip -n "$(ns "$run" sw)" tuntap add dev "$PREFIX-$host" mode tap
  echo "0 0" >"$dir/$host.impair"
  ip netns exec "$(ns "$run" sw)" "$R1C_LINKEM" --host "/run/netns/$(ns "$run" "$host")" "$PREFIX-nic" \
    --switch "/run/netns/$(ns "$run" sw)" "$PREFIX-$host" --params "$dir/$host.impair" \
    >"$dir/$host.linkem.log" 2>&1 &
  echo $! >"$dir/$host.linkem.pid"
  echo linkem >"$dir/$host.how"
}

cmd_up() {
  local run=$1
  shift
  local dir sw
  dir=$(state_dir "$run")
  sw=$(ns "$run" sw)
  mkdir -p "$dir"
  ip netns add "$sw"
  ip -n "$sw" link add "$PREFIX-br" type bridge
  ip -n "$sw" link set "$PREFIX-br" up
  local spec host addr opts hns
  for spec in "$@"; do
    host=${spec%%=*}
    addr=${spec#*=}
    opts=""
    case $addr in */*) opts=${addr#*/}; addr=${addr%%/*} ;; esac
    hns=$(ns "$run" "$host")
    ip netns add "$hns"
    ip -n "$hns" link set lo up
    ip -n "$sw" link add "$PREFIX-$host" type veth peer name "$PREFIX-nic" netns "$hns"
    echo veth >"$dir/$host.how"
    if [ "$opts" = impairable ] && ! ip netns exec "$hns" tc qdisc add dev "$PREFIX-nic" root netem delay 0ms 2>/dev/null; then
      ip -n "$sw" link del "$PREFIX-$host"
      linkem_cable "$run" "$host"
    elif [ "$opts" = impairable ]; then
      ip netns exec "$hns" tc qdisc del dev "$PREFIX-nic" root
      echo netem >"$dir/$host.how"
    fi
    ip -n "$sw" link set "$PREFIX-$host" master "$PREFIX-br"
    ip -n "$sw" link set "$PREFIX-$host" up
    ip -n "$hns" addr add "$addr/$SUBNET_BITS" dev "$PREFIX-nic"
    ip -n "$hns" link set "$PREFIX-nic" up
    echo "$addr" >"$dir/$host.addr"
  done
  # Every host answers on the bridge before `up` returns (a TAP cable needs its relay running).
  for spec in "$@"; do
    host=${spec%%=*}
    for _ in $(seq 100); do
      if ip -n "$(ns "$run" "$host")" -o link show "$PREFIX-nic" | grep -q "LOWER_UP"; then break; fi
      sleep 0.05
    done
  done
}

cmd_down() {
  local run=$1 n pid
  for n in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-$run-" || true); do
    for pid in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  done
  for n in $(ip netns list | awk '{print $1}' | grep "^$PREFIX-$run-" || true); do
    # A process killed a moment ago may still hold the namespace: deleting the name is enough.
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$(state_dir "$run")"
}

cmd_sweep() {
  local run
  for run in $(ip netns list | awk '{print $1}' | sed -n "s/^$PREFIX-\([0-9][0-9]*\)-.*/\1/p" | sort -u); do
    if ! kill -0 "$run" 2>/dev/null; then
      echo "netns.sh: removing the namespaces of run $run (its owner is gone)" >&2
      cmd_down "$run"
    fi
  done
}

cmd_exec() {
  local run=$1 host=$2
  shift 2
  exec ip netns exec "$(ns "$run" "$host")" unshare --uts -- sh -c 'hostname "$0" && exec "$@"' "$PREFIX-$host" "$@"
}

cmd_link() {
  ip -n "$(ns "$1" sw)" link set "$PREFIX-$2" "$3"
}

cmd_impair() {
  local run=$1 host=$2 delay=$3 loss=$4 dir
  dir=$(state_dir "$run")
  case $(cat "$dir/$host.how") in
    netem) ip netns exec "$(ns "$run" "$host")" tc qdisc replace dev "$PREFIX-nic" root netem delay "${delay}ms" loss "${loss}%" ;;
    linkem)
      echo "$delay $loss" >"$dir/$host.impair"
      kill -HUP "$(cat "$dir/$host.linkem.pid")"
      ;;
    *) die "host $host was not made impairable (up ... $host=ADDR/impairable)" ;;
  esac
}

cmd_clear() {
  local run=$1 host=$2 dir
  dir=$(state_dir "$run")
  case $(cat "$dir/$host.how") in
    netem) ip netns exec "$(ns "$run" "$host")" tc qdisc del dev "$PREFIX-nic" root ;;
    linkem) echo "0 0" >"$dir/$host.impair" && kill -HUP "$(cat "$dir/$host.linkem.pid")" ;;
  esac
}

cmd_bytes() {
  local stats=/sys/class/net/$PREFIX-$2/statistics
  ip netns exec "$(ns "$1" sw)" sh -c "echo \$(cat $stats/rx_bytes) \$(cat $stats/tx_bytes)"
}

cmd_host_of() {
  local run=$1 addr=$2 f
  for f in "$(state_dir "$run")"/*.addr; do
    if [ "$(cat "$f")" = "$addr" ]; then basename "$f" .addr; return 0; fi
  done
  die "no host of run $run has address $addr"
}

[ $# -ge 1 ] || die "usage: netns.sh check|up|down|sweep|exec|link|impair|clear|how|bytes|host-of ..."
verb=$1
shift
case $verb in
  check) cmd_check ;;
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  sweep) cmd_sweep ;;
  exec) cmd_exec "$@" ;;
  link) cmd_link "$@" ;;
  impair) cmd_impair "$@" ;;
  clear) cmd_clear "$@" ;;
  how) cat "$(state_dir "$1")/$2.how" ;;
  bytes) cmd_bytes "$@" ;;
  host-of) cmd_host_of "$@" ;;
  *) die "unknown verb $verb" ;;
esac
