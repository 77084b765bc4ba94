"""No worker at all: NoMoreWorkersError at once. A bad python=: WorkerStartError."""
import time

from mpidispatch import LocalWorker, Manager, NoMoreWorkersError, WorkerStartError

t = time.monotonic()
m = Manager()
c = m.get_context()
c.add_task(int)
try:
    list(c.get_results_unordered())
except NoMoreWorkersError:
    print("NOMORE %.2f" % (time.monotonic() - t))

m = Manager(python="/path/does/not/exist/python", start_timeout=10)
m.add_worker(LocalWorker())
c = m.get_context()
c.add_task(int)
t = time.monotonic()
try:
    list(c.get_results_unordered())
except WorkerStartError as err:
    print("STARTERROR %.2f" % (time.monotonic() - t))
    print("NAMES_COMMAND", "/path/does/not/exist/python" in str(err))
