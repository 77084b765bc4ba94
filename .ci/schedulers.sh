#!/usr/bin/env bash
# Start, stop or inspect the one-node Slurm and Grid Engine used by tests/test_schedulers.py.
#
#   .ci/schedulers.sh start    install (apt) if needed and start both; idempotent (~1 s when up)
#   .ci/schedulers.sh stop     cancel all jobs, stop every daemon the start scripts started
#   .ci/schedulers.sh status   daemons, sinfo, qstat -f
#
# Env: SCHEDULERS="slurm sge" (default both), plus the knobs of start-slurm.sh / start-sge.sh
# (SMOKE=0 skips the smoke job). Needs root (Debian 12, systemd not required). Every step is
# bounded: each start script by START_TIMEOUT seconds (default 900: a first apt install),
# each stop by 120 s.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ACTION=${1:-status}
WHICH=${SCHEDULERS:-slurm sge}
[ "$(id -u)" = 0 ] || { echo "schedulers.sh: must run as root (it installs packages and starts daemons)" >&2; exit 1; }
rc=0
case "$ACTION" in
  start)
    # The two installs can run in parallel (apt waits on the dpkg lock), which saves ~10 s.
    # Each script logs to a file (not a pipe: nothing may wait for the daemons' stdio).
    LOGDIR=$(mktemp -d -t ci-schedulers.XXXXXX); pids=""
    for s in $WHICH; do
      timeout "${START_TIMEOUT:-900}" bash "$HERE/start-$s.sh" start >"$LOGDIR/$s.log" 2>&1 &
      pids="$pids $!:$s"
    done
    for p in $pids; do
      s=${p#*:}
      if wait "${p%%:*}"; then sed "s/^/[$s] /" "$LOGDIR/$s.log"
      else sed "s/^/[$s] /" "$LOGDIR/$s.log"; echo "schedulers.sh: starting $s FAILED" >&2; rc=1; fi
    done
    rm -rf "$LOGDIR" ;;
  stop)
    for s in $WHICH; do timeout 120 bash "$HERE/start-$s.sh" stop || rc=1; done ;;
  status)
    for s in $WHICH; do echo "== $s"; timeout 30 bash "$HERE/start-$s.sh" status || rc=1; done ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
exit $rc
