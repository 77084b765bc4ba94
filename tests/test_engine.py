"""The engine and the IMP-style face under real MPI: static world and spawned workers."""
import ast

import pytest

from conftest import survivors

EXPECTED = [100 + i for i in range(40)]


def check_basic(run, workers):
    assert run.returncode == 0, run
    assert ast.literal_eval(run.value("RESULTS")) == EXPECTED
    assert run.value("WORKERS") == str(workers)
    assert run.value("SETUP_SAME_PROCESS") == "True"
    assert run.value("FLOATS") == "True True True"
    assert survivors("scenarios/imp_basic.py") == []


# A world of 3 ranks is tested from inside (tests/mpi); here: other sizes, and the log files.
@pytest.mark.parametrize("n", [2, 5])
def test_static_world(mpi_run, n):
    run = mpi_run("imp_basic.py", n=n)
    check_basic(run, n - 1)
    # every worker's stdout went to its own log file
    logs = sorted(run.cwd.glob("worker*.output"))
    assert len(logs) == n - 1
    assert any("task" in p.read_text() for p in logs)


def test_spawned_workers(mpi_run):
    run = mpi_run("imp_basic.py", "2")
    check_basic(run, 2)
    assert int(run.value("PIDS")) == 2
    assert sorted(p.name for p in run.cwd.glob("worker*.output")) == [
        "worker0.output", "worker1.output"]


def test_python_m_mpidispatch(mpi_run):
    run = mpi_run("imp_basic.py", n=3, module=True)
    check_basic(run, 2)


def test_errors_spawned(mpi_run):
    run = mpi_run("errors.py", "1")
    check_errors(run)


def check_errors(run):
    assert run.returncode == 0, run
    assert run.value("RETURNED") == "IndexError test"
    assert run.value("REMOTE") == "ValueError True True True"
    assert run.value("UNPICKLABLE_TASK") == "True"
    assert ast.literal_eval(run.value("OUTCOMES")) == sorted(
        ["1", "1", "SerializationError", "RemoteSystemExit"])
    assert run.value("STILL_WORKS") == "[1]"


def test_big_array_spawned(mpi_run):
    run = mpi_run("bigarray.py", "1", timeout=120)
    assert run.returncode == 0, run
    assert run.value("INTACT") == "True float64 True"


def test_no_workers_and_bad_python(mpi_run):
    run = mpi_run("no_workers.py")
    assert run.returncode == 0, run
    assert float(run.value("NOMORE")) < 2.0
    assert float(run.value("STARTERROR")) < 10.0
    assert run.value("NAMES_COMMAND") == "True"


def test_workers_join_and_leave_and_idle_does_not_spin(mpi_run):
    run = mpi_run("dynamic.py")
    assert run.returncode == 0, run
    assert run.value("RESULTS_OK") == "True"
    assert run.value("PIDS_USED") == "2"            # the late worker took tasks too
    assert run.value("AFTER_REMOVE_PIDS") == "1 stopped"
    assert float(run.value("IDLE_WORKER_CPU")) < 0.3   # of 2 s idle
    assert float(run.value("IDLE_MANAGER_CPU")) < 0.5


def test_buffers_larger_than_one_message_are_chunked(mpi_run):
    # 1 MB chunks: the 100 MB array travels as ~100 MPI messages each way
    run = mpi_run("bigarray.py", "1", env={"MPIDISPATCH_CHUNK_BYTES": str(1 << 20)},
                  timeout=120)
    assert run.returncode == 0, run
    assert run.value("INTACT") == "True float64 True"
