"""Workers join while tasks run and leave; idle workers do not burn CPU."""
import os
import time

from mpidispatch import LocalWorker, Manager


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slow(i):
    time.sleep(0.02)
    return i, os.getpid()


m = Manager()
engine = m._engine
first = LocalWorker()
m.add_worker(first)
c = m.get_context()
for i in range(60):
    c.add_task(lambda i=i: slow(i))
got = []
it = c.get_results_unordered()
got.append(next(it))
m.add_worker(LocalWorker())          # joins while tasks run
for r in it:
    got.append(r)
print("RESULTS_OK", sorted(i for i, _ in got) == list(range(60)))
print("PIDS_USED", len({pid for _, pid in got}))
engine.remove_worker(first)
for i in range(10):
    c.add_task(lambda i=i: slow(i))
after = c.get_results()
print("AFTER_REMOVE_PIDS", len({pid for _, pid in after}), first.state)
# idle: the manager sleeps, the remaining worker waits for work
w = [x for x in m.workers if x.state == "ready"][0]
before = cpu_seconds(w.pid)
time.sleep(2.0)
print("IDLE_WORKER_CPU %.3f" % (cpu_seconds(w.pid) - before))
t = time.process_time()
engine.run_until(lambda: False, timeout=2.0)   # the manager polls with nothing to do
print("IDLE_MANAGER_CPU %.3f" % (time.process_time() - t))
