"""Manager/Context across the ranks of one world: setup caching, result order, errors."""
import itertools
import os
import threading
import time
from functools import partial

import pytest

from mpidispatch import Manager, RemoteError, SerializationError

pytestmark = pytest.mark.mpi(min_size=3)

_setups = itertools.count()  # on each worker rank: how many setups ran there


def setup():
    return (os.getpid(), next(_setups))


def who(pid, setup_number):
    time.sleep(0.01)  # long enough that both ranks take some
    return pid, setup_number, os.getpid()


def nap_then(seconds, value, *setup_args):
    time.sleep(seconds)
    return value


def fails(*setup_args):
    raise ValueError("task failed on purpose")


def give_lock(*setup_args):
    return threading.Lock()


def leave(*setup_args):
    raise SystemExit(3)


@pytest.fixture
def manager():
    with Manager(prefetch=1) as m:
        yield m


def test_world_ranks_are_the_workers(manager):
    c = manager.get_context()
    for _ in range(20):
        c.add_task(partial(who, 0, 0))
    ran_on = {pid for _, _, pid in c.get_results()}
    assert len(manager.workers) == 2
    assert ran_on == {w.pid for w in manager.workers}
    assert os.getpid() not in ran_on


def test_setup_runs_once_per_worker_and_context(manager):
    for _ in range(2):
        c = manager.get_context(setup)
        for _ in range(20):
            c.add_task(who)
        results = c.get_results()
        assert all(setup_pid == pid for setup_pid, _, pid in results)
        per_worker = {pid: {n for _, n, p in results if p == pid} for *_, pid in results}
        assert all(len(numbers) == 1 for numbers in per_worker.values())


def test_get_results_keeps_submission_order(manager):
    c = manager.get_context()
    for i, seconds in enumerate([0.3, 0.0, 0.2, 0.0]):
        c.add_task(partial(nap_then, seconds, i))
    assert c.get_results() == [0, 1, 2, 3]


def test_unordered_results_come_as_tasks_finish(manager):
    c = manager.get_context()
    c.add_task(partial(nap_then, 1.0, "slow"))
    c.add_task(partial(nap_then, 0.0, "fast"))
    assert list(c.get_results_unordered()) == ["fast", "slow"]


def test_remote_error_carries_the_worker_traceback(manager):
    c = manager.get_context()
    c.add_task(fails)
    with pytest.raises(RemoteError) as info:
        c.get_results()
    err = info.value
    assert isinstance(err.exc, ValueError)
    assert "task failed on purpose" in err.traceback and "in fails" in err.traceback
    assert "raised on worker" in err.traceback and err.worker is not None


def test_iteration_goes_on_after_failed_tasks(manager):
    c = manager.get_context()
    for task in (fails, give_lock, leave, partial(nap_then, 0.0, "ok")):
        c.add_task(task)
    outcomes, it = [], c.get_results_unordered()
    while True:
        try:
            outcomes.append(next(it))
        except StopIteration:
            break
        except (RemoteError, SerializationError) as err:
            outcomes.append(type(getattr(err, "exc", err)).__name__)
    assert sorted(outcomes) == ["SerializationError", "SystemExit", "ValueError", "ok"]
    c.add_task(partial(nap_then, 0.0, "still serving"))
    assert c.get_results() == ["still serving"]


def test_unpicklable_task_is_refused_and_nothing_queued(manager):
    c = manager.get_context()
    with pytest.raises(SerializationError, match="cannot be pickled"):
        c.add_task(partial(nap_then, 0.0, threading.Lock()))
    assert c.get_results() == []


def test_returned_exception_is_a_result(manager):
    c = manager.get_context()
    c.add_task(partial(IndexError, "returned"))
    (result,) = c.get_results()
    assert isinstance(result, IndexError) and result.args == ("returned",)
