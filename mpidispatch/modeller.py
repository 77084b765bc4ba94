"""MODELLER-style parallel jobs (``modeller.parallel``): ``job``, ``task`` and message passing.

::

    j = job()                                  # a list of workers
    j.append(LocalWorker())                    # or run under mpiexec -n N: ranks join by themselves
    j.worker_startup_commands.append("import numpy")
    j.queue_task(MyTask("1fdn"))               # MyTask(task).run("1fdn") runs on a worker
    results = j.run_all_tasks()                # in the order queued
    j.start(); w = j[0]                        # message passing
    w.run_cmd("manager.send_data(manager.get_data() * 2)"); w.send_data(21); w.get_data()

The job is a ``list`` subclass: workers are added and removed with list operations, and the
job brings the engine in line with the list before each call. Each worker object of a job
is also its communicator (as in MODELLER): ``Worker.send_data``, ``get_data`` and
``run_cmd`` go through the worker's :class:`~mpidispatch._messaging.Channel`, which the job
gives to every worker it adopts (those the user adds and the ``mpiexec`` ranks alike).
"""
from __future__ import annotations

import os
import sys
from collections import deque
from typing import Any, Deque, Dict, Iterable, Iterator, List, Optional, Sequence

from . import _world
from ._engine import Engine
from ._messaging import Channel
from ._options import resolve
from ._taskgroup import TaskGroup
from ._work import WorkItem
from .workers import DEAD, READY, Worker, worker_list

__all__ = ["job", "task", "job_name"]


def job_name() -> str:
    """MODELLER's ``${JOB}``: the script's file name without ``.py`` (``stdout`` if none)."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else ""
    if path in ("", "-", "-c", "-m"):
        return "stdout"
    return os.path.splitext(os.path.basename(path))[0] or "stdout"


class task:
    """A unit of work for :meth:`job.queue_task`: subclass it and define :meth:`run`.

    The constructor's arguments are stored and passed to :meth:`run` on the worker:
    ``MyTask(code).run(code)``. The task object is pickled (by value if its class lives in
    the script), so anything it holds travels with it.

    Attributes:
        input_files: paths read on the manager when the task is queued and written (under
            their base names) into the worker's working directory before :meth:`run`; for
            workers without a shared file system. An identical file already there is left
            alone.
        output_files: base names of files :meth:`run` writes in the worker's working
            directory; they are sent back and written in the manager's working directory.
    """

    input_files: Sequence[str] = ()
    output_files: Sequence[str] = ()

    def __init__(self, *args: Any, **kw: Any) -> None:
        self._args = args
        self._kw = kw

    def run(self, *args: Any, **kw: Any) -> Any:
        """The work, run on a worker; its return value is the task's result."""
        raise NotImplementedError("%s must define run(self, ...)" % type(self).__name__)


def _write_file(name: str, data: bytes) -> None:
    """Write ``data`` to ``name`` atomically, unless the file already holds exactly that."""
    try:
        with open(name, "rb") as f:
            if f.read() == data:
                return  # a shared file system: the file is already there
    except OSError:
        pass
    tmp = "%s.tmp%d" % (name, os.getpid())
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, name)


class _TaskCall:
    """What goes to the worker for one task: the task plus its input files' bytes."""

    __slots__ = ("task", "inputs", "outputs")

    def __init__(self, t: task) -> None:
        self.task = t
        self.inputs: Dict[str, bytes] = {}
        for path in t.input_files or ():
            try:
                with open(path, "rb") as f:
                    self.inputs[os.path.basename(path)] = f.read()
            except OSError as exc:
                raise OSError("input file %r of task %r cannot be read: %s"
                              % (path, t, exc)) from exc
        self.outputs = [os.path.basename(p) for p in (t.output_files or ())]

    def __call__(self) -> tuple:
        for name, data in self.inputs.items():
            _write_file(name, data)
        t = self.task
        result = t.run(*getattr(t, "_args", ()), **getattr(t, "_kw", {}))
        files = {}
        for name in self.outputs:
            try:
                with open(name, "rb") as f:
                    files[name] = f.read()
            except OSError as exc:
                raise FileNotFoundError(
                    "task %r lists %r in output_files but run() did not write it in %s: %s"
                    % (t, name, os.getcwd(), exc)) from exc
        return result, files


class job(list):
    """A parallel job: a list of workers, a task queue and message passing (MODELLER).

    Under ``mpiexec -n N`` the constructor turns ranks 1..N-1 into workers (they never
    return from it) and on rank 0 they appear in the list by themselves, so one script runs
    with ``python script.py`` (add ``LocalWorker()`` objects) and under ``mpiexec``.

    Each worker writes its stdout and stderr to ``${JOB}.workerN`` in the working directory
    (``${JOB}`` = :func:`job_name`, N from 0).

    Args:
        seq: workers to start with (e.g. ``[LocalWorker(), LocalWorker()]``), or worker
            arrays.
        python: command line starting a worker's Python (default: this interpreter);
            ``modeller_path`` is accepted as MODELLER's name for it.
        host: accepted for MODELLER compatibility; MPI finds the manager by itself.
        output: ``%d`` pattern of the worker log files (default ``${JOB}.worker%d``).
        **options: engine options (:class:`mpidispatch.Options`: ``fault_tolerant``,
            ``start_timeout``, ``prefetch``, ``max_retries``, ``task_timeout``, ...).
    """

    def __init__(self, seq: Iterable[Any] = (), python: Optional[str] = None,
                 host: Optional[str] = None, output: Optional[str] = None,
                 modeller_path: Optional[str] = None, **options: Any) -> None:
        self.output = output or job_name() + ".worker%d"
        opts = resolve(python=python or modeller_path, output=self.output, **options)
        _world.serve_if_worker(self.output)
        super().__init__()
        self.host = host
        #: Python source strings run (with ``run_cmd``) on each worker when it starts,
        #: before its first task or message.
        self.worker_startup_commands: List[str] = []
        self._engine = Engine(opts)
        self._group = TaskGroup(self._engine, on_starting=self._before_task)
        self._queued: Deque[WorkItem] = deque()
        self._known: Dict[int, Worker] = {}
        for w in self._engine.workers:  # mpiexec ranks adopted by the engine
            self._adopt(w)
            list.append(self, w)
        self.extend(seq)

    # -- keeping the engine in line with the list -------------------------------------------
    def append(self, worker: Any) -> None:  # type: ignore[override]
        """Add a worker (or every worker of a worker array); it starts when first needed."""
        list.extend(self, worker_list(worker))
        self._sync()

    def extend(self, workers: Iterable[Any]) -> None:  # type: ignore[override]
        """Add several workers (or worker arrays)."""
        for w in workers:
            list.extend(self, worker_list(w))
        self._sync()

    def _adopt(self, w: Worker) -> None:
        self._known[id(w)] = w
        w._channel = Channel(self._engine, w, self.worker_startup_commands)

    def _sync(self) -> None:
        """Add appended workers to the engine, stop deleted ones, list engine replacements."""
        engine = self._engine
        for w in engine.workers:  # replacements spawned by the engine (fault tolerant)
            if id(w) not in self._known and w.alive:
                self._adopt(w)
                list.append(self, w)
        for w in self:
            if id(w) not in self._known:
                if not isinstance(w, Worker):
                    raise TypeError("a job holds workers (e.g. LocalWorker()), not %r" % (w,))
                engine.add_worker(w)
                self._adopt(w)
        present = {id(w) for w in self}
        for key, w in self._known.items():
            if key not in present and w.alive and not w.retiring:
                engine.remove_worker(w)

    def _before_task(self, item: WorkItem) -> bool:
        """Engine hook before a task is sent: run the startup commands on that worker
        first (on the same channel, so they run before the task)."""
        channel = item.worker._channel
        if channel is not None and not channel.initialized:
            channel.ensure_started()
        return True

    def _raise_worker_errors(self) -> None:
        for w in self:
            if w.errors:  # a startup command (or earlier run_cmd) raised
                raise w.errors.popleft()

    @property
    def tasks(self) -> List[task]:
        """The tasks queued and not yet run."""
        return [item.task for item in self._queued]

    # -- task interface ----------------------------------------------------------------------
    def queue_task(self, taskobj: task) -> None:
        """Queue a task to run on the next :meth:`run_all_tasks`/:meth:`yield_tasks_unordered`.

        The task (and its input files) is pickled now.

        Raises:
            TypeError: ``taskobj`` has no ``run`` method.
            SerializationError: the task cannot be pickled (nothing is queued).
        """
        if not callable(getattr(taskobj, "run", None)):
            raise TypeError("queue_task() takes a task object with a run() method (subclass "
                            "mpidispatch.task), not %r" % (taskobj,))
        self._queued.append(self._group.make_item(taskobj, _TaskCall(taskobj)))

    def run_all_tasks(self, progress: bool = False) -> List[Any]:
        """Run every queued task; return their results in the order they were queued.

        Args:
            progress: draw a progress bar on stderr and print a summary line at the end.

        Raises:
            RemoteError, WorkerLostError, ...: a task failed (the first in queue order, after
                all have finished); ``error.index`` is its position in the queue.
            NoMoreWorkersError: tasks remain and no worker is left to run them.
        """
        items = list(self._queued)
        for _ in self._completed(progress):
            pass
        error = self._group.first_error(items)
        if error is not None:
            raise error
        return [self._result(item) for item in items]

    def yield_tasks_unordered(self, progress: bool = False) -> Iterator[Any]:
        """Run every queued task; yield each result as soon as its task finishes.

        Raises:
            RemoteError, WorkerLostError, ...: a task failed (the tasks not yet started are
                dropped).
            NoMoreWorkersError: tasks remain and no worker is left to run them.
        """
        for item in self._completed(progress):
            if item.error is not None:
                raise item.error
            yield self._result(item)

    def _completed(self, progress: bool) -> Iterator[WorkItem]:
        """Submit the queued tasks; yield their items in completion order."""
        self._sync()
        items = list(self._queued)
        self._queued.clear()
        for item in items:
            self._group.enqueue(item)
        completion = self._group.as_completed(progress, "job")
        try:
            for item in completion:
                self._sync()
                self._raise_worker_errors()
                yield item
        finally:
            completion.close(cancel=True)  # abandoned: drop what no worker holds

    @staticmethod
    def _result(item: WorkItem) -> Any:
        result, files = item.result
        for name, data in files.items():
            _write_file(name, data)
        return result

    # -- message passing ---------------------------------------------------------------------
    def start(self, timeout: Optional[float] = None) -> None:
        """Start every worker not yet running; return when all are connected (MODELLER).

        The startup commands are sent to each before this returns.

        Raises:
            WorkerStartError: a worker did not start (its log file usually says why).
        """
        self._sync()
        self._engine.wait_ready(timeout)
        failed = [w for w in self if w.state == DEAD and w.death]
        if failed and self._engine.start_errors:
            raise self._engine.start_errors[0]
        for w in self:
            if w.state == READY:
                w._channel.ensure_started()

    def wait_ready(self, timeout: Optional[float] = None) -> int:
        """Start the workers and wait until each is up; return how many are ready."""
        self._sync()
        return self._engine.wait_ready(timeout)

    # -- the rest ----------------------------------------------------------------------------
    def summary(self) -> str:
        """One line on what ran: tasks, workers, tasks per worker, losses."""
        return self._engine.summary()

    def close(self) -> None:
        """Stop the spawned workers (done at exit too)."""
        self._engine.close()

    def __enter__(self) -> "job":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # list equality/hash semantics stay those of list; a job is unhashable like a list.
    def __repr__(self) -> str:
        return "<job %s>" % list.__repr__(self)


