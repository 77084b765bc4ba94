"""MODELLER-style job: count residues of sequences on workers, then talk to one worker.

    python examples/modeller_example.py 2               # 2 spawned workers
    python -m mpidispatch -n 3 examples/modeller_example.py  # 1 manager + 2 mpiexec ranks

Worker output goes to modeller_example.worker0, modeller_example.worker1, ...
"""
import sys

from mpidispatch import LocalWorker
from mpidispatch.modeller import job, task


class CountResidues(task):
    """Runs on a worker: MyTask(args).run(args)."""

    def run(self, name, sequence):
        print("counting", name)                  # goes to the worker's log file
        return name, len(sequence.replace("-", ""))


if __name__ == "__main__":
    j = job()                                     # under mpiexec the ranks are already in it
    for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
        j.append(LocalWorker())
    j.worker_startup_commands.append("import collections")
    sequences = {"1fdn": "AC-DEFG", "1abc": "MKV--LA", "2xyz": "WWWW"}
    for name, seq in sequences.items():
        j.queue_task(CountResidues(name, seq))
    print("in order:", j.run_all_tasks())
    for name, seq in sequences.items():
        j.queue_task(CountResidues(name, seq))
    print("as they finish:", sorted(j.yield_tasks_unordered()))

    # message passing: the worker objects are the communicators
    j.start()
    w = j[0]
    w.run_cmd("x = manager.get_data()\n"
              "manager.send_data(collections.Counter(x).most_common(1))")
    w.send_data("MKVLAAAG")
    print("most common residue:", w.get_data(timeout=60))
    print(j.summary())
