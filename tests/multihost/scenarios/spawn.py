"""Workers on other hosts. Usage: spawn.py HOST [HOST ...] (one LocalWorker per HOST),
spawn.py --slurm-allocation (SlurmWorkerArray() inside an allocation), spawn.py --sge-pe
(SGEPEWorkerArray() inside a Grid Engine PE job), or
spawn.py --slurm-submit N [SBATCH OPTIONS] (SlurmWorkerArray(N): an array job that joins).

Runs as a plain ``python`` manager (singleton) or under ``python -m mpidispatch -n 1 --host``.
Each task reports ``socket.gethostname()``. Prints KEY value lines: RESULTS (JSON
[task, host]), WORKERS (JSON [index, requested host, host, state]), START_ERRORS,
RUN_ERROR (what the results iterator raised, if anything), SECONDS.
"""
import json
import socket
import sys
import time

from mpidispatch import Error, LocalWorker, Manager


class Where:
    def __init__(self, i):
        self.i = i

    def __call__(self):
        time.sleep(0.02)
        return self.i, socket.gethostname()


started = time.monotonic()
m = Manager()
if sys.argv[1:2] == ["--slurm-allocation"]:      # one worker per slot of this allocation
    from mpidispatch.launch import SlurmWorkerArray
    m.add_worker(SlurmWorkerArray())
elif sys.argv[1:2] == ["--sge-pe"]:                # one worker per slot of this PE job
    from mpidispatch.launch import SGEPEWorkerArray
    m.add_worker(SGEPEWorkerArray())
elif sys.argv[1:2] == ["--slurm-submit"]:        # an array job whose tasks join
    from mpidispatch.launch import SlurmWorkerArray
    m.add_worker(SlurmWorkerArray(int(sys.argv[2]), options=" ".join(sys.argv[3:])))
else:
    for host in sys.argv[1:]:
        m.add_worker(LocalWorker(host=host))
try:
    m.wait_ready(120)   # workers start in the background: have each up (or failed) first
except Error:
    pass                # none started: the tasks below then fail, reported as RUN_ERROR
c = m.get_context()
N = 40
for i in range(N):
    c.add_task(Where(i))
results, error = [], None
try:
    results = list(c.get_results_unordered())
except Error as err:  # no worker could start
    error = err
engine = m._engine
print("MANAGER", socket.gethostname())
print("RESULTS", json.dumps(sorted(list(r) for r in results)))
print("WORKERS", json.dumps([[w.index, getattr(w, "spawn_host", None), w.host, w.state]
                            for w in engine.workers]))
print("START_ERRORS", json.dumps([str(e) for e in engine.start_errors]))
print("RUN_ERROR", json.dumps(str(error) if error else None))
print("SECONDS %.2f" % (time.monotonic() - started))
sys.stdout.flush()
