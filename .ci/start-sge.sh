#!/usr/bin/env bash
# Bring up (or tear down) a one-node (Son of) Grid Engine 8.1.9 cell on a systemd-less
# Debian 12 box, using the Debian packages gridengine-{master,exec,client}.
#
#   .ci/start-sge.sh [start] install if needed, configure, start sge_qmaster + sge_execd,
#                           wait until a real job runs, print timings      (idempotent)
#   .ci/start-sge.sh stop    delete all jobs, stop the daemons this script started (by PID)
#   .ci/start-sge.sh status  show daemons / qstat -f
#
# Knobs (env): SGE_SLOTS   slots of all.q (default: max(nproc,4); oversubscription is fine)
#              SGE_SHELL_START_MODE  unix_behavior (default: honour the script's #! line)
#                                    or posix_compliant (run script with queue shell /bin/bash)
#              SMOKE=0     skip the qsub smoke test at the end of start
#              APT_LOG      apt-get output when installing (default: a new
#                           ci-sge-apt.XXXXXX file from mktemp in $TMPDIR, else the system temp dir)
#              TMPDIR       where mktemp puts the apt log and the smoke-test job directory
# Needs root. Every blocking command is bounded by `timeout`.
# mpidispatch CI: used by .ci/schedulers.sh and tests/test_schedulers.py (markers slurm, sge).
# Adapted from the tested recipe in the project's scheduler research notes.
set -euo pipefail

T0=$(date +%s.%N)
el() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }
log() { echo "[ci-sge $(el "$T0")s] $*"; }
die() { echo "[ci-sge] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

export SGE_ROOT=/var/lib/gridengine SGE_CELL=default
COMMON=$SGE_ROOT/$SGE_CELL/common
SPOOL=/var/spool/gridengine
QM_PID=$SPOOL/qmaster/qmaster.pid
HOST=$(hostname)
SLOTS=${SGE_SLOTS:-$(( $(nproc) > 4 ? $(nproc) : 4 ))}
SSM=${SGE_SHELL_START_MODE:-unix_behavior}
WORK=/run/ci-sge; mkdir -p "$WORK"
export PATH="$PATH:/usr/sbin:/sbin"

running() { [ -d "/proc/$1" ] && [ "$(ps -o stat= -p "$1" 2>/dev/null | cut -c1)" != Z ]; }  # zombies = dead
pid_of() {  # pid_of PIDFILE COMM -> prints pid if alive and matching
  local p; [ -s "$1" ] || return 1; p=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$p" ] && running "$p" && [ "$(cat /proc/$p/comm 2>/dev/null)" = "$2" ] && echo "$p"
}
execd_pid() { local f; for f in "$SPOOL"/execd/*/execd.pid; do pid_of "$f" sge_execd && return 0; done; return 1; }
qm_pid() { pid_of "$QM_PID" sge_qmaster; }

stop_pid() {  # stop_pid NAME PID : TERM, wait up to 30 s, then KILL
  local name=$1 p=$2 i
  log "stopping $name (pid $p)"; kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 1 150); do running "$p" || break; sleep 0.2; done
  if running "$p"; then log "$name did not exit, SIGKILL"; kill -KILL "$p" 2>/dev/null || true; sleep 0.5; fi
}

do_stop() {
  if qm_pid >/dev/null && command -v qstat >/dev/null; then
    if [ -n "$(timeout 10 qstat -u '*' 2>/dev/null)" ]; then
      log "deleting all jobs"; timeout 10 qdel -f -u '*' >/dev/null 2>&1 || true
      for i in $(seq 1 75); do [ -z "$(timeout 5 qstat -u '*' 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  if p=$(execd_pid); then stop_pid sge_execd "$p"; else log "sge_execd not running"; fi
  if p=$(qm_pid); then stop_pid sge_qmaster "$p"; else log "sge_qmaster not running"; fi
  log "stopped"
}

do_status() {
  if p=$(qm_pid); then echo "sge_qmaster: running pid $p"; else echo "sge_qmaster: not running"; fi
  if p=$(execd_pid); then echo "sge_execd: running pid $p"; else echo "sge_execd: not running"; fi
  command -v qstat >/dev/null && timeout 5 qstat -f || true
}

case "${1:-}" in
  --stop|stop) do_stop; exit 0 ;;
  --status|status) do_status; exit 0 ;;
  ""|--start|start) ;;
  *) die "usage: $0 [start|stop|status]" ;;
esac

# ---------------------------------------------------------------- 1. name resolution
# SGE's commlib compares the name a client claims with the reverse lookup of its IP.
# On this image /etc/hosts maps 127.0.0.1 -> "localhost" first, so "$HOST" (127.0.0.1)
# reverse-resolves to "localhost" and every qconf/qsub fails with
#   "access denied (client IP resolved to host name "localhost". This is not identical
#    to clients host name "vm")".  Fix without touching /etc/hosts: SGE host_aliases.
if ! getent hosts "$HOST" >/dev/null; then
  log "adding '127.0.0.1 $HOST' to /etc/hosts"; echo "127.0.0.1 $HOST" >> /etc/hosts
fi
IP=$(getent ahostsv4 "$HOST" | awk 'NR==1{print $1}')
# names the qmaster will see for connections from this host: reverse of $IP and, for a
# loopback $IP (127.0.1.1 style too), reverse of the kernel's loopback source 127.0.0.1
REV=""
for a in "$IP" $(case "$IP" in 127.*) echo 127.0.0.1;; esac); do
  r=$(getent hosts "$a" | awk 'NR==1{print $2}')
  if [ -n "$r" ] && [ "$r" != "$HOST" ] && ! echo " $REV " | grep -q " $r "; then REV="${REV:+$REV }$r"; fi
done

# ---------------------------------------------------------------- 2. packages
PKGS="gridengine-master gridengine-exec gridengine-client"
if ! command -v sge_qmaster >/dev/null || ! command -v sge_execd >/dev/null || ! command -v qsub >/dev/null \
   || ! dpkg -s $PKGS >/dev/null 2>&1; then
  log "installing $PKGS"
  printf '%s\n' \
    "gridengine-common shared/gridengineconfig boolean true" \
    "gridengine-common shared/gridenginecell string $SGE_CELL" \
    "gridengine-common shared/gridenginemaster string $HOST" | debconf-set-selections
  # postinst calls invoke-rc.d ...start; without systemd forbid that (image normally has one)
  TMP_POLICY=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; TMP_POLICY=1; fi
  export DEBIAN_FRONTEND=noninteractive
  APT_LOG=${APT_LOG:-$(mktemp -t ci-sge-apt.XXXXXX)}; log "apt output -> $APT_LOG"
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

# ---------------------------------------------------------------- 3. cell files
mkdir -p "$COMMON"; chown sgeadmin:sgeadmin "$SGE_ROOT/$SGE_CELL" "$COMMON"
[ -f "$COMMON/bootstrap" ] || install -m0644 -o sgeadmin -g sgeadmin /usr/share/gridengine/default-bootstrap "$COMMON/bootstrap"
for d in qmaster qmaster/job_scripts spooldb execd; do mkdir -p "$SPOOL/$d"; chown sgeadmin:sgeadmin "$SPOOL/$d"; done
if [ ! -e "$SPOOL/spooldb/sge" ]; then   # packages installed with gridengineconfig=false
  log "initialising cluster spool"
  timeout 60 su -s /bin/sh -c "/usr/share/gridengine/scripts/init_cluster $SGE_ROOT $SGE_CELL $SPOOL/spooldb sgeadmin" sgeadmin >/dev/null
fi
echo "$HOST" > "$COMMON/act_qmaster"; chown sgeadmin:sgeadmin "$COMMON/act_qmaster"
if [ -n "$REV" ] && [ "$REV" != "$HOST" ]; then
  want="$HOST $REV"
  if [ "$(cat "$COMMON/host_aliases" 2>/dev/null)" != "$want" ]; then
    log "host_aliases: '$want' ($HOST -> $IP reverse-resolves to $REV)"
    echo "$want" > "$COMMON/host_aliases"; chmod 0644 "$COMMON/host_aliases"
    # a running qmaster only reads host_aliases at start
    if p=$(execd_pid); then stop_pid sge_execd "$p"; fi
    if p=$(qm_pid); then stop_pid sge_qmaster "$p"; fi
  fi
fi

# ---------------------------------------------------------------- 4. qmaster
T_D0=$(date +%s.%N)
if p=$(qm_pid); then log "sge_qmaster already running (pid $p)"
else
  timeout 30 /usr/sbin/sge_qmaster </dev/null >/dev/null 2>>"$WORK/start.err" || die "sge_qmaster failed to start; see $SPOOL/qmaster/messages and $WORK/start.err"
  for i in $(seq 1 120); do timeout 5 qconf -sh >/dev/null 2>&1 && break; sleep 0.25; done
  timeout 5 qconf -sh >/dev/null 2>&1 || { tail -5 "$SPOOL/qmaster/messages"; die "qmaster does not answer"; }
  log "sge_qmaster started (pid $(qm_pid)), answering after $(el "$T_D0")s"
fi

# ---------------------------------------------------------------- 5. configuration (idempotent)
# every qconf call costs ~0.2 s, so skip the whole block when this exact configuration was
# already applied to this spool (marker lives next to the berkeleydb spool it describes)
CFG_ID="v1 host=$HOST slots=$SLOTS ssm=$SSM"
MARK=$SPOOL/qmaster/ci-configured
if [ "$(cat "$MARK" 2>/dev/null)" = "$CFG_ID" ] && timeout 5 qconf -sq all.q 2>/dev/null | grep -q "^hostlist  *$HOST$"; then
  log "configuration already applied ($CFG_ID)"
else
T_C0=$(date +%s.%N)
C=$WORK/conf; rm -rf "$C"; mkdir -p "$C"
# global: allow root jobs (default min_uid/min_gid 1000 rejects them)
if timeout 5 qconf -sconf global | grep -Eq '^min_(u|g)id +[1-9]'; then
  timeout 5 qconf -sconf global | grep -v '^#' \
    | sed -E -e 's/^min_uid .*/min_uid                      0/' -e 's/^min_gid .*/min_gid                      0/' > "$C/global"
  timeout 10 qconf -Mconf "$C/global" >/dev/null 2>&1 && log "global config: min_uid/min_gid 0"
fi
# scheduler: 1 s cycle + immediate scheduling on submit/finish (default 15 s cycle)
if ! timeout 5 qconf -ssconf | grep -Eq '^schedule_interval +0:0:1$'; then
  timeout 5 qconf -ssconf | sed -E -e 's/^schedule_interval .*/schedule_interval                 0:0:1/' \
      -e 's/^flush_submit_sec .*/flush_submit_sec                  1/' -e 's/^flush_finish_sec .*/flush_finish_sec                  1/' > "$C/sconf"
  timeout 10 qconf -Msconf "$C/sconf" >/dev/null 2>&1 && log "scheduler: schedule_interval 0:0:1, flush_*_sec 1"
fi
timeout 5 qconf -sh 2>/dev/null | grep -qx "$HOST" || timeout 10 qconf -ah "$HOST" >/dev/null
timeout 5 qconf -ss 2>/dev/null | grep -qx "$HOST" || { timeout 10 qconf -as "$HOST" >/dev/null 2>&1; log "submit host $HOST added"; }
if ! timeout 5 qconf -sel 2>/dev/null | grep -qx "$HOST"; then
  printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' "$HOST" > "$C/exechost"
  timeout 10 qconf -Ae "$C/exechost" >/dev/null 2>&1; log "exec host $HOST added"
fi
for pe in smp mpi; do
  timeout 5 qconf -spl 2>/dev/null | grep -qx "$pe" && continue
  rule='$pe_slots'; [ $pe = mpi ] && rule='$fill_up'
  printf 'pe_name %s\nslots 9999\nuser_lists NONE\nxuser_lists NONE\nstart_proc_args NONE\nstop_proc_args NONE\nallocation_rule %s\ncontrol_slaves TRUE\njob_is_first_task FALSE\nurgency_slots min\naccounting_summary FALSE\nqsort_args NONE\n' "$pe" "$rule" > "$C/pe_$pe"
  timeout 10 qconf -Ap "$C/pe_$pe" >/dev/null 2>&1; log "parallel environment '$pe' ($rule) added"
done
# queue all.q: no load threshold (a busy 2-core CI box would otherwise put it in alarm state)
timeout 5 qconf -sq | sed -E -e 's/^qname .*/qname all.q/' -e "s/^hostlist .*/hostlist $HOST/" \
   -e 's/^load_thresholds .*/load_thresholds NONE/' -e 's/^pe_list .*/pe_list smp mpi/' \
   -e "s/^slots .*/slots $SLOTS/" -e 's#^shell .*#shell /bin/bash#' \
   -e "s/^shell_start_mode .*/shell_start_mode $SSM/" > "$C/all.q"
if timeout 5 qconf -sql 2>/dev/null | grep -qx all.q; then
  timeout 5 qconf -sq all.q | diff -q -w - "$C/all.q" >/dev/null 2>&1 \
    || { timeout 10 qconf -Mq "$C/all.q" >/dev/null 2>&1; log "queue all.q updated (slots $SLOTS)"; }
else
  timeout 10 qconf -Aq "$C/all.q" >/dev/null 2>&1; log "queue all.q added (slots $SLOTS, $SSM)"
fi
timeout 5 qconf -sql 2>/dev/null | grep -qx all.q || die "queue all.q could not be created"
echo "$CFG_ID" > "$MARK"
log "configuration applied in $(el "$T_C0")s"
fi

# ---------------------------------------------------------------- 6. execd
if p=$(execd_pid); then log "sge_execd already running (pid $p)"
else T_E0=$(date +%s.%N); timeout 30 /usr/sbin/sge_execd </dev/null >/dev/null 2>>"$WORK/start.err" || die "sge_execd failed to start; see $WORK/start.err"; log "sge_execd started"; fi
# ready = queue instance all.q@HOST exists, has a load value, and no state flags (a/u/E/d/...)
ok=0
for i in $(seq 1 240); do
  line=$(timeout 5 qstat -f -q "all.q@$HOST" 2>/dev/null | grep '^all.q@' || true)
  if [ -n "$line" ] && [ "$(echo "$line" | awk '{print NF}')" = 5 ] && ! echo "$line" | grep -q -- '-NA-'; then ok=1; break; fi
  sleep 0.25
done
[ $ok = 1 ] || { timeout 5 qstat -f || true; die "queue all.q@$HOST never became ready: '$line'"; }
log "all.q@$HOST ready${T_E0:+ ($(el "$T_E0")s after execd launch)}"

# ---------------------------------------------------------------- 7. smoke test
if [ "${SMOKE:-1}" != 0 ]; then
  d=$(mktemp -d -t ci-sge-smoke.XXXXXX); T_J=$(date +%s.%N)
  (cd "$d" && timeout 120 qsub -sync y -cwd -b y -N smoke -j y -o out.txt 'hostname; echo ok' >/dev/null) \
    || die "smoke job failed"
  grep -q '^ok$' "$d/out.txt" || die "smoke job produced no output"
  log "smoke job OK ($(el "$T_J")s turnaround)"; rm -rf "$d"
fi
log "SGE ready: install/check ${T_INST}s, total $(el "$T0")s"
