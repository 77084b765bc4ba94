"""A manager whose workers are busy with long tasks, waiting for results; tests signal it.

Usage: python signals_loop.py MARKS NWORKERS [children|quick]

Writes lines to the file MARKS (stdout may be lost with the launcher): ``STARTED pid``, one
``RUNNING pid`` per task that started, ``CHILD pid`` for each process a task started,
``CAUGHT name`` for the exception the loop got, ``FINALLY seconds`` (from the signal to the
finally block). ``children``: each task also starts ``sleep 300`` and forks a sleeping
copy of itself. ``quick``: the tasks end at once and the script ends normally.
"""
import os
import subprocess
import sys
import time

from mpidispatch import LocalWorker, Manager

MARKS, NWORKERS = sys.argv[1], int(sys.argv[2])
MODE = sys.argv[3] if len(sys.argv) > 3 else ""


def mark(line):
    with open(MARKS, "a") as f:
        f.write(line + "\n")


class Task:
    def __init__(self, marks, mode):
        self.marks, self.mode = marks, mode

    def __call__(self):
        def note(line):
            with open(self.marks, "a") as f:
                f.write(line + "\n")
        note("RUNNING %d" % os.getpid())
        if self.mode in ("children", "quick"):
            child = subprocess.Popen(["sleep", "300"])
            note("CHILD %d" % child.pid)
            pid = os.fork()
            if pid == 0:
                time.sleep(300)
                os._exit(0)
            note("CHILD %d" % pid)
        if self.mode != "quick":
            time.sleep(300)
        return os.getpid()


# prefetch=1: with Open MPI's static world a second task sent to a busy rank blocks the
# manager inside MPI (issue 9 point 1), where no Python signal handler can run.
m = Manager(prefetch=1)
if not m.workers:
    for _ in range(NWORKERS):
        m.add_worker(LocalWorker())
c = m.get_context()
for _ in range(0 if MODE == "idle" else max(NWORKERS, len(m.workers)) * 2):
    c.add_task(Task(MARKS, MODE))
mark("STARTED %d" % os.getpid())
try:
    if MODE == "idle":
        time.sleep(300)
    for pid in c.get_results_unordered():
        pass
    mark("DONE")
except BaseException as exc:
    mark("CAUGHT %s" % type(exc).__name__)
    if type(exc).__name__ == "Terminated":
        mark("CODE %s" % exc.code)
    raise
finally:
    mark("FINALLY")
