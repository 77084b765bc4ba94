"""The entry point of a worker that joins a running manager (one task of an array job).

``python -m mpidispatch.arrays.worker --rendezvous-file F [--log L]``, run by the array
job under ``mpiexec -n 1``. The key is read from the rendezvous file (mode 0600), never
from the command line, which every local user can read in ``/proc``. The worker proves the
key over TCP, waits for its turn, connects on the MPI port, proves the key again and checks
the manager's own proof before it unpickles anything; then it serves like any worker. It
exits by itself when the manager's TCP connection closes.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import _mpienv
from .._util import hostname
from . import auth
from .mpiport import answer_challenge, drop

#: Exit status of a worker whose manager is gone or refused it (as a spawned worker's).
EXIT_MANAGER_LOST = 70


class _Refused(Exception):
    """The manager is gone, refused this worker, or could not prove the key."""

    def __init__(self, message: str, status: int = EXIT_MANAGER_LOST,
                 retry: bool = False) -> None:
        super().__init__(message)
        self.status = status
        #: The connection closed before any answer: the gate was full, try again.
        self.retry = retry


def read_rendezvous_file(path: str, timeout: float) -> Dict[str, Any]:
    """The manager's rendezvous file (waiting up to ``timeout`` s for a shared file system).

    Raises:
        SystemExit: it cannot be read in time.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as fh:
                info = json.load(fh)
            bytes.fromhex(info["key"])
            return info
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit("mpidispatch worker: cannot read the rendezvous file %s (%s):"
                                 " the manager is gone, or the directory is not shared with "
                                 "this node" % (path, exc)) from None
        time.sleep(0.5)


def _say(text: str) -> None:
    sys.stderr.write("mpidispatch worker %s:%d: %s\n" % (hostname(), os.getpid(), text))
    sys.stderr.flush()


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def join_tcp(info: Dict[str, Any], key: bytes,
             connect_timeout: float) -> Tuple[socket.socket, bytes, bytes]:
    """Prove the key to the manager over TCP and wait to be told to connect.

    Returns:
        The connection (kept open: EOF means the manager is gone) and the two nonces.

    Raises:
        _Refused: the manager is unreachable, refused, did not prove the key, or does not
            need this worker (status 0).
    """
    try:
        sock = socket.create_connection((info["host"], int(info["tcp"])), timeout=30)
    except OSError as exc:
        raise _Refused("cannot reach the manager %s at %s:%s (%s): it has ended"
                       % (info.get("manager"), info.get("host"), info.get("tcp"), exc))
    try:
        return _greet(sock, key, connect_timeout)
    except OSError as exc:
        sock.close()
        raise _Refused("lost the connection to the manager %s (%s)"
                       % (info.get("manager"), exc))
    except _Refused:
        sock.close()
        raise


def _greet(sock: socket.socket, key: bytes,
           connect_timeout: float) -> Tuple[socket.socket, bytes, bytes]:
    hello = _recv_exact(sock, auth.SERVER_HELLO_SIZE)
    if not hello:
        raise _Refused("the manager closed the connection before its hello", retry=True)
    server_nonce = auth.parse_server_hello(hello)
    if server_nonce is None:
        raise _Refused("the manager's address did not answer as an mpidispatch manager")
    client_nonce = auth.new_nonce()
    sock.sendall(auth.client_hello(key, server_nonce, client_nonce,
                                   "%s:%d" % (hostname(), os.getpid())))
    frame = _recv_exact(sock, auth.FRAME_SIZE)
    if not frame:
        raise _Refused("the manager closed the connection before answering", retry=True)
    code = auth.check_reply(key, frame, server_nonce, client_nonce)
    if code == auth.UNNEEDED:
        raise _Refused("the manager refused this worker (not needed: it has all its "
                       "workers)", status=0)
    if code == auth.REJECTED:
        raise _Refused("the manager refused this worker (bad key: the rendezvous file is "
                       "not this manager's)")
    if code != auth.ACCEPTED:
        raise _Refused("the manager's answer does not prove the key (not the real manager)")
    sock.settimeout(connect_timeout)
    frame = _recv_exact(sock, auth.FRAME_SIZE)
    code = auth.check_reply(key, frame, server_nonce, client_nonce) if frame else None
    if code == auth.CONNECT:
        sock.settimeout(None)
        return sock, server_nonce, client_nonce
    if code == auth.UNNEEDED:
        raise _Refused("the manager no longer needs this worker", status=0)
    raise _Refused("the manager closed the connection while this worker waited its turn "
                   "(it has ended, or gave up on this worker)")


def join_tcp_retrying(info: Dict[str, Any], key: bytes, connect_timeout: float,
                      retry_for: float = 60.0) -> Tuple[socket.socket, bytes, bytes]:
    """:func:`join_tcp`, tried again for ``retry_for`` seconds while the manager's gate
    closes the connection unanswered (it is full: many connections at once)."""
    deadline = time.monotonic() + retry_for
    delay = 0.2
    while True:
        try:
            return join_tcp(info, key, connect_timeout)
        except _Refused as exc:
            if not exc.retry or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


def _watch_manager(sock: socket.socket, stopping: threading.Event) -> None:
    """Exit when the manager's TCP connection closes (the manager ended or died)."""
    def watch() -> None:
        try:
            while sock.recv(64):
                pass
        except OSError:
            pass
        if stopping.wait(10.0):
            return
        _say("lost the connection to the manager; exiting")
        os._exit(EXIT_MANAGER_LOST)
    threading.Thread(target=watch, name="mpidispatch-array-watchdog", daemon=True).start()


def connect_port(port: str, timeout: float) -> Any:
    """``MPI_Comm_connect`` bounded by ``timeout`` (the process exits if it hangs)."""
    MPI = _mpienv.mpi()
    result: List[Any] = []

    def run() -> None:
        try:
            result.append(MPI.COMM_SELF.Connect(port))
        except BaseException as exc:  # noqa: BLE001
            result.append(exc)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if not result:
        _say("MPI_Comm_connect did not complete within %g s; exiting" % timeout)
        os._exit(EXIT_MANAGER_LOST)
    if isinstance(result[0], BaseException):
        _say("MPI_Comm_connect failed: %s" % (result[0],))
        os._exit(EXIT_MANAGER_LOST)
    return result[0]


def worker_main(argv: Optional[Sequence[str]] = None) -> int:
    """Join the manager named in the rendezvous file, then serve it.

    Returns the exit status: 0 after a normal stop (or when not needed), 70 when the manager
    is gone or refused this worker.
    """
    parser = argparse.ArgumentParser(prog="python -m mpidispatch.arrays.worker")
    parser.add_argument("--rendezvous-file", required=True)
    parser.add_argument("--log", default=None,
                        help="log file reported to the manager ({job}, {task} expanded)")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    parser.add_argument("--unblock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    info = read_rendezvous_file(args.rendezvous_file, 60.0)
    key = bytes.fromhex(info["key"])
    if args.unblock:                      # see Rendezvous._unblock_accept
        drop(connect_port(info["port"], 20.0))
        return 0
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("JOB_ID") or "0"
    task = os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SGE_TASK_ID") or "0"
    log = args.log.format(job=job, task=task) if args.log else None
    MPI = _mpienv.mpi()     # before announcing: the manager accepts right after CONNECT!
    try:
        sock, server_nonce, client_nonce = join_tcp_retrying(info, key, args.connect_timeout)
    except _Refused as exc:
        _say("%s; exiting" % exc)
        return exc.status
    stopping = threading.Event()
    _watch_manager(sock, stopping)
    comm = connect_port(info["port"], args.connect_timeout)
    why = answer_challenge(comm, key, server_nonce, client_nonce, 60.0)
    if why:
        _say("%s; exiting" % why)
        drop(comm)
        return EXIT_MANAGER_LOST
    from .._worker import WorkerLoop
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    _say("joined manager %s" % info.get("manager"))
    WorkerLoop(comm, 0, log).serve()
    stopping.set()
    comm.Disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
