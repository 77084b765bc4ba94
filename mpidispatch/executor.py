"""A ``concurrent.futures.Executor`` over the engine: ``MPIExecutor``.

::

  user threads                         manager thread (runs Engine.run_until)
  submit(fn, *a) ─► Future + WorkItem ─► engine.call_soon(group.enqueue) ─► workers
                                         group hook _starting: set_running_or_notify_cancel
                                           (False: the future was cancelled; never sent)
  future.result() ◄── set_result / set_exception ◄── group hook _finished(item)

The engine is single threaded; one background thread drives it with the engine's own loop,
and other threads hand it work with :meth:`Engine.call_soon`. Tasks are pickled in the
caller's thread, so an unpicklable task fails its own future at once. A future turns RUNNING
just before its task is sent to a worker (a worker holds it from then on, so it can no
longer be cancelled), and a cancelled future's task is never sent. A task's exception is
re-raised from ``result()`` as the original type, with ``__cause__`` set to a
:class:`RemoteTraceback` holding the worker's traceback (as ``ProcessPoolExecutor`` does).
The executor shuts down when it is garbage collected, as the standard library's do.
"""
from __future__ import annotations

import concurrent.futures as cf
import itertools
import logging
import os
import threading
import time
import weakref
from collections import deque
from concurrent.futures import BrokenExecutor, Future
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Tuple

from . import _lifecycle
from ._engine import Engine, engine_for_pool
from ._options import resolve
from ._progress import Progress, RunStats
from ._taskgroup import TaskGroup
from ._util import Backoff
from ._work import WorkItem
from .errors import Error, NoMoreWorkersError, RemoteError, SerializationError, \
    WorkerStartError
from .workers import NEW, STARTING

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


_executors: "weakref.WeakSet[MPIExecutor]" = weakref.WeakSet()


def _shutdown_all() -> None:
    """At exit: finish the pending futures of every executor (as concurrent.futures does)."""
    for ex in list(_executors):
        ex.shutdown(wait=True)


def default_max_workers() -> int:
    """Workers a singleton executor spawns by default: one per core (os.cpu_count())."""
    return os.cpu_count() or 1


class _Core:
    """The executor's state shared with its manager thread. It holds no reference to the
    :class:`MPIExecutor`, so a dropped executor is collected, and its finalizer stops this."""

    def __init__(self, engine: Engine, setup: Any) -> None:
        self.engine = engine
        self.group = TaskGroup(engine, setup, on_starting=self.starting,
                               on_finished=self.finished)
        self.lock = threading.Lock()
        self.shutdown = False
        self.stopping = False
        self.broken: Optional[BrokenMPIExecutor] = None
        self.done_event = threading.Event()

    # -- engine-thread hooks ----------------------------------------------------------------
    @staticmethod
    def starting(item: WorkItem) -> bool:
        future: Future = item.tag
        if future.running():
            return True  # requeued after its worker was lost: still the same run
        return future.set_running_or_notify_cancel()

    def finished(self, item: WorkItem) -> None:
        future: Future = item.tag
        error = item.error
        if error is None:
            _settle(future, result=item.result)
            return
        if isinstance(error, RemoteError) and getattr(error, "kind", "") == "setup":
            logging.getLogger("concurrent.futures").critical(
                "Exception in initializer:\n%s", error.traceback)
            self.break_(error)
            _settle(future, error=self.broken)
            return
        if isinstance(error, (NoMoreWorkersError, WorkerStartError)):
            self.break_(error)
            _settle(future, error=self.broken)
            return
        _settle(future, error=original_error(error))

    def break_(self, cause: BaseException) -> None:
        """Mark the executor broken; fail every future not yet done (engine thread)."""
        with self.lock:
            if self.broken is None:
                broken = BrokenMPIExecutor(
                    "the executor is broken: %s: %s. Pending tasks were failed; create a new "
                    "executor (check the setup function, the worker log files, or use "
                    "fault_tolerant=True)." % (type(cause).__name__, cause))
                broken.__cause__ = cause
                self.broken = broken
        self.stopping = True
        for item in self.engine.take_queued(self.group):
            self.group.outstanding -= 1
            _settle(item.tag, error=self.broken)

    def cancel_queued(self) -> None:
        """``shutdown(cancel_futures=True)``: cancel every future no worker holds."""
        for item in self.engine.take_queued(self.group):
            self.group.outstanding -= 1
            self.group.stats.cancelled += 1
            item.tag.cancel()

    def enqueue(self, item: WorkItem) -> None:
        if self.broken is not None:
            _settle(item.tag, error=self.broken)
        elif self.engine.closed:
            _settle(item.tag, error=RuntimeError("cannot schedule new futures after shutdown"))
        else:
            self.group.enqueue(item)

    # -- the manager thread -----------------------------------------------------------------
    def run(self) -> None:
        engine = self.engine
        try:
            engine.run_until(lambda: self.stopping and self.group.outstanding <= 0)
        except BaseException as exc:  # a bug or MPI failure: fail fast, never hang
            self.break_(exc)
        finally:
            try:
                engine.close()
            finally:
                engine.progress_inbox()  # futures submitted in the meantime fail too
                self.done_event.set()

    def request_stop(self, cancel_futures: bool = False) -> None:
        """No new tasks; let the thread finish (any thread; idempotent)."""
        with self.lock:
            self.shutdown = True
        if cancel_futures:
            self.engine.call_soon(self.cancel_queued)
        self.engine.call_soon(self._stop)

    def _stop(self) -> None:
        self.stopping = True


def _settle(future: Future, result: Any = None, error: Optional[BaseException] = None) -> None:
    """Finish a future unless it was cancelled (or finished) meanwhile."""
    if not future.running() and not future.done():
        if not future.set_running_or_notify_cancel():
            return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except cf.InvalidStateError:
        pass


def original_error(error: BaseException) -> BaseException:
    """The exception a ``concurrent.futures`` user expects for a task's error: the task's
    own exception (its ``__cause__`` a :class:`RemoteTraceback`) for a remote one, the
    original pickling exception for a serialization failure."""
    if isinstance(error, RemoteError):
        exc = error.exc
        exc.__cause__ = RemoteTraceback(error.traceback)
        return exc
    if isinstance(error, SerializationError) and error.__cause__ is not None:
        exc = error.__cause__
        if not isinstance(exc, Error):
            exc.__cause__ = RemoteTraceback(str(error)) if "\n" in str(error) else None
            return exc
    return error


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
            broken: pending and new futures fail with :class:`BrokenMPIExecutor`, and the
            error is logged on the ``concurrent.futures`` logger.
        setup_args: arguments of ``setup``.
        output: ``%d`` pattern of worker log files; default None: workers print to this
            process's stdout and stderr, as with ``concurrent.futures``.
        workers: run on these workers instead (``LocalWorker`` objects, or a worker array
            such as ``SlurmWorkerArray()``); ``max_workers`` is then ignored.
        **options: engine options (:class:`mpidispatch.Options`: ``python``, ``prefetch``,
            ``fault_tolerant``, ``task_timeout``, ``start_timeout``, ``max_retries``, ...).
    """

    def __init__(self, max_workers: Optional[int] = None,
                 setup: Optional[Callable[..., Any]] = None, setup_args: tuple = (), *,
                 initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                 output: Optional[str] = None, workers: Any = None, **options: Any) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if setup is not None and initializer is not None:
            raise TypeError("pass setup= or initializer=, not both")
        if initializer is not None:
            setup, setup_args = initializer, initargs
        if setup is not None and not callable(setup):
            raise TypeError("setup must be callable, not %r" % (setup,))
        opts = resolve(output=output, **options)
        from . import _world
        _world.serve_if_worker(output)
        engine, _ = engine_for_pool(opts, max_workers, max_workers or default_max_workers(),
                                    workers)
        self._core = _Core(engine, _Setup(setup, tuple(setup_args))
                           if setup is not None else None)
        self._index_lock = threading.Lock()
        self._thread = threading.Thread(target=self._core.run, name="mpidispatch-executor",
                                        daemon=True)
        _lifecycle.register(_shutdown_all, _lifecycle.EXECUTORS)
        _executors.add(self)
        weakref.finalize(self, self._core.request_stop)
        self._thread.start()

    @property
    def _engine(self) -> Engine:
        return self._core.engine

    @property
    def num_workers(self) -> int:
        """Live workers (0 after ``shutdown()`` or once the executor is broken, as mpi4py)."""
        core = self._core
        if core.shutdown or core.broken is not None:
            return 0
        return len(core.engine.live_workers())

    def bootup(self, wait: bool = True, timeout: Optional[float] = None) -> "MPIExecutor":
        """Make sure the workers are starting; with ``wait``, return once every one is up
        or has failed to start (mpi4py.futures' ``bootup``). Returns the executor.

        Raises:
            TimeoutError: workers still starting after ``timeout`` seconds.
        """
        self._check_open()
        if not wait:
            return self
        engine = self._core.engine
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = Backoff(spin=0.0, start=0.005, cap=0.05)
        while any(w.state in (NEW, STARTING) for w in list(engine.workers)) \
                or engine._new_workers:
            if self._core.done_event.is_set():
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("workers still starting after %s s" % timeout)
            backoff.sleep()
        return self

    wait_ready = bootup

    # -- the user's side ---------------------------------------------------------------------
    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedule ``fn(*args, **kwargs)`` on a worker; return its :class:`Future`.

        A call that cannot be pickled gives a future failed with the pickling exception.

        Raises:
            RuntimeError: the executor was shut down.
            BrokenMPIExecutor: the executor is broken.
        """
        return self._submit(fn, _Call(fn, args, kwargs))

    def _submit(self, task: Any, call: Any) -> Future:
        self._check_open()
        future: Future = Future()
        core = self._core
        try:
            with self._index_lock:
                item = core.group.make_item(task, call, tag=future)
        except SerializationError as exc:
            _settle(future, error=original_error(exc))
            return future
        with core.lock:
            self._check_open()
            core.engine.call_soon(lambda: core.enqueue(item))
        return future

    def _check_open(self) -> None:
        core = self._core
        if core.broken is not None:
            raise BrokenMPIExecutor(str(core.broken)) from core.broken.__cause__
        if core.shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: int = 1, unordered: bool = False,
            buffersize: Optional[int] = None, progress: bool = False) -> Iterator[Any]:
        """``map(fn, *iterables)`` on the workers.

        As with the standard library, every call is submitted at once, unless
        ``buffersize`` asks to keep only that many submitted ahead of the consumer (Python
        3.14 and mpi4py's ``buffersize``; an endless iterable needs it).

        Args:
            timeout: seconds from this call after which waiting for a result raises
                ``TimeoutError``.
            chunksize: calls per task (cuts the per-task overhead of many tiny calls).
            unordered: yield results as they complete instead of in input order (not with
                ``buffersize``, as in mpi4py).
            buffersize: at most this many tasks submitted ahead of the consumer.
            progress: draw a progress bar and print a summary line at the end.

        The first exception of a call is raised when its result is reached; the tasks not
        yet started are then cancelled.
        """
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if not isinstance(buffersize, int) or isinstance(buffersize, bool):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
            if unordered:
                raise ValueError("buffersize cannot be combined with unordered=True")
        end = None if timeout is None else time.monotonic() + timeout
        total = _common_length(iterables)
        calls: Iterator[Any] = zip(*iterables)
        if chunksize > 1:
            calls = (_Chunk(fn, list(c)) for c in _batched(calls, chunksize))
        else:
            calls = (_Call(fn, args, {}) for args in calls)
        bar = Progress(progress, total=total)
        stats = RunStats(self._core.engine)
        futures: Deque[Future] = deque(
            self._submit(fn, call) for call in
            (calls if buffersize is None else itertools.islice(calls, buffersize)))
        run = _MapRun(bar, stats, progress)
        if unordered:
            return _unordered(futures, end, chunksize > 1, run)
        return _ordered(self, futures, calls if buffersize else iter(()), end, chunksize > 1,
                        run)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new tasks; finish (or with ``cancel_futures``, cancel) the pending ones.

        With ``cancel_futures``, the futures whose task no worker holds yet are cancelled;
        those a worker holds (``running()`` is True) run to the end. With ``wait``, return
        when every running task has finished and the spawned workers have stopped.
        """
        self._core.request_stop(cancel_futures)
        if wait and self._thread is not threading.current_thread():
            self._thread.join()


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


def _result_or_cancel(future: Future, timeout: Optional[float]) -> Any:
    """The future's result; drop every reference to it before returning (so that a result
    the consumer has dropped is freed), cancelling it on a timeout."""
    try:
        try:
            return future.result(timeout)
        finally:
            future.cancel()
    finally:
        del future


class _MapRun:
    """Bookkeeping of one ``map`` call: progress bar and summary line."""

    def __init__(self, bar: Progress, stats: RunStats, shown: bool) -> None:
        self.bar, self.stats, self.shown = bar, stats, shown

    def finish(self) -> None:
        self.bar.close()
        self.stats.report(self.shown, "map")


def _take(future: Future, timeout: Optional[float], run: _MapRun, chunked: bool) -> Any:
    result = _result_or_cancel(future, timeout)
    run.bar.update(len(result) if chunked else 1)
    return result


def _ordered(ex: MPIExecutor, futures: Deque[Future], more: Iterator[Any],
             end: Optional[float], chunked: bool, run: _MapRun) -> Iterator[Any]:
    # Results are yielded straight from the call that takes them, so that no local name
    # of this generator keeps a result alive after the consumer dropped it.
    try:
        while futures:
            for call in itertools.islice(more, 1):  # buffersize: keep the window full
                futures.append(ex._submit(call, call))
            if chunked:
                yield from _take(futures.popleft(), _remaining(end), run, True)
            else:
                yield _take(futures.popleft(), _remaining(end), run, False)
    finally:
        for future in futures:
            future.cancel()
        run.finish()


def _unordered(futures: Deque[Future], end: Optional[float], chunked: bool,
               run: _MapRun) -> Iterator[Any]:
    waiting = set(futures)
    futures.clear()
    try:
        while waiting:
            done, waiting = cf.wait(waiting, _remaining(end), cf.FIRST_COMPLETED)
            if not done:
                raise cf.TimeoutError()
            while done:
                if chunked:
                    yield from _take(done.pop(), None, run, True)
                else:
                    yield _take(done.pop(), None, run, False)
    finally:
        for future in waiting:
            future.cancel()
        run.finish()
