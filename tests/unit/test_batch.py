"""Batches of small tasks (TASKS / RESULTS records), without MPI.

The engine's batching and result handling and the worker's batch loop are driven through
their real methods on objects made without ``__init__`` (which would initialize MPI), with a
recording ``_send``/``send`` in place of the communicator.
"""
import functools
import pickle
from collections import OrderedDict, deque
from types import SimpleNamespace

import pytest

from mpidispatch import _protocol, _serialize
from mpidispatch._engine import Engine, _batchable
from mpidispatch._options import Options, resolve
from mpidispatch._protocol import (BATCH_BYTES, BATCH_ENTRY_MAX, BATCH_MAX, RECORDS, Tag,
                                   ResultsMsg, TasksMsg, batch_fits)
from mpidispatch._taskgroup import TaskGroup
from mpidispatch._work import Payload, Setup, WorkItem
from mpidispatch._worker import WorkerLoop, _SetupFailed
from mpidispatch.errors import RemoteError, SerializationError
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)

MPI4PY_IRECV_BUFFER = 32 * 1024  # mpi4py.rc.irecv_bufsz: a longer header crashed receivers


# -- the records ---------------------------------------------------------------------------
def test_batch_records_have_tags_and_travel_as_plain_tuples():
    assert RECORDS[Tag.TASKS] is TasksMsg and RECORDS[Tag.RESULTS] is ResultsMsg
    msg = TasksMsg(3, ((1, b"a"), (2, b"b")))
    assert TasksMsg(*pickle.loads(pickle.dumps(tuple(msg)))) == msg


def test_batch_fits_edges():
    assert batch_fits(0, 0, b"x")
    assert not batch_fits(0, 0, None)                            # cannot be batched at all
    assert batch_fits(0, 0, b"x" * BATCH_ENTRY_MAX)
    assert not batch_fits(0, 0, b"x" * (BATCH_ENTRY_MAX + 1))    # too big: travels alone
    assert batch_fits(BATCH_MAX - 1, 0, b"x")
    assert not batch_fits(BATCH_MAX, 0, b"x")                    # full by count
    assert batch_fits(1, BATCH_BYTES - 10, b"x" * 10)
    assert not batch_fits(1, BATCH_BYTES - 10, b"x" * 11)        # full by bytes


@pytest.mark.parametrize("entry", [1, 63, BATCH_ENTRY_MAX])
def test_the_fullest_batch_header_stays_under_the_posted_receive_buffer(entry):
    """Whatever the entry size, a batch that batch_fits allows pickles under 32 KiB, with the
    largest ids and floats that a run can have."""
    for make in (lambda i, d: (2 ** 62 + i, d), lambda i, d: (2 ** 62 + i, d, 1e300 / 3)):
        entries, nbytes = [], 0
        while batch_fits(len(entries), nbytes, b"z" * entry):
            entries.append(make(len(entries), bytes(range(256)) * (entry // 256)
                                + b"z" * (entry % 256)))
            nbytes += entry
        header = (2 ** 62, entries) if len(entries[0]) == 2 else (entries,)
        assert len(pickle.dumps(header, pickle.HIGHEST_PROTOCOL)) < MPI4PY_IRECV_BUFFER


def test_batch_option_from_keyword_and_environment(monkeypatch):
    assert resolve().batch is None
    assert resolve(batch=1).batch == 1
    monkeypatch.setenv("MPIDISPATCH_BATCH", "auto")
    assert resolve().batch is None
    monkeypatch.setenv("MPIDISPATCH_BATCH", "8")
    assert resolve().batch == 8
    with pytest.raises(ValueError):
        resolve(batch=0)


# -- the manager side ------------------------------------------------------------------------
class Group:
    """The two hooks the engine calls on a task group."""

    def __init__(self, refuse=()):
        self.refuse = set(refuse)
        self.finished = []

    def _starting(self, item):
        return item.index not in self.refuse

    def _finished(self, item):
        self.finished.append(item)


def engine(batch=None, mean=1e-6, timeout=None):
    e = Engine.__new__(Engine)
    e.options = Options(batch=batch, task_timeout=timeout)
    e.queue = deque()
    e.batches_sent = e.tasks_done = 0
    e.journal = None
    e._mean_task = mean
    e.prefetch = 2
    e.workers = []
    e.sent = []
    e._send = lambda w, tag, message, buffers=(): e.sent.append((tag, message)) or True
    return e


def worker():
    return SimpleNamespace(inflight=OrderedDict(), load=0, contexts=set(), state="ready",
                           retiring=False, busy_since=0.0, tasks_done=0, setup_running=None,
                           comm=None, rank=1)


def items(group, n, setup=None, **kw):
    return [WorkItem(functools.partial(abs, i), Payload(functools.partial(abs, i)), group, i,
                     setup, **kw) for i in range(n)]


def test_batch_size_follows_the_measured_task_time():
    assert engine(mean=0.0)._batch_limit() == 1                  # nothing measured yet
    assert engine(mean=1e-6)._batch_limit() == BATCH_MAX
    assert engine(mean=1e-4)._batch_limit() == 10
    assert engine(mean=1e-3)._batch_limit() == 1                 # not much shorter: alone
    assert engine(mean=1e-6, timeout=5.0)._batch_limit() == 1    # time limits: alone
    assert engine(batch=1)._batch_limit() == 1
    assert engine(batch=10 ** 6, mean=0.0)._batch_limit() == BATCH_MAX


def test_a_batch_takes_consecutive_tasks_of_one_setup_and_stops_at_the_first_misfit():
    e, w, g = engine(), worker(), Group()
    s1, s2 = Setup(None), Setup(None)
    first = items(g, 5, s1)
    other = items(g, 2, s2)
    e.queue.extend(first + other)
    e._send_batch(w, 100)
    assert [tag for tag, _ in e.sent] == [Tag.SETUP, Tag.TASKS]
    context_id, entries = e.sent[1][1]
    assert context_id == s1.id and [wid for wid, _ in entries] == [i.work_id for i in first]
    assert all(pickle.loads(data)() == i.index for (_, data), i in zip(entries, first))
    assert list(e.queue) == other and w.load == 5 and list(w.inflight) == [
        i.work_id for i in first] and e.batches_sent == 1


@pytest.mark.parametrize("misfit", ["solo", "timeout", "buffers", "inline but big"])
def test_tasks_that_must_travel_alone_end_a_batch_and_go_alone(misfit):
    import numpy
    e, w, g = engine(), worker(), Group()
    batch = items(g, 3)
    odd = items(g, 1, timeout=1.0 if misfit == "timeout" else None)[0]
    if misfit == "solo":
        odd.solo = True
    if misfit == "buffers":
        odd.payload = Payload(functools.partial(len, numpy.zeros(100000)))
    if misfit == "inline but big":  # over an entry's limit, under a header's: alone, inline
        odd.payload = Payload(functools.partial(len, b"x" * BATCH_ENTRY_MAX))
        assert odd.payload.data is not None and not odd.payload.sizes
    assert not _batchable(odd) and all(_batchable(i) for i in batch)
    e.queue.extend(batch + [odd])
    e._send_batch(w, 100)
    assert e.sent[-1][0] == Tag.TASKS and len(e.sent[-1][1][1]) == 3
    e._send_batch(w, 100)      # the misfit at the head: a TASK of its own, taking 100 slots
    tag, message = e.sent[-1]
    assert tag == Tag.TASK and message[0] == odd.work_id
    assert odd.weight == 100 and w.load == 103


def test_a_batch_of_one_is_a_plain_task_and_refused_tasks_are_never_sent():
    e, w, g = engine(), worker(), Group(refuse={1, 2})
    e.queue.extend(items(g, 3))
    e._send_batch(w, 100)
    assert [tag for tag, _ in e.sent] == [Tag.TASK] and list(w.inflight) != []
    assert len(w.inflight) == 1 and w.load == 1 and not e.queue and e.batches_sent == 0


def test_dispatch_spreads_the_queue_over_the_workers():
    e, g = engine(), Group()
    ws = [worker(), worker()]
    e.ready = ws
    e.queue.extend(items(g, 40))
    e._dispatch()   # 40 tasks, 2 workers x prefetch 2: batches of 10
    assert [len(m[1]) for _, m in e.sent] == [10, 10, 10, 10]
    assert [w.load for w in ws] == [20, 20] and not e.queue


def test_results_of_a_batch_each_finish_their_task_and_a_bad_one_fails_alone():
    e, w, g = engine(), worker(), Group()
    batch = items(g, 3)
    e.queue.extend(batch)
    e._send_batch(w, 100)
    e._stop_workers = lambda ws: None
    results = ((batch[0].work_id, pickle.dumps(10), 1e-6),
               (batch[1].work_id, b"not a pickle", 1e-6),
               (10 ** 9, pickle.dumps(0), 1e-6),               # a task given up on: ignored
               (batch[2].work_id, pickle.dumps(12), 1e-6))
    e._on_results(w, results)
    assert [i.index for i in g.finished] == [0, 1, 2] and not w.inflight and w.load == 0
    assert batch[0].result == 10 and batch[2].result == 12 and batch[0].error is None
    assert isinstance(batch[1].error, SerializationError) and batch[1].error.index == 1
    assert w.tasks_done == 3 and e.tasks_done == 3


# -- the worker side -------------------------------------------------------------------------
class Loop(WorkerLoop):
    def __init__(self):  # no MPI: what on_tasks uses
        self.contexts = {}
        self.where = "worker test"
        self.sent = []
        self.comm, self.manager = None, 0

    def send(self, tag, message, buffers=()):
        self.sent.append((tag, message, list(buffers)))


def raise_value_error(i):
    raise ValueError("task %d" % i)


def unpicklable_result():
    import threading
    return threading.Lock()


def big_result():
    return b"r" * (BATCH_ENTRY_MAX + 1)


def batch_of(*calls):
    return [(100 + n, _serialize.dumps(c)[0]) for n, c in enumerate(calls)]


def test_worker_runs_a_batch_and_each_failure_travels_alone_at_once():
    loop = Loop()
    tasks = batch_of(functools.partial(abs, -1), functools.partial(raise_value_error, 2),
                     unpicklable_result, big_result, functools.partial(abs, -5))
    tasks.insert(2, (200, b"not a pickle"))
    loop.on_tasks((0, tasks))
    kinds = [(tag, message[0]) for tag, message, _ in loop.sent[:-1]]
    assert kinds == [(Tag.ERROR, 101), (Tag.ERROR, 200), (Tag.ERROR, 102), (Tag.RESULT, 103)]
    assert loop.sent[-1][0] == Tag.RESULTS
    (results,) = loop.sent[-1][1]
    assert [(wid, pickle.loads(data)) for wid, data, _ in results] == [(100, 1), (104, 5)]
    assert all(took >= 0 for _, _, took in results)
    errors = {message[0]: message[1] for tag, message, _ in loop.sent if tag == Tag.ERROR}
    assert errors == {101: 1, 200: 3, 102: 2}   # raised, unpickle, pickle (ErrorKind)


def test_worker_splits_results_that_overflow_one_batch():
    loop = Loop()
    n = BATCH_MAX + 5
    loop.on_tasks((0, batch_of(*[functools.partial(abs, -i) for i in range(n)])))
    assert [tag for tag, _, _ in loop.sent] == [Tag.RESULTS, Tag.RESULTS]
    got = [wid for _, (results,), _ in loop.sent for wid, _, _ in results]
    assert got == list(range(100, 100 + n))
    for _, message, _ in loop.sent:
        assert len(pickle.dumps(message, pickle.HIGHEST_PROTOCOL)) < MPI4PY_IRECV_BUFFER


def test_a_failed_setup_fails_every_task_of_the_batch():
    loop = Loop()
    try:
        raise RuntimeError("setup broke")
    except RuntimeError as exc:
        loop.contexts[7] = _SetupFailed(_protocol.pack_error(exc, "w"))
    loop.on_tasks((7, batch_of(functools.partial(abs, 1), functools.partial(abs, 2))))
    assert [(tag, m[0], m[1]) for tag, m, _ in loop.sent] == [
        (Tag.ERROR, 100, 4), (Tag.ERROR, 101, 4)]


def test_group_and_engine_run_a_batch_end_to_end_over_the_fake_wire():
    """TaskGroup -> engine batch -> worker loop -> engine results -> group, no MPI."""
    e, w, loop = engine(), worker(), Loop()
    e.ready = [w]
    e.closed = False
    e._stop_workers = lambda ws: None
    g = TaskGroup(e)
    for i in range(20):
        g.submit(functools.partial(raise_value_error, i) if i == 7 else
                 functools.partial(abs, -i))
    e._dispatch()
    for tag, message in e.sent:
        if tag == Tag.SETUP:
            loop.on_setup(message)
        elif tag == Tag.TASKS:
            loop.on_tasks(message)
        elif tag == Tag.TASK:
            loop.on_task(message)
    for tag, message, _ in loop.sent:
        if tag == Tag.RESULTS:
            e._on_results(w, message[0])
        elif tag != Tag.CONTROL:  # SETUP_DONE
            assert tag == Tag.ERROR
            e._on_error(w, _protocol.ErrorMsg(*message))
    done = [g.next_completed() for _ in range(20)]
    assert g.next_completed() is None
    assert sorted(i.index for i in done) == list(range(20))
    failed = [i for i in done if i.error is not None]
    assert [i.index for i in failed] == [7] and isinstance(failed[0].error, RemoteError)
    assert all(i.result == i.index for i in done if i.error is None)


def test_batches_of_mixed_sizes_keep_every_bound_and_send_each_task_once():
    import random
    rng = random.Random(13)
    e, w, g = engine(), worker(), Group()
    queued = [WorkItem(None, Payload(functools.partial(len, b"x" * rng.choice(
        [0, 10, 100, 1000, 3000, BATCH_ENTRY_MAX, 20000]))), g, i) for i in range(2000)]
    e.queue.extend(queued)
    while e.queue:
        e._send_batch(w, 10 ** 6)
    sent = []
    for tag, message in e.sent:
        if tag == Tag.TASKS:
            entries = message[1]
            assert 1 < len(entries) <= BATCH_MAX
            assert sum(len(d) for _, d in entries) <= BATCH_BYTES
            assert all(len(d) <= BATCH_ENTRY_MAX for _, d in entries)
            assert len(pickle.dumps(message, pickle.HIGHEST_PROTOCOL)) < MPI4PY_IRECV_BUFFER
            sent += [wid for wid, _ in entries]
        else:
            assert tag == Tag.TASK
            sent.append(message[0])
    assert sent == [i.work_id for i in queued] and len(w.inflight) == 2000


# -- how many tasks a worker holds ---------------------------------------------------------
@pytest.mark.parametrize("mean_task,mean_wait,queued,expect", [
    (1e-4, 0.0, 100, 2),      # short tasks: prefetch
    (0.05, 1e-4, 100, 1),     # long tasks, a quick round trip: one at a time (placement)
    (0.05, 0.04, 100, 2),     # long tasks, workers wait 80% of a task: prefetch
    (0.05, 0.04, 3, 1),       # ... but not at the end of the queue (spread the last tasks)
])
def test_depth_follows_task_time_and_the_measured_wait(mean_task, mean_wait, queued, expect):
    e = engine(mean=mean_task)
    e._mean_wait = mean_wait
    e.ready = [worker() for _ in range(4)]
    e.queue.extend(range(queued))
    assert e._depth() == expect
