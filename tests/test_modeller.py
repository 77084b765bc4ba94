"""The MODELLER-style face (job, task, message passing) under real MPI with spawned workers
(the static world is tested from inside it: tests/mpi/test_modeller_face.py)."""
import ast


from conftest import survivors

ORDERED = [100 + i for i in range(1, 13)]


def check_modeller(run, workers):
    assert run.returncode == 0, run
    assert run.value("WORKERS") == str(workers)
    assert ast.literal_eval(run.value("ORDERED")) == ORDERED
    assert run.value("STARTUP") == "True"            # startup commands ran before tasks
    assert ast.literal_eval(run.value("UNORDERED")) == list(range(1, 13))
    assert run.value("TASK_ERROR") == "KeyError True True"
    assert run.value("FILES") == "[11] HELLO FILES"   # input file in, output file back
    assert run.value("STARTED") == "True"
    assert run.value("ARRAY") == "True float64"
    assert run.value("FLOATS") == "True True True True True"
    assert run.value("DICT") == "{'k': (1, 'two', b'3')}"
    assert run.value("MP_STARTUP") == "1"
    assert run.value("CMD_ERROR") == "ValueError True"
    assert run.value("TIMEOUT") == "True"
    assert run.value("AFTER") == "still alive"      # the worker survived its failed command
    # each worker logs to ${JOB}.workerN in the working directory
    logs = sorted(p.name for p in run.cwd.glob("modeller_basic.worker*"))
    assert logs == ["modeller_basic.worker%d" % i for i in range(workers)]
    assert any("task aaa on pid" in (run.cwd / name).read_text() for name in logs)
    assert survivors("scenarios/modeller_basic.py") == []


def test_spawned(mpi_run):
    run = mpi_run("modeller_basic.py", "2", timeout=60)
    check_modeller(run, 2)
    assert run.value("PIDS") == "2"
    assert run.value("NOMORE") == "True"             # every worker deleted from the list


def test_list_operations_and_progress(mpi_run):
    run = mpi_run("modeller_listops.py", timeout=60)
    assert run.returncode == 0, run
    assert run.value("EMPTY") == "NoMoreWorkersError"
    assert run.value("AFTER_APPEND") == "[0, 1, 4, 9, 16, 25]"
    assert run.value("PIDS_AFTER_DEL") == "1"
    assert run.value("STOPPED") == "stopped"
    assert run.value("BAD_TASK") == "TypeError"
    assert run.value("UNPICKLABLE") == "SerializationError"
    # progress bar and summary on stderr
    assert "job: 6 tasks on" in run.stderr
    assert "6/6" in run.stderr
