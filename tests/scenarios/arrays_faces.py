"""An in-allocation array on this machine (a synthetic ``$PE_HOSTFILE``), used by several
faces: ``python arrays_faces.py``. Prints KEY value lines:

ENV_BEFORE/ENV_AFTER  PRTE_MCA_prte_default_hostfile before/after building the array
WORKERS          how many workers the 3-slot array has, and their kinds and ``_host``
MANAGER          results through Manager.add_worker(array) (2 local slots + a plain
                 LocalWorker spawned after them: other spawns must not see the PE's hosts)
JOB              results through a MODELLER job extended with an array
DISPATCHER       results through JobDispatcher.add_worker for each of array.workers()
DISPATCHER_ARRAY results through JobDispatcher.add_worker(array)
EXECUTOR         results through MPIExecutor(workers=array)
HOSTFILES_LEFT   mpidispatch host files left in $TMPDIR
"""
import os
import sys
import time

from mpidispatch import JobDispatcher, LocalWorker, Manager, MPIExecutor, job
from mpidispatch._util import hostname
from mpidispatch.arrays import SGEPEWorkerArray
from mpidispatch.modeller import task


def square(x):
    time.sleep(0.05)
    return x * x


class Squares(JobDispatcher):
    def reset(self):
        self.todo = list(range(6))
        self.results = []

    def job_generator(self):
        return self.todo.pop() if self.todo else None

    def job_processor(self, x):
        return square(x)

    def job_collector(self, x, result):
        self.results.append(result)


class Square(task):
    def run(self, x):
        return square(x)


pe = os.path.join(os.getcwd(), "pe_hostfile")
with open(pe, "w") as fh:   # two slots here, one on a host that does not exist
    fh.write("%s 2 all.q@x UNDEFINED\nnosuchhost-mpidispatch 1 all.q@y UNDEFINED\n" % hostname())
os.environ["PE_HOSTFILE"] = pe
print("ENV_BEFORE", os.environ.get("PRTE_MCA_prte_default_hostfile"), flush=True)
array = SGEPEWorkerArray()
print("ENV_AFTER", os.environ.get("PRTE_MCA_prte_default_hostfile"), flush=True)
print("WORKERS", len(array), [type(w).__name__ for w in array],
      [getattr(w, "_host", None) == h for w, h in
       zip(array, [hostname(), hostname(), "nosuchhost-mpidispatch"])], flush=True)

here = array.workers()[:2]                  # the slots on this machine
m = Manager(output="faces-m%d.output")
for w in here:
    m.add_worker(w)
m.add_worker(LocalWorker())                 # a plain spawn after the array's
c = m.get_context()
for i in range(12):
    c.add_task(lambda i=i: square(i))
print("MANAGER", sorted(c.get_results_unordered()), len(m.workers), flush=True)
m.close()

local = os.path.join(os.getcwd(), "pe_local")
with open(local, "w") as fh:  # two slots here
    fh.write("%s 2 all.q@x UNDEFINED\n" % hostname())
j = job(output="faces-j%d.output")
j.extend(SGEPEWorkerArray(local))
for i in range(6):
    j.queue_task(Square(i))
print("JOB", sorted(j.run_all_tasks()), len(j), flush=True)
j.close()

d = Squares(max_workers=0, output="faces-d%d.output")
for w in SGEPEWorkerArray(local).workers():
    d.add_worker(w)
d.run()
print("DISPATCHER", sorted(d.results), d.local_mode, flush=True)
d.close()
d = Squares(max_workers=0, output="faces-e%d.output")
d.add_worker(SGEPEWorkerArray(local))       # the whole array at once
d.run()
print("DISPATCHER_ARRAY", sorted(d.results), d.local_mode, flush=True)
d.close()
with MPIExecutor(workers=SGEPEWorkerArray(local)) as ex:
    print("EXECUTOR", sorted(ex.map(square, range(6))), ex.num_workers, flush=True)
tmp = os.environ.get("TMPDIR") or "/tmp"
print("HOSTFILES_LEFT", [f for f in os.listdir(tmp) if f.startswith("mpidispatch-hosts-")
                         or f.startswith("mpidispatch-pe-hosts")], flush=True)
sys.stdout.flush()
