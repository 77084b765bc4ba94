"""Every face across hosts. Usage: faces.py FACE [NTASKS] (under mpiexec with a host list).

Each task reports where it ran: ``socket.gethostname()`` (the namespace host's name) and its
world rank, so that the test can check each result against the host list it launched with.
Prints ``KEY value`` lines: MANAGER host, RESULTS [[task, host, rank], ...] (JSON) and, for
the MODELLER face, MESSAGES [[worker index, host], ...] from message passing.
"""
import json
import os
import socket
import sys
import time

FACE = sys.argv[1]
N = int(sys.argv[2]) if len(sys.argv) > 2 else 40


def where(i):
    """Run on a worker: (task, host, world rank)."""
    from mpi4py import MPI
    time.sleep(0.01)  # long enough that every worker gets some tasks
    return i, socket.gethostname(), MPI.COMM_WORLD.Get_rank()


def report(results, **more):
    print("MANAGER", socket.gethostname())
    print("MANAGER_PID", os.getpid())
    print("RESULTS", json.dumps(sorted(list(r) for r in results)))
    for key, value in more.items():
        print(key, json.dumps(value))
    sys.stdout.flush()


if FACE == "imp":
    from mpidispatch import Manager

    class Where:
        def __init__(self, i):
            self.i = i

        def __call__(self):
            return where(self.i)

    m = Manager()
    c = m.get_context()
    for i in range(N):
        c.add_task(Where(i))
    report(c.get_results_unordered())

elif FACE == "modeller":
    import numpy as np
    from mpidispatch.modeller import job, task

    class Where(task):
        def run(self, i):
            return where(i)

    j = job()
    for i in range(N):
        j.queue_task(Where(i))
    results = j.run_all_tasks()
    # message passing: every worker says where it is, and echoes an array
    j.start()
    messages = []
    a = np.arange(100000, dtype=np.float64)
    for w in j:
        w.run_cmd("import socket\nmanager.send_data(socket.gethostname())\n"
                  "manager.send_data(manager.get_data() * 2)")
        w.send_data(a)
    for w in j:
        host = w.get_data(timeout=30)
        echoed = w.get_data(timeout=30)
        messages.append([w.index, host, bool(np.array_equal(echoed, a * 2))])
    report(results, MESSAGES=messages)

elif FACE == "dispatcher":
    from mpidispatch.dispatcher import JobDispatcher

    class Where(JobDispatcher):
        def reset(self):
            self.next_job, self.results = 0, []

        def job_generator(self):
            if self.next_job >= N:
                return None
            self.next_job += 1
            return self.next_job - 1

        def job_processor(self, i):
            return where(i)

        def job_collector(self, i, result):
            self.results.append(result)

    d = Where()
    d.run()
    report(d.results, LOCAL=d.local_mode)

elif FACE == "executor":
    from mpidispatch.executor import MPIExecutor

    with MPIExecutor() as ex:
        results = list(ex.map(where, range(N)))
    report(results)

else:
    sys.exit("unknown face %r" % FACE)
