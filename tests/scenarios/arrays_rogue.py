"""A stranger on the MPI port of a rendezvous: ``mpiexec -n 1 python arrays_rogue.py FILE MODE
MARKER``. It reads only the port name from the rendezvous file (as if it had found the port),
connects, and sends what MODE says; a payload that would run code creates MARKER if it is
ever unpickled. Prints GOT (what the manager sent back, if anything) and exits.

Modes: bomb40 (a 40-byte frame that is a pickle running os.system), bomb (the same object
with mpi4py's pickled send, on the handshake tag and the protocol's tags), short, long,
wrongmac, sizeN (N random bytes), silent (sends nothing), leave (disconnects at once).
"""
import json
import os
import sys
import time

from mpi4py import MPI

path, mode, marker = sys.argv[1], sys.argv[2], sys.argv[3]
port = json.load(open(path))["port"]
AUTH_TAG, TAGS = 31, (11, 12, 13, 14, 15, 16, 17)


class Bomb:
    def __reduce__(self):
        return (os.system, ("touch %s" % marker,))


comm = MPI.COMM_SELF.Connect(port)
comm.Set_errhandler(MPI.ERRORS_RETURN)
payload = None
if mode == "bomb40":
    raw = b"cos\nsystem\n(S'touch " + marker.encode() + b"'\ntR."
    payload = raw[:40] + b"\0" * max(0, 40 - len(raw))
    if len(raw) > 40:        # the marker path is long: send the whole pickle then
        payload = raw
elif mode == "short":
    payload = b"RESPONSE"
elif mode == "long":
    payload = b"R" * 4096
elif mode == "wrongmac":
    payload = b"RESPONSE" + os.urandom(32)
elif mode.startswith("size"):
    payload = os.urandom(int(mode[4:]))
if payload is not None:
    comm.Send([payload, MPI.BYTE], dest=0, tag=AUTH_TAG)
elif mode == "bomb":
    for tag in (AUTH_TAG,) + TAGS:
        comm.send(Bomb(), dest=0, tag=tag)
got = []
if mode != "leave":
    buf = bytearray(4096)
    status = MPI.Status()
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        flag = comm.Iprobe(source=0, tag=MPI.ANY_TAG, status=status)
        if flag:
            comm.Recv([buf, MPI.BYTE], source=0, tag=status.Get_tag(), status=status)
            got.append(bytes(buf[:8]))
        time.sleep(0.01)
print("GOT", got, flush=True)
