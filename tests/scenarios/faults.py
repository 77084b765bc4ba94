"""Fault injection under real MPI. Usage: python faults.py MODE NWORKERS [ft|noft]

Prints KEY value lines that tests/test_faults.py checks: every result exactly once (by task
id), the error each faulty task gets, how many workers died and were replaced, and timings.
"""
import ctypes
import os
import random
import signal
import sys
import threading
import time

from mpidispatch import (LocalWorker, Manager, NoMoreWorkersError, RemoteError,
                         TaskTimeoutError, WorkerLostError)

MODE = sys.argv[1]
NWORKERS = int(sys.argv[2])
FT = len(sys.argv) > 3 and sys.argv[3] == "ft"


class Job:
    def __init__(self, i, kind="ok", seconds=0.0):
        self.i, self.kind, self.seconds = i, kind, seconds

    def __call__(self):
        if self.seconds:
            time.sleep(self.seconds)
        if self.kind == "osexit":
            os._exit(9)
        if self.kind == "osexit0":
            os._exit(0)
        if self.kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "segfault":
            ctypes.string_at(0)
        if self.kind == "hang":
            time.sleep(1000)
        if self.kind == "sysexit":
            sys.exit(5)
        if self.kind == "raise":
            raise ValueError("task %d raised" % self.i)
        if self.kind == "big":
            return self.i, os.getpid(), b"b" * 100000
        return self.i, os.getpid()


m = Manager(fault_tolerant=FT, max_retries=2)
engine = m._engine
if not m.workers:
    for _ in range(NWORKERS):
        m.add_worker(LocalWorker())
c = m.get_context()
initial = len(engine.workers)
m.wait_ready(60)  # the faults below hit a running farm, not one still starting


def collect():
    """Results by task id, and errors by task id, in completion order."""
    got, errors = {}, {}
    ids = iter(range(10 ** 9))
    it = c.get_results_unordered()
    while True:
        try:
            i, pid = next(it)[:2]
            got.setdefault(i, []).append(pid)
        except StopIteration:
            return got, errors
        except (WorkerLostError, RemoteError, NoMoreWorkersError) as err:
            if isinstance(err, NoMoreWorkersError):
                errors["nomore"] = err
                return got, errors
            errors[next(ids)] = err


def report(got, n, started):
    print("EXACTLY_ONCE", sorted(got) == list(range(n)) and all(len(v) == 1 for v in got.values()))
    print("MISSING", sorted(set(range(n)) - set(got))[:10])
    print("LOST", engine.lost_count)
    print("RESPAWNED", engine.respawns)
    print("SECONDS %.2f" % (time.monotonic() - started))
    print("WORKER_PIDS", " ".join(str(w.pid) for w in engine.workers if w.pid))
    print("SUMMARY", m.summary())
    print("BATCHES", engine.batches_sent)


def busy_workers(within=30.0):
    """Workers that hold a task, waiting (bounded) until there is one: under load workers
    may still be starting when a fixed delay has passed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        busy = [w for w in list(engine.workers) if w.state == "ready" and w.pid and w.inflight]
        if busy:
            return busy
        time.sleep(0.01)
    return []


def killer(count, interval):
    """Kill a random busy worker ``count`` times, ``interval`` s apart; record when."""
    kills = []
    for _ in range(count):
        time.sleep(interval)
        busy = busy_workers()
        if busy:
            w = random.choice(busy)
            kills.append((time.monotonic(), w))
            os.kill(w.pid, signal.SIGKILL)
    return kills


started = time.monotonic()
if MODE == "kill_random":
    n = 1000
    for i in range(n):
        c.add_task(Job(i, seconds=0.003))
    kills = []
    # Without replacements at most NWORKERS - 2 kills: a task whose worker died is not
    # retried on the last live worker (the poison-task rule), so that one would fail.
    count = 3 if FT else max(1, NWORKERS - 2)
    t = threading.Thread(target=lambda: kills.extend(killer(count, 0.4)), daemon=True)
    t.start()
    got, errors = collect()
    t.join(10)
    report(got, n, started)
    print("KILLS", len(kills))
    detect = [w.death_time - k for k, w in kills if w.death_time]
    print("DETECT_MAX %.3f" % max(detect or [0]))
    replaced = [w for w in engine.workers if w.ready_time > 0 and w.index >= initial]
    ready = sorted(w.ready_time for w in replaced)
    print("REPLACE_MAX %.3f" % max([r - k for (k, _), r in zip(sorted(kills, key=lambda x: x[0]),
                                                                ready)] or [0]))
elif MODE in ("poison_osexit", "poison_sigkill", "poison_segfault"):
    n = 30
    kind = MODE.split("_")[1]
    for i in range(n):
        c.add_task(Job(i, kind if i == 7 else "ok", 0.01))
    got, errors = collect()
    report(got, n, started)
    err = [e for e in errors.values() if isinstance(e, WorkerLostError)]
    print("POISON_ERRORS", len(err))
    if err:
        print("POISON_EXITCODE", err[0].exitcode)
        print("POISON_MESSAGE", str(err[0]).replace("\n", " "))
elif MODE == "poison_noft":
    # issue 9 point 9: without fault tolerance a task that kills its worker (os._exit(0))
    # must fail alone, not take every worker with it.
    n = 30
    for i in range(n):
        c.add_task(Job(i, "osexit0" if i == 7 else "ok", 0.01))
    got, errors = collect()
    report(got, n, started)
    err = [e for e in errors.values() if isinstance(e, WorkerLostError)]
    print("POISON_ERRORS", len(err))
    print("POISON_INDEX", err[0].index if err else None)
    print("NOMORE", "nomore" in errors)
elif MODE == "errors_batched":
    # tiny tasks in batches (MPIDISPATCH_BATCH): some raise, one exits, one returns a big
    # result; each fails or travels alone, the others of its batch are unaffected
    n = 400
    kinds = {i: "raise" for i in range(3, n, 17)}
    kinds.update({50: "sysexit", 51: "big"})
    for i in range(n):
        c.add_task(Job(i, kinds.get(i, "ok")))
    got, errors = collect()
    failed = sorted(e.index for e in errors.values() if isinstance(e, RemoteError))
    expected = sorted(i for i, k in kinds.items() if k != "big")
    print("ERRORS_RIGHT", failed == expected)
    print("ERROR_TEXTS_RIGHT", all(
        ("task %d raised" % e.index in str(e)) == (kinds[e.index] == "raise")
        for e in errors.values()))
    report(got, n, started)
    print("OTHERS_ONCE", sorted(got) == sorted(set(range(n)) - set(expected))
          and all(len(v) == 1 for v in got.values()))
elif MODE == "hang":
    n = 10
    for i in range(n):
        if i == 3:
            c.add_task(Job(i, "hang"), timeout=1.5)
        else:
            c.add_task(Job(i, "ok", 0.05))
    got, errors = collect()
    report(got, n, started)
    print("TIMEOUTS", sum(isinstance(e, TaskTimeoutError) for e in errors.values()))
elif MODE == "sysexit":
    n = 10
    for i in range(n):
        c.add_task(Job(i, "sysexit" if i == 2 else "ok", 0.01))
    got, errors = collect()
    report(got, n, started)
    print("SYSEXIT", [type(e.exc).__name__ for e in errors.values() if isinstance(e, RemoteError)])
elif MODE == "all_dead":
    for i in range(50):
        c.add_task(Job(i, "sigkill" if i % 5 == 0 else "ok", 0.01))
    got, errors = collect()
    print("NOMORE", "nomore" in errors)
    print("NOMORE_SECONDS %.2f" % (time.monotonic() - started))
elif MODE == "stopped":
    n = 40
    for i in range(n):
        c.add_task(Job(i, "ok", 0.05))
    def stop_one():
        busy = busy_workers()
        os.kill(busy[0].pid, signal.SIGSTOP)
    threading.Thread(target=stop_one, daemon=True).start()
    got, errors = collect()
    report(got, n, started)
elif MODE == "manager_killed":
    for i in range(4):
        c.add_task(Job(i, "ok", 0.0))
    got, errors = collect()
    c.add_task(Job(99, "ok", 30.0))     # keep one worker busy
    engine.run_until(lambda: False, 0.5)
    print("WORKER_PIDS", " ".join(str(w.pid) for w in engine.workers if w.pid), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
