"""IMP.parallel-style task API: ``Manager``, ``Context``, ``get_results_unordered``.

::

    m = Manager()
    m.add_worker(LocalWorker())           # or run under mpiexec -n N: ranks join by themselves
    c = m.get_context(setup)              # setup() runs once per worker, returns a tuple
    c.add_task(task)                      # the worker calls task(*setup())
    for result in c.get_results_unordered(): ...
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Iterator, List, Optional

from . import _world
from ._progress import Progress, RunStats
from ._engine import Engine, Setup, WorkItem
from .workers import LocalWorker, Worker


class Manager:
    """Starts workers and hands out contexts (IMP.parallel's ``Manager``).

    Under ``mpiexec -n N`` every rank but 0 becomes a worker inside this constructor and never
    returns from it (it exits when rank 0 is done); rank 0 adopts them.

    Args:
        python: command line starting a worker's Python (default: this interpreter).
        host: accepted for IMP compatibility; MPI finds the manager by itself.
        output: ``%d`` pattern for the per-worker log files (stdout and stderr).
        start_timeout: seconds a worker may take to start (default 30, or
            ``MPIDISPATCH_START_TIMEOUT``).
        prefetch: tasks in flight per worker.
        fault_tolerant: replace dead workers by spawning new ones.
        max_retries: times a task is retried after its worker died.
        task_timeout: default seconds a task may run before its worker is stopped.
    """

    def __init__(self, python: Optional[str] = None, host: Optional[str] = None,
                 output: str = "worker%d.output", start_timeout: Optional[float] = None,
                 prefetch: int = 2, fault_tolerant: bool = False, max_retries: int = 3,
                 task_timeout: Optional[float] = None, **options: Any) -> None:
        _world.serve_if_worker(output)
        self.host = host
        self.output = output
        self._engine = Engine(python=python, output=output, start_timeout=start_timeout,
                              prefetch=prefetch, fault_tolerant=fault_tolerant,
                              max_retries=max_retries, task_timeout=task_timeout, **options)

    @property
    def workers(self) -> List[Worker]:
        """All workers this manager has (started or not, alive or not)."""
        return list(self._engine.workers)

    def add_worker(self, worker: Any) -> None:
        """Add a worker, or every worker of a worker array (anything with ``_get_workers``)."""
        if hasattr(worker, "_get_workers"):
            for w in worker._get_workers():
                self._engine.add_worker(w)
        else:
            self._engine.add_worker(worker)

    def get_context(self, startup: Optional[Callable[[], Any]] = None) -> "Context":
        """A new context whose tasks get ``startup()``'s return value as arguments."""
        return Context(self, startup)

    def summary(self) -> str:
        """One line on what ran: tasks, workers, tasks per worker, losses."""
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
        self._setup = Setup(startup)
        self._done: deque = deque()
        self._outstanding = 0
        self._order: List[WorkItem] = []

    def add_task(self, task: Callable[..., Any], timeout: Optional[float] = None) -> None:
        """Queue ``task``, any picklable callable; a worker calls ``task(*startup())``.

        Raises:
            SerializationError: ``task`` cannot be pickled (nothing is queued).
        """
        item = WorkItem(task, self._done.append, self._setup, timeout=timeout)
        self._manager._engine.submit(item)
        self._outstanding += 1
        if len(self._order) > 2 * self._outstanding + 4096:  # amortized: drop delivered ones
            self._order = [i for i in self._order if not i.delivered]
        self._order.append(item)

    def get_results_unordered(self, progress: bool = False) -> "ResultIterator":
        """Iterate over results as tasks finish (tasks added meanwhile run too).

        A task that raised makes ``next()`` raise :class:`RemoteError` for that task; calling
        ``next()`` again goes on with the others. ``progress=True`` draws a progress bar on
        stderr (tqdm if installed) and prints a one-line summary at the end.
        """
        return ResultIterator(self, progress)

    def get_results(self, progress: bool = False) -> List[Any]:
        """Run every task; return the results in the order the tasks were added.

        ``progress=True`` draws a progress bar and prints a summary line at the end.

        Raises:
            RemoteError or WorkerLostError: the first task (in order) that failed, after all
                tasks have finished.
        """
        order = [item for item in self._order if not item.delivered]
        self._order = []
        bar = Progress(progress, total=self._outstanding)
        stats = RunStats(self._manager._engine)
        for _ in _drain(self):
            bar.update()
        bar.close()
        stats.report(progress)
        for item in order:
            if item.error is not None:
                raise item.error
        return [item.result for item in order]

    def _next_item(self) -> WorkItem:
        engine = self._manager._engine
        done = self._done
        if not done:
            if self._outstanding == 0:
                raise StopIteration
            engine.run_until(lambda: bool(done))
        self._outstanding -= 1
        item = done.popleft()
        item.delivered = True
        return item


def _drain(context: Context) -> Iterator[WorkItem]:
    while True:
        try:
            yield context._next_item()
        except StopIteration:
            return


class ResultIterator:
    """Results of a context in completion order; survives a failed task."""

    def __init__(self, context: Context, progress: bool = False) -> None:
        self._context = context
        self._progress = progress
        self._bar = Progress(progress, total=context._outstanding)
        self._stats = RunStats(context._manager._engine)
        self._seen = context._outstanding

    def __iter__(self) -> "ResultIterator":
        return self

    def __next__(self) -> Any:
        context = self._context
        self._bar.add_total(context._outstanding - self._seen)  # tasks added meanwhile
        try:
            item = context._next_item()
        except StopIteration:
            if self._stats is not None:  # first StopIteration: end the bar, summarize
                self._bar.close()
                self._stats.report(self._progress)
                self._stats = None
            raise
        self._seen = context._outstanding
        self._bar.update()
        if item.error is not None:
            raise item.error
        return item.result
