"""Issue 13.5 (start): workers started together share one spawn (one intercommunicator),
yet each is still its own worker: a death, a retirement or a start-up failure concerns that
worker alone, every wait is bounded and no process is left behind."""
import pytest

from conftest import BACKEND, survivors
from test_faults import pids_gone

pytestmark = pytest.mark.fault


GROUPS = {"MPIDISPATCH_SPAWN_GROUP": "32"}   # opt-in (mpidispatch._spawngroup.group_size)


def run_group(mpi_run, *args):
    if BACKEND == "mpich":
        # MPICH's hydra ends every process when one dies unless -disable-auto-cleanup
        # (--ft), whatever the manager's own mode (as in test_faults).
        return mpi_run("spawn_group.py", *args, n=1, module=True, ft=True, timeout=180,
                       env=GROUPS)
    return mpi_run("spawn_group.py", *args, timeout=180, env=GROUPS)


@pytest.mark.parametrize("ft", ["ft", "noft"])
def test_workers_started_together_survive_one_killed(mpi_run, ft):
    run = run_group(mpi_run, "kill", "4", ft)
    assert run.returncode == 0, run
    assert run.value("READY") == "4", run
    assert run.value("SHARED") == "True", run          # one spawn, one intercommunicator
    assert run.value("RANKS") == "True", run
    assert run.value("EXACTLY_ONCE") == "True", run     # the others finished every task
    assert run.value("VICTIM_STATE") == "dead", run
    assert "killed by SIGKILL" in run.value("VICTIM_DEATH"), run
    assert run.value("RETIREE_STATE") == "stopped", run
    assert run.value("OTHERS_WORKED") == "True", run
    assert float(run.value("CLOSE_SECONDS")) < 10, run
    assert pids_gone(run, within=10)
    assert survivors("scenarios/spawn_group.py") == []


def test_start_failure_in_a_group_is_reported_per_worker(mpi_run):
    run = run_group(mpi_run, "broken", "4")
    if BACKEND == "openmpi":
        # (MPICH aborts in MPI_Finalize while a hung spawn is pending, as in
        # test_engine_v2.test_start_failures_are_fast_concurrent_and_say_why.)
        assert run.returncode == 0, run
    assert run.value("ERROR") == "WorkerStartError", run
    assert float(run.value("SECONDS")) < 30, run
    first = run.value("FIRST")
    assert "worker 1 exited before it connected (exit status 3)" in first, run
    assert "worker 1 broken on purpose" in first, run   # the tail of its own log
    assert run.value("ERRORS") == "4", run
    assert "worker 1, started the same way, exited before it connected" in run.value("OTHERS")
    assert survivors("scenarios/spawn_group.py") == []
