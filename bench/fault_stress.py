"""Stress: 10,000 tasks with a worker SIGKILLed every second, against the same run unharmed.

    python bench/fault_stress.py [--tasks 10000] [--workers 3] [--task-seconds 0.001]

Runs the manager in fault-tolerant mode (spawned workers; with the MPICH wheel start it as
``python -m mpidispatch --ft -n 1 bench/fault_stress.py``). Prints throughput with and
without faults, how many workers died and were replaced, the time from a kill to MPI
noticing it, and to the replacement being ready, and checks that every task's result
arrived exactly once.
"""
import argparse
import functools
import os
import random
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from mpidispatch import LocalWorker, Manager  # noqa: E402
from mpidispatch.bench import noop  # noqa: E402


def sleepy(i, seconds):
    time.sleep(seconds)
    return i


def run(n, workers, seconds, kill_every):
    m = Manager(output="stress-worker%d.log", fault_tolerant=True, max_retries=5,
                respawn_budget=10 ** 6)
    engine = m._engine
    for _ in range(workers):
        m.add_worker(LocalWorker())
    c = m.get_context()
    c.add_task(functools.partial(noop, 0))
    c.get_results()
    kills, stop = [], threading.Event()

    def killer():
        while not stop.wait(kill_every):
            busy = [w for w in list(engine.workers) if w.state == "ready" and w.pid]
            if busy:
                w = random.choice(busy)
                kills.append((time.monotonic(), w))
                os.kill(w.pid, signal.SIGKILL)

    if kill_every:
        threading.Thread(target=killer, daemon=True).start()
    t = time.perf_counter()
    for i in range(n):
        c.add_task(functools.partial(sleepy, i, seconds))
    seen = {}
    for i in c.get_results_unordered():
        seen[i] = seen.get(i, 0) + 1
    dt = time.perf_counter() - t
    stop.set()
    exact = sorted(seen) == list(range(n)) and set(seen.values()) == {1}
    detect = [w.death_time - k for k, w in kills if w.death_time]
    ready = sorted(w.ready_time for w in engine.workers[workers:] if w.ready_time)
    replace = [r - k for (k, _), r in zip(sorted(kills, key=lambda x: x[0]), ready) if r > k]
    m.close()
    return dict(rate=n / dt, exact=exact, kills=len(kills), lost=engine.lost_count,
                respawns=engine.respawns, detect=detect, replace=replace, seconds=dt)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=10000)
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--task-seconds", type=float, default=0.001)
    p.add_argument("--kill-every", type=float, default=1.0)
    a = p.parse_args()
    clean = run(a.tasks, a.workers, a.task_seconds, 0)
    hurt = run(a.tasks, a.workers, a.task_seconds, a.kill_every)
    print("%d tasks of %g s on %d workers" % (a.tasks, a.task_seconds, a.workers))
    print("without faults: %8.0f tasks/s  (%.1f s)  exactly once: %s"
          % (clean["rate"], clean["seconds"], clean["exact"]))
    print("kill every %gs: %8.0f tasks/s  (%.1f s)  exactly once: %s"
          % (a.kill_every, hurt["rate"], hurt["seconds"], hurt["exact"]))
    print("workers killed %d, lost %d, replaced %d" % (hurt["kills"], hurt["lost"],
                                                      hurt["respawns"]))
    for name in ("detect", "replace"):
        xs = sorted(hurt[name])
        if xs:
            print("kill -> %-8s median %.3f s, max %.3f s" % (
                "noticed" if name == "detect" else "replaced", xs[len(xs) // 2], xs[-1]))


if __name__ == "__main__":
    main()
