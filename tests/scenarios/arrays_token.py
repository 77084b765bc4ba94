"""The rendezvous of joining workers, without a scheduler: ``python arrays_token.py``.

Checks, against a real manager-side rendezvous (MPI port + TCP listener):
TCP_BAD      a TCP client with a wrong token is rejected before any MPI call;
BAD_WORKER   the worker entry with a wrong token exits 70 (MPICH only);
MPI_BAD      a client with the right TCP token but a wrong token on the intercomm is
             disconnected and the rendezvous hands out nothing (MPICH only);
GOOD         the worker entry with the right token joins and says hello (MPICH only);
UNBLOCKED    a worker told GO that never connects does not hang the manager (MPICH only).
"""
import os
import socket
import subprocess
import sys
import time

from mpidispatch import _mpienv
from mpidispatch.launch import worker_arrays as wa

mpiexec = [os.path.join(sys.prefix, "bin", "mpiexec"), "-n", "1"]
env = dict(os.environ, HYDRA_LAUNCHER="fork")
rdv = wa._Rendezvous("t" * 32, "127.0.0.1", os.getcwd(), accept_timeout=3.0)
rdv.wanted = 1


def take(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        comm = rdv.take()
        if comm is not None:
            return comm
        time.sleep(0.05)
    return None


s = socket.create_connection(rdv.address, timeout=10)
s.sendall(b"MPIDISPATCH wrong-token vm 1\n")
print("TCP_BAD", wa._readline(s), flush=True)
s.close()

if _mpienv.backend() == "mpich":
    proc = subprocess.run(mpiexec + [sys.executable, "-m", "mpidispatch.launch.worker_arrays",
                                     "--port-file", rdv.path, "--token", "nope"],
                          env=env, capture_output=True, text=True, timeout=60)
    print("BAD_WORKER", proc.returncode, "refused" in proc.stderr, flush=True)
    rogue = (
        "import json, socket, sys\n"
        "from mpi4py import MPI\n"
        "from mpidispatch.launch import worker_arrays as wa\n"
        "info = json.load(open(sys.argv[1]))\n"
        "s = socket.create_connection((info['host'], info['tcp']), timeout=10)\n"
        "s.sendall(b'MPIDISPATCH ' + sys.argv[2].encode() + b' x 1\\n')\n"
        "assert wa._readline(s) == 'GO'\n"
        "c = MPI.COMM_SELF.Connect(info['port'])\n"
        "c.send(('token', 'forged'), dest=0, tag=wa.TOKEN_TAG)\n"
        "print('ROGUE_GOT', c.recv(source=0, tag=wa.TOKEN_TAG), flush=True)\n"
        "c.Disconnect()\n")
    proc = subprocess.Popen(mpiexec + [sys.executable, "-c", rogue, rdv.path, rdv.token],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    got = None
    deadline = time.monotonic() + 30
    while not any("right token" in r for r in rdv.rejected) and time.monotonic() < deadline:
        got = got or rdv.take()
        time.sleep(0.05)
    out, err = proc.communicate(timeout=30)
    print("MPI_BAD", proc.returncode, out.strip(), got is None, flush=True)
    worker = subprocess.Popen(mpiexec + [sys.executable, "-m", "mpidispatch.launch.worker_arrays",
                                         "--port-file", rdv.path, "--token", rdv.token],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    comm = take(30)
    from mpidispatch._protocol import Tag
    hello = comm.recv(source=0, tag=Tag.CONTROL)
    print("GOOD", hello[0], flush=True)
    comm.send(("stop",), dest=0, tag=Tag.CONTROL)
    comm.Disconnect()
    out, err = worker.communicate(timeout=30)
    print("GOOD_EXIT", worker.returncode, flush=True)
    # announced with the right token, then never connects: take() must come back
    s = socket.create_connection(rdv.address, timeout=10)
    s.sendall(("MPIDISPATCH %s x 1\n" % rdv.token).encode())
    time.sleep(0.5)
    t0 = time.monotonic()
    print("UNBLOCKED", rdv.take() is None, "%.1f" % (time.monotonic() - t0), flush=True)
rdv.close()
print("PORT_FILE_GONE", not os.path.exists(rdv.path), flush=True)
