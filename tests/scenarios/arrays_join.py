"""A manager outside the batch system: ``python arrays_join.py slurm|sge N [options]``.

Submits an array job of N workers that join this manager (MPICH wheel). Prints WORKERS,
RESULTS, PIDS, JOB (the array job id) and DONE; with ``--die`` the manager kills itself
(SIGKILL) once the workers have joined, to check that they exit by themselves; with
``--bad-token`` the tasks get a wrong token, are refused, and the manager must report the
ended job as a WorkerStartError (START_ERROR line) instead of waiting start_timeout.
"""
import os
import signal
import sys
import time

from mpidispatch import Manager
from mpidispatch.launch.worker_arrays import SGEQsubWorkerArray, SlurmWorkerArray


def square(x):
    time.sleep(0.1)          # long enough for both workers to join and share the work
    return x * x, os.getpid()


kind, n = sys.argv[1], int(sys.argv[2])
die = "--die" in sys.argv
array = (SlurmWorkerArray(n, options="--time=5") if kind == "slurm"
         else SGEQsubWorkerArray(n, options="-l h_rt=0:05:00"))
if "--bad-token" in sys.argv:
    real_job = array._job

    def job_with_wrong_token(port_file, dry_run=False):
        good, array.token = array.token, "0" * 32
        try:
            return real_job(port_file, dry_run)
        finally:
            array.token = good
    array._job = job_with_wrong_token
m = Manager(output="join-worker%d.output", start_timeout=60)
m.add_worker(array)
if "--bad-token" in sys.argv:
    from mpidispatch import WorkerStartError
    c = m.get_context()
    c.add_task(int)
    t0 = time.monotonic()
    try:
        c.get_results()
    except WorkerStartError as exc:
        print("START_ERROR %.1f %s" % (time.monotonic() - t0, str(exc).replace("\n", " ")))
    print("JOB", array.job.id, flush=True)
    sys.exit(0)
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
if "--no-close" not in sys.argv:       # else: the exit hooks must stop and cancel
    m.close()
print("DONE", flush=True)
