"""One journaled (or not) run of N no-op tasks (``abs(i)``) under mpiexec.

argv: N JOURNAL (``-``: no journal).
"""
import functools
import sys
import time

from mpidispatch import Manager

n, journal = int(sys.argv[1]), sys.argv[2]
m = Manager(output=None, **({} if journal == "-" else {"journal": journal}))
c = m.get_context()
c.add_task(functools.partial(abs, -1))
c.get_results()                        # workers up and warm
t = time.perf_counter()
cpu = time.process_time()
for i in range(n):
    c.add_task(functools.partial(abs, i))
count = sum(1 for _ in c.get_results_unordered())
dt = time.perf_counter() - t
cpu = time.process_time() - cpu
assert count == n
print("RESULT %.0f %.2f" % (n / dt, cpu / n * 1e6))   # tasks/s, manager CPU us per task
