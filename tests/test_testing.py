"""mpidispatch.testing: running() with spawned workers and in-process, the same API and the
same errors both ways, and nothing left behind when a test fails."""
import os
import subprocess
import sys
import threading
from functools import partial

import pytest

from mpidispatch import (BrokenMPIExecutor, JobDispatcher, Manager, MPIExecutor, RemoteError,
                         RemoteTraceback, SerializationError, job, task)
from mpidispatch.testing import running

BOTH = pytest.mark.parametrize("in_process", [True, False], ids=["in_process", "spawned"])


def setup():
    return (10, os.getpid())


def add(x, base, setup_pid):
    return base + x, setup_pid == os.getpid()


def fails(*args):
    raise ValueError("failed on purpose")


def square(x):
    return x * x


def broken_setup():
    raise OSError("no such resource")


class Twice(task):
    def run(self, x):
        return 2 * x


class Squares(JobDispatcher):
    def reset(self):
        self.todo, self.total = iter(range(10)), 0

    def job_generator(self):
        return next(self.todo, None)

    def job_processor(self, job):
        return job * job

    def job_collector(self, job, result):
        self.total += result


@BOTH
def test_manager(in_process):
    with running(Manager, workers=2, in_process=in_process) as m:
        assert len(m.workers) == 2
        c = m.get_context(setup)
        for i in range(6):
            c.add_task(partial(add, i))
        assert c.get_results() == [(10 + i, True) for i in range(6)]
        c.add_task(fails)
        with pytest.raises(RemoteError) as info:
            c.get_results()
        assert isinstance(info.value.exc, ValueError) and "in fails" in info.value.traceback
        with pytest.raises(SerializationError):
            c.add_task(partial(add, threading.Lock()))


@BOTH
def test_executor(in_process):
    with running(MPIExecutor, workers=2, in_process=in_process) as ex:
        assert ex.num_workers == 2
        assert list(ex.map(square, range(5))) == [0, 1, 4, 9, 16]
        error = ex.submit(fails).exception(timeout=30)
        assert isinstance(error, ValueError) and isinstance(error.__cause__, RemoteTraceback)
        assert "cannot pickle" in str(ex.submit(square, threading.Lock()).exception())
    with running(MPIExecutor, workers=1, setup=broken_setup, in_process=in_process) as ex:
        with pytest.raises(BrokenMPIExecutor, match="no such resource"):
            ex.submit(square, 2).result(timeout=30)


@BOTH
def test_job_tasks_and_message_passing(in_process):
    with running(job, workers=2, in_process=in_process) as j:
        assert len(j) == 2
        for i in range(4):
            j.queue_task(Twice(i))
        assert j.run_all_tasks() == [0, 2, 4, 6]
        w = j[0]
        w.run_cmd("x = manager.get_data()\nmanager.send_data(x * 2)")
        w.send_data(21)
        assert w.get_data(timeout=30) == 42
        w.run_cmd("raise KeyError('k')")
        with pytest.raises(RemoteError) as info:
            w.get_data(timeout=30)
        assert isinstance(info.value.exc, KeyError)
        with pytest.raises(TimeoutError, match="run_cmd"):
            w.get_data(timeout=0.2)


@BOTH
def test_dispatcher(in_process):
    with running(Squares, workers=2, in_process=in_process) as d:
        d.run()
        assert d.total == sum(i * i for i in range(10))
        assert d.local_mode == in_process


def test_workers_are_gone_after_a_failing_block():
    with pytest.raises(ZeroDivisionError):
        with running(Manager, workers=2) as m:
            c = m.get_context()
            for _ in range(10):
                c.add_task(os.getpid)
            pids = set(c.get_results())
            1 / 0
    assert pids and not any(os.path.exists("/proc/%d" % p) and _alive(p) for p in pids)


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_in_process_mode_does_not_start_mpi():
    code = ("import sys\nfrom mpidispatch import Manager, MPIExecutor, job\n"
            "from mpidispatch.testing import running\n"
            "for face in (Manager, MPIExecutor, job):\n"
            "    with running(face, workers=2, in_process=True):\n"
            "        pass\n"
            "print('mpi4py.MPI' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_not_a_face():
    with pytest.raises(TypeError, match="JobDispatcher subclass"):
        with running(dict):
            pass


@pytest.mark.parametrize("mode", [["--mpidispatch-in-process"], []],
                         ids=["in_process", "spawned"])
def test_the_example_user_test_file_passes(mode, tmp_path):
    """examples/test_example_user.py, the file docs/testing.md shows, runs both ways."""
    from conftest import ROOT, run_program
    run = run_program([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       str(ROOT / "examples" / "test_example_user.py")] + mode,
                      cwd=tmp_path, timeout=120)
    assert run.returncode == 0, run
    assert "4 passed" in run.stdout


FAILING_TEST_FILE = '''
import os
from mpidispatch import Manager

def test_fails_with_workers_running(mpidispatch_face):
    m = mpidispatch_face(Manager, workers=2)
    c = m.get_context()
    for _ in range(10):
        c.add_task(os.getpid)
    with open("pids", "w") as f:
        f.write(" ".join(str(pid) for pid in set(c.get_results())))
    assert False, "failed on purpose"

def test_its_workers_are_gone_afterwards():
    with open("pids") as f:
        pids = [int(p) for p in f.read().split()]
    assert pids and not any(os.path.exists("/proc/%d" % pid) for pid in pids)
'''


def test_fixture_tears_down_after_a_failing_test(tmp_path):
    from conftest import run_program
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["mpidispatch.testing"]\n')
    (tmp_path / "test_user.py").write_text(FAILING_TEST_FILE)
    run = run_program([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                       "test_user.py"], cwd=tmp_path, timeout=120)
    assert "1 failed, 1 passed" in run.stdout, run
    assert "failed on purpose" in run.stdout
