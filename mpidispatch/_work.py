"""What the manager tracks about one task, and payloads serialized once.

A :class:`WorkItem` is created by a :class:`~mpidispatch._taskgroup.TaskGroup` (never by a
face directly) and handed to the engine; only its payload crosses the wire. Its life:
``QUEUED`` → ``SENT`` (a worker holds it) → ``DONE`` (``result`` or ``error`` set), or
``CANCELLED`` while still queued; ``DELIVERED`` once its group handed it to the face. A
task that loses its worker goes back to ``QUEUED``.
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Optional, Sequence

from . import _serialize
from ._protocol import INLINE_MAX, pack
from .errors import SerializationError

_ids = itertools.count(1)

QUEUED, SENT, DONE, DELIVERED, CANCELLED = "queued", "sent", "done", "delivered", "cancelled"


def next_id() -> int:
    """A process-unique id for a task or a setup (travels in message payloads)."""
    return next(_ids)


class Payload:
    """An object serialized once: pickle bytes plus out-of-band buffers."""

    __slots__ = ("data", "buffers", "sizes")

    def __init__(self, obj: Any, what: str = "task") -> None:
        try:
            data, buffers = _serialize.dumps(obj)
        except Exception as exc:
            raise SerializationError("the %s %s cannot be pickled: %s: %s"
                                     % (what, _short_repr(obj), type(exc).__name__, exc)
                                     ) from exc
        self.buffers: Sequence[Any]
        if buffers or len(data) > INLINE_MAX:
            self.data, self.sizes, self.buffers = pack(data, buffers)
        else:  # the common small task: no lists or tuples of its own
            self.data, self.sizes, self.buffers = data, (), ()


class Setup:
    """A task group's setup function, serialized once and run once per worker."""

    __slots__ = ("id", "payload", "fn")

    def __init__(self, fn: Optional[Callable[[], Any]]) -> None:
        if fn is not None and not callable(fn):
            raise TypeError("the setup must be a callable run on each worker (pass the "
                            "function itself, not the result of calling it), not %s"
                            % _short_repr(fn))
        self.id = next_id()
        self.fn = fn
        self.payload = Payload(fn, "setup function")


class WorkItem:
    """One task as the manager tracks it.

    Attributes:
        work_id: process-unique id on the wire.
        index: the task's number in its group, in submission order (0 first): how errors
            name the task to the user.
        task: the task object the user submitted (for error messages and ``Error.task``).
        tries: losses of a worker while it ran this task.
        killed: distinct workers lost while they ran this task.
        key: the task's key in the run journal (None without a journal).
        solo: never batched with other tasks (set once a worker holding it was lost).
        weight: the share of its worker's slots it takes while in flight: 1 in a batch, the
            batch size when sent alone (see ``Engine._dispatch``).
        batched: it was last sent in a batch of several tasks.
    """

    __slots__ = ("work_id", "index", "task", "payload", "setup", "group", "tries", "killed",
                 "worker", "result", "error", "timeout", "tag", "state", "key", "solo",
                 "weight", "batched")

    def __init__(self, task: Any, payload: Payload, group: Any, index: int,
                 setup: Optional[Setup] = None, timeout: Optional[float] = None,
                 tag: Any = None) -> None:
        self.work_id = next(_ids)
        self.index = index
        self.task = task
        self.payload = payload
        self.setup = setup
        self.group = group
        self.tries = 0
        self.killed = 0
        self.worker: Any = None
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.timeout = timeout
        self.tag = tag
        self.state = QUEUED
        self.key: Optional[str] = None
        self.solo = False
        self.weight = 1
        self.batched = False

    def describe(self) -> str:
        """How an error names this task: 'task #51 (<repr>)'."""
        return "task #%d (%s)" % (self.index, _short_repr(self.task))

    def __repr__(self) -> str:
        return "<WorkItem %s %s>" % (self.describe(), self.state)


def _short_repr(obj: Any, limit: int = 120) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = "<%s object>" % type(obj).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
