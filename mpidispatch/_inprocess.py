"""In-process stand-ins for the faces: tasks run serially in this process, without MPI.

``mpidispatch.testing.running(face, workers, in_process=True)`` returns one of these in place
of the real face. They have the faces' public methods and raise the same errors, because
what crosses the wire for real still goes through pickle here: a task, setup function or
result that could not travel fails with :class:`SerializationError`; a task that raises
gives :class:`RemoteError` (the executor: the original exception with a
:class:`RemoteTraceback` as its ``__cause__``); no worker gives :class:`NoMoreWorkersError`.
Results are copies, as they would be after the trip.

What differs, by design: tasks run one after another in the caller's thread at the moment a
result is asked for (an executor's at ``submit``), so completion order is submission order
and timeouts do not apply; ``run_cmd`` source runs in one thread per in-process worker (so
that it can wait in ``manager.get_data()`` for what the test sends).
"""
from __future__ import annotations

import concurrent.futures as cf
import os
import queue
import threading
import traceback
from collections import deque
from typing import Any, Callable, Deque, Iterable, Iterator, List, Optional, Sequence

from . import _serialize
from ._util import hostname
from .errors import NoMoreWorkersError, RemoteError, SerializationError
from .executor import _Call  # the same call record the real executor sends
from .workers import READY, STOPPED, Worker

#: Seconds ``close()`` waits for a worker thread still running ``run_cmd`` source.
STOP_WAIT = 5.0


class _Parcel:
    """An object pickled now (as it would be sent) and unpickled when opened."""

    __slots__ = ("data", "buffers", "what")

    def __init__(self, obj: Any, what: str) -> None:
        self.what = what
        try:
            data, buffers = _serialize.dumps(obj)
        except Exception as exc:
            raise SerializationError("the %s %r cannot be pickled: %s: %s"
                                     % (what, obj, type(exc).__name__, exc)) from exc
        self.data = data
        self.buffers = [bytearray(b.raw()) for b in buffers]  # a copy, as after MPI_Send

    def open(self) -> Any:
        try:
            return _serialize.loads(self.data, [bytearray(b) for b in self.buffers])
        except Exception as exc:
            raise SerializationError("the %s cannot be unpickled: %s: %s. Is its module "
                                     "importable (same sys.path, same packages)?"
                                     % (self.what, type(exc).__name__, exc)) from exc


def _travel(obj: Any, what: str) -> Any:
    return _Parcel(obj, what).open()


def _remote_error(exc: BaseException, worker: Any) -> RemoteError:
    """The RemoteError a worker would send for ``exc`` (the exception itself is a copy)."""
    tb = "### raised on %s\n%s" % (worker, "".join(
        traceback.format_exception(type(exc), exc, exc.__traceback__)))
    try:
        copy = _travel(exc, "exception")
    except SerializationError:
        copy = RuntimeError("%s: %s (the exception could not be sent back)"
                            % (type(exc).__name__, exc))
    return RemoteError(copy, tb, worker)


def _run(parcel: _Parcel, args: Sequence[Any], worker: Any) -> Any:
    """Run a task; return its result (a copy), or raise what a real worker would report."""
    fn = parcel.open()
    try:
        result = fn(*args)
    except BaseException as exc:  # SystemExit too: a worker reports it and lives on
        raise _remote_error(exc, worker) from None
    try:
        return _travel(result, "result of a task on %r" % (worker,))
    except SerializationError as exc:
        raise SerializationError("the result of a task on %r cannot be pickled: %s"
                                 % (worker, exc.__cause__)) from None


class _Stopped(BaseException):
    """Ends ``run_cmd`` source waiting in ``manager.get_data()`` when the face closes."""


class _Channel:
    """``manager`` inside ``run_cmd`` source: the worker's side of message passing."""

    def __init__(self, worker: "InProcessWorker") -> None:
        self._worker = worker

    def send_data(self, obj: Any) -> None:
        self._worker._deliver(_travel(obj, "data"))

    def get_data(self, timeout: Optional[float] = None) -> Any:
        try:
            item = self._worker._to_worker.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError("no data from the manager within %s s" % timeout) from None
        if item is _Stopped:
            raise _Stopped()
        return item


class InProcessWorker(Worker):
    """A worker that is this process: tasks run in the caller's thread; ``run_cmd`` source
    in a thread of its own, with a namespace kept between calls."""

    kind = "in-process worker"

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        self.state = READY
        self.host = hostname()
        self.pid = os.getpid()
        self._to_worker: "queue.Queue[Any]" = queue.Queue()
        self._commands: "queue.Queue[Optional[str]]" = queue.Queue()
        self._ready = threading.Condition()
        self._received: Deque[Any] = deque()
        self._failures: Deque[RemoteError] = deque()
        self._thread: Optional[threading.Thread] = None
        self.namespace = {"manager": _Channel(self), "__name__": "__worker__"}

    def __repr__(self) -> str:
        return "<InProcessWorker %d pid %s>" % (self.index, self.pid)

    # -- the manager's side (MODELLER's Worker API) ------------------------------------------
    def send_data(self, obj: Any) -> None:
        self._raise_failure()
        self._to_worker.put(_travel(obj, "data"))

    def run_cmd(self, source: str) -> None:
        if not isinstance(source, str):
            raise TypeError("run_cmd() takes Python source as a str, not %r" % (source,))
        self._raise_failure()
        if self.state != READY:
            raise RuntimeError("%r is stopped" % (self,))
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, daemon=True,
                                            name="mpidispatch-in-process-%d" % self.index)
            self._thread.start()
        self._commands.put(source)

    def get_data(self, timeout: Optional[float] = None) -> Any:
        with self._ready:
            if not self._ready.wait_for(lambda: self._received or self._failures, timeout):
                raise TimeoutError(
                    "no data from %r within %s s. A worker sends data only when source given "
                    "to run_cmd calls manager.send_data(obj); check that it does, or raise the "
                    "timeout." % (self, timeout))
            if self._failures:
                raise self._failures.popleft()
            return self._received.popleft()

    # -- the worker's side ---------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            source = self._commands.get()
            try:
                if source is None:
                    return
                exec(compile(source, "<run_cmd>", "exec"), self.namespace)
            except _Stopped:
                return
            except BaseException as exc:
                error = _remote_error(exc, self)
                with self._ready:
                    self._failures.append(error)
                    self._ready.notify_all()
            finally:
                self._commands.task_done()

    def _deliver(self, obj: Any) -> None:
        with self._ready:
            self._received.append(obj)
            self._ready.notify_all()

    def _raise_failure(self) -> None:
        with self._ready:
            if self._failures:
                raise self._failures.popleft()

    def _wait_commands(self) -> None:
        """Wait until the source sent so far has run (tasks come after it, as for real)."""
        if self._thread is not None:
            self._commands.join()
        self._raise_failure()

    def _stop(self) -> None:
        self.state = STOPPED
        if self._thread is not None:
            self._commands.put(None)
            self._to_worker.put(_Stopped)
            self._thread.join(STOP_WAIT)


class _Face:
    """What the in-process faces share: their workers and closing."""

    def __init__(self, workers: int) -> None:
        self._workers: List[Worker] = [InProcessWorker(i) for i in range(workers)]
        self._tasks_done = 0
        self._closed = False

    def _worker(self) -> Worker:
        """The worker a task runs on (all tasks run here; the first worker is named)."""
        if self._closed:
            raise RuntimeError("cannot run tasks after the manager was closed")
        live = [w for w in self._workers if w.state == READY]
        if not live:
            raise NoMoreWorkersError(
                "task(s) left but no worker to run them (in-process mode with 0 workers)")
        return live[0]

    def summary(self) -> str:
        """One line on what ran, like the real faces' summary."""
        return "%d tasks on %d in-process workers; 0 lost, 0 respawned" % (
            self._tasks_done, len(self._workers))

    def close(self) -> None:
        """Stop the worker threads; the face runs no more tasks."""
        self._closed = True
        for w in self._workers:
            if isinstance(w, InProcessWorker):
                w._stop()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# -- Manager / Context ---------------------------------------------------------------------------
class InProcessManager(_Face):
    """``Manager`` in-process: ``add_worker``, ``get_context``, ``workers``, ``summary``."""

    def __init__(self, workers: int = 1, **options: Any) -> None:
        super().__init__(workers)

    @property
    def workers(self) -> List[Worker]:
        return list(self._workers)

    def add_worker(self, worker: Any) -> None:
        """Add an in-process worker in place of ``worker`` (nothing is started)."""
        self._workers.append(InProcessWorker(len(self._workers)))

    def get_context(self, startup: Optional[Callable[[], Any]] = None) -> "InProcessContext":
        return InProcessContext(self, startup)


class InProcessContext:
    """``Context`` in-process: the setup runs once (on first use), tasks when results are
    asked for, in the order they were added."""

    def __init__(self, manager: InProcessManager, startup: Optional[Callable[[], Any]]) -> None:
        self._manager = manager
        self._setup = _Parcel(startup, "setup function")
        self._args: Any = None
        self._queue: Deque[_Parcel] = deque()

    def add_task(self, task: Callable[..., Any], timeout: Optional[float] = None) -> None:
        if not callable(task):
            raise TypeError("add_task() takes a callable (a function, or an object with "
                            "__call__), not %r" % (task,))
        self._queue.append(_Parcel(task, "task"))

    def _setup_args(self, worker: Any) -> tuple:
        if self._args is None:
            try:
                fn = self._setup.open()
                result = fn() if fn is not None else ()
                self._args = tuple(result) if result is not None else ()
            except BaseException as exc:
                self._args = _remote_error(exc, worker)
        if isinstance(self._args, RemoteError):
            raise self._args
        return self._args

    def _next(self) -> Any:
        """Run the next task; its result, or raise its error. StopIteration when none left."""
        if not self._queue:
            raise StopIteration
        worker = self._manager._worker()
        parcel = self._queue.popleft()
        self._manager._tasks_done += 1
        return _run(parcel, self._setup_args(worker), worker)

    def get_results_unordered(self, progress: bool = False) -> Iterator[Any]:
        """Results one by one; a failed task raises from ``next()``, the next call goes on."""
        return _Results(self._next)

    def get_results(self, progress: bool = False) -> List[Any]:
        """Every result in order; the first error (in order) is raised after all ran."""
        results, first_error = [], None
        while self._queue:
            try:
                results.append(self._next())
            except StopIteration:
                break
            except NoMoreWorkersError:
                raise
            except Exception as exc:
                results.append(None)
                first_error = first_error or exc
        if first_error is not None:
            raise first_error
        return results


class _Results:
    """An iterator that survives a failed item, like ``ResultIterator``."""

    def __init__(self, step: Callable[[], Any]) -> None:
        self._step = step

    def __iter__(self) -> "_Results":
        return self

    def __next__(self) -> Any:
        return self._step()


# -- job / task ----------------------------------------------------------------------------------
def _write_if_changed(name: str, data: bytes) -> None:
    """Write an input file into the working directory unless it already holds ``data``."""
    try:
        with open(name, "rb") as f:
            if f.read() == data:
                return
    except OSError:
        pass
    with open(name, "wb") as f:
        f.write(data)


class _TaskRun:
    """A MODELLER task with its input files, run in this process's working directory."""

    def __init__(self, t: Any) -> None:
        self.task = t
        self.inputs: dict = {}
        for path in getattr(t, "input_files", ()) or ():
            try:
                with open(path, "rb") as f:
                    self.inputs[os.path.basename(path)] = f.read()
            except OSError as exc:
                raise OSError("input file %r of task %r cannot be read: %s"
                              % (path, t, exc)) from exc
        self.outputs = [os.path.basename(p) for p in getattr(t, "output_files", ()) or ()]

    def __call__(self) -> Any:
        for name, data in self.inputs.items():
            _write_if_changed(name, data)
        t = self.task
        result = t.run(*getattr(t, "_args", ()), **getattr(t, "_kw", {}))
        for name in self.outputs:
            if not os.path.exists(name):
                raise FileNotFoundError("task %r lists %r in output_files but run() did not "
                                        "write it in %s" % (t, name, os.getcwd()))
        return result


class InProcessJob(_Face, list):
    """``job`` in-process: a list of in-process workers, the task queue and message passing.

    Workers appended to the list (e.g. ``LocalWorker()``) are replaced by in-process workers
    when the next call looks at the list.
    """

    def __init__(self, seq: Iterable[Any] = (), workers: int = 0, **options: Any) -> None:
        _Face.__init__(self, 0)
        list.__init__(self)
        self.worker_startup_commands: List[str] = []
        self._queued: Deque[Any] = deque()
        self._initialized: set = set()
        self.extend(InProcessWorker(i) for i in range(workers))
        self.extend(seq)

    def _sync(self) -> None:
        for i, w in enumerate(self):
            if not isinstance(w, InProcessWorker):
                if not isinstance(w, Worker):
                    raise TypeError("a job holds workers (e.g. LocalWorker()), not %r" % (w,))
                list.__setitem__(self, i, InProcessWorker(i))
        self._workers = list(self)
        for w in self._workers:
            if id(w) not in self._initialized:
                self._initialized.add(id(w))
                for source in self.worker_startup_commands:
                    w.run_cmd(source)

    @property
    def tasks(self) -> List[Any]:
        return [t for t, _ in self._queued]

    def queue_task(self, taskobj: Any) -> None:
        if not callable(getattr(taskobj, "run", None)):
            raise TypeError("queue_task() takes a task object with a run() method (subclass "
                            "mpidispatch.task), not %r" % (taskobj,))
        self._queued.append((taskobj, _Parcel(_TaskRun(taskobj), "task")))

    def _results(self) -> Iterator[tuple]:
        """(result, error) of each queued task, run one by one."""
        self._sync()
        runs = list(self._queued)
        self._queued.clear()
        for w in self._workers:
            w._wait_commands()  # type: ignore[attr-defined]
        for _, parcel in runs:
            worker = self._worker()
            self._tasks_done += 1
            try:
                yield _run(parcel, (), worker), None
            except (RemoteError, SerializationError) as exc:
                yield None, exc

    def run_all_tasks(self, progress: bool = False) -> List[Any]:
        results, first_error = [], None
        for result, error in self._results():
            results.append(result)
            first_error = first_error or error
        if first_error is not None:
            raise first_error
        return results

    def yield_tasks_unordered(self, progress: bool = False) -> Iterator[Any]:
        for result, error in self._results():
            if error is not None:
                raise error
            yield result

    def start(self, timeout: Optional[float] = None) -> None:
        self._sync()
        for w in self._workers:
            w._wait_commands()  # type: ignore[attr-defined]

    def close(self) -> None:
        self._sync()
        _Face.close(self)

    def __repr__(self) -> str:
        return "<in-process job %s>" % list.__repr__(self)

    __hash__ = None  # type: ignore[assignment]


# -- MPIExecutor ---------------------------------------------------------------------------------
class InProcessExecutor(cf.Executor):
    """``MPIExecutor`` in-process: each call runs inside ``submit``, whose future is done
    when it returns; ``map`` runs the calls as the results are consumed."""

    def __init__(self, max_workers: Optional[int] = None,
                 setup: Optional[Callable[..., Any]] = None, setup_args: tuple = (), *,
                 initializer: Optional[Callable[..., Any]] = None, initargs: tuple = (),
                 **options: Any) -> None:
        from .executor import BrokenMPIExecutor, RemoteTraceback
        self._broken_type, self._traceback_type = BrokenMPIExecutor, RemoteTraceback
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be > 0, not %r" % (max_workers,))
        if setup is not None and initializer is not None:
            raise TypeError("pass setup= or initializer=, not both")
        if initializer is not None:
            setup, setup_args = initializer, initargs
        if setup is not None and not callable(setup):
            raise TypeError("setup must be callable, not %r" % (setup,))
        self._face = _Face(max_workers or 1)
        self._setup = _Parcel((setup, tuple(setup_args)) if setup else None, "setup function")
        self._setup_done = False
        self._broken: Optional[BaseException] = None
        self._shutdown = False

    @property
    def num_workers(self) -> int:
        return len(self._face._workers)

    def _check_open(self) -> None:
        if self._broken is not None:
            raise self._broken_type(str(self._broken)) from self._broken.__cause__
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")

    def _run_setup(self, worker: Any) -> None:
        if self._setup_done:
            return
        self._setup_done = True
        opened = self._setup.open()
        if opened is None:
            return
        fn, args = opened
        try:
            fn(*args)
        except BaseException as exc:
            cause = _remote_error(exc, worker)
            self._broken = self._broken_type(
                "the executor is broken: the executor's setup function %r raised %s: %s. "
                "Pending tasks were failed; create a new executor (check the setup function)."
                % (fn, type(exc).__name__, exc))
            self._broken.__cause__ = cause

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        self._check_open()
        future: cf.Future = cf.Future()
        try:
            parcel = _Parcel(_Call(fn, args, kwargs), "task")
        except SerializationError as exc:  # the executor reports the pickling error itself
            future.set_exception(exc.__cause__ or exc)
            return future
        worker = self._face._worker()
        self._run_setup(worker)
        if self._broken is not None:
            future.set_exception(self._broken)
            return future
        future.set_running_or_notify_cancel()
        self._face._tasks_done += 1
        try:
            future.set_result(_run(parcel, (), worker))
        except RemoteError as err:
            original = err.exc
            original.__cause__ = self._traceback_type(err.traceback)
            future.set_exception(original)
        except SerializationError as err:
            future.set_exception(err)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: int = 1, unordered: bool = False,
            buffersize: Optional[int] = None, progress: bool = False) -> Iterator[Any]:
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1, not %r" % (chunksize,))
        if buffersize is not None and buffersize < 1:
            raise ValueError("buffersize must be >= 1, not %r" % (buffersize,))
        self._check_open()

        def results() -> Iterator[Any]:
            for args in zip(*iterables):
                yield self.submit(fn, *args).result()
        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        self._face.close()

    def summary(self) -> str:
        return self._face.summary()


# -- JobDispatcher -------------------------------------------------------------------------------
def _dispatcher(face: type, workers: int, **options: Any) -> Any:
    """A ``JobDispatcher`` subclass with no workers: it evaluates its jobs in this process
    (its own local mode), never spawning any."""
    options.pop("max_workers", None)
    options["min_workers"] = 1 << 30
    return face(max_workers=None, **options)


def start(face: Any, workers: int, **options: Any) -> Any:
    """The in-process stand-in of ``face`` (see :func:`mpidispatch.testing.running`)."""
    from .dispatcher import JobDispatcher
    from .executor import MPIExecutor
    from .modeller import job
    from .tasks import Manager
    if isinstance(face, type):
        if issubclass(face, MPIExecutor):
            return InProcessExecutor(max_workers=workers, **options)
        if issubclass(face, JobDispatcher):
            return _dispatcher(face, workers, **options)
        if issubclass(face, Manager):
            return InProcessManager(workers, **options)
        if issubclass(face, job):
            return InProcessJob(workers=workers, **options)
    raise TypeError("running() takes Manager, job, MPIExecutor or a JobDispatcher subclass, "
                    "not %r" % (face,))
