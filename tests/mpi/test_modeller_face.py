"""MODELLER's job across the ranks of one world: tasks, startup commands, message passing."""
import math
import os
import time

import numpy as np
import pytest

from mpidispatch import RemoteError, job, task

pytestmark = pytest.mark.mpi(min_size=3)

ECHO_LOOP = """
while True:
    x = manager.get_data()
    if x is None:
        break
    manager.send_data(x)
"""


class Length(task):
    def run(self, code, extra=0):
        import builtins
        time.sleep(0.02)
        return len(code) + extra, os.getpid(), getattr(builtins, "startup_mark", None)


class Fails(task):
    def run(self):
        raise KeyError("missing-7")


@pytest.fixture
def j():
    with job() as j:
        yield j


def test_world_ranks_join_the_job_list(j):
    assert len(j) == 2
    j.start()
    assert os.getpid() not in {w.pid for w in j}


def test_tasks_in_order_and_unordered_after_startup_commands(j):
    j.worker_startup_commands.append("import builtins\nbuiltins.startup_mark = 'ran'")
    for code in ("a", "bb", "ccc", "dddd"):
        j.queue_task(Length(code, extra=100))
    results = j.run_all_tasks()
    assert [r[0] for r in results] == [101, 102, 103, 104]
    assert {r[2] for r in results} == {"ran"}
    for code in ("a", "bb", "ccc"):
        j.queue_task(Length(code))
    assert sorted(r[0] for r in j.yield_tasks_unordered()) == [1, 2, 3]


def test_task_error_is_raised_after_the_others_ran(j):
    j.queue_task(Fails())
    j.queue_task(Length("x"))
    with pytest.raises(RemoteError) as info:
        j.run_all_tasks()
    assert isinstance(info.value.exc, KeyError) and "missing-7" in info.value.traceback
    assert j.tasks == []


def test_send_and_get_data_through_run_cmd(j):
    a = np.arange(300_000, dtype=np.float64) * 0.5
    floats = [0.1 + 0.2, math.inf, -math.inf, 1e-310]
    for w in j:
        w.run_cmd(ECHO_LOOP)
        w.send_data(a)
        w.send_data(floats)
        w.send_data({"k": (1, "two", b"3")})
    for w in j:
        back = w.get_data(timeout=30)
        assert back.dtype == a.dtype and np.array_equal(back, a)
        assert w.get_data(timeout=30) == floats
        assert w.get_data(timeout=30) == {"k": (1, "two", b"3")}
        w.send_data(None)


def test_run_cmd_errors_and_timeouts_leave_the_worker_serving(j):
    w = j[0]
    w.run_cmd("raise ValueError('bad command 42')")
    with pytest.raises(RemoteError) as info:
        w.get_data(timeout=30)
    assert isinstance(info.value.exc, ValueError) and "bad command 42" in info.value.traceback
    with pytest.raises(TimeoutError, match="run_cmd"):
        w.get_data(timeout=0.3)
    w.run_cmd("manager.send_data(('alive', __import__('os').getpid()))")
    assert w.get_data(timeout=30) == ("alive", w.pid)
