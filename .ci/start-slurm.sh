#!/usr/bin/env bash
# Bring up (or tear down) a one-node Slurm cluster on a systemd-less Debian 12 box.
#
#   .ci/start-slurm.sh [start] install if needed, configure, start munged+slurmctld+slurmd,
#                             wait until a real job runs, print timings   (idempotent)
#   .ci/start-slurm.sh stop    cancel all jobs, stop the daemons this script started (by PID)
#   .ci/start-slurm.sh status  show daemons / sinfo
#
# Knobs (env): SLURM_CPUS   CPUs advertised for the node (default: max(nproc,4); may
#                           exceed real cores thanks to SlurmdParameters=config_overrides)
#              SMOKE=0      skip the sbatch smoke test at the end of start
#              CLEAN=1      wipe slurmctld state (jobs, job-id counter) before starting
#              APT_LOG      apt-get output when installing (default: a new
#                           ci-slurm-apt.XXXXXX file from mktemp in $TMPDIR, else the system temp dir)
#              TMPDIR       where mktemp puts the apt log and the smoke-test job directory
# Needs root. Every blocking command is bounded by `timeout`.
# mpidispatch CI: used by .ci/schedulers.sh and tests/test_schedulers.py (markers slurm, sge).
# Adapted from the tested recipe in the project's scheduler research notes.
set -euo pipefail

T0=$(date +%s.%N)
el() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "[ci-slurm $(el "$T0")s] $*"; }
die() { echo "[ci-slurm] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf
STATE=/run/ci-slurm            # marker: munged was started by this script
export PATH="$PATH:/usr/sbin:/sbin"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid

running() { [ -d "/proc/$1" ] && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }  # zombies = dead
alive() {   # alive PIDFILE COMM -> true if the pid in PIDFILE is running and is COMM
  local p; [ -s "$1" ] || return 1; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && running "$p" && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ]
}

stop_pid() {  # stop_pid NAME PIDFILE COMM : TERM, wait up to 20 s, then KILL
  local name=$1 pf=$2 comm=$3 p i
  alive "$pf" "$comm" || { log "$name not running"; return 0; }
  p=$(cat "$pf"); log "stopping $name (pid $p)"; kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 100); do running "$p" || break; sleep 0.2; done
  if running "$p"; then log "$name did not exit, SIGKILL"; kill -KILL "$p" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$pf"
}

do_stop() {
  if command -v squeue >/dev/null && alive "$CTLD_PID" slurmctld; then
    ids=$(timeout 10 squeue -h -o %A 2>/dev/null | tr '\n' ' ' || true)
    if [ -n "${ids// /}" ]; then
      log "cancelling jobs: $ids"; timeout 10 scancel $ids || true
      for i in $(seq 1 50); do [ -z "$(timeout 5 squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  stop_pid slurmd "$SLURMD_PID" slurmd
  stop_pid slurmctld "$CTLD_PID" slurmctld
  # munged: only if we started it (do not kill a munged that pre-existed)
  if [ -f "$STATE/munged.started" ]; then stop_pid munged "$MUNGE_PID" munged; rm -f "$STATE/munged.started"
  else log "munged not started by this script; left alone"; fi
  log "stopped"
}

do_status() {
  for d in munged:$MUNGE_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
    n=${d%%:*}; f=${d#*:}; if alive "$f" "$n"; then echo "$n: running pid $(cat "$f")"; else echo "$n: not running"; fi
  done
  command -v sinfo >/dev/null && timeout 5 sinfo || true
}

case "${1:-}" in
  --stop|stop) do_stop; exit 0 ;;
  --status|status) do_status; exit 0 ;;
  ""|--start|start) ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac

# ---------------------------------------------------------------- 1. packages
PKGS="slurmctld slurmd slurm-client munge"
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
   || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
  log "installing $PKGS"
  # Without systemd, postinst would try to start services via /etc/init.d; forbid that
  # (the Debian docker-ish image already ships such a policy-rc.d; create one only if absent).
  TMP_POLICY=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; TMP_POLICY=1; fi
  export DEBIAN_FRONTEND=noninteractive
  APT_LOG=${APT_LOG:-$(mktemp -t ci-slurm-apt.XXXXXX)}; log "apt output -> $APT_LOG"
  if ! timeout 600 apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends $PKGS >"$APT_LOG" 2>&1; then
    log "install failed, running apt-get update and retrying"
    timeout 300 apt-get update -q -o DPkg::Lock::Timeout=300 >>"$APT_LOG" 2>&1
    timeout 600 apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends $PKGS >>"$APT_LOG" 2>&1 \
      || { [ $TMP_POLICY = 1 ] && rm -f /usr/sbin/policy-rc.d; tail -20 "$APT_LOG"; die "apt-get install failed"; }
  fi
  [ $TMP_POLICY = 1 ] && rm -f /usr/sbin/policy-rc.d
  log "packages installed"
else
  log "packages already installed"
fi
T_INST=$(el "$T0")

# ---------------------------------------------------------------- 2. hostname
if ! getent hosts "$HOST" >/dev/null; then
  log "adding '127.0.0.1 $HOST' to /etc/hosts"; echo "127.0.0.1 $HOST" >> /etc/hosts
fi

# ---------------------------------------------------------------- 3. munge
mkdir -p "$STATE" /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge; chmod 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating munge key"; mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
    || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key; chmod 0400 /etc/munge/munge.key
fi
if alive "$MUNGE_PID" munged; then
  log "munged already running (pid $(cat $MUNGE_PID))"
else
  rm -f /run/munge/munge.socket.2 /run/munge/munge.socket.2.lock "$MUNGE_PID"
  # daemons get /dev/null as stdio: they must not hold the caller's pipe open (CI log capture)
  timeout 20 runuser -u munge -- /usr/sbin/munged </dev/null >/dev/null 2>>/var/log/munge/ci-start.err   # forks; writes $MUNGE_PID
  touch "$STATE/munged.started"
  log "munged started (pid $(cat $MUNGE_PID))"
fi
timeout 10 munge -n </dev/null | timeout 10 unmunge >/dev/null || die "munge self-test failed"

# ---------------------------------------------------------------- 4. slurm.conf
CPUS=${SLURM_CPUS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
MEM=$(awk '/^MemTotal/{print int($2/1024*0.9)}' /proc/meminfo)   # MB, so --mem requests fit
NEWCONF=$(cat <<EOF
# generated by mpidispatch .ci/start-slurm.sh -- single-node CI cluster
ClusterName=ci
SlurmctldHost=$HOST
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# no cgroups / systemd needed:
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# srun launches PMI2 MPI programs (pip 'mpich' wheel, Debian mpich) directly
MpiDefault=pmi2
SchedulerType=sched/backfill
# schedule each submitted job immediately (default batch_sched_delay=3 s adds ~3 s per job)
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
# allow advertising more CPUs than the box has (oversubscription for tests)
SlurmdParameters=config_overrides
# snappier turnaround
MessageTimeout=10
KillWait=5
InactiveLimit=0
MinJobAge=300
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /var/log/slurm
chown slurm:slurm /var/lib/slurm/slurmctld /var/log/slurm
CONF_CHANGED=0
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$NEWCONF" ]; then
  printf '%s\n' "$NEWCONF" > "$CONF"; chmod 0644 "$CONF"; CONF_CHANGED=1; log "wrote $CONF (CPUs=$CPUS)"
fi
if [ "$CONF_CHANGED" = 1 ] && { alive "$CTLD_PID" slurmctld || alive "$SLURMD_PID" slurmd; }; then
  log "config changed -> restarting slurm daemons"
  stop_pid slurmd "$SLURMD_PID" slurmd; stop_pid slurmctld "$CTLD_PID" slurmctld
fi

# ---------------------------------------------------------------- 5. daemons
if [ "${CLEAN:-0}" = 1 ] && ! alive "$CTLD_PID" slurmctld; then
  log "CLEAN=1: wiping slurmctld state"; rm -rf /var/lib/slurm/slurmctld/*
fi
T_D0=$(date +%s.%N); SLURMD_T=0
if alive "$CTLD_PID" slurmctld; then log "slurmctld already running (pid $(cat $CTLD_PID))"
else timeout 30 /usr/sbin/slurmctld </dev/null >/dev/null 2>>/var/log/slurm/ci-start.err || die "slurmctld failed; see /var/log/slurm/slurmctld.log and ci-start.err"
     log "slurmctld started (pid $(cat $CTLD_PID 2>/dev/null))"; fi
if alive "$SLURMD_PID" slurmd; then log "slurmd already running (pid $(cat $SLURMD_PID))"
else SLURMD_T=$(( $(date +%s) - 1 )); timeout 30 /usr/sbin/slurmd </dev/null >/dev/null 2>>/var/log/slurm/ci-start.err || die "slurmd failed; see /var/log/slurm/slurmd.log and ci-start.err"
     log "slurmd started (pid $(cat $SLURMD_PID 2>/dev/null))"; fi

# wait until the node is usable
ok=0
for i in $(seq 1 120); do
  st=$(timeout 5 sinfo -h -n "$HOST" -o %t 2>/dev/null || true)
  # after a restart slurmctld restores the old node state: also require that the slurmd
  # we just launched has registered (SlurmdStartTime >= launch time)
  if [ "$SLURMD_T" != 0 ]; then
    sst=$(timeout 5 scontrol show node "$HOST" 2>/dev/null | grep -o 'SlurmdStartTime=[^ ]*' | cut -d= -f2 || true)
    sst=$(date -d "$sst" +%s 2>/dev/null || echo 0)
    [ "$sst" -ge "$SLURMD_T" ] || { sleep 0.25; continue; }
  fi
  case "$st" in idle|mix|alloc|comp) ok=1; break ;;      # a trailing '*' = not responding yet
                down*|drain*|fail*) timeout 5 scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.25
done
[ $ok = 1 ] || { tail -20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log; die "node $HOST never became idle (state '$st')"; }
T_UP=$(el "$T_D0")
log "node $HOST is '$st' (daemons ready ${T_UP}s after launch)"

# ---------------------------------------------------------------- 6. smoke test
if [ "${SMOKE:-1}" != 0 ]; then
  d=$(mktemp -d -t ci-slurm-smoke.XXXXXX); T_J=$(date +%s.%N)
  # (sbatch --wait polls at 2 s, then 10 s granularity -> poll squeue ourselves)
  J=$(cd "$d" && timeout 30 sbatch --parsable -o out.txt --wrap 'hostname; echo ok') || die "sbatch failed"
  for i in $(seq 1 600); do [ -z "$(timeout 5 squeue -h -j "$J" -o %T 2>/dev/null)" ] && break; sleep 0.1; done
  grep -q '^ok$' "$d/out.txt" 2>/dev/null || { timeout 5 scontrol show job "$J" || true; die "smoke job $J produced no output"; }
  log "smoke job OK ($(el "$T_J")s turnaround)"; rm -rf "$d"
fi
log "Slurm ready: install/check ${T_INST}s, total $(el "$T0")s"
