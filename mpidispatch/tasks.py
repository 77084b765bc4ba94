"""IMP.parallel-style task API: ``Manager``, ``Context``, ``get_results_unordered``.

::

    m = Manager()
    m.add_worker(LocalWorker())           # or run under mpiexec -n N: ranks join by themselves
    c = m.get_context(setup)              # setup() runs once per worker, returns a tuple
    c.add_task(task)                      # the worker calls task(*setup())
    for result in c.get_results_unordered(): ...

A thin translation onto the engine's :class:`~mpidispatch._taskgroup.TaskGroup`: a context
is a task group whose setup is the context's setup function.
"""
from __future__ import annotations

from typing import Any, Callable, List, Optional

from . import _world
from ._engine import Engine
from ._options import resolve
from ._taskgroup import Completion, TaskGroup
from ._work import DELIVERED
from .workers import Worker, worker_list


class Manager:
    """Starts workers and hands out contexts (IMP.parallel's ``Manager``).

    Under ``mpiexec -n N`` every rank but 0 becomes a worker inside this constructor and never
    returns from it (it exits when rank 0 is done); rank 0 adopts them.

    Args:
        python: command line starting a worker's Python (default: this interpreter).
        host: accepted for IMP compatibility; MPI finds the manager by itself.
        output: ``%d`` pattern for the per-worker log files (stdout and stderr).
        **options: engine options (:class:`mpidispatch.Options`: ``start_timeout``,
            ``prefetch``, ``fault_tolerant``, ``max_retries``, ``task_timeout``,
            ``heartbeat_timeout``, ...); each defaults to its ``MPIDISPATCH_*`` environment
            variable, then to the documented default.

    Attributes:
        heartbeat_timeout: seconds of silence before a worker on another host counts as
            lost. As in IMP, it may be set on the class or on an instance at any time.
    """

    heartbeat_timeout: Optional[float] = None

    def __init__(self, python: Optional[str] = None, host: Optional[str] = None,
                 output: Optional[str] = "worker%d.output", **options: Any) -> None:
        if "workers" in options:
            raise TypeError("Manager() takes no workers= argument; add workers with "
                            "add_worker(LocalWorker()) or run under mpiexec -n N")
        cls_hb = type(self).heartbeat_timeout
        if options.get("heartbeat_timeout") is None and cls_hb is not None:
            options["heartbeat_timeout"] = cls_hb
        opts = resolve(python=python, output=output, **options)
        _world.serve_if_worker(output)
        self.host = host
        self.output = output
        self._engine = Engine(opts)

    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if name == "heartbeat_timeout" and value is not None and "_engine" in self.__dict__:
            self._engine.set_option(heartbeat_timeout=value)

    @property
    def workers(self) -> List[Worker]:
        """All workers this manager has (started or not, alive or not)."""
        return list(self._engine.workers)

    def add_worker(self, worker: Any) -> None:
        """Add a worker, or every worker of a worker array.

        Raises:
            TypeError: not a worker (e.g. the class ``LocalWorker`` instead of an object).
        """
        for w in worker_list(worker):
            self._engine.add_worker(w)

    def wait_ready(self, timeout: Optional[float] = None) -> int:
        """Start the workers added so far and wait until each is up (or failed to start);
        return how many are ready (mpi4py's ``bootup``)."""
        return self._engine.wait_ready(timeout)

    def get_context(self, startup: Optional[Callable[[], Any]] = None) -> "Context":
        """A new context whose tasks get ``startup()``'s return value as arguments.

        Raises:
            TypeError: ``startup`` is not callable (e.g. ``get_context(setup())``).
        """
        return Context(self, startup)

    def summary(self) -> str:
        """One line on what ran: tasks, workers, tasks per worker, losses, replacements."""
        return self._engine.summary()

    def close(self) -> None:
        """Stop the spawned workers (done at exit too)."""
        self._engine.close()

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._engine.close()
        except Exception:
            pass


class Context:
    """A group of tasks sharing one setup function (IMP.parallel's ``Context``)."""

    def __init__(self, manager: Manager, startup: Optional[Callable[[], Any]] = None) -> None:
        self._manager = manager
        self._group = TaskGroup(manager._engine, startup)
        self._order: List[Any] = []

    def add_task(self, task: Callable[..., Any], *, timeout: Optional[float] = None,
                 key: Any = None) -> None:
        """Queue ``task``, any picklable callable; a worker calls ``task(*startup())``.

        Args:
            timeout: seconds this task may run (keyword only; default: the manager's
                ``task_timeout``).
            key: the task's key in the run journal (``Manager(journal=...)``): a str, int,
                float, bytes, bool or tuple of these; default: a digest of the task's bytes.

        Raises:
            TypeError: ``task`` is not callable.
            SerializationError: ``task`` cannot be pickled (nothing is queued).
        """
        if not callable(task):
            raise TypeError("add_task() takes a callable (a function, or an object with "
                            "__call__), not %r" % (task,))
        if timeout is not None and not timeout > 0:
            raise ValueError("timeout must be > 0 seconds, not %r" % (timeout,))
        item = self._group.submit(task, timeout=timeout, key=key)
        if len(self._order) > 2 * self._group.outstanding + 4096:  # drop delivered ones
            self._order = [i for i in self._order if i.state != DELIVERED]
        self._order.append(item)

    def get_results_unordered(self, progress: bool = False) -> "ResultIterator":
        """Iterate over results as tasks finish (tasks added meanwhile run too).

        A task that failed makes ``next()`` raise its error (:class:`RemoteError`,
        :class:`WorkerLostError`, ...; ``error.index`` is the task's number in the order it
        was added, ``error.task`` the task); calling ``next()`` again goes on with the other
        tasks. ``progress=True`` draws a progress bar on stderr (tqdm if installed) and
        prints a one-line summary at the end.
        """
        return ResultIterator(self._group.as_completed(progress))

    def get_results(self, progress: bool = False) -> List[Any]:
        """Run every task; return the results in the order the tasks were added.

        Raises:
            RemoteError, WorkerLostError, ...: the first task (in order) that failed, after
                all tasks have finished.
        """
        order = [i for i in self._order if i.state != DELIVERED]
        self._order = []
        items = self._group.in_order(order, progress)
        error = self._group.first_error(items)
        if error is not None:
            raise error
        return [item.result for item in items]


class ResultIterator:
    """Results of a context in completion order; survives a failed task."""

    def __init__(self, completion: Completion) -> None:
        self._completion = completion

    def __iter__(self) -> "ResultIterator":
        return self

    def __next__(self) -> Any:
        item = next(self._completion)
        if item.error is not None:
            raise item.error
        return item.result
