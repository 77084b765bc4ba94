"""The rendezvous of joining workers, without a scheduler: ``python arrays_token.py [R]``.

With R (default 1), R rounds of every stranger mode and 2R frames of random sizes.

A real manager-side :class:`Rendezvous` (MPI port + TCP gate); prints KEY value lines:
TCP_BAD       a TCP client with a wrong key gets REJECTED before any MPI call;
OLD_GREETING  the old text greeting (a token in clear) is refused the same way;
BAD_WORKER    the worker entry with a rendezvous file of another key exits 70 (MPICH);
ROGUE_<mode>  strangers who know only the port name connect in place of the worker told
              to connect; what each got back (MPICH);
ROGUES_REFUSED  how many were refused, and that take() returned none of them (MPICH);
TRIED         how many strangers connected (MPICH);
MAX_POLL      the longest take() while a challenge was pending, in seconds (MPICH);
UNBLOCKED     the worker told to connect never did: take() comes back (MPICH);
TOLD_TO_LEAVE  that worker's TCP connection is then closed (MPICH);
GOOD          the worker entry with the right file joins and says hello (MPICH);
MARKER        whether any payload ran code in this process (must be False).
"""
import json
import os
import random
import socket
import subprocess
import sys
import time

from mpidispatch import _mpienv
from mpidispatch._protocol import ControlMsg, Tag, Verb, control, read_info
from mpidispatch.arrays import auth
from mpidispatch.arrays.rendezvous import Rendezvous

here = os.path.dirname(os.path.abspath(__file__))
marker = os.path.join(os.getcwd(), "MARKER")
mpiexec = [os.path.join(sys.prefix, "bin", "mpiexec"), "-n", "1"]
env = dict(os.environ, HYDRA_LAUNCHER="fork")
rdv = Rendezvous("127.0.0.1", os.getcwd(), accept_timeout=15.0, handshake_timeout=2.0)
rdv.want(1)


def take(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = rdv.take()
        if got is not None:
            return got[0]
        time.sleep(0.01)
    return None


def recv_exact(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tcp_client(key):
    """Greets with ``key``; returns (socket, first reply code)."""
    s = socket.create_connection(rdv.gate.address, timeout=10)
    nonce = auth.parse_server_hello(recv_exact(s, auth.SERVER_HELLO_SIZE))
    mine = auth.new_nonce()
    s.sendall(auth.client_hello(key, nonce, mine, "test:1"))
    return s, recv_exact(s, auth.FRAME_SIZE)[:8]


s, code = tcp_client(b"k" * 32)
print("TCP_BAD", code.decode(), flush=True)
s = socket.create_connection(rdv.gate.address, timeout=10)
s.sendall(b"MPIDISPATCH " + b"t" * 32 + b" vm 1\n")
print("OLD_GREETING", recv_exact(s, 200)[-40:-32].decode(), flush=True)

if _mpienv.backend() == "mpich":
    other = os.path.join(os.getcwd(), "other.json")
    with open(rdv.path) as fh:
        info = json.load(fh)
    with open(other, "w") as fh:
        json.dump(dict(info, key="00" * 32), fh)
    proc = subprocess.run(mpiexec + [sys.executable, "-m", "mpidispatch.arrays.worker",
                                     "--rendezvous-file", other],
                          env=env, capture_output=True, text=True, timeout=60)
    print("BAD_WORKER", proc.returncode, "bad key" in proc.stderr, flush=True)
    # a real worker's TCP part, so that the manager accepts; only strangers connect
    conn, code = tcp_client(rdv.key)
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    modes = ["bomb40", "bomb", "long", "short", "wrongmac", "silent", "leave"]
    modes = modes * rounds + ["size%d" % n for n in random.Random(7).sample(range(1, 200),
                                                                           2 * rounds)]
    got = None
    max_poll = 0.0
    for mode in modes:       # one at a time: concurrent connects crash MPICH's accept
        rogue = subprocess.Popen(mpiexec + [sys.executable, os.path.join(here, "arrays_rogue.py"),
                                            rdv.path, mode, marker],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
        refused = rdv.counts["refused"]
        deadline = time.monotonic() + 60
        while rdv.counts["refused"] == refused and time.monotonic() < deadline:
            polling = rdv._session is not None and rdv._session.handshake is not None
            t0 = time.monotonic()
            got = got or rdv.take()
            if polling:
                max_poll = max(max_poll, time.monotonic() - t0)
            time.sleep(0.01)
        out, err = rogue.communicate(timeout=60)
        print("ROGUE_%s" % mode, out.strip(), flush=True)
    print("ROGUES_REFUSED", rdv.counts["refused"], got is None, flush=True)
    print("TRIED", len(modes), flush=True)
    print("MAX_POLL %.4f" % max_poll, flush=True)
    # the worker told to connect never does: take() must come back
    t0 = time.monotonic()
    while rdv._session is not None and time.monotonic() - t0 < 30:
        rdv.take()
        time.sleep(0.01)
    print("UNBLOCKED", rdv._session is None, "%.1f" % (time.monotonic() - t0), flush=True)
    conn.settimeout(10)
    rest = recv_exact(conn, 4096)           # CONNECT!, then EOF: the worker exits
    print("TOLD_TO_LEAVE", rest[:8] == auth.CONNECT and len(rest) == auth.FRAME_SIZE,
          flush=True)
    worker = subprocess.Popen(mpiexec + [sys.executable, "-m", "mpidispatch.arrays.worker",
                                         "--rendezvous-file", rdv.path],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    comm = take(30)
    hello = ControlMsg(*comm.recv(source=0, tag=Tag.CONTROL))
    print("GOOD", Verb(hello.verb).name.lower(), flush=True)
    read_info(comm, 0, hello)                         # its buffers, if any
    message, _ = control(Verb.STOP, {"hard": False})
    comm.send(message, dest=0, tag=Tag.CONTROL)
    comm.Disconnect()
    out, err = worker.communicate(timeout=30)
    print("GOOD_EXIT", worker.returncode, flush=True)
rdv.close()
print("PORT_FILE_GONE", not os.path.exists(rdv.path), flush=True)
print("MARKER", os.path.exists(marker), flush=True)
