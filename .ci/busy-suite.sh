#!/usr/bin/env bash
# The whole suite, several times in a row, on a busy machine (issue 9, point 15).
#
#   bash .ci/busy-suite.sh [RUNS] [HOGS]      # defaults: 3 runs, 2 CPU hogs
#
# Each run is what CI runs: a fresh clone of this repository's HEAD and `CI=true bash
# .ci/run` (as root it starts the one-node Slurm and Grid Engine itself), while HOGS
# `while True: pass` processes keep the CPUs busy the whole time. Logs: /tmp/busy-suite-N.log;
# one summary line per run on stdout. Never run it beside another test run: the multi-host
# rigs (network namespaces, the 3-node Slurm) are machine-global.
set -uo pipefail
runs=${1:-3}
hogs=${2:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
pids=()
for _ in $(seq "$hogs"); do
    python3 -c "while True: pass" &
    pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null' EXIT
failed=0
for i in $(seq "$runs"); do
    clone=/tmp/busy-suite-$i
    rm -rf "$clone" && git clone -q "$repo" "$clone"
    start=$(date +%s)
    (cd "$clone" && CI=true timeout 5400 bash .ci/run) > "/tmp/busy-suite-$i.log" 2>&1
    rc=$?
    [ $rc -eq 0 ] || failed=1
    echo "run $i: $(git -C "$clone" log --oneline -1 | cut -c1-7) exit $rc in $(( $(date +%s) - start )) s," \
         "load $(cut -d' ' -f1-3 /proc/loadavg)"
    sed 's/\x1b\[[0-9;]*m//g' "/tmp/busy-suite-$i.log" |
        grep -a -E '^(=+ .*(passed|failed).*=+|FAILED|ERROR|[0-9]+ passed in)' | sed 's/^/    /'
done
exit $failed
