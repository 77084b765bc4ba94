"""The task group: the one contract between the engine and every face.

A face (IMP ``Context``, MODELLER ``job``, ``JobDispatcher``, ``MPIExecutor``) translates its
own API onto a :class:`TaskGroup`:

=======================  ======================================================
``submit(task)``         serialize and queue a task (unpicklable: fails here)
``as_completed()``       the group's items as they finish; survives a failed task
``in_order(items)``      wait for all, then the items in submission order
``cancel(item)``         take a task back if no worker holds it
``cancel_pending()``     take back every task no worker holds (abandoned loops)
``capacity()``           how many more tasks keep every worker busy (back-pressure)
``stats``                counts for the summary line
=======================  ======================================================

The engine calls two hooks: :meth:`TaskGroup._starting` just before a task is sent (a
group may refuse, e.g. a future that was cancelled meanwhile) and :meth:`TaskGroup._finished`
when its result or error is final. Everything about a task's life lives on its
:class:`~mpidispatch._work.WorkItem`, so a semantic fix is made here once for every face.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional

from ._progress import Progress, RunStats
from ._work import CANCELLED, DELIVERED, DONE, QUEUED, SENT, Payload, Setup, WorkItem


class GroupStats:
    """What a group did: submitted, finished, failed and cancelled task counts."""

    __slots__ = ("submitted", "done", "failed", "cancelled")

    def __init__(self) -> None:
        self.submitted = self.done = self.failed = self.cancelled = 0

    def __repr__(self) -> str:
        return ("<GroupStats submitted=%d done=%d failed=%d cancelled=%d>"
                % (self.submitted, self.done, self.failed, self.cancelled))


class TaskGroup:
    """Tasks that share a setup and are collected together (see the module docstring).

    Args:
        engine: the engine that runs the tasks.
        setup: called once per worker before the group's first task there; its return value
            (a tuple) is passed to each task as arguments.
        on_starting: called (engine thread) with an item just before it is sent; returning
            False drops the task (it was cancelled by its owner meanwhile).
        on_finished: called (engine thread) with each finished item instead of queueing it
            for :meth:`as_completed` (the executor sets its futures here).
    """

    def __init__(self, engine: Any, setup: Optional[Callable[[], Any]] = None, *,
                 on_starting: Optional[Callable[[WorkItem], bool]] = None,
                 on_finished: Optional[Callable[[WorkItem], None]] = None) -> None:
        self.engine = engine
        self.setup = setup if isinstance(setup, Setup) else Setup(setup)
        self.stats = GroupStats()
        self._done: Deque[WorkItem] = deque()
        self._on_starting = on_starting
        self._on_finished = on_finished
        self._next_index = 0
        #: Tasks submitted and not yet delivered (or cancelled).
        self.outstanding = 0

    # -- submitting ------------------------------------------------------------------------
    def make_item(self, task: Any, call: Any = None, timeout: Optional[float] = None,
                  tag: Any = None, key: Any = None) -> WorkItem:
        """Serialize a task into an item without queueing it (any thread).

        Args:
            task: the user's task object (named in errors).
            call: what the worker calls with the setup's values (default: ``task``).
            key: the task's key in the run journal (default: a digest of its bytes).

        Raises:
            SerializationError: the task cannot be pickled.
            TypeError: ``key`` is not a str, int, float, bytes, bool or tuple of these.
        """
        payload = Payload(task if call is None else call)
        item = WorkItem(task, payload, self, self._next_index, self.setup, timeout, tag)
        journal = getattr(self.engine, "journal", None)   # fakes in unit tests have none
        if journal is not None:
            setup = self.setup.payload
            item.key = journal.task_key([payload.data, *payload.buffers],
                                        [setup.data, *setup.buffers], key)
        self._next_index += 1
        return item

    def enqueue(self, item: WorkItem) -> None:
        """Queue an item made by :meth:`make_item` (the engine's thread). A task whose
        outcome the run journal holds is not run: it finishes at once with that outcome."""
        self.outstanding += 1
        self.stats.submitted += 1
        journal = getattr(self.engine, "journal", None)   # fakes in unit tests have none
        if journal is not None and item.key is not None:
            found = journal.recorded(item.key)
            if found is not None:
                if found[0] == "done":
                    item.result = found[1]
                else:
                    item.error = found[1]
                self._finished(item)
                return
            journal.queued(item.key)
        self.engine.submit(item)

    def submit(self, task: Any, call: Any = None, timeout: Optional[float] = None,
               tag: Any = None, key: Any = None) -> WorkItem:
        """Serialize and queue a task; it runs as ``call(*setup())`` (``call`` defaults to
        ``task``).

        Raises:
            SerializationError: the task cannot be pickled (nothing is queued).
        """
        item = self.make_item(task, call, timeout, tag, key)
        self.enqueue(item)
        return item

    def cancel(self, item: WorkItem) -> bool:
        """Take back a task no worker holds yet; False if it was sent (or is done)."""
        if item.state != QUEUED or not self.engine.cancel(item):
            return False
        item.state = CANCELLED
        self.outstanding -= 1
        self.stats.cancelled += 1
        return True

    def cancel_pending(self) -> int:
        """Take back every task of this group that no worker holds; return how many."""
        items = self.engine.take_queued(self)
        for item in items:
            item.state = CANCELLED
        self.outstanding -= len(items)
        self.stats.cancelled += len(items)
        return len(items)

    def capacity(self) -> int:
        """How many more tasks to submit so that every worker stays busy, counting the
        group's tasks not yet delivered (the one back-pressure rule: a lazy face submits
        while this is > 0, so submitted-but-uncollected tasks never exceed the slots)."""
        return max(0, self.engine.slots() - self.outstanding)

    # -- collecting ------------------------------------------------------------------------
    def next_completed(self, timeout: Optional[float] = None) -> Optional[WorkItem]:
        """The next finished item, driving the engine until one is there.

        Returns None when nothing is outstanding, or when ``timeout`` passed first.

        Raises:
            NoMoreWorkersError: never for a task (such tasks finish with that error); only
                from the engine's own checks.
        """
        done = self._done
        if not done:
            if self.outstanding == 0:
                return None
            if not self.engine.run_until(lambda: bool(done), timeout):
                return None
        self.outstanding -= 1
        item = done.popleft()
        item.state = DELIVERED
        return item

    def as_completed(self, progress: bool = False, what: str = "mpidispatch") -> "Completion":
        """An iterator over this group's items in completion order (see :class:`Completion`)."""
        return Completion(self, progress, what)

    def in_order(self, items: Iterable[WorkItem], progress: bool = False,
                 what: str = "mpidispatch") -> List[WorkItem]:
        """Wait until every item of ``items`` has finished; return them in the given order."""
        items = list(items)
        for _ in self.as_completed(progress, what):
            pass
        return items

    def first_error(self, items: Iterable[WorkItem]) -> Optional[BaseException]:
        """The error of the first failed item (in the given order), or None."""
        for item in items:
            if item.error is not None:
                return item.error
        return None

    # -- engine hooks ------------------------------------------------------------------------
    def _starting(self, item: WorkItem) -> bool:
        if self._on_starting is not None and not self._on_starting(item):
            item.state = CANCELLED
            self.outstanding -= 1
            self.stats.cancelled += 1
            return False
        item.state = SENT
        return True

    def _finished(self, item: WorkItem) -> None:
        item.state = DONE
        self.stats.done += 1
        if item.error is not None:
            self.stats.failed += 1
        if self._on_finished is not None:
            self.outstanding -= 1
            self._on_finished(item)
        else:
            self._done.append(item)


class Completion:
    """A group's items in completion order, with an optional progress bar and summary.

    ``next()`` returns the next finished :class:`WorkItem` (check its ``error``); tasks
    submitted while iterating are included. It ends when nothing is outstanding. Leaving the
    loop early (``close()``, an exception in the loop body, garbage collection) cancels the
    tasks no worker holds yet.
    """

    def __init__(self, group: TaskGroup, progress: bool, what: str) -> None:
        self._group = group
        self._progress = progress
        self._what = what
        self._bar = Progress(progress, total=group.outstanding)
        self._stats: Optional[RunStats] = RunStats(group.engine)
        self._seen = group.outstanding

    def __iter__(self) -> "Completion":
        return self

    def __next__(self) -> WorkItem:
        group = self._group
        self._bar.add_total(group.outstanding - self._seen)  # tasks added meanwhile
        try:
            item = group.next_completed()
        except BaseException:
            self.close(cancel=True)
            raise
        if item is None:
            self.close(cancel=False)
            raise StopIteration
        self._seen = group.outstanding
        self._bar.update()
        return item

    def close(self, cancel: bool = True) -> None:
        """End the loop: cancel what no worker holds (with ``cancel``), print the summary."""
        if self._stats is None:
            return
        if cancel:
            self._group.cancel_pending()
        self._bar.close()
        self._stats.report(self._progress, self._what)
        self._stats = None

    def __del__(self) -> None:
        try:
            if self._stats is not None:
                self._bar.close()
                self._stats = None
        except Exception:
            pass


def iter_results(items: Iterator[WorkItem]) -> Iterator[Any]:
    """Results of items, raising the error of the first failed one (generator faces)."""
    for item in items:
        if item.error is not None:
            raise item.error
        yield item.result


__all__ = ["TaskGroup", "Completion", "GroupStats", "iter_results", "QUEUED", "SENT", "DONE",
           "DELIVERED", "CANCELLED"]
