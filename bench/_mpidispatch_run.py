"""One mpidispatch measurement. argv: tasks|bigarray N WORKERS (spawn workers if WORKERS>0)."""
import functools
import sys
import time

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _tasks import echo, noop  # noqa: E402

from mpidispatch import LocalWorker, Manager  # noqa: E402

what, n, spawn = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
m = Manager(output=None, prefetch=int(sys.argv[4]) if len(sys.argv) > 4 else 2)
for _ in range(spawn):
    m.add_worker(LocalWorker())
c = m.get_context()
c.add_task(functools.partial(noop, 0))
c.get_results()                        # workers up and warm
if what == "tasks":
    t = time.perf_counter()
    for i in range(n):
        c.add_task(functools.partial(noop, i))
    count = sum(1 for _ in c.get_results_unordered())
    dt = time.perf_counter() - t
    assert count == n
    print("RESULT %.0f" % (n / dt))
else:
    a = np.random.default_rng(0).random(n // 8)
    best = 1e9
    for _ in range(3):
        t = time.perf_counter()
        c.add_task(functools.partial(echo, a))
        (b,) = c.get_results()
        best = min(best, time.perf_counter() - t)
    assert np.array_equal(a, b)
    print("RESULT %.4f" % best)
