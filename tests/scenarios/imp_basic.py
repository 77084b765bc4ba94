"""IMP-style run: works as `python imp_basic.py N` (N spawned workers) and under mpiexec."""
import math
import os
import sys
import time

from mpidispatch import LocalWorker, Manager


def setup():
    return (100, os.getpid())


class AddBase:
    def __init__(self, x):
        self.x = x

    def __call__(self, base, setup_pid):
        time.sleep(0.01)  # long enough that every worker gets some of the tasks
        print("task %d on pid %d" % (self.x, os.getpid()))
        return (base + self.x, os.getpid(), setup_pid)


m = Manager(output="worker%d.output")
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    m.add_worker(LocalWorker())
c = m.get_context(setup)
for i in range(40):
    c.add_task(AddBase(i))
results = list(c.get_results_unordered())
print("RESULTS", sorted(r[0] for r in results))
print("PIDS", len({r[1] for r in results}))
print("SETUP_SAME_PROCESS", all(r[1] == r[2] for r in results))
print("WORKERS", len(m.workers))
c.add_task(lambda base, pid: math.inf)
c.add_task(lambda base, pid: math.nan)
c.add_task(lambda base, pid: 0.1 + 0.2)
floats = c.get_results()
print("FLOATS", math.isinf(floats[0]), math.isnan(floats[1]), floats[2] == 0.1 + 0.2)
print("MANAGER_PID", os.getpid())
