"""Small helpers: polling back-off, process liveness, hostnames, environment options."""
from __future__ import annotations

import os
import socket
import time
import warnings
from typing import Optional

_TRUE = {"1", "true", "yes", "on", "y"}
_FALSE = {"0", "false", "no", "off", "n"}


def env_get(name: str, default: str = "") -> str:
    """Read ``MPIDISPATCH_<NAME>`` from the environment (the one place options are read)."""
    return os.environ.get("MPIDISPATCH_" + name, default)


def env_float(name: str, default: float) -> float:
    """A float option from ``MPIDISPATCH_<NAME>``; a bad value warns and gives ``default``."""
    raw = env_get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        warnings.warn("MPIDISPATCH_%s=%r is not a number; using %r" % (name, raw, default))
        return default


def env_bool(name: str, default: bool) -> bool:
    """A boolean option from ``MPIDISPATCH_<NAME>`` (1/true/yes/on or 0/false/no/off)."""
    raw = env_get(name).strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    warnings.warn("MPIDISPATCH_%s=%r is not a boolean; using %r" % (name, raw, default))
    return default


class Backoff:
    """Sleep between polls, longer the longer nothing happens, so idle processes stay idle.

    The first ``spins`` polls do not sleep at all (a reply is usually microseconds away);
    after that the sleep doubles from ``start`` up to ``cap`` seconds.
    """

    __slots__ = ("start", "cap", "spins", "_count", "_delay")

    def __init__(self, start: float = 1e-5, cap: Optional[float] = None, spins: int = 50):
        self.start = start
        self.cap = env_float("BACKOFF_MAX", 0.01) if cap is None else cap
        self.spins = spins
        self._count = 0
        self._delay = start

    def reset(self) -> None:
        """Something happened: poll eagerly again."""
        self._count = 0
        self._delay = self.start

    def sleep(self) -> None:
        """Nothing happened on this poll: wait a little before the next one."""
        self._count += 1
        if self._count <= self.spins:
            return
        time.sleep(self._delay)
        self._delay = min(self._delay * 2, self.cap)


def hostname() -> str:
    """This machine's short host name."""
    return socket.gethostname().split(".")[0]


def pid_status(pid: int) -> Optional[str]:
    """None if process ``pid`` runs here; otherwise why not ("gone" or "zombie")."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        return None
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return "zombie" if state in (b"Z", b"X") else None
