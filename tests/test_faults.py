"""Fault injection under real MPI: workers killed, crashing, hanging, exiting; manager killed.

For each fault: every result is delivered exactly once (checked by task id), the right error
reaches the right task, and no process is left behind. Open MPI runs the manager as a plain
``python`` singleton (ULFM reports dead workers); MPICH needs ``mpiexec -disable-auto-cleanup``
around the manager, which ``python -m mpidispatch --ft -n 1`` provides.
"""
import ast
import os
import signal
import time

import pytest

from conftest import BACKEND, survivors

pytestmark = pytest.mark.fault


def run_fault(mpi_run, mode, workers, ft=True, env=None):
    args = [mode, str(workers)] + (["ft"] if ft else ["noft"])
    if BACKEND == "mpich":
        # MPICH's hydra ends every process when one dies unless -disable-auto-cleanup
        # (--ft) is given, whatever the manager's own mode.
        return mpi_run("faults.py", *args, n=1, module=True, env=env, ft=True)
    return mpi_run("faults.py", *args, env=env)


def pids_gone(run, within=5.0):
    pids = [int(p) for p in run.value("WORKER_PIDS").split()]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        alive = [p for p in pids if _alive(p)]
        if not alive:
            return True
        time.sleep(0.1)
    return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def test_random_kills_fault_tolerant(mpi_run):
    run = run_fault(mpi_run, "kill_random", 3)
    assert run.returncode == 0, run
    assert run.value("EXACTLY_ONCE") == "True", run
    lost = int(run.value("LOST"))
    assert lost >= 1 and int(run.value("RESPAWNED")) == lost
    assert float(run.value("DETECT_MAX")) < 1.0     # death noticed within a second
    assert pids_gone(run)
    assert survivors("scenarios/faults.py") == []


def test_random_kills_without_fault_tolerance_requeue(mpi_run):
    run = run_fault(mpi_run, "kill_random", 3, ft=False)
    assert run.returncode == 0, run
    assert run.value("EXACTLY_ONCE") == "True", run
    assert int(run.value("LOST")) >= 1 and run.value("RESPAWNED") == "0"


@pytest.mark.parametrize("kind,exitcode", [("sigkill", -9), ("osexit", 9), ("segfault", -11)])
def test_poison_task_fails_alone(mpi_run, kind, exitcode):
    run = run_fault(mpi_run, "poison_" + kind, 2)
    assert run.returncode == 0, run
    assert ast.literal_eval(run.value("MISSING")) == [7], run   # only the poison task
    assert run.value("POISON_ERRORS") == "1"
    assert int(run.value("POISON_EXITCODE")) == exitcode
    message = run.value("POISON_MESSAGE")
    assert "worker" in message and ".output" in message and "max_retries=2" in message
    assert pids_gone(run)


BATCHED = {"MPIDISPATCH_BATCH": "20"}   # tasks travel 20 to a message


@pytest.mark.parametrize("ft", [True, False])
def test_kills_inside_batches_lose_and_duplicate_nothing(mpi_run, ft):
    """Workers killed while they hold batches: finished results are not repeated, the rest
    of each batch is requeued and runs once."""
    run = run_fault(mpi_run, "kill_random", 3, ft=ft, env=BATCHED)
    assert run.returncode == 0, run
    assert int(run.value("BATCHES")) > 0, run
    assert run.value("EXACTLY_ONCE") == "True", run
    assert int(run.value("LOST")) >= 1
    assert pids_gone(run)


def test_poison_task_inside_a_batch_fails_alone(mpi_run):
    """Which task of a lost batch killed the worker is not known: each runs alone from then
    on, and only the poison task fails."""
    run = run_fault(mpi_run, "poison_osexit", 2, env={"MPIDISPATCH_BATCH": "10"})
    assert run.returncode == 0, run
    assert int(run.value("BATCHES")) > 0, run
    assert ast.literal_eval(run.value("MISSING")) == [7], run
    assert run.value("POISON_ERRORS") == "1" and int(run.value("POISON_EXITCODE")) == 9
    assert pids_gone(run)


@pytest.mark.parametrize("batch", ["32", None], ids=["batch=32", "automatic"])
def test_errors_inside_batches_fail_alone(mpi_run, batch):
    """Tasks that raise (or exit) inside a batch fail alone with their own error; a big
    result travels alone; every other result arrives once."""
    env = {"MPIDISPATCH_BATCH": batch} if batch else None
    run = run_fault(mpi_run, "errors_batched", 2, ft=False, env=env)
    assert run.returncode == 0, run
    assert int(run.value("BATCHES")) > 0, run
    assert run.value("ERRORS_RIGHT") == "True", run
    assert run.value("ERROR_TEXTS_RIGHT") == "True", run
    assert run.value("OTHERS_ONCE") == "True", run


def test_poison_task_without_fault_tolerance_fails_alone(mpi_run):
    """Issue 9.9: one task calling os._exit(0) must not kill every worker."""
    run = run_fault(mpi_run, "poison_noft", 2, ft=False)
    assert run.returncode == 0, run
    assert ast.literal_eval(run.value("MISSING")) == [7], run
    assert run.value("POISON_ERRORS") == "1" and run.value("POISON_INDEX") == "7"
    assert run.value("NOMORE") == "False"
    assert run.value("LOST") == "1"
    assert pids_gone(run)


def test_hung_task_times_out_and_worker_is_replaced(mpi_run):
    run = run_fault(mpi_run, "hang", 2)
    assert run.returncode == 0, run
    assert run.value("TIMEOUTS") == "1"
    assert ast.literal_eval(run.value("MISSING")) == [3]
    assert run.value("RESPAWNED") == "1"
    assert pids_gone(run)


def test_sys_exit_in_task_is_reported_and_worker_lives(mpi_run):
    run = run_fault(mpi_run, "sysexit", 2, ft=False)
    assert run.returncode == 0, run
    assert ast.literal_eval(run.value("SYSEXIT")) == ["SystemExit"]
    assert ast.literal_eval(run.value("MISSING")) == [2]
    assert run.value("LOST") == "0"


def test_all_workers_dead_raises_at_once(mpi_run):
    run = run_fault(mpi_run, "all_dead", 2, ft=False)
    assert run.returncode == 0, run
    assert run.value("NOMORE") == "True"
    assert float(run.value("NOMORE_SECONDS")) < 5.0


def test_silent_worker_detected_by_heartbeat(mpi_run):
    run = run_fault(mpi_run, "stopped", 2, env={"MPIDISPATCH_FORCE_HEARTBEAT": "1",
                                               "MPIDISPATCH_HEARTBEAT_TIMEOUT": "2"})
    assert run.returncode == 0, run
    assert run.value("EXACTLY_ONCE") == "True", run
    assert run.value("LOST") == "1"
    assert pids_gone(run)


def test_manager_killed_spawned_workers_end(mpi_run):
    run = run_fault(mpi_run, "manager_killed", 2, ft=False)
    assert run.returncode != 0
    assert pids_gone(run, within=5.0), run


@pytest.mark.skipif(BACKEND != "openmpi", reason="static-world fault tolerance needs ULFM")
def test_static_world_fault_tolerant(mpi_run):
    run = mpi_run("faults.py", "kill_random", "0", "ft", n=4, ft=True)
    assert run.value("EXACTLY_ONCE") == "True", run    # mpiexec's own rc is the dead rank's
    assert int(run.value("RESPAWNED")) >= 1
    assert pids_gone(run)


@pytest.mark.skipif(BACKEND != "openmpi", reason="static-world fault tolerance needs ULFM")
def test_static_world_manager_killed(mpi_run):
    run = mpi_run("faults.py", "manager_killed", "0", n=3, ft=True)
    assert pids_gone(run, within=5.0), run


@pytest.mark.skipif(BACKEND != "mpich", reason="MPICH-specific guidance")
def test_mpich_singleton_refuses_fault_tolerance_with_advice(mpi_run):
    run = mpi_run("faults.py", "kill_random", "2", "ft")
    assert run.returncode != 0
    assert "python -m mpidispatch --ft -n 1" in run.stderr


def test_manager_killed_before_welcoming_its_workers(mpi_run):
    """Workers watch their manager from their first moment: one killed after the spawn
    but before its welcome (which used to start the watch) left them running forever."""
    if BACKEND == "mpich":
        run = mpi_run("early_death.py", n=1, module=True, ft=True)
    else:
        run = mpi_run("early_death.py")
    pids = [int(p) for p in run.value("WORKER_PIDS").split()]
    try:
        assert len(pids) == 2, run
        assert pids_gone(run, within=10.0), run
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
