"""PyOPUS-style JobDispatcher: local mode, spawned workers, mpiexec ranks; lazy generation.

    python dispatcher_basic.py            # no workers: local mode
    python dispatcher_basic.py 2          # max_workers=2 spawned workers
    mpiexec -n 3 python dispatcher_basic.py
"""
import os
import sys
import time

from mpidispatch import RemoteError
from mpidispatch.dispatcher import JobDispatcher

N_JOBS = 30


class Squares(JobDispatcher):
    def __init__(self, n_jobs, **kw):
        super().__init__(**kw)
        self.n_jobs = n_jobs
        self.offset = 0

    def reset(self):
        self.next_job = 0
        self.results = {}
        self.generated = 0
        self.max_uncollected = 0
        self.post = False

    def job_generator(self):
        if self.next_job >= self.n_jobs:
            return None
        self.next_job += 1
        self.generated += 1
        self.max_uncollected = max(self.max_uncollected, self.generated - len(self.results))
        return self.next_job - 1

    def job_processor(self, job):
        time.sleep(0.005)
        if job == self.fail_at:
            raise ArithmeticError("job %d failed" % job)
        return job * job + self.offset, os.getpid()

    def job_collector(self, job, result):
        self.results[job] = result

    def postprocess(self):
        self.post = True

    fail_at = -1


workers = int(sys.argv[1]) if len(sys.argv) > 1 else None
d = Squares(N_JOBS, max_workers=workers, debug=1)
if workers:
    d.wait_ready(60)  # so that both workers take jobs (run() does not wait for them)
d.run()
print("LOCAL", d.local_mode)
print("COLLECTED", sorted(d.results) == list(range(N_JOBS)),
      all(r[0] == j * j for j, r in d.results.items()))
print("PIDS", len({r[1] for r in d.results.values()}))
print("MANAGER_PID_USED", os.getpid() in {r[1] for r in d.results.values()})
print("MAX_UNCOLLECTED", d.max_uncollected)
print("WORKERS", len(d.workers))
print("POSTPROCESSED", d.post)
# the worker's copy is the dispatcher as it was when run() started
d.offset = 1000
d.run()
print("SECOND_RUN", all(r[0] == j * j + 1000 for j, r in d.results.items()), len(d.results))
d.fail_at = 7
d.offset = 0
try:
    d.run()
    print("FAILED_JOB none")
except RemoteError as err:
    print("FAILED_JOB", type(err.exc).__name__, "job 7 failed" in err.traceback)
except ArithmeticError as err:
    print("FAILED_JOB local", type(err).__name__)
d.fail_at = -1
d.run()
print("AFTER_ERROR", len(d.results))
# fewer live workers than min_workers: local mode
e = Squares(5, min_workers=99)
e.run()
print("MIN_WORKERS_LOCAL", e.local_mode, sorted(e.results))
