"""A manager inside a batch allocation: ``python arrays_alloc.py slurm|sge`` in the job.

Prints KEY value lines: WORKERS (how many the array gave), RESULTS, PIDS (distinct worker
processes that ran tasks), SLOTS (slots of the allocation seen by the array).
"""
import os
import sys
import time

from mpidispatch import Manager
from mpidispatch.arrays import SGEPEWorkerArray, SlurmWorkerArray


def square(x):
    time.sleep(0.1)          # long enough for both workers to start and share the work
    return x * x, os.getpid()


kind = sys.argv[1]
array = SlurmWorkerArray() if kind == "slurm" else SGEPEWorkerArray()
print("SLOTS", sum(n for _, n in array.slots), flush=True)
m = Manager(output="alloc-worker%d.output")
m.add_worker(array)
print("WORKERS", len(m.workers), flush=True)
c = m.get_context()
for i in range(20):
    c.add_task(lambda i=i: square(i))
results = c.get_results()
print("RESULTS", [r[0] for r in results], flush=True)
print("PIDS", len({r[1] for r in results} - {os.getpid()}), flush=True)
m.close()
print("DONE", flush=True)
