"""Many workers (issue 13.5): makespan against the ideal, and the manager's CPU.

    python -m mpidispatch -n 129 bench/many_workers.py 10000 0.05   # 128 workers, 50 ms tasks
    python -m mpidispatch -n 129 bench/many_workers.py 128 10       # manager CPU while busy

Every task is ``time.sleep(SECONDS)``; the ideal makespan is tasks x seconds / workers. The
manager's CPU is its user + system time over the run (startup excluded), in % of one core.
"""
import functools
import resource
import sys
import time

from mpidispatch import Manager


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ntasks, seconds = int(sys.argv[1]), float(sys.argv[2])
    m = Manager(output=None)
    workers = len(m.workers)
    c = m.get_context()
    started, cpu0 = time.monotonic(), cpu_seconds()
    for _ in range(ntasks):
        c.add_task(functools.partial(time.sleep, seconds))
    done = sum(1 for _ in c.get_results_unordered())
    took, cpu = time.monotonic() - started, cpu_seconds() - cpu0
    ideal = ntasks * seconds / workers
    print("workers %d, tasks %d of %g s: makespan %.2f s, ideal %.2f s (%.2fx); "
          "manager CPU %.1f%% of a core (%.2f s)"
          % (workers, done, seconds, took, ideal, took / ideal, 100 * cpu / took, cpu))


if __name__ == "__main__":
    main()
