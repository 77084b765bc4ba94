"""The PyOPUS-style JobDispatcher under real MPI: local mode and spawned workers (the static
world is tested from inside it: tests/mpi/test_dispatcher_face.py)."""

from conftest import survivors


def check_common(run):
    assert run.returncode == 0, run
    assert run.value("COLLECTED") == "True True"      # the collector got every result
    assert run.value("POSTPROCESSED") == "True"
    assert run.value("SECOND_RUN") == "True 30"        # workers got the updated dispatcher
    assert run.value("AFTER_ERROR") == "30"
    assert run.value("MIN_WORKERS_LOCAL") == "True [0, 1, 2, 3, 4]"
    assert survivors("scenarios/dispatcher_basic.py") == []


def test_local_mode(mpi_run):
    run = mpi_run("dispatcher_basic.py", timeout=60)
    check_common(run)
    assert run.value("LOCAL") == "True"
    assert run.value("PIDS") == "1"
    assert run.value("MANAGER_PID_USED") == "True"
    assert run.value("MAX_UNCOLLECTED") == "1"
    assert run.value("FAILED_JOB") == "local ArithmeticError"
    assert len(run.lines("Squares: job")) >= 30
    assert "evaluated locally" in run.stdout


def test_with_workers(mpi_run):  # the static world: tests/mpi/test_dispatcher_face.py
    run = mpi_run("dispatcher_basic.py", "2", timeout=60)
    check_common(run)
    assert run.value("LOCAL") == "False"
    assert run.value("WORKERS") == "2"
    assert run.value("MANAGER_PID_USED") == "False"
    assert run.value("PIDS") == "2"
    # lazy generation: never more jobs out than 2 workers x prefetch 1
    assert 1 <= int(run.value("MAX_UNCOLLECTED")) <= 2
    assert run.value("FAILED_JOB") == "ArithmeticError True"
    # debug=1: each job's dispatch and result, with worker and timings
    sent = [line for line in run.lines("Squares: job") if "->" in line]
    back = [line for line in run.lines("Squares: job") if "<-" in line]
    assert len(sent) >= 30 * 3 and len(back) >= 30 * 3
    assert all("Worker" in line and " s " in line for line in sent + back)
