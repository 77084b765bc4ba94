"""Measure mpidispatch beside its peers here: ``python -m mpidispatch.bench``.

Two modes:

* the comparison table (default): no-op tasks per second with ``--workers`` workers, one task
  per message, for mpidispatch (``mpiexec`` world, spawned workers, ``MPIExecutor.map`` with
  ``chunksize=100``), ``mpi4py.futures`` (chunksize 1 and 100), ``multiprocessing.Pool`` and a
  bare mpi4py send/recv loop; then the round trip of a ``--bytes`` array (100 MB) through
  mpidispatch against raw ``comm.Send``/``Recv``;
* ``--scaling``: how the cost grows with workers (1, 2, 4, ... ``--max-workers``) and with the
  task (no-op, 1 ms, 10 ms, 1 MB and 100 MB arguments), printed as a table and drawn as
  ``--plot`` (a PNG; needs matplotlib: ``pip install 'mpidispatch[bench]'``).

Every measurement runs in its own process tree (an ``mpiexec`` or a singleton that spawns),
through the public API only, and reports the median of ``--repeat`` timed runs. Each process
tree is killed if it outlives ``--timeout`` seconds. Figures on a shared or oversubscribed
machine are noisy: compare rows of one run, not runs of different days.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

#: Task kinds of the scaling mode: name -> (seconds of sleep, bytes of argument).
KINDS = {"no-op": (0.0, 0), "1 ms": (0.001, 0), "10 ms": (0.01, 0),
         "1 MB arg": (0.0, 10 ** 6), "100 MB arg": (0.0, 10 ** 8)}
#: Largest worker count at which the 100 MB kind runs (each worker holds up to 2 arrays).
BIG_KIND_MAX_WORKERS = 16


# --------------------------------------------------------------------------- task functions
# Importable by name (mpidispatch.bench.noop), so every contender pickles them by reference.

def noop(i: Any) -> Any:
    """The no-op task: returns its argument."""
    return i


def echo(x: Any) -> Any:
    """Returns its argument (a big array travels there and back)."""
    return x


def nbytes(x: Any) -> int:
    """Returns the size of its argument (a big array travels one way)."""
    return int(x.nbytes)


def sleep_task(seconds: float) -> float:
    """Sleeps (a task that takes time without using the CPU)."""
    time.sleep(seconds)
    return seconds


# --------------------------------------------------------------------------- helpers

def _mpi():
    from ._mpienv import mpi
    return mpi()


def _report(**values: Any) -> None:
    """Print the one line the parent process reads."""
    print("RESULT " + json.dumps(values), flush=True)


def _median_rate(run: Callable[[], int], repeat: int) -> float:
    """Median tasks per second of ``repeat`` calls of ``run`` (which returns tasks done)."""
    rates = []
    for _ in range(repeat):
        t = time.perf_counter()
        n = run()
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def _world_info() -> Dict[str, Any]:
    """MPI library, world size and host count (collective over COMM_WORLD: call on all ranks)."""
    MPI = _mpi()
    hosts = MPI.COMM_WORLD.allgather(MPI.Get_processor_name())
    version = MPI.Get_library_version().replace("\x00", "").strip()
    return {"library": " ".join(version.splitlines()[0].split()),
            "hosts": len(set(hosts)), "ranks": MPI.COMM_WORLD.Get_size()}


def _array(nbytes_: int):
    import numpy
    return numpy.random.default_rng(0).random(max(nbytes_ // 8, 1))


# --------------------------------------------------------------------------- contenders
# Each runs as ``python -m mpidispatch.bench --child NAME ...`` (under mpiexec or not) and
# prints one RESULT line from rank 0 / the singleton.

def child_mpidispatch(a: argparse.Namespace) -> None:
    """No-op tasks through Manager/Context (``--batch 1``: one task per message; default:
    automatic batching); static world or spawned."""
    from . import LocalWorker, Manager
    info = _world_info()
    m = Manager(output=None, batch=a.batch)
    for _ in range(a.spawn):
        m.add_worker(LocalWorker())
    c = m.get_context()
    for i in range(2 * max(a.spawn, info["ranks"] - 1)):
        c.add_task(functools.partial(noop, i))
    list(c.get_results_unordered())   # workers up and warm

    def run() -> int:
        for i in range(a.tasks):
            c.add_task(functools.partial(noop, i))
        return sum(1 for _ in c.get_results_unordered())
    rate = _median_rate(run, a.repeat)
    workers = len([w for w in m.workers])
    _report(rate=rate, workers=workers, **info)


def child_executor(a: argparse.Namespace) -> None:
    """No-op calls through ``MPIExecutor.map(chunksize=...)``."""
    from . import MPIExecutor
    info = _world_info()
    with MPIExecutor(max_workers=a.spawn or None, output=None) as ex:
        list(ex.map(noop, range(100)))

        def run() -> int:
            return sum(1 for _ in ex.map(noop, range(a.tasks), chunksize=a.chunksize))
        rate = _median_rate(run, a.repeat)
    _report(rate=rate, **info)


def child_futures(a: argparse.Namespace) -> None:
    """``mpi4py.futures.MPIPoolExecutor.map`` (run under ``-m mpi4py.futures``)."""
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as ex:
        list(ex.map(noop, range(10)))

        def run() -> int:
            return sum(1 for _ in ex.map(noop, range(a.tasks), chunksize=a.chunksize))
        rate = _median_rate(run, a.repeat)
    _report(rate=rate)


def child_pool(a: argparse.Namespace) -> None:
    """``multiprocessing.Pool.imap_unordered``, chunksize 1."""
    import multiprocessing
    with multiprocessing.Pool(a.workers) as pool:
        pool.map(noop, range(10))

        def run() -> int:
            return sum(1 for _ in pool.imap_unordered(noop, range(a.tasks), chunksize=1))
        rate = _median_rate(run, a.repeat)
    _report(rate=rate)


def child_raw_loop(a: argparse.Namespace) -> None:
    """A bare mpi4py task loop: pickled ``(fn, i)`` by send/recv, one in flight per worker."""
    MPI = _mpi()
    comm = MPI.COMM_WORLD
    if comm.Get_rank() != 0:
        while True:
            task = comm.recv(source=0, tag=1)
            if task is None:
                return
            fn, arg = task
            comm.send(fn(arg), dest=0, tag=2)
    workers = comm.Get_size() - 1
    status = MPI.Status()

    def run() -> int:
        sent = 0
        for w in range(1, workers + 1):
            comm.send((noop, sent), dest=w, tag=1)
            sent += 1
        for _ in range(a.tasks):
            comm.recv(source=MPI.ANY_SOURCE, tag=2, status=status)
            if sent < a.tasks:
                comm.send((noop, sent), dest=status.Get_source(), tag=1)
                sent += 1
        return a.tasks
    a.tasks = max(a.tasks, workers)
    rate = _median_rate(run, a.repeat)
    for w in range(1, workers + 1):
        comm.send(None, dest=w, tag=1)
    _report(rate=rate)


def child_big_mpidispatch(a: argparse.Namespace) -> None:
    """Round trip of one ``--bytes`` array through a task (static world or spawned)."""
    import numpy
    from . import LocalWorker, Manager
    _world_info()
    m = Manager(output=None)
    for _ in range(a.spawn):
        m.add_worker(LocalWorker())
    c = m.get_context()
    x = _array(a.bytes)
    times = []
    for i in range(a.repeat + 1):      # the first round trip warms up
        t = time.perf_counter()
        c.add_task(functools.partial(echo, x))
        (y,) = c.get_results()
        if i:
            times.append(time.perf_counter() - t)
    assert numpy.array_equal(x, y)
    _report(seconds=statistics.median(times))


def child_big_raw(a: argparse.Namespace) -> None:
    """Raw ``Send``/``Recv`` round trip of the array; ``--fresh``: a new receive buffer each time.

    Static: ranks 0 and 1 of COMM_WORLD. Spawned (``--spawn 1``): the singleton spawns the
    peer (``--child big-raw-peer``) and they talk over the intercommunicator.
    """
    import numpy
    MPI = _mpi()
    if a.child == "big-raw-peer":
        comm, peer, first = MPI.Comm.Get_parent(), 0, False
    elif a.spawn:
        args = ["-m", "mpidispatch.bench", "--child", "big-raw-peer", "--bytes", str(a.bytes),
                "--repeat", str(a.repeat)] + (["--fresh"] if a.fresh else [])
        comm = MPI.COMM_SELF.Spawn(sys.executable, args, maxprocs=1)
        peer, first = 0, True
    else:
        comm = MPI.COMM_WORLD
        peer, first = 1 - comm.Get_rank(), comm.Get_rank() == 0
    x = _array(a.bytes)
    y = numpy.empty_like(x)
    times = []
    for i in range(a.repeat + 1):
        if a.fresh:
            y = numpy.empty_like(x)
        t = time.perf_counter()
        if first:
            comm.Send(x, dest=peer)
            comm.Recv(y, source=peer)
        else:
            comm.Recv(y, source=peer)
            comm.Send(y, dest=peer)
        if i:
            times.append(time.perf_counter() - t)
    if comm is not MPI.COMM_WORLD:
        comm.Disconnect()
    if first:
        assert numpy.array_equal(x, y)
        _report(seconds=statistics.median(times))


def child_scale(a: argparse.Namespace) -> None:
    """Every task kind through Manager/Context on the static world's workers."""
    from . import Manager
    info = _world_info()
    m = Manager(output=None)
    c = m.get_context()
    workers = info["ranks"] - 1
    for i in range(2 * workers):
        c.add_task(functools.partial(noop, i))
    list(c.get_results_unordered())
    out: Dict[str, Any] = {}
    for kind in a.kinds.split(","):
        seconds, size = KINDS[kind]
        if size >= 10 ** 8 and workers > BIG_KIND_MAX_WORKERS:
            continue
        if size:
            x = _array(size)
            task: Callable[..., Any] = functools.partial(_const_task, nbytes, x)
            n = max(2 * workers, 4) if size >= 10 ** 8 else max(200, 4 * workers)
        elif seconds:
            task = functools.partial(_const_task, sleep_task, seconds)
            n = max(int(round(a.seconds * workers / seconds)), 4 * workers)
        else:
            task = lambda i: functools.partial(noop, i)  # noqa: E731
            n = a.tasks

        def run(n: int = n, task: Callable[[int], Any] = task) -> int:
            for i in range(n):
                c.add_task(task(i))
            return sum(1 for _ in c.get_results_unordered())
        rate = _median_rate(run, 1 if size >= 10 ** 8 else a.repeat)
        out[kind] = {"rate": rate, "tasks": n,
                     "efficiency": rate * seconds / workers if seconds else None}
    _report(workers=workers, kinds=out, **info)


def child_info(a: argparse.Namespace) -> None:
    """The MPI library and the host count of the world it runs in."""
    info = _world_info()
    if _mpi().COMM_WORLD.Get_rank() == 0:
        _report(**info)


CHILDREN = {"info": child_info, "mpidispatch": child_mpidispatch, "executor": child_executor,
            "futures": child_futures, "pool": child_pool, "raw-loop": child_raw_loop,
            "big-mpidispatch": child_big_mpidispatch, "big-raw": child_big_raw,
            "big-raw-peer": child_big_raw, "scale": child_scale}


# --------------------------------------------------------------------------- the parent

def _environment() -> Dict[str, str]:
    """This environment plus what the MPI wheel needs for an ``mpiexec`` we start."""
    from . import _mpienv
    env = dict(os.environ)
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        env.setdefault(key, value)
    bindir = os.path.join(_mpienv.env_prefix(), "bin")
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def _mpiexec(nprocs: int) -> List[str]:
    from .cli import mpiexec_command
    return mpiexec_command(nprocs)


class Runner:
    """Starts children and reads their RESULT line; a failed or hung child is reported."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.env = _environment()

    def child(self, name: str, *extra: str, mpiexec: int = 0, futures: bool = False,
              timeout: Optional[float] = None) -> Optional[Dict[str, Any]]:
        a = self.args
        cmd = [sys.executable]
        if futures:
            cmd += ["-m", "mpi4py.futures"]
        cmd += ["-m", "mpidispatch.bench", "--child", name, "--tasks", str(a.tasks),
                "--repeat", str(a.repeat), "--workers", str(a.workers)] + list(extra)
        if mpiexec:
            cmd = _mpiexec(mpiexec) + cmd
        timeout = timeout or a.timeout
        proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                                start_new_session=True, cwd=self._scratch())
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            out, err = proc.communicate()
            err += "\n(killed after %g s; raise --timeout)" % timeout
        _kill_group(proc)   # anything the child left behind in its session
        for line in out.splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[7:])
        sys.stderr.write("--- %s failed (exit %s): %s\n%s\n" % (
            name, proc.returncode, " ".join(cmd), err.strip()[-1500:]))
        return None

    def _scratch(self) -> str:
        """A directory for the children's files (worker logs, if any); removed by close()."""
        if not hasattr(self, "_dir"):
            import tempfile
            self._dir = tempfile.mkdtemp(prefix="mpidispatch-bench-")
        return self._dir

    def close(self) -> None:
        if hasattr(self, "_dir"):
            import shutil
            shutil.rmtree(self._dir, ignore_errors=True)
            del self._dir


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _fmt_rate(r: Optional[Dict[str, Any]], key: str = "rate") -> str:
    return "failed" if r is None else "{:,.0f}".format(r[key])


def _header(runner: Runner, first: Optional[Dict[str, Any]]) -> str:
    import mpi4py
    from . import __version__, _mpienv
    lib = first["library"] if first else "?"
    hosts = first["hosts"] if first else "?"
    return ("mpidispatch %s, mpi4py %s, Python %s, MPI wheel: %s\nMPI library: %s\n"
            "hosts: %s, cores on this host: %d, load average now: %.1f, %s" % (
                __version__, mpi4py.__version__, platform.python_version(), _mpienv.backend(),
                lib, hosts, os.cpu_count() or 0, os.getloadavg()[0], platform.platform()))


def run_table(a: argparse.Namespace, r: Runner) -> int:
    """The comparison table."""
    print(_header(r, r.child("info", mpiexec=a.workers + 1)), flush=True)
    if a.only != "bytes":
        _task_rows(r, a)
    if a.bytes and a.only != "tasks":
        _byte_rows(r, a)
    return 0


def _task_rows(r: Runner, a: argparse.Namespace) -> None:
    w = a.workers
    few = str(min(a.tasks, a.futures_tasks))
    many = str(10 * a.tasks)  # chunked rows: enough tasks to time
    print("\n%d workers, no-op tasks (%d per timed run; chunksize 100: %s; mpi4py.futures "
          "chunksize 1: %s), median of %d runs\n" % (w, a.tasks, many, few, a.repeat))
    rows = [("mpidispatch Manager, mpiexec world, 1 task/message",
             r.child("mpidispatch", "--batch", "1", mpiexec=w + 1)),
            ("mpidispatch Manager, spawned workers, 1 task/message",
             r.child("mpidispatch", "--spawn", str(w), "--batch", "1")),
            ("mpidispatch Manager, mpiexec world, automatic batches",
             r.child("mpidispatch", mpiexec=w + 1)),
            ("mpidispatch Manager, spawned workers, automatic batches",
             r.child("mpidispatch", "--spawn", str(w))),
            ("mpidispatch MPIExecutor.map(chunksize=100)",
             r.child("executor", "--chunksize", "100", "--tasks", many, mpiexec=w + 1)),
            ("mpi4py.futures map(chunksize=1)",
             r.child("futures", "--chunksize", "1", "--tasks", few, mpiexec=w + 1,
                     futures=True)),
            ("mpi4py.futures map(chunksize=100)",
             r.child("futures", "--chunksize", "100", "--tasks", many, mpiexec=w + 1,
                     futures=True)),
            ("multiprocessing.Pool imap_unordered(chunksize=1)", r.child("pool")),
            ("raw mpi4py send/recv loop (1 in flight/worker)",
             r.child("raw-loop", mpiexec=w + 1))]
    ref1, ref100 = rows[5][1], rows[6][1]
    print("| %-56s | %12s | %16s |" % ("tasks per second", "", "x mpi4py.futures"))
    print("|%s|%s|%s|" % ("-" * 58, "-" * 14, "-" * 18))
    for name, res in rows:
        ref = ref100 if "100" in name else ref1
        ratio = "%.1f" % (res["rate"] / ref["rate"]) if res and ref else ""
        print("| %-56s | %12s | %16s |" % (name, _fmt_rate(res), ratio))


def _byte_rows(r: Runner, a: argparse.Namespace) -> None:
    mb = a.bytes / 1e6
    print("\n%.0f MB float64 array to a worker and back (seconds, median of %d)\n"
          % (mb, a.repeat))
    b = str(a.bytes)
    big = [("mpidispatch task, mpiexec world",
            r.child("big-mpidispatch", "--bytes", b, mpiexec=2)),
           ("mpidispatch task, spawned worker",
            r.child("big-mpidispatch", "--bytes", b, "--spawn", "1")),
           ("raw Send/Recv, mpiexec world", r.child("big-raw", "--bytes", b, mpiexec=2)),
           ("raw Send/Recv, mpiexec world, new receive buffer",
            r.child("big-raw", "--bytes", b, "--fresh", mpiexec=2)),
           ("raw Send/Recv, spawned peer", r.child("big-raw", "--bytes", b, "--spawn", "1")),
           ("raw Send/Recv, spawned peer, new receive buffer",
            r.child("big-raw", "--bytes", b, "--spawn", "1", "--fresh"))]
    print("| %-50s | %10s |" % ("round trip", "seconds"))
    print("|%s|%s|" % ("-" * 52, "-" * 12))
    for name, res in big:
        print("| %-50s | %10s |" % (name, "failed" if res is None
                                    else "%.4f" % res["seconds"]))


def worker_counts(top: int) -> List[int]:
    """1, 2, 4, ... up to ``top`` (``top`` itself included)."""
    counts, w = [], 1
    while w < top:
        counts.append(w)
        w *= 2
    return counts + [top]


def run_scaling(a: argparse.Namespace, r: Runner) -> int:
    """Tasks per second by worker count and task kind; optionally a plot."""
    load = os.getloadavg()[0]
    kinds = a.kinds.split(",")
    results: Dict[int, Dict[str, Any]] = {}
    first = None
    for w in worker_counts(a.max_workers):
        res = r.child("scale", "--kinds", a.kinds, "--seconds", str(a.seconds),
                      mpiexec=w + 1, timeout=a.timeout + 2 * w)
        if res is not None:
            first = first or res
            results[w] = res["kinds"]
        print("workers %4d: %s" % (w, "failed" if res is None else ", ".join(
            "%s %s/s" % (k, _fmt_rate(v)) for k, v in res["kinds"].items())), flush=True)
    print()
    print(_header(r, first))
    print("\ntasks per second (median of %d runs; 100 MB: one run, at most %d workers); "
          "sleep tasks: efficiency = measured / ideal throughput\n"
          % (a.repeat, BIG_KIND_MAX_WORKERS))
    print("| workers | " + " | ".join("%12s" % k for k in kinds) + " |")
    print("|---------|" + "|".join("-" * 14 for _ in kinds) + "|")
    for w, by_kind in results.items():
        cells = []
        for k in kinds:
            v = by_kind.get(k)
            if v is None:
                cells.append("%12s" % "-")
            elif v["efficiency"] is not None:
                cells.append("%12s" % ("{:,.0f} ({:.0%})".format(v["rate"], v["efficiency"])))
            else:
                cells.append("%12s" % "{:,.0f}".format(v["rate"]))
        print("| %7d | " % w + " | ".join(cells) + " |")
    if a.plot:
        lib = first["library"].split(",")[0] if first else "?"
        plot(results, kinds, a.plot, "mpidispatch, %s, %s host(s), %d cores (load average %.0f), "
             "Manager/Context on an mpiexec world" % (
                 lib, first["hosts"] if first else "?", os.cpu_count() or 0, load))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"header": _header(r, first), "results": results}, f, indent=1)
    return 0


def plot(results: Dict[int, Dict[str, Any]], kinds: Sequence[str], path: str,
         title: str) -> None:
    """Draw tasks/s and sleep-task efficiency against workers into ``path``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no plot: matplotlib is not installed; pip install 'mpidispatch[bench]')")
        return
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    workers = sorted(results)
    for k in kinds:
        xs = [w for w in workers if k in results[w]]
        if xs:
            left.plot(xs, [results[w][k]["rate"] for w in xs], marker="o", label=k)
        if xs and KINDS[k][0]:
            right.plot(xs, [100 * results[w][k]["efficiency"] for w in xs], marker="o",
                       label=k)
    left.set(xscale="log", yscale="log", xlabel="workers", ylabel="tasks per second",
             title="throughput by task kind")
    right.set(xscale="log", xlabel="workers", ylabel="% of ideal throughput",
              title="sleep tasks: measured / ideal", ylim=(0, 105))
    for ax in (left, right):
        ax.minorticks_off()
        ax.set_xticks(workers)
        ax.set_xticklabels([str(w) for w in workers])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print("plot written to %s" % path)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mpidispatch.bench",
        description="Compare mpidispatch with mpi4py.futures, multiprocessing.Pool and raw "
                    "mpi4py on this machine; or (--scaling) measure how it scales.")
    p.add_argument("--tasks", type=int, default=20000,
                   help="no-op tasks per timed run (default: %(default)s)")
    p.add_argument("--futures-tasks", type=int, default=5000,
                   help="no-op tasks per timed run for mpi4py.futures at chunksize 1, which is "
                        "slow (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="workers (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed runs per measurement; the median is shown (default: %(default)s)")
    p.add_argument("--bytes", type=int, default=100 * 10 ** 6,
                   help="array size of the round-trip rows, 0 to skip (default: %(default)s)")
    p.add_argument("--only", choices=("all", "tasks", "bytes"), default="all",
                   help="the table: only the task rows or only the round-trip rows")
    p.add_argument("--timeout", type=float, default=300,
                   help="seconds after which a measurement is killed (default: %(default)s)")
    p.add_argument("--scaling", action="store_true",
                   help="measure by worker count and task kind instead of the table")
    p.add_argument("--max-workers", type=int, default=16,
                   help="--scaling: largest worker count (default: %(default)s; try 128)")
    p.add_argument("--kinds", default=",".join(KINDS),
                   help="--scaling: task kinds, comma-separated (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=0.5,
                   help="--scaling: ideal duration of a sleep-task run (default: %(default)s)")
    p.add_argument("--plot", default="mpidispatch-scaling.png",
                   help="--scaling: PNG to write, '' for none (default: %(default)s)")
    p.add_argument("--json", default="", help="--scaling: also write the figures as JSON here")
    p.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    p.add_argument("--spawn", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--chunksize", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--fresh", action="store_true", help=argparse.SUPPRESS)
    return p


def _const_task(fn: Callable[..., Any], arg: Any, i: int) -> Any:
    """Task ``i`` of a scaling run: the same ``fn(arg)`` each time."""
    return functools.partial(fn, arg)


def main(argv: Optional[Sequence[str]] = None) -> int:
    a = parser().parse_args(argv)
    if a.child:
        CHILDREN[a.child](a)
        return 0
    bad = [k for k in a.kinds.split(",") if k not in KINDS]
    if bad:
        parser().error("unknown task kind(s) %s; choose from: %s" % (bad, ", ".join(KINDS)))
    if a.workers < 1 or a.max_workers < 1 or a.tasks < 1 or a.repeat < 1:
        parser().error("--workers, --max-workers, --tasks and --repeat must be >= 1")
    runner = Runner(a)
    try:
        return run_scaling(a, runner) if a.scaling else run_table(a, runner)
    finally:
        runner.close()


if __name__ == "__main__":
    # Run the copy imported by name, so the task functions pickle as mpidispatch.bench.*
    from mpidispatch.bench import main as _main
    sys.exit(_main())
