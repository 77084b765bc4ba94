"""Profile the manager and worker loops: no-op tasks through a static world, cProfile per rank.

    python bench/profile_loop.py [--workers 2] [--tasks 20000] [--out DIR] [--top 25]

starts ``mpiexec -n WORKERS+1`` on itself. Every rank profiles itself from the start and
writes ``DIR/rank<N>.prof`` at exit (workers leave through ``sys.exit`` inside
``Manager()``). Then this process prints, for the manager and for each worker, the
functions with the most own time ("tottime") and the most time including callees
("cumtime"), in microseconds per task.
cProfile slows pure-Python code about 1.5-2x and shows where the time goes, not how fast
the loop is; the throughput line gives the rate under the profiler.
"""
import argparse
import atexit
import cProfile
import functools
import glob
import io
import os
import pstats
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(1, os.path.dirname(HERE))


def rank_of_this_process() -> int:
    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def report(path: str, tasks: int, top: int, title: str) -> None:
    stats = pstats.Stats(path)
    total = stats.total_tt
    print("=" * 100)
    print("%s: %.3f s profiled, %.1f us per task (all of the process's time, incl. start-up)"
          % (title, total, 1e6 * total / tasks))
    del stats
    for key, label in (("tottime", "own time"), ("cumulative", "incl. callees")):
        out = io.StringIO()
        pstats.Stats(path, stream=out).sort_stats(key).print_stats(top)
        lines = out.getvalue().splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
        print("--- top %d by %s (us/task = column / %d tasks x 1e6)" % (top, label, tasks))
        print("%10s %9s %9s  %s" % ("ncalls", "own us/t", "cum us/t", "function"))
        for line in lines[start + 1:start + 1 + top]:
            parts = line.split(None, 5)
            if len(parts) < 6:
                continue
            ncalls, tottime, _, cumtime, _, where = parts
            print("%10s %9.2f %9.2f  %s" % (ncalls, 1e6 * float(tottime) / tasks,
                                            1e6 * float(cumtime) / tasks, where[:80]))


def profile_rank(a: argparse.Namespace) -> None:
    """One rank of the profiled run (under mpiexec)."""
    path = os.path.join(a.out, "rank%d.prof" % rank_of_this_process())
    # CPU time by default: on a shared or oversubscribed machine wall time mostly measures
    # waiting for the CPU; --wall for wall-clock time.
    prof = cProfile.Profile(time.perf_counter if a.wall else time.process_time)

    def dump() -> None:
        prof.disable()
        prof.dump_stats(path)

    atexit.register(dump)
    prof.enable()
    from mpidispatch import Manager
    from mpidispatch.bench import noop
    m = Manager(output=None)          # ranks >= 1 serve in here, then exit
    c = m.get_context()
    t = time.perf_counter()
    for i in range(a.tasks):
        c.add_task(functools.partial(noop, i))
    done = sum(1 for _ in c.get_results_unordered())
    dt = time.perf_counter() - t
    assert done == a.tasks
    print("%d no-op tasks, %d static workers: %.0f tasks/s under cProfile"
          % (a.tasks, len(m.workers), a.tasks / dt), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="profile-out")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--wall", action="store_true", help="profile wall-clock time, not CPU time")
    p.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    a.out = os.path.abspath(a.out)
    if a.rank:
        profile_rank(a)
        return
    from mpidispatch.bench import _environment, _mpiexec
    os.makedirs(a.out, exist_ok=True)
    for stale in glob.glob(os.path.join(a.out, "rank*.prof")):
        os.remove(stale)
    cmd = _mpiexec(a.workers + 1) + [sys.executable, os.path.abspath(__file__), "--rank",
                                     "--tasks", str(a.tasks), "--out", a.out]
    cmd += ["--wall"] if a.wall else []
    subprocess.run(cmd, env=_environment(), timeout=600, check=True)
    report(os.path.join(a.out, "rank0.prof"), a.tasks, a.top, "manager (rank 0)")
    for r in range(1, a.workers + 1):
        path = os.path.join(a.out, "rank%d.prof" % r)
        done = tasks_run(path) or a.tasks // a.workers
        report(path, done, a.top, "worker rank %d (%d tasks)" % (r, done))


def tasks_run(path: str) -> int:
    """Tasks a worker ran: the calls of the no-op task function in its profile."""
    for (filename, _, name), row in pstats.Stats(path).stats.items():
        if name == "noop" and filename.endswith("bench.py"):
            return row[1]
    return 0


if __name__ == "__main__":
    main()
