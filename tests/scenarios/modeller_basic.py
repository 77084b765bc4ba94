"""MODELLER-style job: tasks (ordered, unordered, errors, files) and message passing.

    python modeller_basic.py N        # N spawned LocalWorkers
    mpiexec -n N python modeller_basic.py
"""
import math
import os
import sys

import numpy as np

from mpidispatch import LocalWorker, NoMoreWorkersError, RemoteError
from mpidispatch.modeller import job, task


class Length(task):
    def run(self, code, extra=0):
        import time
        time.sleep(0.05)  # long enough that every worker gets some of the tasks
        print("task %s on pid %d" % (code, os.getpid()))
        return len(code) + extra, os.getpid(), STARTUP_SEEN()


def STARTUP_SEEN():
    import builtins
    return getattr(builtins, "startup_ran", 0)


class Fails(task):
    def run(self):
        raise KeyError("missing-%d" % 7)


class Copy(task):
    input_files = ["in.txt"]
    output_files = ["out.txt"]

    def run(self):
        with open("in.txt") as f:
            text = f.read()
        with open("out.txt", "w") as f:
            f.write(text.upper())
        return len(text)


j = job()
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    j.append(LocalWorker())
j.worker_startup_commands.append("import builtins\nbuiltins.startup_ran = 1")
print("WORKERS", len(j))
codes = ["a" * i for i in range(1, 13)]
for c in codes:
    j.queue_task(Length(c, extra=100))
results = j.run_all_tasks()
print("ORDERED", [r[0] for r in results])
print("STARTUP", all(r[2] == 1 for r in results))
print("PIDS", len({r[1] for r in results}))
for c in codes:
    j.queue_task(Length(c))
print("UNORDERED", sorted(r[0] for r in j.yield_tasks_unordered()))

j.queue_task(Fails())
j.queue_task(Length("x"))
try:
    j.run_all_tasks()
except RemoteError as err:
    print("TASK_ERROR", type(err.exc).__name__, "missing-7" in err.traceback,
          "def run" in err.traceback
          or "Fails" in err.traceback or "run" in err.traceback)

with open("in.txt", "w") as f:
    f.write("hello files")
j.queue_task(Copy())
print("FILES", j.run_all_tasks(), open("out.txt").read())

# message passing
j.start()
print("STARTED", all(w.get_data.__self__ is w for w in j))
w = j[0]
w.run_cmd("import numpy as np\nwhile True:\n    x = manager.get_data()\n"
          "    if x is None: break\n    manager.send_data(x)\n")
a = np.arange(300000, dtype=np.float64) * 0.5
floats = [0.1 + 0.2, math.nan, math.inf, -math.inf, 1e-310]
w.send_data(a)
w.send_data(floats)
w.send_data({"k": (1, "two", b"3")})
back = w.get_data(timeout=30)
fl = w.get_data(timeout=30)
d = w.get_data(timeout=30)
w.send_data(None)
print("ARRAY", bool(np.array_equal(back, a)), back.dtype)
print("FLOATS", fl[0] == 0.1 + 0.2, math.isnan(fl[1]), fl[2] == math.inf, fl[3] == -math.inf,
      fl[4] == 1e-310)
print("DICT", d)
w.run_cmd("manager.send_data(builtins.startup_ran if 'builtins' in dir() "
          "else __import__('builtins').startup_ran)")
print("MP_STARTUP", w.get_data(timeout=30))
w.run_cmd("raise ValueError('bad command 42')")
try:
    w.get_data(timeout=30)
except RemoteError as err:
    print("CMD_ERROR", type(err.exc).__name__, "bad command 42" in err.traceback)
try:
    w.get_data(timeout=0.5)
except TimeoutError as err:
    print("TIMEOUT", "run_cmd" in str(err))
w.run_cmd("manager.send_data('still alive')")
print("AFTER", w.get_data(timeout=30))
if len(sys.argv) > 1:
    del j[:]
    j.queue_task(Length("x"))
    try:
        j.run_all_tasks()
    except NoMoreWorkersError:
        print("NOMORE True")
print("DONE", j.summary())
