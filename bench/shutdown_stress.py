"""Stress the executor's shutdown path (issue 9 point 7: a segfault in Comm.Disconnect from a
second thread, once in 5 runs of a test sequence).

    python bench/shutdown_stress.py [--processes 20] [--per-process 10]

Each child process creates an ``MPIExecutor`` with 2 spawned workers, runs a few tasks and
shuts it down, ``--per-process`` times; a crash (signal, non-zero exit) or a hang (timeout)
counts as a failure. Prints the counts.
"""
import argparse
import os
import subprocess
import sys
import time

CHILD = r"""
import sys
from mpidispatch import MPIExecutor
for i in range(int(sys.argv[1])):
    with MPIExecutor(max_workers=2) as ex:
        assert sum(ex.map(abs, range(-20, 20))) == 400
    ex2 = MPIExecutor(max_workers=1)
    ex2.submit(abs, -1).result(60)
    ex2.shutdown(wait=(i % 2 == 0), cancel_futures=bool(i % 3))
print("OK")
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--processes", type=int, default=20)
    p.add_argument("--per-process", type=int, default=10)
    a = p.parse_args()
    crashes = hangs = 0
    started = time.monotonic()
    for _ in range(a.processes):
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(a.per_process)],
                                  capture_output=True, text=True, timeout=300,
                                  cwd=os.environ.get("TMPDIR", "/tmp"))
            if proc.returncode != 0 or "OK" not in proc.stdout:
                crashes += 1
                sys.stderr.write(proc.stderr[-2000:])
        except subprocess.TimeoutExpired:
            hangs += 1
    total = a.processes * a.per_process
    print("shutdowns: %d (x2 executors each) in %.0f s; crashed processes: %d; hung: %d"
          % (total, time.monotonic() - started, crashes, hangs))
    return 1 if crashes or hangs else 0


if __name__ == "__main__":
    sys.exit(main())
