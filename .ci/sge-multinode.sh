#!/usr/bin/env bash
# A Grid Engine cell on the namespace hosts of .ci/hosts.sh: sge_qmaster on h0 (also the
# submit host), sge_execd on h1 and h2 (two execution hosts), queue all.q, PE "mpi".
#
#   .ci/sge-multinode.sh start | stop | status
#
# Apart from the one-node CI cell of .ci/schedulers.sh: its own cell "mdmulti" (directory
# $SGE_ROOT/mdmulti, removed at stop), ports 6544/6545, spool under $STATE. Clients run on h0
# with SGE_CELL=mdmulti SGE_QMASTER_PORT=6544 SGE_EXECD_PORT=6545 (see "$STATE/env").
# Needs root and the packages gridengine-master/-exec/-client (.ci/schedulers.sh start).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export SGE_ROOT=/var/lib/gridengine
CELL=mdmulti
STATE=${MPIDISPATCH_SGE_STATE:-/run/mpidispatch-sge}
AGENT=${MPIDISPATCH_HOSTS_STATE:-/run/mpidispatch-hosts}/ssh
ENVS="SGE_ROOT=$SGE_ROOT SGE_CELL=$CELL SGE_QMASTER_PORT=6544 SGE_EXECD_PORT=6545"
EXEC_HOSTS="h1 h2"
export PATH="$PATH:/usr/sbin:/sbin"

log() { echo "[sge-multinode] $*"; }
die() { echo "[sge-multinode] ERROR: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
on() { local h=$1; shift; timeout "${T:-30}" "$AGENT" "$h" "export $ENVS; $*"; }

pids_named() {  # pids of processes called $1 in the hosts' namespaces
  local n p
  for n in h0 h1 h2; do
    for p in $(ip netns pids "$n" 2>/dev/null); do
      [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$1" ] && echo "$p"
    done
  done
}

do_stop() {
  local p i
  if [ -n "$(pids_named sge_qmaster)" ]; then
    T=10 on h0 "qdel -f -u '*'" >/dev/null 2>&1 || true
  fi
  for name in sge_shepherd sge_execd sge_qmaster; do
    for p in $(pids_named $name); do kill -TERM "$p" 2>/dev/null || true; done
  done
  for i in $(seq 1 50); do
    [ -z "$(pids_named sge_execd)$(pids_named sge_qmaster)" ] && break; sleep 0.2
  done
  for name in sge_shepherd sge_execd sge_qmaster; do
    for p in $(pids_named $name); do kill -KILL "$p" 2>/dev/null || true; done
  done
  rm -rf "$STATE" "${SGE_ROOT:?}/$CELL"
  log "stopped"
}

do_status() {
  [ -n "$(pids_named sge_qmaster)" ] || { echo "sge_qmaster: down"; return 3; }
  T=10 on h0 "qstat -f" || return 3
}

do_start() {
  bash "$HERE/hosts.sh" status 3 >/dev/null 2>&1 || bash "$HERE/hosts.sh" start 3
  command -v sge_qmaster >/dev/null && command -v sge_execd >/dev/null && command -v qsub >/dev/null \
    || die "Grid Engine is not installed: run .ci/schedulers.sh start (or apt-get install gridengine-master gridengine-exec gridengine-client)"
  if do_status >/dev/null 2>&1; then log "already running"; return 0; fi
  do_stop >/dev/null
  local common=$SGE_ROOT/$CELL/common d
  mkdir -p "$common" "$STATE"
  for d in qmaster qmaster/job_scripts spooldb execd; do mkdir -p "$STATE/$d"; done
  chown -R sgeadmin:sgeadmin "$STATE" "$SGE_ROOT/$CELL"
  sed -e "s#^spooling_params .*#spooling_params         $STATE/spooldb#" \
      -e "s#^qmaster_spool_dir .*#qmaster_spool_dir       $STATE/qmaster#" \
      /usr/share/gridengine/default-bootstrap >"$common/bootstrap"
  echo h0 >"$common/act_qmaster"
  sed -e "s#^execd_spool_dir .*#execd_spool_dir        $STATE/execd#" \
      -e 's/^min_uid .*/min_uid                0/' -e 's/^min_gid .*/min_gid                0/' \
      /usr/share/gridengine/default-configuration >"$STATE/global.conf"
  chown -R sgeadmin:sgeadmin "$common" "$STATE"
  timeout 60 su -s /bin/sh sgeadmin -c "export SGE_ROOT=$SGE_ROOT SGE_CELL=$CELL;
    /usr/lib/gridengine/spoolinit berkeleydb libspoolb $STATE/spooldb init &&
    /usr/lib/gridengine/spooldefaults configuration $STATE/global.conf &&
    /usr/lib/gridengine/spooldefaults complexes /usr/share/gridengine/util/resources/centry &&
    /usr/lib/gridengine/spooldefaults usersets /usr/share/gridengine/util/resources/usersets &&
    /usr/lib/gridengine/spooldefaults managers sgeadmin" >"$STATE/init.log" 2>&1 \
    || die "spool init failed: $(tail -5 "$STATE/init.log")"
  T=30 on h0 "sge_qmaster </dev/null >/dev/null 2>>$STATE/start.err" || die "sge_qmaster failed: $(cat "$STATE/start.err")"
  local i ok=0
  for i in $(seq 1 120); do T=5 on h0 "qconf -sh" >/dev/null 2>&1 && { ok=1; break; }; sleep 0.25; done
  [ $ok = 1 ] || die "qmaster does not answer: $(tail -5 "$STATE/qmaster/messages" 2>/dev/null)"
  local c=$STATE/conf h
  mkdir -p "$c"
  for h in h0 $EXEC_HOSTS; do T=10 on h0 "qconf -ah $h" >/dev/null 2>&1 || true; done
  T=10 on h0 "qconf -as h0" >/dev/null 2>&1 || true
  for h in $EXEC_HOSTS; do
    printf 'hostname %s\nload_scaling NONE\ncomplex_values NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\nusage_scaling NONE\nreport_variables NONE\n' "$h" >"$c/exec-$h"
    T=10 on h0 "qconf -Ae $c/exec-$h" >/dev/null || die "could not add exec host $h"
  done
  printf 'pe_name mpi\nslots 9999\nuser_lists NONE\nxuser_lists NONE\nstart_proc_args NONE\nstop_proc_args NONE\nallocation_rule $round_robin\ncontrol_slaves TRUE\njob_is_first_task FALSE\nurgency_slots min\naccounting_summary FALSE\nqsort_args NONE\n' >"$c/pe-mpi"
  T=10 on h0 "qconf -Ap $c/pe-mpi" >/dev/null || die "could not add PE mpi"
  T=10 on h0 "qconf -ssconf" | sed -E -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
      -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' >"$c/sconf"
  T=10 on h0 "qconf -Msconf $c/sconf" >/dev/null 2>&1 || true
  T=10 on h0 "qconf -sq" | sed -E -e 's/^qname .*/qname all.q/' -e "s/^hostlist .*/hostlist $EXEC_HOSTS/" \
      -e 's/^load_thresholds .*/load_thresholds NONE/' -e 's/^pe_list .*/pe_list mpi/' \
      -e 's/^slots .*/slots 2/' -e 's#^shell .*#shell /bin/bash#' \
      -e 's/^shell_start_mode .*/shell_start_mode unix_behavior/' >"$c/all.q"
  T=10 on h0 "qconf -Aq $c/all.q" >/dev/null || die "could not add queue all.q"
  chown -R sgeadmin:sgeadmin "$STATE"
  for h in $EXEC_HOSTS; do
    T=30 on "$h" "sge_execd </dev/null >/dev/null 2>>$STATE/start.err" || die "sge_execd on $h failed"
  done
  ok=0
  for i in $(seq 1 160); do
    n=$(T=5 on h0 "qstat -f -q all.q" 2>/dev/null | grep '^all.q@' | awk 'NF == 5 && $4 !~ /NA/' | wc -l || true)
    [ "$n" = 2 ] && { ok=1; break; }
    sleep 0.25
  done
  [ $ok = 1 ] || die "queue instances not ready: $(T=5 on h0 'qstat -f' 2>&1 | tail -5)"
  echo "export $ENVS" >"$STATE/env"
  local out
  printf '#!/bin/sh\ncat "$PE_HOSTFILE"\n' >"$STATE/smoke.sh"; chmod 755 "$STATE/smoke.sh"
  out=$(T=60 on h0 "cd $STATE && qsub -sync y -cwd -j y -o smoke.out -pe mpi 2 smoke.sh >/dev/null && cat smoke.out" | awk '{print $1}' | sort | tr '\n' ' ')
  [ "$out" = "h1 h2 " ] || die "smoke job: PE hosts '$out', expected 'h1 h2 '"
  log "up: qmaster on h0, execd on $EXEC_HOSTS; PE mpi 2 slots on: $out"
}

case "${1:-status}" in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
