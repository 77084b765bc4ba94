"""A ``concurrent.futures.Executor`` over the engine: ``MPIExecutor``.

::

  user threads                          manager thread (owns the engine)
  submit(fn, *a) ─► Future + WorkItem ─► SimpleQueue ─► engine.submit ─► workers
  future.cancel() ─► "cancel" command ─┘                 engine.progress()
                                                          dispatched? ─► set_running_or_notify_cancel
  future.result() ◄──────── set_result / set_exception ◄─ sink(item)

The engine is single threaded, so one background thread drives it and every other thread
talks to that thread through a queue. Tasks are pickled in the caller's thread, so an
unpicklable task fails its own future at once and the executor stays usable. A future turns
RUNNING when the engine has sent its task to a worker; until then ``cancel()`` takes it out
of the engine's queue. A task's exception is re-raised from ``result()`` as the original
type, with ``__cause__`` set to a :class:`RemoteTraceback` holding the worker's traceback (as
``ProcessPoolExecutor`` does).
"""
from __future__ import annotations

import atexit
import concurrent.futures as cf
import itertools
import os
import queue
import threading
import time
import weakref
from collections import deque
from concurrent.futures import BrokenExecutor, Future
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, List, Optional, Tuple

from . import _signals, _world
from ._engine import Engine, Setup, WorkItem
from ._progress import Progress, RunStats
from ._util import Backoff
from .errors import Error, RemoteError, SerializationError
from .workers import LocalWorker

__all__ = ["MPIExecutor", "BrokenMPIExecutor", "RemoteTraceback"]


class RemoteTraceback(Exception):
    """The ``__cause__`` of a re-raised task exception: its text is the remote traceback."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return self.tb


class BrokenMPIExecutor(BrokenExecutor, Error):
    """The executor cannot run tasks any more: its setup failed on a worker, or every worker
    is gone. Pending futures fail with it; ``submit`` raises it."""


class _SetupError(Exception):
    """Raised on a worker when the executor's setup function failed (marks it broken)."""


class _Setup:
    """The executor's setup, run once per worker (``initializer(*initargs)``)."""

    __slots__ = ("fn", "args")

    def __init__(self, fn: Callable[..., Any], args: tuple) -> None:
        self.fn = fn
        self.args = args

    def __call__(self) -> tuple:
        try:
            self.fn(*self.args)
        except BaseException as exc:
            raise _SetupError("the executor's setup function %r raised %s: %s"
                              % (self.fn, type(exc).__name__, exc)) from exc
        return ()


class _Call:
    """One ``submit`` on the wire."""

    __slots__ = ("fn", "args", "kwargs")

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self) -> Any:
        return self.fn(*self.args, **self.kwargs)


class _Chunk:
    """Several ``map`` calls in one task (``chunksize`` > 1); returns their results."""

    __slots__ = ("fn", "calls")

    def __init__(self, fn: Callable[..., Any], calls: List[tuple]) -> None:
        self.fn, self.calls = fn, calls

    def __call__(self) -> List[Any]:
        return [self.fn(*args) for args in self.calls]


class _Record:
    """Manager-side state of one future (never pickled)."""

    __slots__ = ("future", "item", "running")

    def __init__(self, future: Future, item: WorkItem) -> None:
        self.future = future
        self.item = item
        self.running = False  # set_running_or_notify_cancel was called


_executors: "weakref.WeakSet[MPIExecutor]" = weakref.WeakSet()
_hook_registered = False


def _shutdown_all() -> None:
    """At exit: finish the pending futures of every executor (as concurrent.futures does)."""
    for ex in list(_executors):
        ex.shutdown(wait=True)


def engine_with_workers(max_workers: Optional[int], spawn: int,
                        **options: Any) -> Tuple[Engine, List[Any]]:
    """An engine with the free ranks of the ``mpiexec`` world (at most ``max_workers``), or,
    in a singleton, ``spawn`` new ``LocalWorker`` processes.

    Returns the engine and the world ranks it holds, which the caller gives back with
    ``_world.give_back`` after ``engine.close()`` (so the next face can use them).
    """
    engine = Engine(adopt_world=False, **options)
    world = _world.take_workers()
    if max_workers is not None:
        _world.give_back(world[max_workers:])
        world = world[:max_workers]
    for w in world:
        engine.add_worker(w)
    if not world and _world.world_size() == 1:
        for _ in range(spawn):
            engine.add_worker(LocalWorker())
    return engine, world


def default_max_workers() -> int:
    """Workers a singleton executor spawns by default: one per core (os.cpu_count())."""
    return os.cpu_count() or 1


class MPIExecutor(cf.Executor):
    """Run calls on MPI worker processes, with the ``concurrent.futures`` API.

    Under ``mpiexec -n N`` the constructor turns ranks 1..N-1 into workers (they never return
    from it) and rank 0's executor uses them; in a singleton (``python script.py``) it spawns
    ``max_workers`` worker processes. One script thus runs both ways.

    Args:
        max_workers: singleton: worker processes to spawn (default: ``os.cpu_count()``, as
            ``ProcessPoolExecutor``); under ``mpiexec``: use at most this many ranks
            (default: all).
        setup: called once on each worker before its first task, as ``setup(*setup_args)``
            (``initializer``/``initargs`` are accepted too). If it raises, the executor is
            broken: pending and new futures fail with :class:`BrokenMPIExecutor`.
        setup_args: arguments of ``setup``.
        python: command line starting a worker's Python (default: this interpreter).
        output: ``%d`` pattern of the worker log files.
        prefetch: tasks in flight per worker (more hides latency, fewer cancels better).
        fault_tolerant: replace a worker that dies (its tasks are retried elsewhere).
        task_timeout: seconds a task may run before its worker is stopped and its future
            fails with :class:`TaskTimeoutError`.
        **engine_options: passed to the engine (``start_timeout``, ``max_retries``, ...).
    """

    def __init__(self, max_workers: Optional[int] = None,
                 setup: Optional[Callable[..., Any]] = None, setup_args: tuple = (), *,
                 initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                 python: Optional[str] = None, output: str = "worker%d.output",
                 prefetch: int = 2, fault_tolerant: bool = False,
                 task_timeout: Optional[float] = None, **engine_options: Any) -> None:
        _world.serve_if_worker(output)
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be > 0, not %r" % (max_workers,))
        if setup is not None and initializer is not None:
            raise TypeError("pass setup= or initializer=, not both")
        if initializer is not None:
            setup, setup_args = initializer, initargs
        if setup is not None and not callable(setup):
            raise TypeError("setup must be callable, not %r" % (setup,))
        self._engine, self._world = engine_with_workers(
            max_workers, max_workers or default_max_workers(), python=python, output=output,
            prefetch=prefetch, fault_tolerant=fault_tolerant, task_timeout=task_timeout,
            **engine_options)
        engine = self._engine
        self._max_workers = len(engine.live_workers())
        self._setup = Setup(_Setup(setup, tuple(setup_args)) if setup is not None else None)
        self._commands: "queue.SimpleQueue[tuple]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._shutdown = False
        self._broken: Optional[BrokenMPIExecutor] = None
        # manager-thread state
        self._pending: Dict[int, _Record] = {}
        self._order: Deque[_Record] = deque()
        self._stopping = False
        self._thread = threading.Thread(target=self._manage, name="mpidispatch-executor",
                                        daemon=True)
        global _hook_registered
        if not _hook_registered:  # after the engine's own hook, so it runs before it
            atexit.register(_shutdown_all)
            _hook_registered = True
        _executors.add(self)
        self._thread.start()

    @property
    def num_workers(self) -> int:
        """Workers this executor started with."""
        return self._max_workers

    # -- the user's side ---------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return its :class:`Future`.

        An unpicklable call gives a future failed with :class:`SerializationError`.

        Raises:
            RuntimeError: the executor was shut down.
            BrokenMPIExecutor: the executor is broken.
        """
        return self._submit(_Call(fn, args, kwargs))

    def _submit(self, call: Any) -> Future:
        self._check_open()
        future: Future = Future()
        try:
            item = WorkItem(call, self._sink, self._setup)
        except SerializationError as exc:
            future.set_exception(exc)
            return future
        record = _Record(future, item)
        item.tag = record
        with self._lock:
            self._check_open()
            self._commands.put(("submit", record))
        future.add_done_callback(self._on_done)
        return future

    def _check_open(self) -> None:
        if self._broken is not None:
            raise BrokenMPIExecutor(str(self._broken)) from self._broken.__cause__
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _on_done(self, future: Future) -> None:
        if future.cancelled():  # user's cancel(): take the task out of the engine's queue
            self._commands.put(("cancel", future))

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: int = 1, unordered: bool = False,
            buffersize: Optional[int] = None, progress: bool = False) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the workers, lazily.

        Args:
            timeout: seconds from this call after which waiting for a result raises
                ``concurrent.futures.TimeoutError``.
            chunksize: calls per task (cuts the per-task overhead of many tiny calls).
            unordered: yield results as they complete instead of in input order.
            buffersize: tasks submitted ahead of the consumer (default: 2 x workers x
                prefetch), so a huge or endless iterable is read only as fast as it is used.
            progress: draw a progress bar and print a summary line at the end.

        The first exception of a call is raised when its result is reached; the tasks not
        yet started are then cancelled.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1, not %r" % (chunksize,))
        ahead = buffersize or max(2, 2 * self._max_workers * self._engine.prefetch)
        if ahead < 1:
            raise ValueError("buffersize must be >= 1, not %r" % (buffersize,))
        end = None if timeout is None else time.monotonic() + timeout
        total = _common_length(iterables)
        calls: Iterator[Any] = zip(*iterables)
        if chunksize > 1:
            calls = (_Chunk(fn, list(c)) for c in _batched(calls, chunksize))
        else:
            calls = (_Call(fn, args, {}) for args in calls)
        bar = Progress(progress, total=total)
        stats = RunStats(self._engine)
        futures: Deque[Future] = deque()
        for call in itertools.islice(calls, ahead):  # start now, as Executor.map does
            futures.append(self._submit(call))
        gen = _unordered if unordered else _ordered
        results = gen(self, futures, calls, ahead, end, chunksize > 1)
        return _with_progress(results, bar, stats, progress)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; finish (or with ``cancel_futures``, cancel) the pending ones.

        With ``wait``, return when every running task has finished and the spawned workers
        have stopped; otherwise return at once and let the manager thread finish.
        """
        with self._lock:
            if not self._shutdown:
                self._shutdown = True
                self._commands.put(("stop", cancel_futures))
            elif cancel_futures:
                self._commands.put(("stop", True))
        if wait and self._thread is not threading.current_thread():
            self._thread.join()

    # -- the manager thread ------------------------------------------------------------------
    def _manage(self) -> None:
        engine = self._engine
        backoff = Backoff()
        try:
            while True:
                _signals.raise_if_stopping(any_thread=True)   # fail what is pending, stop
                busy = self._take_commands()
                if self._stopping and not self._pending:
                    break
                if engine.progress():
                    busy = True
                self._mark_running()
                if engine.queue:
                    engine.check_workers_left()
                if busy:
                    backoff.reset()
                else:
                    backoff.sleep()
        except BaseException as exc:  # no worker left, or a bug: fail fast, never hang
            self._break(exc)
        finally:
            try:
                engine.close()
                _world.give_back(self._world)
            finally:
                self._take_commands()  # futures submitted in the meantime fail too

    def _take_commands(self) -> bool:
        got = False
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return got
            got = True
            verb = command[0]
            if verb == "submit":
                self._on_submit(command[1])
            elif verb == "cancel":
                self._on_cancel(command[1])
            elif verb == "stop":
                self._stopping = True
                if command[1]:
                    self._cancel_queued()

    def _on_submit(self, record: _Record) -> None:
        if self._broken is not None:
            _fail(record, self._broken)
            return
        if record.future.cancelled():
            self._notify_cancelled(record)
            return
        self._pending[record.item.work_id] = record
        self._order.append(record)
        self._engine.submit(record.item)

    def _on_cancel(self, future: Future) -> None:
        record = None
        for r in self._order:  # futures not yet running are at the front... or anywhere
            if r.future is future:
                record = r
                break
        if record is None:
            return  # cancelled before its submit command came: handled in _on_submit
        if self._engine.cancel(record.item):
            self._pending.pop(record.item.work_id, None)
            self._order.remove(record)
            self._notify_cancelled(record)

    def _notify_cancelled(self, record: _Record) -> None:
        if not record.running:
            record.running = True
            record.future.set_running_or_notify_cancel()

    def _cancel_queued(self) -> None:
        for record in list(self._order):
            if record.item.worker is None and self._engine.cancel(record.item):
                self._pending.pop(record.item.work_id, None)
                self._order.remove(record)
                record.future.cancel()
                self._notify_cancelled(record)

    def _mark_running(self) -> None:
        """Futures whose task the engine has sent to a worker turn RUNNING (FIFO queue)."""
        order = self._order
        while order and (order[0].item.worker is not None or order[0].running):
            record = order.popleft()
            if not record.running:
                record.running = True
                record.future.set_running_or_notify_cancel()

    def _sink(self, item: WorkItem) -> None:
        record: _Record = item.tag
        self._pending.pop(item.work_id, None)
        error = item.error
        if error is None:
            if not record.running:
                record.running = True
                if not record.future.set_running_or_notify_cancel():
                    return  # cancelled while its task was on the way to a worker
            try:
                record.future.set_result(item.result)
            except cf.InvalidStateError:
                pass  # cancelled after it turned RUNNING: cannot happen, but never crash here
            return
        if isinstance(error, RemoteError) and isinstance(error.exc, _SetupError):
            self._break(error)
            _fail(record, self._broken)  # type: ignore[arg-type]
            return
        if isinstance(error, RemoteError):
            error = error.exc
            error.__cause__ = RemoteTraceback(item.error.traceback)  # type: ignore
        _fail(record, error)

    def _break(self, cause: BaseException) -> None:
        """Mark the executor broken and fail every pending future (one shared error)."""
        with self._lock:  # a submit() after this sees it; one before is drained at the end
            if self._broken is None:
                broken = BrokenMPIExecutor(
                    "the executor is broken: %s: %s. Pending tasks were failed; create a new "
                    "executor (check the setup function, the worker log files, or use "
                    "fault_tolerant=True)." % (type(cause).__name__, cause))
                broken.__cause__ = cause
                self._broken = broken
        self._stopping = True
        for record in list(self._pending.values()):
            self._engine.cancel(record.item)
            _fail(record, self._broken)
        self._pending.clear()
        self._order.clear()


def _fail(record: _Record, error: BaseException) -> None:
    """Fail a record's future, unless the user cancelled it meanwhile."""
    if not record.running:
        record.running = True
        if not record.future.set_running_or_notify_cancel():
            return  # cancelled
    try:
        record.future.set_exception(error)
    except cf.InvalidStateError:
        pass


# -- map helpers -----------------------------------------------------------------------------
def _common_length(iterables: Tuple[Iterable[Any], ...]) -> Optional[int]:
    try:
        return min(len(it) for it in iterables)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _batched(it: Iterator[Any], n: int) -> Iterator[Tuple[Any, ...]]:
    while True:
        chunk = tuple(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk


def _remaining(end: Optional[float]) -> Optional[float]:
    return None if end is None else max(0.0, end - time.monotonic())


def _ordered(ex: MPIExecutor, futures: Deque[Future], calls: Iterator[Any], ahead: int,
             end: Optional[float], chunked: bool) -> Iterator[Any]:
    try:
        while futures:
            future = futures.popleft()
            for call in itertools.islice(calls, ahead - len(futures)):
                futures.append(ex._submit(call))
            result = future.result(_remaining(end))
            if chunked:
                yield from result
            else:
                yield result
    finally:
        for future in futures:
            future.cancel()


def _unordered(ex: MPIExecutor, futures: Deque[Future], calls: Iterator[Any], ahead: int,
               end: Optional[float], chunked: bool) -> Iterator[Any]:
    waiting = set(futures)
    try:
        while waiting:
            done, waiting = cf.wait(waiting, _remaining(end), cf.FIRST_COMPLETED)
            if not done:
                raise cf.TimeoutError()
            for call in itertools.islice(calls, ahead - len(waiting)):
                waiting.add(ex._submit(call))
            for future in done:
                result = future.result()
                if chunked:
                    yield from result
                else:
                    yield result
    finally:
        for future in waiting:
            future.cancel()


def _with_progress(results: Iterator[Any], bar: Progress, stats: RunStats,
                   shown: bool) -> Iterator[Any]:
    try:
        for result in results:
            bar.update()
            yield result
    finally:
        bar.close()
    stats.report(shown, "map")
