"""Time from manager start until N spawned workers are ready (issue 13: start-up).

    python bench/startup.py [--workers 64] [--repeat 1] [--tasks 0]

Runs a singleton manager (``Manager()`` with ``N x LocalWorker()``) in a fresh process per
repeat and prints the seconds from ``Manager()`` until ``wait_ready()`` returns with every
worker ready, then (``--tasks``) the time to run that many no-op tasks, and the time to
close. Oversubscribed on purpose: the wheel's settings (mpidispatch's environment) let Open
MPI place more processes than cores. With the MPICH wheel run it as is (a singleton).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def child(workers: int, tasks: int) -> None:
    sys.path.insert(0, ROOT)
    t0 = time.monotonic()
    from mpidispatch import LocalWorker, Manager
    out = tempfile.mkdtemp(prefix="mpidispatch-startup-")
    m = Manager(output=os.path.join(out, "worker%d.log"))
    for _ in range(workers):
        m.add_worker(LocalWorker())
    ready = m.wait_ready()
    t_ready = time.monotonic() - t0
    t1 = time.monotonic()
    if tasks:
        c = m.get_context()
        for i in range(tasks):
            c.add_task(os.getpid)
        list(c.get_results_unordered())
    t_tasks = time.monotonic() - t1
    t2 = time.monotonic()
    m.close()
    t_close = time.monotonic() - t2
    print(json.dumps({"ready": ready, "start": t_ready, "tasks": t_tasks,
                      "close": t_close}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--tasks", type=int, default=0, help="no-op tasks to run once ready")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.workers, args.tasks)
        return
    figures = []
    for _ in range(args.repeat):
        proc = subprocess.run([sys.executable, __file__, "--child", "--workers",
                               str(args.workers), "--tasks", str(args.tasks)],
                              capture_output=True, text=True, timeout=args.timeout,
                              start_new_session=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            print("run failed (exit status %s):\n%s" % (proc.returncode, proc.stderr[-3000:]))
            sys.exit(1)
        got = json.loads(lines[-1])
        figures.append(got)
        print("%d workers ready: %d in %.2f s; %d tasks %.2f s; close %.2f s"
              % (args.workers, got["ready"], got["start"], args.tasks, got["tasks"],
                 got["close"]), flush=True)
    if len(figures) > 1:
        print("median start: %.2f s" % statistics.median(f["start"] for f in figures))


if __name__ == "__main__":
    main()
