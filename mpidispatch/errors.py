"""The exceptions mpidispatch raises. All derive from :class:`Error`.

Names follow IMP.parallel (``Error``, ``NoMoreWorkersError``, ``NetworkError``,
``RemoteError``) so that code written for it keeps working.
"""
from __future__ import annotations

import pickle
from typing import Any, Optional


class Error(Exception):
    """Base class of every error mpidispatch raises.

    Attributes:
        task: for an error about one task, the task object as the user submitted it.
        index: for an error about one task, its number in submission order within its
            context, job or map (0 first); None otherwise.
    """

    task: Any = None
    index: Optional[int] = None


class Terminated(SystemExit):
    """The manager got SIGTERM or SIGHUP (a scheduler's wall-time warning, a parent's kill,
    a closed terminal, or its launcher vanished).

    Raised in the main thread where the user's loop waits for results, so ``try/finally``
    and ``with`` blocks run; no more tasks are handed out and the workers are stopped. A
    ``SystemExit``: ``except Exception`` does not swallow it, and left uncaught it ends
    the program silently with exit status ``128 + signal number`` (143 for SIGTERM, 129 for
    SIGHUP). SIGINT raises Python's own ``KeyboardInterrupt`` (exit status 130).

    Attributes:
        signum: the signal number.
    """

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        import signal
        return "stopped by %s (exit status %d)" % (signal.Signals(self.signum).name,
                                                   128 + self.signum)

    def __reduce__(self):
        return (Terminated, (self.signum,))


class NoMoreWorkersError(Error):
    """Tasks remain but no worker is left (or will be started) to run them."""


class NetworkError(Error):
    """A worker could not be reached: it did not start, or it stopped answering."""


class WorkerStartError(NetworkError):
    """A worker did not start, or did not say hello within ``start_timeout``.

    Attributes:
        command: the command line that should have started the worker.
        log_file: the worker's log file (its stdout and stderr), which usually says why.
    """

    def __init__(self, message: str, command: str = "", log_file: Optional[str] = None):
        super().__init__(message)
        self.command = command
        self.log_file = log_file


class WorkerLostError(Error):
    """A worker died while it held the task (signal, exit, or no heartbeat).

    Raised for a task only after it has been retried ``max_retries`` times on other workers.

    Attributes:
        worker: description of the last worker that died with the task.
        exitcode: the worker's exit status or negative signal number, when known.
        log_file: the worker's log file.
    """

    def __init__(self, message: str, worker: Any = None, exitcode: Optional[int] = None,
                 log_file: Optional[str] = None, task: Any = None,
                 index: Optional[int] = None):
        super().__init__(message)
        self.worker = worker
        self.exitcode = exitcode
        self.log_file = log_file
        self.task = task
        self.index = index


class TaskTimeoutError(WorkerLostError):
    """A task ran longer than its ``timeout``; its worker was stopped."""


class SerializationError(Error, pickle.PicklingError):
    """A task, its setup, or its result could not be pickled or unpickled.

    Only that one task fails; the run goes on. It is a ``pickle.PicklingError`` too, so
    ``except pickle.PicklingError`` works as with the standard library; ``__cause__`` is the
    original exception (the executor face raises that one, as ``concurrent.futures`` does).
    """


class RemoteError(Error):
    """A task (or a setup function, or ``run_cmd`` source) raised on a worker.

    Attributes:
        exc: the original exception object (or a stand-in when it could not be pickled).
        traceback: the remote traceback as text.
        worker: description of the worker that raised it.
    """

    def __init__(self, exc: BaseException, traceback: str, worker: Any = None):
        super().__init__(exc, traceback, worker)
        self.exc = exc
        self.traceback = traceback
        self.worker = worker

    def __str__(self) -> str:
        return "%s: %s from %s\nRemote traceback:\n%s" % (
            type(self.exc).__name__, self.exc, self.worker, self.traceback)

    def __reduce__(self):
        return (RemoteError, (self.exc, self.traceback, str(self.worker)))
