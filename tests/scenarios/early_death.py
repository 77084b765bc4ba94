"""A manager killed after its workers were spawned but before it welcomed them.

Usage: python early_death.py. Spawns 2 workers (without running the loop that would receive
their hello and send the welcome), waits until their processes run, prints WORKER_PIDS and
SIGKILLs itself. The workers must notice and end (tests/test_faults.py).
"""
import os
import signal
import time

from mpidispatch import LocalWorker, Manager

m = Manager(output=os.path.join(os.getcwd(), "early%d.log"))
for _ in range(2):
    m.add_worker(LocalWorker())
engine = m._engine
engine._start_new()   # spawn now; the loop (hello, welcome) never runs


def worker_pids():
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                args = f.read().split(b"\0")
        except OSError:
            continue
        if args[0] != b"/bin/sh" and b"spawned_main()" in b" ".join(args) and any(
                a.startswith(os.getcwd().encode()) and b"early" in a for a in args):
            found.append(int(pid))
    return found


deadline = time.monotonic() + 60
while len(worker_pids()) < 2 and time.monotonic() < deadline:
    time.sleep(0.05)
print("WORKER_PIDS", " ".join(map(str, worker_pids())), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
