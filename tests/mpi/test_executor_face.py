"""MPIExecutor over the ranks of one world: futures, map, errors, setup, cancel."""
import concurrent.futures as cf
import os
import threading
import time

import numpy as np
import pytest

from mpidispatch import BrokenMPIExecutor, MPIExecutor, RemoteTraceback

pytestmark = pytest.mark.mpi(min_size=3)


def square(x):
    return x * x


def pid(_=None):
    time.sleep(0.01)
    return os.getpid()


def nap(seconds, value=None):
    time.sleep(seconds)
    return value


def fails(x):
    raise LookupError("bad key %d" % x)


def remember(value):
    import builtins
    builtins.executor_setup_value = value


def recall():
    import builtins
    return builtins.executor_setup_value


def broken_setup():
    raise OSError("no such resource")


@pytest.fixture
def ex():
    with MPIExecutor(setup=remember, setup_args=("ready",)) as ex:
        yield ex


def test_submit_map_and_setup(ex):
    assert ex.num_workers == 2
    assert ex.submit(square, 7).result(timeout=30) == 49
    assert ex.submit(recall).result(timeout=30) == "ready"
    assert list(ex.map(square, range(10))) == [i * i for i in range(10)]
    assert list(ex.map(pow, range(10), [2] * 10, chunksize=3)) == [i * i for i in range(10)]
    assert len(set(ex.map(pid, range(40)))) == 2


def test_numpy_round_trip(ex):
    a = np.linspace(0, 1, 200_000)
    assert np.array_equal(ex.submit(np.multiply, a, 2.0).result(timeout=30), a * 2.0)


def test_exception_keeps_its_type_with_the_remote_traceback(ex):
    with pytest.raises(LookupError) as info:
        ex.submit(fails, 3).result(timeout=30)
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "bad key 3" in str(info.value.__cause__) and "in fails" in str(info.value.__cause__)
    with pytest.raises(LookupError):
        list(ex.map(fails, [5]))


def test_unpicklable_call_fails_its_own_future(ex):
    f = ex.submit(square, threading.Lock())
    assert "cannot pickle" in str(f.exception(timeout=5))
    assert ex.submit(square, 3).result(timeout=30) == 9


def test_as_completed(ex):
    fs = [ex.submit(nap, 1.0, "slow"), ex.submit(nap, 0.0, "fast")]
    assert [f.result() for f in cf.as_completed(fs, timeout=30)] == ["fast", "slow"]


def test_unordered_map_yields_the_first_finished(ex):
    assert next(ex.map(nap, [1.0, 0.0], ["slow", "fast"], unordered=True)) == "fast"


def test_max_workers_uses_that_many_ranks_and_cancels_pending():
    with MPIExecutor(max_workers=1, prefetch=1) as ex:
        assert ex.num_workers == 1
        first = ex.submit(nap, 1.0, "first")
        rest = [ex.submit(nap, 0.0, i) for i in range(4)]
        assert [f.cancel() for f in rest[2:]] == [True, True]
        assert first.result(timeout=30) == "first"
        assert [f.result(timeout=30) for f in rest[:2]] == [0, 1]
        assert all(f.cancelled() for f in rest[2:])


def test_failing_setup_breaks_the_executor():
    with MPIExecutor(setup=broken_setup) as ex:
        with pytest.raises(BrokenMPIExecutor, match="no such resource"):
            ex.submit(square, 2).result(timeout=30)
        with pytest.raises(BrokenMPIExecutor):
            ex.submit(square, 2)
