"""The manager's end of the worker watchers (see ``_watcher``): one UDP socket, polled.

A worker watched by heartbeat (another host, or ``force_heartbeat``) gets, in its welcome,
a random token and key of its own, the port of this socket and the manager's addresses; it
starts a watcher process that reports its state here. :meth:`WatchPost.collect`, called from
the engine's health check, drains the socket without blocking and stores the latest report
on the worker (``worker.watch``) for the failure policy to read. Nothing is unpickled or
parsed before its MAC is checked; a flood is cut at :data:`MAX_FRAMES_PER_COLLECT` a call.
"""
from __future__ import annotations

import logging
import secrets
import socket
from typing import Any, Dict, List, NamedTuple, Optional

from . import _watcher

log = logging.getLogger("mpidispatch")

#: Datagrams read per health check at most (a stranger's flood cannot stall the loop).
MAX_FRAMES_PER_COLLECT = 256


class WatchReport(NamedTuple):
    """The latest word from a worker's watcher."""
    seen: float       #: manager's monotonic time when it arrived
    sequence: int
    state: str        #: /proc state letter: R running, S sleeping, D disk, T stopped, ?
    cpu_ticks: int    #: user + system CPU time of the worker, in clock ticks

    @property
    def busy(self) -> bool:
        """The worker runs (or waits in the kernel): busy, not stopped."""
        return self.state in _watcher.BUSY_STATES


def manager_addresses(include_loopback: bool) -> List[str]:
    """IPv4 addresses of this host by its names (what another host can reach it at)."""
    found: List[str] = []
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            continue
        for info in infos:
            address = str(info[4][0])
            if address not in found and (include_loopback or not address.startswith("127.")):
                found.append(address)
    if include_loopback and "127.0.0.1" not in found:
        found.append("127.0.0.1")
    return found


class WatchPost:
    """Hands out watcher credentials and receives the watchers' reports."""

    def __init__(self) -> None:
        self._sock: Optional[socket.socket] = None
        self._watched: Dict[bytes, Any] = {}     # token -> worker
        self._keys: Dict[bytes, bytes] = {}      # token -> key
        self.refused = 0                          # frames that failed a check

    def enlist(self, worker: Any, interval: float, same_host: bool) -> Optional[dict]:
        """Credentials for ``worker``'s watcher (sent to it over MPI), or None when this
        host has no address to give (the heartbeat alone then decides, as before)."""
        addresses = manager_addresses(include_loopback=same_host)
        if not addresses:
            return None
        if self._sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("", 0))
            sock.setblocking(False)
            self._sock = sock
        token, key = secrets.token_bytes(_watcher.TOKEN_SIZE), secrets.token_bytes(
            _watcher.KEY_SIZE)
        self._watched[token], self._keys[token] = worker, key
        worker.watch = None
        return {"token": token.hex(), "key": key.hex(), "port": self._sock.getsockname()[1],
                "addresses": addresses, "interval": interval}

    def collect(self, now: float) -> None:
        """Take every report waiting (up to the cap); keep the newest per worker."""
        if self._sock is None:
            return
        for _ in range(MAX_FRAMES_PER_COLLECT):
            try:
                frame = self._sock.recv(_watcher.FRAME_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            token = _watcher.token_of(frame)
            key = self._keys.get(token) if token is not None else None
            fields = _watcher.unpack(key, frame) if key is not None else None
            if fields is None:
                self.refused += 1
                continue
            worker = self._watched[token]  # type: ignore[index]
            sequence, state, cpu = fields
            last = worker.watch
            if last is not None and sequence <= last.sequence:
                self.refused += 1          # a replay, or a reordered older datagram
                continue
            worker.watch = WatchReport(now, sequence, state, cpu)

    def forget(self, worker: Any) -> None:
        """Stop taking reports for ``worker`` (it is gone)."""
        for token, w in list(self._watched.items()):
            if w is worker:
                del self._watched[token], self._keys[token]

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._watched.clear()
        self._keys.clear()
