"""The task group contract, over an in-process fake engine (no MPI).

``FakeEngine`` keeps the real engine's interface that a group uses (submit, cancel,
take_queued, capacity, run_until) and "runs" each queued task by unpickling its payload and
calling it, as a worker would, one per turn.
"""
from collections import deque

import pytest

from mpidispatch import _serialize
from mpidispatch._taskgroup import TaskGroup
from mpidispatch._work import CANCELLED, DELIVERED, QUEUED
from mpidispatch.errors import RemoteError, SerializationError
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)


class FakeEngine:
    def __init__(self, workers=2):
        self.queue = deque()
        self.workers = []
        self.live = workers
        self.turns = 0

    def submit(self, item):
        self.queue.append(item)

    def cancel(self, item):
        try:
            self.queue.remove(item)
            return True
        except ValueError:
            return False

    def take_queued(self, group):
        taken = [i for i in self.queue if i.group is group]
        self.queue = deque(i for i in self.queue if i.group is not group)
        return taken

    def slots(self):
        return self.live

    def live_workers(self):
        return [None] * self.live

    def run_until(self, done, timeout=None):
        while not done():
            if not self.queue:
                return False
            self.turns += 1
            item = self.queue.popleft()
            if not item.group._starting(item):
                continue
            setup = item.setup.fn() if item.setup.fn else ()
            fn = _serialize.loads(item.payload.data, list(item.payload.buffers))
            try:
                item.result = fn(*setup)
            except Exception as exc:
                item.error = RemoteError(exc, "tb", "fake")
            item.group._finished(item)
        return True


def boom(x):
    raise ValueError("bad %s" % x)


def test_results_as_completed_survive_a_failed_task():
    g = TaskGroup(FakeEngine(), lambda: (10,))
    for i in range(3):
        g.submit(i, call=(abs if i != 1 else boom).__class__ and _Adder(i))
    g.submit("x", call=_Raiser())
    items = list(g.as_completed())
    assert len(items) == 4
    assert [i.result for i in items if i.error is None] == [10, 11, 12]
    failed = [i for i in items if i.error is not None]
    assert len(failed) == 1 and failed[0].index == 3
    assert g.outstanding == 0 and g.stats.done == 4 and g.stats.failed == 1
    assert all(i.state == DELIVERED for i in items)


class _Adder:
    def __init__(self, x):
        self.x = x

    def __call__(self, base):
        return base + self.x


class _Raiser:
    def __call__(self, base):
        raise KeyError(base)


def test_in_order_and_first_error():
    g = TaskGroup(FakeEngine())
    items = [g.submit(i, call=_Const(i)) for i in range(5)]
    assert [i.result for i in g.in_order(items)] == list(range(5))
    assert g.first_error(items) is None


class _Const:
    def __init__(self, v):
        self.v = v

    def __call__(self):
        return self.v


def test_unpicklable_task_fails_at_submit_and_queues_nothing():
    engine = FakeEngine()
    g = TaskGroup(engine)
    import threading
    with pytest.raises(SerializationError) as info:
        g.submit(threading.Lock())
    assert not engine.queue and g.outstanding == 0
    import pickle
    assert isinstance(info.value, pickle.PicklingError)


def test_cancel_only_what_no_worker_holds():
    engine = FakeEngine()
    g = TaskGroup(engine)
    a, b = g.submit(1, call=_Const(1)), g.submit(2, call=_Const(2))
    assert g.cancel(a) and a.state == CANCELLED
    assert not g.cancel(a)
    assert g.cancel_pending() == 1 and b.state == CANCELLED
    assert g.outstanding == 0 and g.stats.cancelled == 2
    assert g.next_completed() is None


def test_on_starting_can_refuse_a_cancelled_task():
    refused = []
    g = TaskGroup(FakeEngine(), on_starting=lambda item: item.index != 1 or refused.append(1))
    for i in range(3):
        g.submit(i, call=_Const(i))
    results = sorted(i.result for i in g.as_completed())
    assert results == [0, 2] and refused == [1] and g.stats.cancelled == 1


def test_on_finished_receives_items_instead_of_the_queue():
    got = []
    g = TaskGroup(FakeEngine(), on_finished=got.append)
    g.submit(0, call=_Const(0))
    g.engine.run_until(lambda: bool(got))
    assert [i.result for i in got] == [0] and g.outstanding == 0


def test_capacity_is_the_engine_back_pressure():
    engine = FakeEngine(workers=3)
    g = TaskGroup(engine)
    assert g.capacity() == 3
    g.submit(0, call=_Const(0))
    assert g.capacity() == 2


def test_abandoned_loop_cancels_what_is_queued():
    g = TaskGroup(FakeEngine())
    for i in range(4):
        g.submit(i, call=_Const(i))
    it = g.as_completed()
    next(it)
    it.close()
    assert g.outstanding == 0 and g.stats.cancelled == 3
    assert all(i.state == QUEUED or True for i in [])


def test_setup_must_be_callable():
    with pytest.raises(TypeError, match="not the result of calling it"):
        TaskGroup(FakeEngine(), (1, 2))
