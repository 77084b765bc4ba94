"""Task errors: returned exceptions, raised exceptions, unpicklable tasks and results."""
import sys
import functools
import threading

from mpidispatch import (LocalWorker, Manager, RemoteError, SerializationError)


def boom():
    raise ValueError("Worker error")


def give_exception():
    return IndexError("test")


def ok(x=1):
    return x


def bad_result():
    return threading.Lock()


def sys_exit():
    sys.exit(3)


m = Manager()
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    m.add_worker(LocalWorker())
c = m.get_context()
c.add_task(give_exception)
r = list(c.get_results_unordered())
print("RETURNED", type(r[0]).__name__, r[0])

c.add_task(boom)
try:
    list(c.get_results_unordered())
except RemoteError as err:
    print("REMOTE", type(err.exc).__name__, "Remote traceback" in str(err),
          "boom" in err.traceback, err.worker is not None)

try:
    c.add_task(functools.partial(print, threading.Lock()))  # callable, not picklable
except SerializationError as err:
    print("UNPICKLABLE_TASK", "cannot be pickled" in str(err))

c.add_task(bad_result)
c.add_task(ok)
c.add_task(sys_exit)
c.add_task(ok)
outcomes = []
it = c.get_results_unordered()
while True:
    try:
        outcomes.append(repr(next(it)))
    except StopIteration:
        break
    except SerializationError:
        outcomes.append("SerializationError")
    except RemoteError as err:
        outcomes.append("Remote" + type(err.exc).__name__)
print("OUTCOMES", sorted(outcomes))
c.add_task(ok)
print("STILL_WORKS", c.get_results())
