"""MPIExecutor under real MPI against concurrent.futures behaviours, with spawned workers
(the static world is tested from inside it: tests/mpi/test_executor_face.py)."""
import ast

import pytest

from conftest import survivors

EXPECTED = {
    "SETUP": "ready",
    "SUBMIT": "49",
    "NUMPY": "True",
    "FLOATS": "True True True",
    "EXCEPTION": "LookupError True True True",
    "EXCEPTION_METHOD": "LookupError",
    "UNPICKLABLE": "TypeError 9",
    "RESULT_PICKLE_ERROR": "ZeroDivisionError True",
    "RESULT_PICKLE_EXIT": "SystemExit",
    "MAP": str([i * i for i in range(10)]),
    "MAP_CHUNKS": str([i * i for i in range(10)]),
    "MAP_UNORDERED": str([i * i for i in range(10)]),
    "MAP_UNORDERED_FIRST": "fast",
    "MAP_EXCEPTION": "True",
    "LAZY": "True True",
    "HUGE": "[0, 1, 4, 9, 16]",
    "BUFFERSIZE_UNORDERED": "rejected",
    "AS_COMPLETED": "['fast', 'slow']",
    "WAIT_FIRST": "[1] 1",
    "WAIT_ALL": "2 0",
    "PROGRESS": str(sum(i * i for i in range(20))),
    "AFTER_SHUTDOWN": "RuntimeError True",
    "CANCEL_RUNNING": "False",
    "CANCEL_PENDING": "[True, True, True]",
    "CANCELLED": "[False, False, True, True, True]",
    "CANCEL_WAIT": "5 0",
    "CANCEL_RESULTS": "first [0, 1]",
    "CANCELLED_ERROR": "True",
    "SHUTDOWN_CANCEL": "ran [True, True, True, True]",
    "BROKEN": "True True",
    "BROKEN_SUBMIT": "True",
    "DONE": "",
}


def check_executor(run):
    assert run.returncode == 0, run
    for key, value in EXPECTED.items():
        assert run.value(key) == value, key
    assert run.value("NUM_WORKERS") == "2"
    assert run.value("PIDS") == "2"
    assert 0.4 <= float(run.value("MAP_TIMEOUT")) < 1.0
    nowait = run.value("NOWAIT").split(" ", 1)
    assert float(nowait[0]) < 0.2 and ast.literal_eval(nowait[1]) == [0, 1, 2]
    # progress bar (tqdm) and end-of-run summary on stderr
    assert "20/20" in run.stderr
    assert "map: 20 tasks on 2 workers" in run.stderr
    # issue 11.5: a failing initializer is logged on the concurrent.futures logger
    assert "Exception in initializer" in run.stderr and "no such resource" in run.stderr
    assert survivors("scenarios/executor_basic.py") == []


def test_spawned(mpi_run):
    check_executor(mpi_run("executor_basic.py", "2", timeout=90))


@pytest.mark.parametrize("after", ["60", "0"])
def test_progress_and_summary(mpi_run, after):
    """The shared progress bar (tqdm) and summary line, on the IMP face's result calls."""
    run = mpi_run("executor_progress.py", timeout=60, env={"MPIDISPATCH_SUMMARY_AFTER": after})
    assert run.returncode == 0, run
    assert run.value("ORDERED") == str([2 * i for i in range(7)])
    assert run.value("UNORDERED") == str(sorted([2 * i for i in range(5)] + [0, 2, 4]))
    ordered, unordered, quiet = run.stderr.split("--- ")
    assert "7/7" in ordered and "mpidispatch: 7 tasks on 1 workers" in ordered
    assert "8/8" in unordered and "mpidispatch: 8 tasks on 1 workers" in unordered
    # without progress=True, a summary only for a run longer than MPIDISPATCH_SUMMARY_AFTER
    assert ("mpidispatch: 1 tasks on 1 workers" in quiet) == (after == "0")
    assert "1/1" not in quiet
