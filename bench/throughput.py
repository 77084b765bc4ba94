"""Throughput and bandwidth of mpidispatch beside mpi4py.futures and multiprocessing.Pool.

    python bench/throughput.py [--tasks 20000] [--repeat 3]

Every contender runs in its own process tree, side by side in one run, on the same
machine: 20,000 no-op tasks, one task per message (chunksize 1), with 1 and 2 workers;
and the round trip of a 100 MB array to a worker and back against raw ``comm.Send/Recv``.
Prints the median of ``--repeat`` runs. Measure on an otherwise idle machine.
"""
import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from mpidispatch import _mpienv  # noqa: E402
from mpidispatch.cli import mpiexec_command  # noqa: E402


def environment():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([HERE, os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        env.setdefault(key, value)
    env["PATH"] = os.path.join(sys.prefix, "bin") + os.pathsep + env.get("PATH", "")
    return env


def measure(cmd):
    out = subprocess.run(cmd, env=environment(), capture_output=True, text=True, timeout=300)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return float(line.split()[1])
    raise RuntimeError("%s failed:\n%s\n%s" % (" ".join(cmd), out.stdout, out.stderr[-2000:]))


def pool_rate(workers, n):
    from _tasks import noop
    with multiprocessing.Pool(workers) as pool:
        pool.map(noop, range(10))
        t = time.perf_counter()
        count = sum(1 for _ in pool.imap_unordered(noop, range(n), chunksize=1))
        dt = time.perf_counter() - t
    assert count == n
    return n / dt


def median(fn, repeat):
    return statistics.median(fn() for _ in range(repeat))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--bytes", type=int, default=100 * 1024 * 1024)
    a = p.parse_args()
    py = sys.executable
    md = os.path.join(HERE, "_mpidispatch_run.py")
    print("MPI wheel: %s, %d cores, %d no-op tasks, one per message, median of %d"
          % (_mpienv.backend(), os.cpu_count(), a.tasks, a.repeat))
    print("%-44s %12s %12s" % ("tasks per second", "1 worker", "2 workers"))
    rows = [
        ("mpidispatch, mpiexec world", lambda w: mpiexec_command(w + 1) + [py, md, "tasks", str(a.tasks), "0"]),
        ("mpidispatch, spawned workers", lambda w: [py, md, "tasks", str(a.tasks), str(w)]),
        ("mpi4py.futures MPIPoolExecutor (-m mpi4py.futures)",
         lambda w: mpiexec_command(w + 1) + [py, "-m", "mpi4py.futures",
                                             os.path.join(HERE, "_futures_run.py"), str(min(a.tasks, 5000))]),
    ]
    for name, cmd in rows:
        rates = [median(lambda: measure(cmd(w)), a.repeat) for w in (1, 2)]
        print("%-44s %12.0f %12.0f" % (name, rates[0], rates[1]))
    rates = [median(lambda: pool_rate(w, a.tasks), a.repeat) for w in (1, 2)]
    print("%-44s %12.0f %12.0f" % ("multiprocessing.Pool (imap_unordered)", rates[0], rates[1]))
    mb = a.bytes / 1e6
    print("\n%.0f MB float64 array to a worker and back (best of 3 round trips, seconds)" % mb)
    t_md = measure(mpiexec_command(2) + [py, md, "bigarray", str(a.bytes), "0"])
    t_sp = measure([py, md, "bigarray", str(a.bytes), "1"])
    t_raw = measure(mpiexec_command(2) + [py, os.path.join(HERE, "_raw_run.py"), str(a.bytes)])
    print("%-44s %10.3f" % ("mpidispatch task, mpiexec world", t_md))
    print("%-44s %10.3f" % ("mpidispatch task, spawned worker (TCP)", t_sp))
    print("%-44s %10.3f" % ("raw comm.Send/Recv, mpiexec world", t_raw))


if __name__ == "__main__":
    main()
