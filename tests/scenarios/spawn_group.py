"""Workers started together share one spawn. Usage: python spawn_group.py MODE N [ft|noft]

MODE ``kill``: N workers start with one spawn (one shared intercommunicator), run tasks;
one is killed with SIGKILL mid-run, one retires (``remove_worker``) while the others work;
the others finish every task. MODE ``broken``: worker 1's command exits (status 3) before
MPI_Init; the error names that worker, its exit status and its log tail.
Prints KEY value lines that tests/test_spawn_group.py checks.
"""
import os
import signal
import sys
import time

from mpidispatch import LocalWorker, Manager

MODE, N = sys.argv[1], int(sys.argv[2])
FT = len(sys.argv) > 3 and sys.argv[3] == "ft"


def job(i, seconds):
    time.sleep(seconds)
    return i, os.getpid()


if MODE == "kill":
    m = Manager(fault_tolerant=FT, output="worker%d.log")
    engine = m._engine
    for _ in range(N):
        m.add_worker(LocalWorker())
    started = time.monotonic()
    print("READY", m.wait_ready(60))
    print("START_SECONDS %.2f" % (time.monotonic() - started))
    workers = list(engine.workers)
    print("SHARED", len({id(w.comm) for w in workers}) == 1 and workers[0].comm is not None)
    print("RANKS", sorted(w.rank for w in workers) == list(range(N)))
    print("WORKER_PIDS", " ".join(str(w.pid) for w in workers))
    c = m.get_context()
    total = 20 * N
    for i in range(total):
        c.add_task(lambda i=i: job(i, 0.05))  # a lambda of __main__: pickled by value
    victim, retiree = workers[1], workers[2]
    got = {}
    killed = retired = False
    for i, pid in c.get_results_unordered():
        got[i] = got.get(i, 0) + 1
        if not killed and len(got) >= total // 4:
            killed = True
            os.kill(victim.pid, signal.SIGKILL)
        if not retired and len(got) >= total // 3:
            retired = True
            m._engine.remove_worker(retiree)
    print("EXACTLY_ONCE", sorted(got) == list(range(total)) and set(got.values()) == {1})
    print("VICTIM_STATE", victim.state)
    print("VICTIM_DEATH", (victim.death or "").replace("\n", " "))
    print("RETIREE_STATE", retiree.state)
    print("OTHERS_WORKED", all(w.tasks_done > 0 for w in workers if w is not victim))
    t = time.monotonic()
    m.close()
    print("CLOSE_SECONDS %.2f" % (time.monotonic() - t))
elif MODE == "broken":
    here = os.getcwd()
    script = os.path.join(here, "python.sh")
    with open(script, "w") as f:
        f.write('case "$*" in *worker1.log*) eval "log=\\${$#}"; '
                'echo "worker 1 broken on purpose" >> "$log"; exit 3;; '
                'esac\nexec %s "$@"\n' % sys.executable)
    m = Manager(python="/bin/sh " + script, output=os.path.join(here, "worker%d.log"),
                start_timeout=60)
    for _ in range(N):
        m.add_worker(LocalWorker())
    started = time.monotonic()
    try:
        m.wait_ready(90)
        print("ERROR none")
    except Exception as exc:
        print("ERROR", type(exc).__name__)
    print("SECONDS %.1f" % (time.monotonic() - started))
    errors = m._engine.start_errors
    print("ERRORS", len(errors))
    print("FIRST", str(errors[0]).replace("\n", " ") if errors else "")
    print("OTHERS", " | ".join(str(e).replace("\n", " ")[:200] for e in errors[1:]))
    m.close()
