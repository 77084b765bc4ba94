"""PyOPUS-style JobDispatcher: evaluate a function on a grid, collect the best point.

    python examples/dispatcher_example.py            # no workers: jobs run locally
    python examples/dispatcher_example.py 2          # max_workers=2 spawned workers
    python -m mpidispatch -n 3 examples/dispatcher_example.py   # 2 mpiexec ranks
"""
import math
import sys

from mpidispatch.dispatcher import JobDispatcher


class GridSearch(JobDispatcher):
    def __init__(self, points, **options):
        super().__init__(**options)       # first: under mpiexec, ranks 1.. serve from here
        self.points = points

    def reset(self):                      # called by every run()
        self.todo = iter(self.points)
        self.best = None

    def job_generator(self):              # the next job, or None when there are none
        return next(self.todo, None)

    def job_processor(self, job):         # runs on a worker
        x, y = job
        return math.sin(x) * math.cos(y) - 0.1 * (x * x + y * y)

    def job_collector(self, job, result):  # runs here, in completion order
        if self.best is None or result > self.best[1]:
            self.best = (job, result)

    def postprocess(self):
        print("best point %s with value %.4f" % self.best)


if __name__ == "__main__":
    grid = [(i / 10, j / 10) for i in range(-20, 21) for j in range(-20, 21)]
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else None
    d = GridSearch(grid, max_workers=workers, prefetch=4)
    d.run(progress=True)
    print("evaluated", "locally" if d.local_mode else "on %d workers" % len(d.workers))
