"""The manager's side of workers that join it: rendezvous file, TCP gate, MPI port.

Rendezvous of a joining worker (every wait bounded)::

  manager                                          array task (mpiexec -n 1 python -m ...)
  Open_port; TcpGate; write the rendezvous   --->  read the file (port, address, key)
  file (mode 0600: port name, address, key)
  TcpGate: hello + nonce                      --->  TCP connect
           check the MAC (raw bytes)          <---  MAC(key, nonces) + host:pid
           ACCEPTED + MAC  (or UNNEEDED)      --->  check the manager's MAC; wait
  take(), in the manager's loop:
           CONNECT! + MAC; MPI_Comm_accept    --->  MPI_Comm_connect(port)
           challenge (raw 40 bytes)           --->
           check the answer (raw 40 bytes)    <---  MAC(key, MPI nonce, TCP nonces)
           WELCOME! + MAC; hand the comm over --->  check the MAC; serve
  close(): close TCP connections, Close_port  --->  EOF: a waiting worker exits

``MPI_Comm_accept`` runs in the manager's own thread, only for a worker that has proven the
key and was just told to connect: an accept in a background thread while the manager loop
used MPI crashed the MPICH wheel (segfault in MPI_Comm_accept, 2 runs in 10). A worker that
vanishes between CONNECT! and connect cannot hang the manager: after the accept timeout a
helper process connects to the port (it knows the key but does not answer the challenge) and
the accept returns. A stranger who got the accept in place of the real worker fails the
challenge, which the manager polls without blocking; the accept is then repeated for the
real worker queued behind it (each stranger costs at most ``handshake_timeout`` seconds of
that worker's joining, and none of the manager's loop).
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
from collections import Counter, deque
from typing import Any, Deque, Optional, Tuple

from .. import _mpienv, _mpiexec
from .._util import hostname
from . import auth
from .mpiport import QUARANTINE_LIMIT, Handshake, quarantine
from .tcpgate import DEFAULT_GREETING_TIMEOUT, DEFAULT_MAX_GREETINGS, Peer, TcpGate

#: Seconds an accepted communicator has to answer the challenge (a real worker answers in
#: milliseconds: it reads the challenge right after MPI_Comm_connect returns).
DEFAULT_HANDSHAKE_TIMEOUT = 5.0


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Write a new file that only the user can read, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def package_parent() -> str:
    """The directory holding the ``mpidispatch`` package (put on a worker's ``sys.path``)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Session:
    """The worker told to connect, until its MPI handshake ends."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.accepts = 0
        self.unblocked = threading.Event()
        self.handshake: Optional[Handshake] = None


class Rendezvous:
    """Where the workers of one submitted array join this manager.

    Args:
        bind: the address the compute nodes reach this machine at (default: all addresses,
            announced as the fully qualified host name).
        workdir: directory of the rendezvous file (shared with the compute nodes).
        accept_timeout: seconds a worker told to connect has to do so.
        handshake_timeout: seconds an accepted communicator has to answer the challenge.
        greeting_timeout, max_greetings: see :class:`TcpGate`.

    Attributes:
        path: the rendezvous file (mode 0600; removed by :meth:`close`).
        counts: outcomes of the MPI handshakes ("joined", "refused", ...).
        refused: the latest refusals on the MPI side (bounded), for messages.
    """

    def __init__(self, bind: Optional[str], workdir: str, accept_timeout: float = 30.0,
                 handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
                 greeting_timeout: float = DEFAULT_GREETING_TIMEOUT,
                 max_greetings: int = DEFAULT_MAX_GREETINGS) -> None:
        MPI = _mpienv.mpi()
        self.key = auth.new_key()
        self.accept_timeout = accept_timeout
        self.handshake_timeout = handshake_timeout
        self.counts: Counter = Counter()
        self.refused: Deque[str] = deque(maxlen=32)
        self._closed = False
        #: Why the rendezvous stopped by itself ("" while it runs).
        self.stopped = ""
        self._session: Optional[_Session] = None
        self.port = MPI.Open_port()
        try:
            self.gate = TcpGate(self.key, bind, greeting_timeout, max_greetings)
        except BaseException:
            MPI.Close_port(self.port)
            raise
        # the name is random, unrelated to the key
        self.path = os.path.join(workdir, "mpidispatch-rendezvous-%s.json"
                                 % secrets.token_hex(6))
        try:
            write_private(self.path, json.dumps({
                "port": self.port, "host": self.gate.address[0], "tcp": self.gate.address[1],
                "key": self.key.hex(), "manager": "%s:%d" % (hostname(), os.getpid())}))
        except BaseException:
            self.gate.close()
            MPI.Close_port(self.port)
            raise

    # -- bookkeeping of wanted workers (any thread) -------------------------------------------
    def want(self, count: int) -> None:
        """``count`` more (or, negative, fewer) workers wait for a communicator."""
        with self.gate.lock:
            self.gate.wanted += count
        if count < 0:
            self.gate.trim()

    @property
    def joining(self) -> bool:
        """True while a worker is waiting its turn or being connected."""
        return self._session is not None or self.gate.waiting > 0

    # -- the manager's thread -----------------------------------------------------------------
    def take(self) -> Optional[Tuple[Any, Peer]]:
        """One more step of joining: (communicator, its TCP peer) once a worker has joined,
        else None. Returns at once except for ``MPI_Comm_accept`` right after a worker was
        told to connect (bounded by ``accept_timeout``)."""
        if self._closed:
            return None
        quarantine.drain()
        session = self._session
        if session is None:
            session = self._start_session()
            if session is None:
                return None
        if session.handshake is None:
            if session.peer.closed:           # the worker is gone (its TCP connection closed)
                self.refused.append("worker %s left before it connected" % session.peer.info)
                self._end_session(session, joined=False)
                return None
            if not self._accept(session):
                return None
        handshake = session.handshake
        assert handshake is not None
        outcome = handshake.poll()
        if outcome is None:
            return None
        if outcome:
            self._end_session(session, joined=True)
            self.counts["joined"] += 1
            return handshake.comm, session.peer
        self.counts["refused"] += 1
        self.refused.append("a connection on the MPI port was refused: %s" % handshake.why)
        session.handshake = None
        if len(quarantine) >= QUARANTINE_LIMIT:
            self.stopped = ("%d connections on the MPI port failed the challenge; joining "
                            "stopped (see docs/security.md)" % len(quarantine))
            self._end_session(session, joined=False)
            self.close()
            return None
        if session.unblocked.is_set():        # the worker never came: that was the helper
            self._end_session(session, joined=False)
        return None

    def _start_session(self) -> Optional[_Session]:
        peer = self.gate.next_ready()
        if peer is None:
            return None
        with self.gate.lock:
            self.gate.in_flight = 1
        if not self.gate.send_go(peer):
            self.gate.discard(peer)
            with self.gate.lock:
                self.gate.in_flight = 0
            return None
        self._session = _Session(peer)
        return self._session

    def _accept(self, session: _Session) -> bool:
        """MPI_Comm_accept for ``session`` (bounded); False if the session ended."""
        MPI = _mpienv.mpi()
        timer = threading.Timer(self.accept_timeout, self._unblock_accept, (session,))
        timer.daemon = True
        timer.start()
        session.accepts += 1
        try:
            comm = MPI.COMM_SELF.Accept(self.port)
        except Exception as exc:  # noqa: BLE001 - reported with the next start error
            self.refused.append("MPI_Comm_accept failed: %s" % exc)
            self._end_session(session, joined=False)
            return False
        finally:
            timer.cancel()
        timeout = self.handshake_timeout
        if session.unblocked.is_set():    # most likely the helper, which does not answer
            timeout = min(timeout, 2.0)
        session.handshake = Handshake(comm, self.key, session.peer.server_nonce,
                                      session.peer.client_nonce, timeout)
        return True

    def _end_session(self, session: _Session, joined: bool) -> None:
        if not joined:
            self.gate.discard(session.peer)     # the worker sees EOF and exits
        self._session = None
        with self.gate.lock:
            self.gate.in_flight = 0

    def problems(self) -> str:
        """The latest refusals, TCP and MPI, for an error message ("" if none)."""
        recent = list(self.gate.recent)[-3:] + list(self.refused)[-3:]
        return "; ".join(recent)

    def close(self) -> None:
        """Stop listening; close every connection, the MPI port and the file."""
        if self._closed:
            return
        self._closed = True
        session, self._session = self._session, None
        if session is not None and session.handshake is not None:
            session.handshake.abandon()
        quarantine.drain()
        self.gate.close()
        try:
            _mpienv.mpi().Close_port(self.port)
        except Exception:  # noqa: BLE001
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _unblock_accept(self, session: _Session) -> None:
        """The accept waits for a worker that never connected; MPI cannot cancel it, so a
        helper process connects (this thread makes no MPI call)."""
        session.unblocked.set()
        self.refused.append("worker %s was told to connect but did not within %g s"
                            % (session.peer.info, self.accept_timeout))
        cmd = _mpiexec.command(1, [sys.executable, "-m", "mpidispatch.arrays.worker",
                                   "--rendezvous-file", self.path, "--unblock"])
        env = _mpiexec.environment(pythonpath=[package_parent()], local=True)
        try:
            subprocess.run(cmd, env=env, timeout=30, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass
