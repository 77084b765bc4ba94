"""The watcher beside a worker that the manager cannot check by pid (another host).

Why: such a worker proves it lives by heartbeat messages from one of its threads. A task
that holds Python's global interpreter lock in one long C call starves that thread, and a
healthy worker would be killed as lost. The watcher is a separate small process on the
worker's host, so the worker's code cannot starve it. Every ``interval`` seconds it reads the
worker's state from ``/proc`` and sends it to the manager in one UDP datagram; the manager
then tells a *stopped* worker (SIGSTOP, state ``T``) or a silent host from a *busy* one
(``R``, ``S``, ``D``) before it kills anything (``_failure.FailurePolicy.check``).

Trust: each datagram is a fixed-size raw frame authenticated with HMAC-SHA256 under a key
that only this worker and the manager hold (it travels over MPI, then to the watcher on its
stdin; never on a command line, in the environment or in a file). The manager checks size,
token and MAC before it looks at anything else, never unpickles, and takes a sequence number
only if it is higher than the last one (no replay)::

    MAGIC(8) | token(16) | sequence(8) | state(1) | cpu ticks(8) | HMAC-SHA256(32) = 73 bytes

This file imports only the standard library: the worker runs it by path with
``python -I -S`` (no ``site``, no user paths, no mpi4py), about 15 ms and 8 MB a worker.
It ends when the worker ends (its stdin reaches end of file, its parent changes, or the
worker's pid is gone), and with the worker on SIGKILL where ``prctl`` is available.
"""
import hashlib
import hmac
import json
import os
import select
import socket
import struct
import sys
from typing import Optional, Tuple

MAGIC = b"MPDBEAT1"
TOKEN_SIZE = 16
KEY_SIZE = 32
_BODY = struct.Struct(">8s16sQcQ")
FRAME_SIZE = _BODY.size + 32
#: States in which a worker is busy, not stopped: running, sleeping, in uninterruptible I/O,
#: idle kernel wait. "?" (no /proc on this system) counts as unknown, never as busy.
BUSY_STATES = "RSDI"


def pack(key: bytes, token: bytes, sequence: int, state: str, cpu_ticks: int) -> bytes:
    """One datagram: the worker's state, signed."""
    body = _BODY.pack(MAGIC, token, sequence, state.encode("ascii", "replace")[:1] or b"?",
                      cpu_ticks)
    return body + hmac.new(key, body, hashlib.sha256).digest()


def token_of(frame: bytes) -> Optional[bytes]:
    """The token a frame claims (to find its key), or None if it is not a watcher frame."""
    if len(frame) != FRAME_SIZE or not hmac.compare_digest(frame[:len(MAGIC)], MAGIC):
        return None
    return frame[len(MAGIC):len(MAGIC) + TOKEN_SIZE]


def unpack(key: bytes, frame: bytes) -> Optional[Tuple[int, str, int]]:
    """(sequence, state, cpu ticks) of a frame whose MAC ``key`` proves, else None."""
    if len(frame) != FRAME_SIZE:
        return None
    body, mac = frame[:_BODY.size], frame[_BODY.size:]
    if not hmac.compare_digest(mac, hmac.new(key, body, hashlib.sha256).digest()):
        return None
    _, _, sequence, state, cpu = _BODY.unpack(body)
    return sequence, state.decode("ascii", "replace"), cpu


def process_state(pid: int) -> Optional[Tuple[str, int]]:
    """(state letter, user+system CPU ticks) of ``pid``; ("?", 0) without /proc; None if
    the process is gone or a zombie."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except FileNotFoundError:
        if not os.path.isdir("/proc/self"):
            try:
                os.kill(pid, 0)
            except OSError:
                return None
            return "?", 0
        return None
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()   # the name may hold spaces and ')'
    state = fields[0]
    if state in "ZX":
        return None
    return state, int(fields[11]) + int(fields[12])


def _die_with_parent() -> None:
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
    except Exception:
        pass   # not Linux: the end-of-file and parent checks below still end the watcher


def watch(pid: int, settings: dict) -> int:
    """Report ``pid``'s state to the manager until it ends; returns the exit status."""
    key, token = bytes.fromhex(settings["key"]), bytes.fromhex(settings["token"])
    port, interval = int(settings["port"]), float(settings["interval"])
    targets = [(address, port) for address in settings["addresses"]]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sequence = 0
    while os.getppid() == pid:
        seen = process_state(pid)
        if seen is None:
            return 0
        sequence += 1
        frame = pack(key, token, sequence, seen[0], seen[1])
        for target in targets:
            try:
                sock.sendto(frame, target)
            except OSError:
                pass   # unreachable now (a cut network): the manager hears silence
        readable, _, _ = select.select([sys.stdin.buffer], [], [], interval)
        if readable and not os.read(sys.stdin.fileno(), 4096):
            return 0   # the worker closed our stdin or died
    return 0


def main() -> int:
    pid = os.getppid()
    _die_with_parent()
    if os.getppid() != pid:
        return 0
    line = sys.stdin.buffer.readline()
    if not line:
        return 0
    return watch(pid, json.loads(line))


if __name__ == "__main__":
    sys.exit(main())
