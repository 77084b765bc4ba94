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
    """Wait between polls without burning a core, and without slowing a busy exchange.

    For the first ``spin`` seconds of idleness a poll only yields the CPU (a reply is usually
    microseconds away, and on an oversubscribed node the peer needs the core). After that
    the process sleeps, from ``start`` seconds doubling up to ``cap``. The spin window must
    be longer than a round trip: two peers that both back off by count alone fall into a
    convoy where every message waits for a full sleep.

    ``idle_share`` (the manager's): after a long idleness the cap rises to this share of the
    time idle so far, at most ``long_cap``. A reply that comes after 10 s of waiting is then
    noticed at most ``idle_share`` later, and a manager polling 128 workers busy with long
    tasks (each poll tests 128 receives) wakes far less often.
    """

    __slots__ = ("spin", "start", "cap", "idle_share", "long_cap", "_idle_since", "_delay")

    def __init__(self, spin: Optional[float] = None, start: float = 1e-4,
                 cap: Optional[float] = None, idle_share: float = 0.0,
                 long_cap: float = 0.0) -> None:
        self.spin = env_float("BACKOFF_SPIN", 0.02) if spin is None else spin
        self.start = start
        self.cap = env_float("BACKOFF_MAX", 0.01) if cap is None else cap
        self.idle_share = idle_share
        self.long_cap = long_cap
        self._idle_since = 0.0
        self._delay = start

    def reset(self) -> None:
        """Something happened: poll eagerly again."""
        self._idle_since = 0.0
        self._delay = self.start

    def sleep(self) -> None:
        """Nothing happened on this poll: wait a little before the next one."""
        now = time.monotonic()
        if not self._idle_since:
            self._idle_since = now
        if now - self._idle_since < self.spin:
            os.sched_yield()
            return
        time.sleep(self._delay)
        cap = self.cap
        if self.idle_share:
            cap = max(cap, min(self.long_cap, (now - self._idle_since) * self.idle_share))
        self._delay = min(self._delay * 2, cap)


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
