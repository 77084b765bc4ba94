#!/usr/bin/env bash
# A small cluster of N "hosts" on this one machine, made of Linux network namespaces, for the
# multi-host tests (tests/multihost/) and benchmarks (bench/multihost.py).
#
#   .ci/hosts.sh start N     build hosts h0..h(N-1); idempotent (a rig of another size is rebuilt)
#   .ci/hosts.sh stop        kill every process on the hosts, remove everything; idempotent
#   .ci/hosts.sh status [N]  show the rig; exit 0 when it is up (with N hosts, if given), else 3
#   .ci/hosts.sh run HOST CMD...   run CMD on HOST (in its namespace, with its hostname)
#
# Layout: a lab namespace "mdlab" holds a Linux bridge; each host namespace hN has one veth
# ("eth0") into that bridge and the address 198.18.0.(N+1)/24. 198.18.0.0/15 is the RFC 2544
# benchmarking range: neither private nor public, and nothing is routed out of the lab (no
# default route anywhere, the root namespace is not on the bridge). /etc/netns/hN/hosts names
# every host, so "h1" resolves on every host (ip netns exec bind-mounts it over /etc/hosts).
#
# Launching on another host needs no sshd: the rig writes a fake ssh, "$STATE/ssh", which runs
# the command in the host's namespace, in a new UTS namespace whose hostname is the host's
# name (so socket.gethostname() says h1 on h1). Give it to
#   Open MPI (PRRTE):  mpirun --prtemca plm_ssh_agent $STATE/ssh --host h1:2,h2:2 ...
#                      (or PRTE_MCA_plm_ssh_agent=$STATE/ssh)
#   MPICH (hydra):     mpiexec -launcher ssh -launcher-exec $STATE/ssh -hosts h1:2,h2:2 ...
#                      (or HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=$STATE/ssh)
# "$STATE/env" holds the settings for both MPI wheels (interfaces, agent) as shell exports,
# among them UCX_TLS=tcp,self for MPICH: its UCX would otherwise use shared memory between
# the namespaces (one kernel), and a cut network would not cut anything.
# The fake ssh passes the caller's environment on (a real ssh would not).
#
# Needs root and iproute2 (ip) and util-linux (unshare). Every step is bounded; start takes
# about 0.3 s for 3 hosts, stop about 0.2 s.
set -euo pipefail
LAB=mdlab
STATE=${MPIDISPATCH_HOSTS_STATE:-/run/mpidispatch-hosts}
NET=198.18.0          # the /24 used inside 198.18.0.0/15
LOCK=/run/mpidispatch-hosts.lock

die() { echo "hosts.sh: $*" >&2; exit 1; }
need_root() {
  [ "$(id -u)" = 0 ] || die "must run as root (it creates network namespaces)"
  export PATH="$PATH:/usr/sbin:/sbin"
  if ! command -v ip >/dev/null || ! command -v bridge >/dev/null; then
    command -v apt-get >/dev/null && DEBIAN_FRONTEND=noninteractive timeout 300 \
      apt-get install -y -q -o DPkg::Lock::Timeout=120 iproute2 >/dev/null 2>&1 || true
    command -v ip >/dev/null && command -v bridge >/dev/null \
      || die "'ip'/'bridge' (iproute2) not found: apt-get install -y iproute2"
  fi
  command -v unshare >/dev/null || die "'unshare' (util-linux) not found"
}

# Hosts of the current rig (from the namespaces themselves, so a half-built rig is seen too).
current_hosts() { ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^h[0-9]+$' | sort -V || true; }

kill_namespace() {  # kill every process in network namespace $1, wait until none is left
  local ns=$1 pids deadline=$((SECONDS + 10))
  while pids=$(ip netns pids "$ns" 2>/dev/null) && [ -n "$pids" ]; do
    # SIGCONT as well: a stopped process dies of SIGKILL anyway, but say it plainly.
    kill -KILL $pids 2>/dev/null || true
    [ $SECONDS -lt $deadline ] || die "processes in namespace $ns survive SIGKILL: $pids"
    sleep 0.05
  done
}

do_stop() {
  local ns
  for ns in $(current_hosts) $( ip netns list 2>/dev/null | awk '{print $1}' | grep -x "$LAB" || true); do
    kill_namespace "$ns"
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf /etc/netns/h[0-9]* "$STATE"
  rmdir /etc/netns 2>/dev/null || true   # only if we left it empty
}

write_agent() {  # the fake ssh: agent [ssh options] HOST COMMAND...
  local hosts=$1
  cat >"$STATE/ssh" <<EOF
#!/bin/bash
# Fake ssh for the namespace hosts of .ci/hosts.sh: runs COMMAND on HOST (a host name or its
# 198.18 address) inside that host's network namespace, with HOST as its hostname.
# Written by .ci/hosts.sh start; removed by .ci/hosts.sh stop.
while [ \$# -gt 0 ]; do
  case "\$1" in
    -[oplicFJLRDWEbeimQS]) shift 2 ;;   # ssh options that take an argument
    --) shift; break ;;
    -*) shift ;;
    *) break ;;
  esac
done
host=\${1:?usage: ssh HOST COMMAND}; shift
case "\$host" in *@*) host=\${host#*@} ;; esac
case "\$host" in
$(i=0; for h in $hosts; do echo "  $h|$h.lab|$NET.$((i + 1))) host=$h ;;"; i=$((i + 1)); done)
  *) echo "fake ssh: unknown host '\$host' (hosts: $hosts)" >&2; exit 255 ;;
esac
[ \$# -gt 0 ] || { echo "fake ssh: no command for \$host (no interactive logins)" >&2; exit 255; }
exec ip netns exec "\$host" unshare --uts /bin/sh -c 'hostname "\$1"; shift; exec /bin/sh -c "\$*"' sh "\$host" "\$@"
EOF
  chmod 755 "$STATE/ssh"
}

do_start() {
  local n=$1 i h hosts="" existing
  [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge 1 ] && [ "$n" -le 200 ] || die "start N: N must be 1..200"
  for ((i = 0; i < n; i++)); do hosts="$hosts h$i"; done
  hosts=${hosts# }
  existing=$(current_hosts | tr '\n' ' '); existing=${existing% }
  if [ "$existing" = "$hosts" ] && [ -x "$STATE/ssh" ] && ip netns list | grep -qx "$LAB\( .*\)\?" \
     && check_up "$hosts"; then
    echo "hosts.sh: already up: $hosts"; return 0
  fi
  do_stop
  mkdir -p "$STATE"
  ip netns add "$LAB"
  ip -n "$LAB" link set lo up
  ip -n "$LAB" link add br0 type bridge
  ip -n "$LAB" link set br0 up
  i=0
  for h in $hosts; do
    ip netns add "$h"
    ip link add "v$h" type veth peer name eth0 netns "$h"
    ip link set "v$h" netns "$LAB"
    ip -n "$LAB" link set "v$h" master br0
    ip -n "$LAB" link set "v$h" up
    # IPv4 only (no link-local IPv6 for the MPI libraries to pick); absent IPv6 is fine too
    ip netns exec "$h" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
      net.ipv6.conf.default.disable_ipv6=1 >/dev/null 2>&1 || true
    ip -n "$h" link set lo up
    ip -n "$h" addr add "$NET.$((i + 1))/24" dev eth0
    ip -n "$h" link set eth0 up
    mkdir -p "/etc/netns/$h"
    echo "$h" >"/etc/netns/$h/hostname"
    i=$((i + 1))
  done
  {
    echo "127.0.0.1 localhost"
    i=0; for h in $hosts; do echo "$NET.$((i + 1)) $h $h.lab"; i=$((i + 1)); done
  } >"$STATE/etc-hosts"
  for h in $hosts; do cp "$STATE/etc-hosts" "/etc/netns/$h/hosts"; done
  write_agent "$hosts"
  echo "$hosts" | tr ' ' '\n' >"$STATE/hosts"
  cat >"$STATE/env" <<EOF
# Settings for MPI across the namespace hosts (source this file).
export PRTE_MCA_plm_ssh_agent=$STATE/ssh PRTE_MCA_prte_if_include=eth0 OMPI_MCA_btl_tcp_if_include=eth0
export HYDRA_LAUNCHER=ssh HYDRA_LAUNCHER_EXEC=$STATE/ssh HYDRA_IFACE=eth0
# MPICH's UCX would talk through shared memory across the namespaces (one kernel): use TCP.
export UCX_TLS=tcp,self UCX_NET_DEVICES=eth0
EOF
  wait_up "$hosts" || die "the hosts did not become reachable within 10 s"
  echo "hosts.sh: up: $hosts ($NET.1-$((n)) on bridge br0 in namespace $LAB); agent $STATE/ssh"
}

check_up() {  # every host's eth0 up with its address, every bridge port forwarding
  local i=0 h
  for h in $1; do
    ip -n "$h" -4 -o addr show dev eth0 up 2>/dev/null | grep -q " $NET.$((i + 1))/" || return 1
    bridge -n "$LAB" link show dev "v$h" 2>/dev/null | grep -q "state forwarding" || return 1
    i=$((i + 1))
  done
}

wait_up() {  # the bridge ports take a moment to forward; wait for it, bounded
  local deadline=$((SECONDS + 10))
  until check_up "$1"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.1; done
}

do_status() {
  local want=${1:-} hosts
  hosts=$(current_hosts | tr '\n' ' '); hosts=${hosts% }
  if [ -z "$hosts" ] || [ ! -x "$STATE/ssh" ]; then echo "hosts.sh: down"; return 3; fi
  if [ -n "$want" ] && [ "$(echo "$hosts" | wc -w)" != "$want" ]; then
    echo "hosts.sh: up with the wrong size: $hosts"; return 3
  fi
  echo "hosts: $hosts"
  echo "agent: $STATE/ssh"
  echo "env:   $STATE/env"
  local h; for h in $hosts; do
    printf '%-4s %s  processes: %s\n' "$h" "$(ip -n "$h" -4 -o addr show dev eth0 | awk '{print $4}')" \
      "$(ip netns pids "$h" | wc -l)"
  done
  check_up "$hosts" || { echo "hosts.sh: network not working"; return 3; }
}

ACTION=${1:-status}
case "$ACTION" in
  start|stop)
    need_root
    exec 9>"$LOCK"
    flock -w 60 9 || die "another hosts.sh holds $LOCK"
    if [ "$ACTION" = start ]; then do_start "${2:-3}"; else do_stop; echo "hosts.sh: stopped"; fi
    rm -f "$LOCK" ;;
  status) need_root; do_status "${2:-}" ;;
  run)
    need_root
    [ $# -ge 3 ] || die "usage: run HOST COMMAND..."
    shift; exec "$STATE/ssh" "$@" ;;
  *) echo "usage: $0 start N | stop | status [N] | run HOST CMD..." >&2; exit 2 ;;
esac
