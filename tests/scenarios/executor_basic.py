"""MPIExecutor against concurrent.futures behaviours, static (mpiexec) or spawned workers.

    python executor_basic.py N        # N spawned workers
    mpiexec -n N python executor_basic.py
"""
import concurrent.futures as cf
import itertools
import math
import os
import sys
import threading
import time

import numpy as np

from mpidispatch.executor import BrokenMPIExecutor, MPIExecutor, RemoteTraceback

N = int(sys.argv[1]) if len(sys.argv) > 1 else None


def square(x):
    return x * x


def pid(_=None):
    return os.getpid()


def fails(x):
    raise LookupError("bad key %d" % x)


def nap(seconds, value=None):
    time.sleep(seconds)
    return value


def init_worker(value):
    import builtins
    builtins.executor_setup_value = value


def read_setup():
    import builtins
    return builtins.executor_setup_value


def broken_setup():
    raise OSError("no such resource")


class BadReduce:
    def __reduce__(self):
        raise ZeroDivisionError("cannot pickle this result")


class ExitReduce:
    def __reduce__(self):
        raise SystemExit(7)


with MPIExecutor(max_workers=N, setup=init_worker, setup_args=("ready",)) as ex:
    print("NUM_WORKERS", ex.num_workers)
    ex.bootup()  # both workers up, so that both take tasks below
    f = ex.submit(square, 7)
    print("SUBMIT", f.result(timeout=30))
    print("SETUP", ex.submit(read_setup).result(timeout=30))
    print("PIDS", len(set(ex.map(pid, range(40)))))
    a = np.linspace(0, 1, 200000)
    back = ex.submit(np.multiply, a, 2.0).result(timeout=30)
    print("NUMPY", bool(np.array_equal(back, a * 2.0)))
    floats = ex.submit(lambda: [0.1 + 0.2, math.nan, math.inf]).result(timeout=30)
    print("FLOATS", floats[0] == 0.1 + 0.2, math.isnan(floats[1]), floats[2] == math.inf)

    # as_completed and wait (every worker idle: earlier tasks are done)
    fs = [ex.submit(nap, 1.0, "slow"), ex.submit(nap, 0.0, "fast")]
    print("AS_COMPLETED", [f.result() for f in cf.as_completed(fs, timeout=30)])
    fs = [ex.submit(nap, 0.0, 1), ex.submit(nap, 1.0, 2)]
    done, not_done = cf.wait(fs, timeout=30, return_when=cf.FIRST_COMPLETED)
    print("WAIT_FIRST", [f.result() for f in done], len(not_done))
    done, not_done = cf.wait(fs, timeout=30)
    print("WAIT_ALL", len(done), len(not_done))

    # exceptions: original type, remote traceback as __cause__
    f = ex.submit(fails, 3)
    try:
        f.result(timeout=30)
    except LookupError as err:
        cause = err.__cause__
        print("EXCEPTION", type(err).__name__, isinstance(cause, RemoteTraceback),
              "in fails" in str(cause), "bad key 3" in str(cause))
    print("EXCEPTION_METHOD", type(f.exception()).__name__)

    # an unpicklable task fails its own future; the executor goes on
    f = ex.submit(square, threading.Lock())
    print("UNPICKLABLE", type(f.exception(timeout=5)).__name__, ex.submit(square, 3).result(30))
    # pickling errors keep their type, as with mpi4py.futures and concurrent.futures
    err = ex.submit(BadReduce).exception(timeout=30)
    print("RESULT_PICKLE_ERROR", type(err).__name__, isinstance(err.__cause__, RemoteTraceback))
    err = ex.submit(ExitReduce).exception(timeout=30)
    print("RESULT_PICKLE_EXIT", type(err).__name__)

    # map: ordered, unordered, chunks, several iterables
    print("MAP", list(ex.map(square, range(10))))
    print("MAP_CHUNKS", list(ex.map(pow, range(10), itertools.repeat(2), chunksize=3)))
    print("MAP_UNORDERED", sorted(ex.map(square, range(10), unordered=True)))
    print("MAP_UNORDERED_FIRST", next(iter(ex.map(nap, [2.0, 0.01], ["slow", "fast"],
                                                  unordered=True))))
    try:
        list(ex.map(fails, [5]))
    except LookupError as err:
        print("MAP_EXCEPTION", "bad key 5" in str(err.__cause__))

    # lazy on an endless iterable: only a bounded number is read ahead
    produced = []

    def endless():
        for i in itertools.count():
            produced.append(i)
            yield i

    got = list(itertools.islice(ex.map(square, endless(), buffersize=4), 10))
    print("LAZY", got == [i * i for i in range(10)], len(produced) <= 10 + 4 + 1)
    # As with the standard library, map() submits every call at once unless buffersize
    # bounds it; a huge input needs buffersize.
    got = list(itertools.islice(ex.map(square, range(10 ** 12), buffersize=8), 5))
    print("HUGE", got)
    try:
        ex.map(square, range(3), unordered=True, buffersize=2)
    except ValueError:
        print("BUFFERSIZE_UNORDERED rejected")

    # progress bar on map
    print("PROGRESS", sum(ex.map(square, range(20), progress=True)))
    t = time.monotonic()
    try:
        for _ in ex.map(nap, [0.0, 1.0], timeout=0.5):
            pass
    except cf.TimeoutError:
        print("MAP_TIMEOUT %.1f" % (time.monotonic() - t))

# after shutdown
try:
    ex.submit(square, 1)
except RuntimeError as err:
    print("AFTER_SHUTDOWN", type(err).__name__, "shutdown" in str(err))

# cancel pending futures: one worker, one task in flight
with MPIExecutor(max_workers=1, prefetch=1) as ex:
    first = ex.submit(nap, 1.0, "first")
    rest = [ex.submit(nap, 0.0, i) for i in range(5)]
    while not first.running():
        time.sleep(0.01)
    print("CANCEL_RUNNING", first.cancel())
    print("CANCEL_PENDING", [f.cancel() for f in rest[2:]])
    print("CANCELLED", [f.cancelled() for f in rest])
    done, not_done = cf.wait(rest, timeout=30)
    print("CANCEL_WAIT", len(done), len(not_done))
    print("CANCEL_RESULTS", first.result(), [f.result() for f in rest[:2]])
    try:
        rest[3].result()
    except cf.CancelledError:
        print("CANCELLED_ERROR True")

# shutdown(cancel_futures=True): queued futures are cancelled, the running one finishes
ex = MPIExecutor(max_workers=1, prefetch=1)
running = ex.submit(nap, 1.0, "ran")
queued = [ex.submit(nap, 0.0, i) for i in range(4)]
while not running.running():
    time.sleep(0.01)
ex.shutdown(wait=True, cancel_futures=True)
print("SHUTDOWN_CANCEL", running.result(), [f.cancelled() for f in queued])

# shutdown(wait=False) returns at once; the futures still complete
ex = MPIExecutor(max_workers=1)
fs = [ex.submit(nap, 0.2, i) for i in range(3)]
t = time.monotonic()
ex.shutdown(wait=False)
print("NOWAIT %.1f" % (time.monotonic() - t), [f.result(timeout=30) for f in fs])

# a setup function that raises breaks the executor
with MPIExecutor(max_workers=1, setup=broken_setup) as ex:
    f = ex.submit(square, 2)
    try:
        f.result(timeout=30)
    except BrokenMPIExecutor as err:
        print("BROKEN", "no such resource" in str(err), isinstance(err, cf.BrokenExecutor))
    try:
        ex.submit(square, 2)
    except BrokenMPIExecutor:
        print("BROKEN_SUBMIT True")
print("DONE")
