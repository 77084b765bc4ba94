"""MODELLER-style message passing with one worker: ``send_data``, ``get_data``, ``run_cmd``.

A :class:`Channel` talks to one worker over the engine's wire protocol (DATA and CONTROL
EXEC records); a MODELLER ``job`` gives one to each of its workers, whose ``send_data`` /
``get_data`` / ``run_cmd`` methods use it. The channel knows the engine and its worker and
nothing above them: no call goes back up to the job.
"""
from __future__ import annotations

from typing import Any, List, Optional

from ._protocol import Tag, Verb
from ._work import Payload
from .errors import NetworkError
from .workers import DEAD, NEW, READY, STARTING, STOPPED, Worker


class Channel:
    """Message passing with ``worker`` through ``engine``.

    Args:
        engine: the engine that owns the worker.
        worker: the worker at the other end.
        startup_commands: Python sources run (``run_cmd``) on the worker once, before the
            first message this channel sends (MODELLER's ``worker_startup_commands``; the
            list is read when the worker is first used, so later appends count).
    """

    def __init__(self, engine: Any, worker: Worker,
                 startup_commands: Optional[List[str]] = None) -> None:
        self.engine = engine
        self.worker = worker
        self.startup_commands = startup_commands if startup_commands is not None else []
        self.initialized = False

    def ensure_started(self, timeout: Optional[float] = None) -> None:
        """Start the worker if needed and run the startup commands on it once.

        Raises:
            NetworkError: the worker is not running (it died, or never started).
        """
        w = self.worker
        if w.state in (NEW, STARTING):
            self.engine.wait_ready(timeout)
        if w.state != READY:
            raise NetworkError("%r is not running (%s); see its log file %s"
                               % (w, w.death or w.state, w.log_file))
        if not self.initialized:
            self.initialized = True
            for source in self.startup_commands:
                self._exec(source)

    def raise_pending(self) -> None:
        """Raise the oldest error from earlier ``run_cmd`` source, if one came back."""
        self.engine.progress()
        if self.worker.errors:
            raise self.worker.errors.popleft()

    def send_data(self, obj: Any) -> None:
        """Send any picklable object to the worker (its ``manager.get_data()`` gets it)."""
        p = Payload(obj, "data")
        self.ensure_started()
        self.raise_pending()
        self.engine._send(self.worker, Tag.DATA, (p.data, p.sizes), p.buffers)

    def run_cmd(self, source: str) -> None:
        """Run Python ``source`` on the worker, in its persistent namespace."""
        if not isinstance(source, str):
            raise TypeError("run_cmd() takes Python source as a str, not %r" % (source,))
        self.ensure_started()
        self.raise_pending()
        self._exec(source)

    def _exec(self, source: str) -> None:
        self.engine.send_control(self.worker, Verb.EXEC, source)

    def get_data(self, timeout: Optional[float] = None) -> Any:
        """The next object the worker sent with ``manager.send_data``.

        Raises:
            RemoteError: ``run_cmd`` source raised on the worker.
            NetworkError: the worker died.
            TimeoutError: nothing came within ``timeout`` seconds.
        """
        self.ensure_started()
        w = self.worker
        ready = lambda: bool(w.inbox or w.errors) or w.state in (DEAD, STOPPED)  # noqa: E731
        if not self.engine.run_until(ready, timeout):
            raise TimeoutError(
                "no data from %r within %g s. A worker sends data only when source given to "
                "run_cmd calls manager.send_data(obj); check that it does, or raise the "
                "timeout." % (w, timeout or 0.0))
        if w.errors:
            raise w.errors.popleft()
        if w.inbox:
            return w.inbox.popleft()
        raise NetworkError("%r is gone (%s); see its log file %s"
                           % (w, w.death or w.state, w.log_file))
