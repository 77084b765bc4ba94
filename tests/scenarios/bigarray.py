"""A 100 MB numpy array goes to a worker and back intact; closures and lambdas work."""
import sys
import time

import numpy as np

from mpidispatch import LocalWorker, Manager

m = Manager()
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    m.add_worker(LocalWorker())
rng = np.random.default_rng(1)
a = rng.random(100 * 1024 * 1024 // 8)
c = m.get_context()
scale = 2.0
c.add_task(lambda: a * scale)
t = time.perf_counter()
(b,) = c.get_results()
print("SECONDS %.3f" % (time.perf_counter() - t))
print("INTACT", bool(np.array_equal(b, a * 2.0)), b.dtype, b.shape == a.shape)
