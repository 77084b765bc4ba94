"""What crosses the wire between ranks: task, setup, result and error records, and large
buffers, which travel out of band without copies into the pickle stream."""
import math
import os
from functools import partial

import numpy as np
import pytest

from mpidispatch import Manager, RemoteError

pytestmark = pytest.mark.mpi(min_size=3)


def echo(obj):
    return obj


def double(a):
    return a * 2


def describe(a):
    """On the worker: what arrived (checked there, so the trip out is tested alone)."""
    return a.dtype.str, a.shape, a.flags["C_CONTIGUOUS"], float(a.sum()), os.getpid()


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not this one")


def raise_unpicklable():
    raise Unpicklable("kept as text")


def raise_with_payload(n):
    raise KeyError(np.zeros(n))


@pytest.fixture
def run():
    """``run(fn, *args)``: the result of ``fn(*args)`` computed on a world rank."""
    with Manager() as m:
        def remote(fn, *args):
            c = m.get_context()
            c.add_task(partial(fn, *args))
            return c.get_results()[0]
        yield remote


def test_values_arrive_exactly(run):
    value = {"floats": [0.1 + 0.2, math.inf, -math.inf, 1e-310, -0.0],
             "nested": (1, "two", b"3", [None, True]), 2 ** 70: {1.5, frozenset("ab")}}
    back = run(echo, value)
    assert back == value and type(back["nested"]) is tuple
    assert math.copysign(1, back["floats"][4]) == -1
    assert math.isnan(run(echo, math.nan))


def test_long_pickle_stream_travels_as_a_buffer(run):
    value = list(range(200_000))  # about 1 MB of pickle: beyond the inline limit of a header
    assert run(echo, value) == value


@pytest.mark.parametrize("shape,dtype,order", [((100 * 1024 * 1024 // 8,), "f8", "C"),
                                               ((700, 300), "i4", "F"),
                                               ((3, 0), "f4", "C")])
def test_large_arrays_to_a_worker_and_back(run, shape, dtype, order):
    a = np.arange(math.prod(shape), dtype=dtype).reshape(shape, order=order)
    dtype_str, got_shape, _, total, pid = run(describe, a)
    assert (dtype_str, got_shape, total, pid != os.getpid()) == (a.dtype.str, shape,
                                                                 float(a.sum()), True)
    back = run(double, a)
    assert back.dtype == a.dtype and back.shape == a.shape
    assert np.array_equal(back, a * 2)


def test_non_contiguous_view_arrives_as_its_values(run):
    a = np.arange(1_000_000, dtype=np.float64)[::3]
    assert np.array_equal(run(echo, a), a)


def test_error_record_with_an_exception_that_cannot_travel(run):
    with pytest.raises(RemoteError) as info:
        run(raise_unpicklable)
    assert isinstance(info.value.exc, RuntimeError)
    assert "Unpicklable: kept as text" in str(info.value.exc)
    assert "raise_unpicklable" in info.value.traceback


def test_error_record_with_a_large_exception_payload(run):
    with pytest.raises(RemoteError) as info:
        run(raise_with_payload, 100_000)  # 800 kB: sent back as text, not as a pickle
    assert "KeyError" in str(info.value.exc) and "raise_with_payload" in info.value.traceback
