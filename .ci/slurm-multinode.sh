#!/usr/bin/env bash
# A three-node Slurm on the namespace hosts of .ci/hosts.sh: slurmctld on h0, one slurmd per
# host h0 h1 h2, for tests/multihost/test_slurm.py.
#
#   .ci/slurm-multinode.sh start    hosts.sh start 3 if needed, then the daemons (~3 s)
#   .ci/slurm-multinode.sh stop     cancel every job, stop our daemons, remove our files
#   .ci/slurm-multinode.sh status   daemons and sinfo
#
# It must not disturb the one-node Slurm of .ci/schedulers.sh running on the same machine:
# its own config file ($STATE/slurm.conf: use it with SLURM_CONF=...), cluster name
# "mdmulti", ports 6917/6918 (inside the namespaces, where the other cluster cannot be seen
# anyway), state, spool, pid and log files all under $STATE. It only shares munged (the same
# key: one machine); if no munged runs, it starts one and stops it again at stop.
# Clients run on a host: .ci/hosts.sh run h0 "SLURM_CONF=$STATE/slurm.conf srun -N 3 hostname".
# Needs root and the Debian packages slurmctld slurmd slurm-client munge (installed by
# .ci/start-slurm.sh, or here when missing). Every wait is bounded.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STATE=${MPIDISPATCH_SLURM_STATE:-/run/mpidispatch-slurm}
HOSTS_STATE=${MPIDISPATCH_HOSTS_STATE:-/run/mpidispatch-hosts}
AGENT=$HOSTS_STATE/ssh
CONF=$STATE/slurm.conf
NODES="h0 h1 h2"
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "[slurm-multinode] $*"; }
die() { echo "[slurm-multinode] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

alive() {  # alive PIDFILE COMM
  local p; [ -s "$1" ] || return 1; p=$(cat "$1" 2>/dev/null) || return 1
  [ -d "/proc/$p" ] && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ]
}
on() { local h=$1; shift; timeout "${T:-30}" "$AGENT" "$h" "export SLURM_CONF=$CONF; $*"; }

stop_pidfile() {  # TERM, wait up to 10 s, KILL
  local pf=$1 comm=$2 p i
  alive "$pf" "$comm" || { rm -f "$pf"; return 0; }
  p=$(cat "$pf"); kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 100); do [ -d "/proc/$p" ] || break; sleep 0.1; done
  [ -d "/proc/$p" ] && kill -KILL "$p" 2>/dev/null || true
  rm -f "$pf"
}

do_stop() {
  [ -d "$STATE" ] || { log "not running"; return 0; }
  if alive "$STATE/slurmctld.pid" slurmctld && [ -x "$AGENT" ]; then
    T=10 on h0 "scancel --full -u root" >/dev/null 2>&1 || true
    for i in $(seq 1 50); do
      [ -z "$(T=5 on h0 "squeue -h -o %A" 2>/dev/null)" ] && break; sleep 0.2
    done
  fi
  for n in $NODES; do stop_pidfile "$STATE/slurmd-$n.pid" slurmd; done
  stop_pidfile "$STATE/slurmctld.pid" slurmctld
  # job steps a lost slurmd left behind (slurmstepd) live in the hosts' namespaces
  for n in $NODES; do
    for p in $(ip netns pids "$n" 2>/dev/null); do
      case "$(cat "/proc/$p/comm" 2>/dev/null)" in slurmstepd|slurmd) kill -KILL "$p" 2>/dev/null || true ;; esac
    done
  done
  if [ -f "$STATE/munged.started" ]; then
    kill -TERM "$(cat /run/munge/munged.pid)" 2>/dev/null || true
  fi
  rm -rf "$STATE"
  log "stopped"
}

do_status() {
  local rc=0
  if alive "$STATE/slurmctld.pid" slurmctld; then echo "slurmctld: pid $(cat "$STATE/slurmctld.pid")"; else echo "slurmctld: down"; rc=3; fi
  for n in $NODES; do
    if alive "$STATE/slurmd-$n.pid" slurmd; then echo "slurmd $n: pid $(cat "$STATE/slurmd-$n.pid")"; else echo "slurmd $n: down"; rc=3; fi
  done
  [ $rc = 0 ] && T=10 on h0 "sinfo -N" || true
  return $rc
}

cgroup_mounts() {  # shell commands mounting the machine's cgroup hierarchies (v1 and v2)
  local out="mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup &&" fs dir opts
  while read -r fs dir opts; do
    dir=${dir#/sys/fs/cgroup/}
    out="$out mkdir -p /sys/fs/cgroup/$dir && mount -t $fs -o $opts $fs /sys/fs/cgroup/$dir &&"
  done < <(awk '$2 ~ "^/sys/fs/cgroup/" && ($3 == "cgroup" || $3 == "cgroup2") {
             o = $4; sub(/^rw,(relatime,)?/, "", o); if ($3 == "cgroup2") o = "rw";
             print $3, $2, o}' /proc/self/mounts)
  if awk '$2 == "/sys/fs/cgroup" && $3 == "cgroup2" {f=1} END {exit !f}' /proc/self/mounts; then
    out="mount -t cgroup2 cgroup2 /sys/fs/cgroup &&"
  fi
  echo "$out"
}

write_conf() {
  local cpus=2 mem
  mem=$(awk '/^MemTotal/{print int($2/1024/8)}' /proc/meminfo)
  cat >"$CONF" <<EOF
# mpidispatch .ci/slurm-multinode.sh: three nodes on the namespace hosts of .ci/hosts.sh
ClusterName=mdmulti
SlurmctldHost=h0(198.18.0.1)
SlurmctldPort=6917
SlurmdPort=6918
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool-%n
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd-%n.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=pmi2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
SlurmdParameters=config_overrides
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName=h0 NodeAddr=198.18.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=h1 NodeAddr=198.18.0.2 CPUs=$cpus RealMemory=$mem State=UNKNOWN
NodeName=h2 NodeAddr=198.18.0.3 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=multi Nodes=h0,h1,h2 Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

do_start() {
  local t0=$SECONDS
  bash "$HERE/hosts.sh" status 3 >/dev/null 2>&1 || bash "$HERE/hosts.sh" start 3
  if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
     || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    log "installing Slurm through .ci/start-slurm.sh's recipe is needed first"
    die "slurmctld/slurmd/sbatch/munged not installed: run .ci/schedulers.sh start (or apt-get install slurmctld slurmd slurm-client munge)"
  fi
  if do_status >/dev/null 2>&1; then log "already running"; return 0; fi
  do_stop >/dev/null   # whatever is left of an earlier, broken start
  rm -rf "$STATE/ctld"      # a fresh cluster: no jobs restored from an earlier run
  mkdir -p "$STATE/ctld"
  for n in $NODES; do mkdir -p "$STATE/spool-$n"; done
  if ! timeout 10 munge -n </dev/null >/dev/null 2>&1; then
    [ -s /etc/munge/munge.key ] || die "no munge key (/etc/munge/munge.key): run .ci/schedulers.sh start once"
    mkdir -p /run/munge && chown munge:munge /run/munge
    timeout 20 runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>&1
    touch "$STATE/munged.started"
  fi
  write_conf
  # daemons get /dev/null as stdio (they must not hold a caller's pipe open)
  T=30 on h0 "slurmctld -f $CONF </dev/null >/dev/null 2>>$STATE/start.err" || die "slurmctld failed: $(tail -5 "$STATE/slurmctld.log" 2>/dev/null)"
  for n in $NODES; do
    # ip netns exec mounts a fresh /sys without the cgroup file systems, which slurmd
    # initializes even with proctrack/linuxproc: mount the machine's hierarchies again in this
    # host's (private) mount namespace
    T=30 on "$n" "$(cgroup_mounts) slurmd -f $CONF -N $n </dev/null >/dev/null 2>>$STATE/start.err" \
      || die "slurmd on $n failed: $(tail -5 "$STATE/slurmd-$n.log" 2>/dev/null)"
  done
  local ok=0 st
  for i in $(seq 1 120); do
    st=$(T=5 on h0 "sinfo -h -o %t" 2>/dev/null | sort -u | tr '\n' ' ' || true)
    [ "$st" = "idle " ] && { ok=1; break; }
    sleep 0.25
  done
  [ $ok = 1 ] || die "nodes not idle within 30 s (states: $st); logs in $STATE"
  local out
  out=$(T=30 on h0 "srun -N 3 -n 3 hostname" | sort | tr '\n' ' ')
  [ "$out" = "h0 h1 h2 " ] || die "smoke test srun -N 3 hostname gave '$out'"
  log "up: slurmctld on h0, slurmd on $NODES; srun -N 3 hostname: $out($((SECONDS - t0)) s); SLURM_CONF=$CONF"
}

case "${1:-status}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
