"""The MPI side of the rendezvous: the key proven again on the new intercommunicator.

Whoever knows an MPI port name can connect to it, so the communicator that
``MPI_Comm_accept`` returns is a stranger until it has answered the challenge. Both
directions use raw byte buffers of a fixed size (``Irecv`` into a ``bytearray``): a longer
message fails with MPI's truncation error, a shorter one has the wrong count, and nothing
is unpickled. The manager's side never blocks: :class:`Handshake` is polled from its loop.

A refused communicator is never disconnected nor freed: it goes to :data:`quarantine` for
the life of the process. With the MPICH wheel, a stranger's messages that arrive after its
communicator was freed are matched by the next communicator that reuses its context id --
a later worker's, whose messages the engine unpickles (measured: a stranger sending every
50 ms after the manager's ``MPI_Comm_disconnect``; its messages came out of the next
worker's communicator). Keeping the context id taken prevents that; the quarantine is
drained (raw bytes, discarded) and capped at :data:`QUARANTINE_LIMIT` communicators.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

from .. import _mpienv
from . import auth

#: MPI tag of the handshake frames (outside the wire protocol's tags).
AUTH_TAG = 31
#: Refused communicators kept at most; beyond, the rendezvous stops accepting.
QUARANTINE_LIMIT = 64


class Quarantine:
    """Communicators of refused peers, kept (never freed) so their context ids are never
    reused; what arrives on them is received as raw bytes and dropped."""

    def __init__(self) -> None:
        self._comms: list = []
        self._scratch = bytearray(1 << 16)
        self.dropped_messages = 0

    def __len__(self) -> int:
        return len(self._comms)

    def add(self, comm: Any) -> None:
        self._comms.append(comm)

    def drain(self, limit: int = 1000) -> None:
        """Receive and discard up to ``limit`` waiting messages (never blocks)."""
        MPI = _mpienv.mpi()
        status = MPI.Status()
        for comm in self._comms:
            for _ in range(limit):
                try:
                    if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
                        break
                    comm.Recv([self._scratch, MPI.BYTE], source=status.Get_source(),
                              tag=status.Get_tag())
                except MPI.Exception:   # a longer message: truncated, and so consumed
                    pass
                self.dropped_messages += 1


#: The process's one quarantine (context ids are per process).
quarantine = Quarantine()


class Handshake:
    """The manager's challenge to one accepted communicator, polled without blocking.

    Args:
        comm: the communicator ``MPI_Comm_accept`` returned.
        key: the array's key.
        server_nonce, client_nonce: the TCP nonces of the worker that was told to connect.
        timeout: seconds the peer has to answer.
    """

    def __init__(self, comm: Any, key: bytes, server_nonce: bytes, client_nonce: bytes,
                 timeout: float) -> None:
        MPI = _mpienv.mpi()
        self.comm = comm
        self.key = key
        self.server_nonce = server_nonce
        self.client_nonce = client_nonce
        self.deadline = time.monotonic() + timeout
        self.why = ""
        self._nonce = auth.new_nonce()
        self._status = MPI.Status()
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        self._challenge = auth.challenge(self._nonce)
        self._answer = bytearray(auth.FRAME_SIZE)
        self._send = comm.Isend([self._challenge, MPI.BYTE], dest=0, tag=AUTH_TAG)
        self._recv: Any = comm.Irecv([self._answer, MPI.BYTE], source=0, tag=AUTH_TAG)

    def poll(self) -> Optional[bool]:
        """None while waiting; True once the peer proved the key (it has been welcomed);
        False if it did not (:attr:`why` says how; drop the communicator)."""
        MPI = _mpienv.mpi()
        try:
            done = self._recv.Test(self._status)
        except MPI.Exception as exc:            # e.g. a longer message: MPI_ERR_TRUNCATE
            self._recv = None
            return self._fail("an unreadable answer (%s)" % _first_line(exc))
        if not done:
            if time.monotonic() < self.deadline:
                return None
            return self._fail("no answer to the challenge in time")
        self._recv = None
        count = self._status.Get_count(MPI.BYTE)
        if count != auth.FRAME_SIZE:
            return self._fail("an answer of %d bytes instead of %d" % (count, auth.FRAME_SIZE))
        if not auth.check_response(self.key, bytes(self._answer), self._nonce,
                                   self.server_nonce, self.client_nonce):
            return self._fail("a wrong answer to the challenge")
        if self.comm.Iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG):
            # a worker sends nothing else before the welcome: this is someone else's
            return self._fail("other messages waiting on the new communicator")
        frame = auth.welcome(self.key, self._nonce, self.server_nonce, self.client_nonce)
        try:
            self.comm.Send([frame, MPI.BYTE], dest=0, tag=AUTH_TAG)
            self._send.Wait()
        except MPI.Exception as exc:
            return self._fail("the welcome could not be sent (%s)" % _first_line(exc))
        return True

    def _fail(self, why: str) -> bool:
        self.why = why
        self.abandon()
        return False

    def abandon(self) -> None:
        """Cancel what is pending and put the communicator in quarantine."""
        for req in (self._recv, self._send):
            if req is None:
                continue
            try:
                if not req.Test():
                    req.Cancel()
                    req.Wait()
            except Exception:  # noqa: BLE001 - best effort: the peer is not trusted
                pass
        self._recv = None
        quarantine.add(self.comm)


def drop(comm: Any, timeout: float = 2.0) -> None:
    """Disconnect ``comm`` in a helper thread, waiting at most ``timeout`` seconds."""
    def run() -> None:
        try:
            comm.Disconnect()
        except Exception:  # noqa: BLE001
            pass
    thread = threading.Thread(target=run, name="mpidispatch-drop", daemon=True)
    thread.start()
    thread.join(timeout)


def recv_frame(comm: Any, timeout: float) -> Optional[bytes]:
    """One handshake frame from the manager, or None (wrong size, error, or late)."""
    MPI = _mpienv.mpi()
    buf = bytearray(auth.FRAME_SIZE)
    status = MPI.Status()
    req = comm.Irecv([buf, MPI.BYTE], source=0, tag=AUTH_TAG)
    deadline = time.monotonic() + timeout
    try:
        while not req.Test(status):
            if time.monotonic() > deadline:
                req.Cancel()
                req.Wait()
                return None
            time.sleep(0.005)
    except MPI.Exception:
        return None
    if status.Get_count(MPI.BYTE) != auth.FRAME_SIZE:
        return None
    return bytes(buf)


def answer_challenge(comm: Any, key: bytes, server_nonce: bytes, client_nonce: bytes,
                     timeout: float) -> Optional[str]:
    """The worker's half of :class:`Handshake`: None once the manager proved the key, else
    why not (then nothing from this communicator may be unpickled)."""
    MPI = _mpienv.mpi()
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    frame = recv_frame(comm, timeout)
    nonce = auth.parse_challenge(frame) if frame is not None else None
    if nonce is None:
        return "no valid challenge from the manager"
    comm.Send([auth.response(key, nonce, server_nonce, client_nonce), MPI.BYTE], dest=0,
              tag=AUTH_TAG)
    frame = recv_frame(comm, timeout)
    if frame is None or not auth.check_welcome(key, frame, nonce, server_nonce, client_nonce):
        return "the manager did not prove the key (refused, or not the real manager)"
    return None


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
