"""A whole manager under fuzz: ``python arrays_fuzz.py`` (MPICH wheel).

A Manager runs short tasks on a spawned worker while a thread throws garbage at the TCP gate
of a submitted array (random bytes, wrong keys, pickles that run code, slow drips, idle
connections); the array's two workers are started locally (this machine plays the batch
scheduler) and must join and take tasks. Prints MAX_GAP (longest wait between two results,
s), JOINED (array workers that ran tasks), FUZZ_INPUTS, GATE (outcomes), MARKER.
"""
import os
import pickle
import random
import socket
import subprocess
import sys
import threading
import time

from mpidispatch import LocalWorker, Manager
from mpidispatch.arrays import SlurmJobArray, auth

marker = os.path.join(os.getcwd(), "MARKER")


def work(i):
    time.sleep(0.02)
    return i, os.getpid()


class LocalJob:
    """Stands in for the batch job: the array's tasks run here, now."""

    def __init__(self, rendezvous_file, n):
        self.id = "local"
        self.script_path = None
        cmd = [os.path.join(sys.prefix, "bin", "mpiexec"), "-n", "1", sys.executable, "-m",
               "mpidispatch.arrays.worker", "--rendezvous-file", rendezvous_file]
        env = dict(os.environ, HYDRA_LAUNCHER="fork")
        self.procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                       stderr=open("array-task%d.out" % i, "w"))
                      for i in range(n)]

    def state(self):
        return "RUNNING" if any(p.poll() is None for p in self.procs) else "COMPLETED"

    def cancel(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()

    def output_files(self):
        return []


class LocalArray(SlurmJobArray):
    def _job(self, rendezvous_file, dry_run=False):
        fuzzer.append(threading.Thread(target=fuzz, args=(self.rendezvous.gate.address, stop,
                                                          counter), daemon=True))
        fuzzer[0].start()
        started.wait(30)                     # the fuzz is under way before workers come
        return LocalJob(rendezvous_file, self.numworker)


class Bomb:
    def __reduce__(self):
        return (os.system, ("touch %s" % marker,))


def fuzz(address, stop, counter):
    rng = random.Random(1)
    idle = []
    while not stop.is_set():
        kind = rng.randrange(6)
        try:
            s = socket.create_connection(address, timeout=5)
            counter[0] += 1
            if kind == 0:
                s.sendall(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))))
            elif kind == 1:
                hello = s.recv(auth.SERVER_HELLO_SIZE)
                nonce = auth.parse_server_hello(hello) or b"\0" * 32
                s.sendall(auth.client_hello(auth.new_key(), nonce, auth.new_nonce(), "x:1"))
            elif kind == 2:
                s.sendall(auth.MAGIC + pickle.dumps(Bomb()))
            elif kind == 3:
                s.sendall("MPIDISPATCH ☃ ünï\n".encode())
            elif kind == 4 and len(idle) < 40:
                idle.append(s)                  # held open, sends nothing
                continue
            elif len(idle) < 40:
                s.sendall(auth.MAGIC[:3])         # a slow drip that never finishes
                idle.append(s)
                continue
            s.close()
        except OSError:
            pass
        started.set()
        time.sleep(0.005)
    for s in idle:
        s.close()


started, stop, counter, fuzzer = threading.Event(), threading.Event(), [0], []
m = Manager(output="fuzz-worker%d.output", start_timeout=60)
m.add_worker(LocalWorker())
array = LocalArray(2, workdir=os.getcwd())
m.add_worker(array)
c = m.get_context()
for i in range(600):
    c.add_task(lambda i=i: work(i))
gap, last, pids = 0.0, None, {}
for i, pid in c.get_results_unordered():
    now = time.monotonic()
    if last is not None:
        gap = max(gap, now - last)
    last = now
    pids[pid] = pids.get(pid, 0) + 1
stop.set()
for thread in fuzzer:
    thread.join(10)
array_pids = [w.pid for w in array.workers() if w.pid]
print("MAX_GAP %.3f" % gap, flush=True)
print("JOINED", sum(1 for p in array_pids if pids.get(p)), flush=True)
print("FUZZ_INPUTS", counter[0], flush=True)
print("GATE", dict(array.rendezvous.gate.counts), flush=True)
m.close()
print("MARKER", os.path.exists(marker), flush=True)
