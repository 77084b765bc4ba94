"""Faults across hosts. Usage: faults.py MODE NTASKS [ft]

MODE: ``kill`` (SIGKILL a busy worker on the victim host), ``stop`` (SIGSTOP it: only the
heartbeat can find it), ``nodeloss`` (SIGKILL every process on the victim host), ``netcut``
(take the victim host's network down until the manager has
given up on its busy workers, then bring it back), ``gil`` (no fault: every task holds
Python's lock for $HOLD seconds, longer than the heartbeat timeout). The victim host is
$VICTIM_HOST (default h2); the fault is injected once a quarter of the results are in, on a
worker that holds tasks, through the rig's fake ssh ($MULTIHOST_AGENT) or ``ip -n HOST`` for
the network.
$SPAWN_HOSTS (e.g. "h1 h2 h2"): spawn one LocalWorker per host name instead of using a world;
$HOST_ARRAY (e.g. "h1:2,h2:2"): a HostWorkerArray, launched with the fake ssh.
Prints KEY value lines: EXACTLY_ONCE, RESULTS (JSON [task, host]), LOST, DETECT seconds from
fault to the manager's verdict, VICTIM (host pid), ERRORS.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

from mpidispatch import Error, LocalWorker, Manager, NoMoreWorkersError

MODE, N = sys.argv[1], int(sys.argv[2])
FT = "ft" in sys.argv[3:]
VICTIM_HOST = os.environ.get("VICTIM_HOST", "h2")
AGENT = os.environ["MULTIHOST_AGENT"]


class Where:
    def __init__(self, i):
        self.i = i

    def __call__(self):
        time.sleep(0.05)
        return self.i, socket.gethostname()


class HoldsTheLock(Where):
    """``gil`` mode: one C call that keeps Python's lock (ctypes.PyDLL) for $HOLD seconds,
    longer than the heartbeat timeout: the worker's heartbeat thread starves."""

    def __call__(self):
        import ctypes
        ctypes.PyDLL(None).sleep(int(os.environ["HOLD"]))
        return self.i, socket.gethostname()


m = Manager(fault_tolerant=FT, max_retries=3)
for host in os.environ.get("SPAWN_HOSTS", "").split():   # spawned workers instead of a world
    m.add_worker(LocalWorker(host=host))
if os.environ.get("HOST_ARRAY"):                           # workers that join, per host
    from mpidispatch.launch.host_arrays import HostWorkerArray
    m.add_worker(HostWorkerArray(os.environ["HOST_ARRAY"], launcher=AGENT,
                                 host=socket.gethostname()))
engine = m._engine
c = m.get_context()
got = {}
fault = {}


def wait_for(condition, limit):
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _comm(pid):
    try:
        with open("/proc/%s/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def victims():
    return [w for w in list(engine.workers) if w.host == VICTIM_HOST]


def inject():
    def busy():
        return [w for w in victims() if w.state == "ready" and w.inflight and w.pid]

    if not wait_for(lambda: len(got) >= N // 4 and busy(), 30):
        fault["error"] = "no busy worker on %s" % VICTIM_HOST
        return
    w = busy()[0]
    fault["victim"] = "%s %d" % (w.host, w.pid)
    fault["worker"] = w
    fault["time"] = time.monotonic()
    if MODE in ("kill", "stop"):
        sig = "KILL" if MODE == "kill" else "STOP"
        subprocess.run([AGENT, VICTIM_HOST, "kill -%s %d" % (sig, w.pid)], check=True,
                       timeout=10)
    elif MODE == "nodeloss":
        # every process of the host: its launcher daemon and its workers (but the daemons of
        # the test Slurm and Grid Engine, which other tests need)
        pids = [p for p in subprocess.run(["ip", "netns", "pids", VICTIM_HOST],
                                          capture_output=True, text=True,
                                          timeout=10).stdout.split()
                if _comm(p) not in ("slurmd", "slurmctld", "slurmscriptd", "sge_qmaster",
                                    "sge_execd")]
        subprocess.run(["kill", "-KILL"] + pids, timeout=10)
    elif MODE == "netcut":
        subprocess.run(["ip", "-n", VICTIM_HOST, "link", "set", "eth0", "down"], check=True,
                       timeout=10)
        # down until the manager has given up on the victim's busy worker (bounded)
        gave_up = wait_for(lambda: w.state == "dead", 30)
        fault["down"] = time.monotonic() - fault["time"]
        subprocess.run(["ip", "-n", VICTIM_HOST, "link", "set", "eth0", "up"], check=True,
                       timeout=10)
        if not gave_up:
            fault["error"] = "the manager did not give up on %r within 30 s" % (w,)


for i in range(N):
    c.add_task(HoldsTheLock(i) if MODE == "gil" else Where(i))
if MODE != "gil":
    threading.Thread(target=inject, daemon=True).start()
errors = []
it = c.get_results_unordered()
while True:
    try:
        i, host = next(it)
    except StopIteration:
        break
    except Error as err:
        errors.append(repr(err))
        if isinstance(err, NoMoreWorkersError):
            break
        continue
    got.setdefault(i, []).append(host)
w = fault.get("worker")
print("EXACTLY_ONCE", sorted(got) == list(range(N)) and all(len(v) == 1 for v in got.values()))
print("RESULTS", json.dumps(sorted([i, h[0]] for i, h in got.items())))
print("LOST", engine.lost_count)
print("VICTIM", fault.get("victim"))
print("VICTIM_DEATH", w.death if w else None)
print("DETECT %.2f" % ((w.death_time - fault["time"]) if w and w.death_time else -1))
print("DOWN %.2f" % fault.get("down", -1))
print("FAULT_ERROR", fault.get("error"))
print("ERRORS", json.dumps(errors))
print("WORKERS", json.dumps([[x.index, x.host, x.state, x.tasks_done] for x in engine.workers]))
print("SUMMARY", m.summary())
sys.stdout.flush()
