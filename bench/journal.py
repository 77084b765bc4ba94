"""What the run journal costs: records per second, and no-op task throughput with and without it.

    python bench/journal.py [--tasks 100000] [--repeat 3] [--mpi-tasks 20000]

1. The journal alone: per no-op task the manager makes a key from the task's pickled bytes,
   looks it up, and records queued, started and finished (with the pickled result). Shows
   the cost on the manager's thread, and the time until everything is committed.
2. A resume: looking up every task of a finished journal.
3. A stand-in for the manager loop that spends ``--loop-us`` microseconds per task (the
   engine's own cost at ~50,000 tasks/s), with and without the journal: the journal's
   thread competes with it for the interpreter lock.
4. Once the faces take ``journal=``: real no-op tasks over MPI (``mpiexec`` world, 2
   workers, the IMP ``Manager``) without the journal and with it (writer in a thread, the
   default, and in a process of its own), side by side.

Prints medians of ``--repeat`` runs. Measure on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(1, os.path.dirname(HERE))

from mpidispatch import _serialize  # noqa: E402
from mpidispatch.journal import Journal, encode_result  # noqa: E402


def payloads(n):
    """The pickled bytes of n no-op tasks (``abs(i)``), as the engine has them."""
    return [_serialize.dumps(functools.partial(abs, i))[0] for i in range(n)]


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def journal_alone(data, directory):
    """(tasks/s on the manager's thread, tasks/s until committed, manager CPU us/task,
    writer process CPU us/task, journal path)."""
    path = os.path.join(directory, "alone-%d.db" % time.monotonic_ns())
    children = children_cpu()
    j = Journal.open(path, "bench")
    cpu = time.process_time()
    t0 = time.perf_counter()
    for i, payload in enumerate(data):
        key = j.task_key(payload)
        j.lookup(key)
        j.queued(key)
        j.started(key, "worker 1", "host")
        j.finished(key, True, encode_result(i))
    t1 = time.perf_counter()
    j.close()
    t2 = time.perf_counter()
    n = len(data)
    return (n / (t1 - t0), n / (t2 - t0), (time.process_time() - cpu) / n * 1e6,
            (children_cpu() - children) / n * 1e6, path)


def resume(data, path):
    j = Journal.open(path, "bench")
    t0 = time.perf_counter()
    found = sum(1 for payload in data if j.lookup(j.task_key(payload)))
    dt = time.perf_counter() - t0
    j.close()
    assert found == len(data), found
    return len(data) / dt


def busy(us):
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def loop(data, directory, loop_us, with_journal):
    """A stand-in manager loop: ``loop_us`` of work per task, plus the journal's calls."""
    j = Journal.open(os.path.join(directory, "loop-%d.db" % time.monotonic_ns()), "bench") \
        if with_journal else None
    t0 = time.perf_counter()
    for i, payload in enumerate(data):
        busy(loop_us)
        if j is not None:
            key = j.task_key(payload)
            j.lookup(key)
            j.queued(key)
            j.started(key, "worker 1", "host")
            j.finished(key, True, encode_result(i))
    if j is not None:
        j.close()
    return len(data) / (time.perf_counter() - t0)


def faces_take_journal():
    try:
        from mpidispatch._options import Options
    except ImportError:
        from mpidispatch import Manager
        return "journal" in inspect.signature(Manager.__init__).parameters
    return "journal" in Options.__dataclass_fields__


def environment():
    """This environment plus what the MPI wheel needs for an ``mpiexec`` we start."""
    from mpidispatch import _mpienv
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        env.setdefault(key, value)
    env["PATH"] = os.path.join(_mpienv.env_prefix(), "bin") + os.pathsep + env.get("PATH", "")
    return env


def mpi_rate(n, journal, writer="thread"):
    from mpidispatch.cli import mpiexec_command
    cmd = mpiexec_command(3) + [sys.executable, os.path.join(HERE, "_journal_run.py"), str(n),
                                journal or "-"]
    env = dict(environment(), MPIDISPATCH_JOURNAL_WRITER=writer)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return tuple(float(x) for x in line.split()[1:3])
    raise RuntimeError("%s failed:\n%s\n%s" % (" ".join(cmd), out.stdout, out.stderr[-2000:]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--loop-us", type=float, default=20.0)
    p.add_argument("--mpi-tasks", type=int, default=20000)
    a = p.parse_args()
    med = statistics.median
    data = payloads(a.tasks)
    with tempfile.TemporaryDirectory(prefix="mpidispatch-bench-") as tmp:
        print("%d no-op tasks, median of %d; journal in %s" % (a.tasks, a.repeat, tmp))
        runs = [journal_alone(data, tmp) for _ in range(a.repeat)]
        loop_rate = med(r[0] for r in runs)
        print("journal alone: %9.0f tasks/s on the manager's thread (%.1f us/task: key, "
              "lookup, 3 records)" % (loop_rate, 1e6 / loop_rate))
        print("               %9.0f tasks/s until all is committed (%9.0f records/s)"
              % (med(r[1] for r in runs), 3 * med(r[1] for r in runs)))
        print("CPU per task:  %9.1f us in the manager process, %.1f us in the writer process"
              % (med(r[2] for r in runs), med(r[3] for r in runs)))
        print("resume:        %9.0f lookups/s of recorded tasks (key + read of the result)"
              % med(resume(data, runs[0][4]) for _ in range(a.repeat)))
        without = med(loop(data, tmp, a.loop_us, False) for _ in range(a.repeat))
        with_j = med(loop(data, tmp, a.loop_us, True) for _ in range(a.repeat))
        print("stand-in loop (%g us/task): %9.0f tasks/s without, %9.0f with the journal "
              "(%.0f %%)" % (a.loop_us, without, with_j, 100 * with_j / without))
        if not faces_take_journal():
            print("MPI runs: skipped (the faces do not take journal= yet)")
            return
        n = a.mpi_tasks
        rates = {"without": [], "thread": [], "process": []}
        for i in range(a.repeat):   # interleaved, so that a change of load hits all three
            rates["without"].append(mpi_rate(n, None))
            for writer in ("thread", "process"):
                rates[writer].append(mpi_rate(n, os.path.join(tmp, "mpi-%s-%d.db" % (writer, i)),
                                              writer))
        print("MPI, mpiexec world, 2 workers, %d no-op tasks (median of %d, interleaved):"
              % (n, a.repeat))
        without = med(r[0] for r in rates["without"])
        for name, runs in rates.items():
            rate = med(r[0] for r in runs)
            print("  %-28s %9.0f tasks/s (%3.0f %%)  manager CPU %5.1f us/task" % (
                "without the journal" if name == "without" else "journal, writer " + name,
                rate, 100 * rate / without, med(r[1] for r in runs)))


if __name__ == "__main__":
    main()
