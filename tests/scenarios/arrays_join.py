"""A manager outside the batch system: ``python arrays_join.py slurm|sge N [options]``.

Submits an array job of N workers that join this manager (MPICH wheel). Prints WORKERS,
RESULTS, PIDS, JOB (the array job id) and DONE; with ``--die`` the manager kills itself
(SIGKILL) once the workers have joined, to check that they exit by themselves.
"""
import os
import signal
import sys
import time

from mpidispatch import Manager
from mpidispatch.launch.worker_arrays import SGEQsubWorkerArray, SlurmWorkerArray


def square(x):
    return x * x, os.getpid()


kind, n = sys.argv[1], int(sys.argv[2])
die = "--die" in sys.argv
array = (SlurmWorkerArray(n, options="--time=5") if kind == "slurm"
         else SGEQsubWorkerArray(n, options="-l h_rt=0:05:00"))
m = Manager(output="join-worker%d.output", start_timeout=60)
m.add_worker(array)
print("WORKERS", len(m.workers), flush=True)
c = m.get_context()
for i in range(20):
    c.add_task(lambda i=i: square(i))
t0 = time.monotonic()
results = c.get_results()
print("RESULTS", [r[0] for r in results], flush=True)
print("PIDS", len({r[1] for r in results}), flush=True)
print("JOB", array.job.id, flush=True)
print("SECONDS %.1f" % (time.monotonic() - t0), flush=True)
if die:
    os.kill(os.getpid(), signal.SIGKILL)
m.close()
print("DONE", flush=True)
