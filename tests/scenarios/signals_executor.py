"""An MPIExecutor whose workers are busy with long tasks; tests signal the main thread.

Usage: python signals_executor.py MARKS NWORKERS. Marks as in signals_loop.py.
"""
import os
import sys
import time

from mpidispatch import MPIExecutor

MARKS, NWORKERS = sys.argv[1], int(sys.argv[2])


def mark(line):
    with open(MARKS, "a") as f:
        f.write(line + "\n")


def task(marks):
    with open(marks, "a") as f:
        f.write("RUNNING %d\n" % os.getpid())
    time.sleep(300)


try:
    with MPIExecutor(max_workers=NWORKERS) as ex:
        futures = [ex.submit(task, MARKS) for _ in range(2 * NWORKERS)]
        mark("STARTED %d" % os.getpid())
        for f in futures:
            f.result()
except BaseException as exc:
    mark("CAUGHT %s" % type(exc).__name__)
    raise
finally:
    mark("FINALLY")
