"""Small-task figures of docs/performance.md ("Batches of small tasks").

    python -m mpidispatch -n 3 bench/small_tasks.py rate [N]   # static world, 2 workers
    python bench/small_tasks.py rate [N]                       # 2 spawned workers
    python bench/small_tasks.py submit                         # add_task cost and memory
    python -m mpidispatch -n 3 bench/small_tasks.py rss        # 1,000,000 tasks: RSS

``rate``: N (default 20,000) ``add_task(functools.partial(abs, i))`` then
``get_results_unordered()``, three times, one line each. ``MPIDISPATCH_BATCH=1`` sends one
task per message. ``submit``: CPU per ``add_task`` with no workers (tasks stay queued) and
the bytes each queued task holds (tracemalloc, besides the task object). ``rss``: 1,000,000
tasks in 10 rounds of 100,000; the manager's RSS after each round.
"""
import functools
import sys
import time
import tracemalloc

from mpidispatch import LocalWorker, Manager


def local(i):
    return i


def manager_with_workers():
    m = Manager(output=None)
    if not m.workers:
        for _ in range(2):
            m.add_worker(LocalWorker())
    m.wait_ready()
    return m


def rate(n):
    m = manager_with_workers()
    c = m.get_context()
    for _ in range(3):
        t = time.perf_counter()
        for i in range(n):
            c.add_task(functools.partial(abs, i))
        k = sum(1 for _ in c.get_results_unordered())
        dt = time.perf_counter() - t
        print("RATE %.0f tasks/s (%d)  mean task %.2e s" % (n / dt, k, m._engine._mean_task),
              flush=True)


def submit(n=100000):
    m = Manager(output=None)
    for label, make in (("partial(abs, i)", lambda i: functools.partial(abs, i)),
                        ("partial(script fn, i)", lambda i: functools.partial(local, i))):
        tasks = [make(i) for i in range(n)]
        c = m.get_context()
        tracemalloc.start()
        for task in tasks:
            c.add_task(task)
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        c._group.cancel_pending()
        c = m.get_context()
        t = time.process_time()
        for task in tasks:
            c.add_task(task)
        dt = time.process_time() - t
        c._group.cancel_pending()
        print("SUBMIT %-22s %.2f us/task CPU, %d bytes per queued task besides the task"
              % (label, 1e6 * dt / n, held / n))
    m.close()


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss(rounds=10, n=100000):
    m = manager_with_workers()
    c = m.get_context()
    t0 = time.perf_counter()
    first = None
    for r in range(rounds):
        for i in range(n):
            c.add_task(functools.partial(abs, i))
        assert sum(1 for _ in c.get_results_unordered()) == n
        first = first or rss_mb()
        print("ROUND %d RSS %.1f MB" % (r, rss_mb()), flush=True)
    print("RSS first round %.1f MB, end %.1f MB (%+.1f%%); %.0f tasks/s over %d"
          % (first, rss_mb(), 100 * (rss_mb() / first - 1),
             rounds * n / (time.perf_counter() - t0), rounds * n))


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "rate"
    if mode == "rate":
        rate(int(sys.argv[2]) if len(sys.argv) > 2 else 20000)
    elif mode == "submit":
        submit()
    else:
        rss()
