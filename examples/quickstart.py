"""Estimate pi on every worker, IMP.parallel style.

    python -m mpidispatch -n 4 examples/quickstart.py      # 1 manager + 3 workers
    python examples/quickstart.py 3                         # the same with 3 spawned workers
"""
import os
import sys
import time

from mpidispatch import LocalWorker, Manager


def setup():
    """Runs once per worker: here, a random generator seeded per process."""
    import numpy as np
    return (np.random.default_rng(os.getpid()),)


class Darts:
    """Throw ``n`` darts at the unit square; count those inside the quarter circle."""

    def __init__(self, n):
        self.n = n

    def __call__(self, rng):
        xy = rng.random((self.n, 2))
        return int(((xy ** 2).sum(axis=1) <= 1.0).sum()), self.n


if __name__ == "__main__":
    manager = Manager()
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
        manager.add_worker(LocalWorker())
    context = manager.get_context(setup)
    for _ in range(200):
        context.add_task(Darts(100_000))
    start = time.perf_counter()
    hits = total = 0
    for inside, n in context.get_results_unordered():
        hits += inside
        total += n
    print("pi ~ %.5f from %d darts in %.2f s" % (4 * hits / total, total,
                                                  time.perf_counter() - start))
    print(manager.summary())
