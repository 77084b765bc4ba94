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
from mpidispatch.arrays import SGEQsubWorkerArray, SlurmWorkerArray


def square(x):
    time.sleep(0.1)          # long enough for both workers to join and share the work
    return x * x, os.getpid()


kind, n = sys.argv[1], int(sys.argv[2])
die = "--die" in sys.argv
array = (SlurmWorkerArray(n, options="--time=5") if kind == "slurm"
         else SGEQsubWorkerArray(n, options="-l h_rt=0:05:00"))
os.umask(0o022)
if "--bad-key" in sys.argv:
    import json
    real_job = array._job

    def job_with_wrong_key(rendezvous_file, dry_run=False):
        other = os.path.join(os.getcwd(), "other-key.json")
        with open(rendezvous_file) as fh:
            info = json.load(fh)
        with open(other, "w") as fh:
            json.dump(dict(info, key="00" * 32), fh)
        return real_job(other, dry_run)
    array._job = job_with_wrong_key
m = Manager(output="join-worker%d.output", start_timeout=60)
m.add_worker(array)
if "--bad-key" in sys.argv:
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
print("SCRIPT_MODE", oct(os.stat(array.job.script_path).st_mode & 0o777), flush=True)
key = array.rendezvous.key.hex()
leaks = 0
for pid in os.listdir("/proc"):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as fh:
            cmdline = fh.read().decode("utf-8", "replace")
    except OSError:
        continue
    leaks += key[:12] in cmdline or key in cmdline
print("KEY_ON_COMMAND_LINES", leaks, flush=True)
parts = {key[i:i + 12] for i in range(0, len(key) - 11)}
print("KEY_IN_FILE_NAMES", sum(any(p in name for p in parts) for name in os.listdir(".")),
      flush=True)
print("JOB", array.job.id, flush=True)
print("SECONDS %.1f" % (time.monotonic() - t0), flush=True)
if die:
    os.kill(os.getpid(), signal.SIGKILL)
if "--no-close" not in sys.argv:       # else: the exit hooks must stop and cancel
    m.close()
print("DONE", flush=True)
