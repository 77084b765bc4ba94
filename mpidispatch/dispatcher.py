"""PyOPUS-style job dispatcher: subclass, define generator/processor/collector, ``run()``.

::

    class Squares(JobDispatcher):
        def reset(self):                 self.todo = iter(range(100)); self.total = 0
        def job_generator(self):         return next(self.todo, None)    # None: no more jobs
        def job_processor(self, job):    return job * job                # runs on a worker
        def job_collector(self, job, r): self.total += r                 # runs here
        def postprocess(self):           print(self.total)

    Squares(max_workers=4).run()

``run()`` calls ``reset()``, then takes jobs from the generator *lazily* (never more jobs
generated-but-uncollected than the workers hold: workers x ``prefetch``), sends each to a
worker, feeds results to the collector in completion order, and calls ``postprocess()``.

The dispatcher object itself is pickled and sent to each worker once per ``run()`` (as the
setup of an engine context), so ``job_processor`` sees the attributes the dispatcher had when
``run()`` started; only the job travels with each task. The subclass must therefore be
picklable (cloudpickle handles classes defined in the script; define ``__getstate__`` calling
``super().__getstate__()`` to leave out big or unpicklable attributes).

Where no worker is available (plain ``python script.py`` without ``max_workers``, or fewer
live workers than ``min_workers``) the jobs are evaluated locally in this process, as PyOPUS
does without a virtual machine.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List, Optional, TextIO

from . import _world
from ._engine import Engine, engine_for_pool
from ._options import resolve
from ._progress import Progress, RunStats
from ._taskgroup import TaskGroup
from .workers import Worker, worker_list

__all__ = ["JobDispatcher"]


class _Clone:
    """Setup of a run's context: gives the worker its copy of the dispatcher."""

    __slots__ = ("dispatcher",)

    def __init__(self, dispatcher: "JobDispatcher") -> None:
        self.dispatcher = dispatcher

    def __call__(self) -> tuple:
        return (self.dispatcher,)


class _Process:
    """One job on the wire: the worker calls ``dispatcher.job_processor(job)``."""

    __slots__ = ("job",)

    def __init__(self, job: Any) -> None:
        self.job = job

    def __call__(self, dispatcher: "JobDispatcher") -> Any:
        return dispatcher.job_processor(self.job)


class JobDispatcher:
    """Base class of a job dispatcher (PyOPUS ``JobDispatcher``). Subclass it.

    Under ``mpiexec -n N`` the constructor turns ranks 1..N-1 into workers (they never return
    from it), so call ``super().__init__()`` before any work in a subclass constructor.

    Args:
        max_workers: in a singleton (``python script.py``), spawn this many ``LocalWorker``
            processes at the first ``run()``; None spawns none, so jobs run locally unless
            workers were added with :meth:`add_worker`. Under ``mpiexec``, use at most this
            many of the world's ranks (None: all).
        min_workers: with fewer live workers than this at the start of ``run()``, evaluate
            the jobs locally instead (0: only when there is no worker at all).
        debug: 1 prints each dispatch and each result with its worker and timings (stdout).
        output: ``%d`` pattern of the worker log files.
        **options: engine options (:class:`mpidispatch.Options`: ``fault_tolerant``,
            ``python``, ``start_timeout``, ``task_timeout``, ...). ``prefetch`` defaults to
            1 here: PyOPUS's one job per idle worker, best for long unequal jobs and the
            tightest bound on generated jobs; 2 or more hides the round trip between many
            short jobs.
    """

    def __init__(self, max_workers: Optional[int] = None, min_workers: int = 0,
                 debug: int = 0, output: Optional[str] = "worker%d.output",
                 **options: Any) -> None:
        self._options = resolve({"prefetch": 1}, output=output, **options)
        _world.serve_if_worker(output)
        if max_workers is not None and max_workers < 0:
            raise ValueError("max_workers must be >= 0 or None, not %r" % (max_workers,))
        if min_workers < 0:
            raise ValueError("min_workers must be >= 0, not %r" % (min_workers,))
        self.max_workers = max_workers
        self.min_workers = min_workers
        self.debug = debug
        self._engine: Optional[Engine] = None
        self._extra: List[Worker] = []
        self._world: List[Any] = []
        #: Where ``debug`` output goes.
        self.debug_stream: Optional[TextIO] = None
        #: True while/after the last ``run()`` evaluated its jobs in this process.
        self.local_mode = False

    # -- the hooks a subclass defines ---------------------------------------------------------
    def reset(self) -> None:
        """Prepare for a run (called first by every ``run()``): e.g. rewind the generator."""

    def job_generator(self) -> Any:
        """Return the next job (any picklable object), or None when there are no more."""
        raise NotImplementedError("%s must define job_generator()" % type(self).__name__)

    def job_processor(self, job: Any) -> Any:
        """Evaluate one job, on a worker (or locally); return its (picklable) result."""
        raise NotImplementedError("%s must define job_processor(job)" % type(self).__name__)

    def job_collector(self, job: Any, result: Any) -> None:
        """Receive a job's result, here on the manager, in completion order."""

    def postprocess(self) -> None:
        """Called once after every job of a run was collected."""

    # -- workers -------------------------------------------------------------------------------
    def add_worker(self, worker: Any) -> None:
        """Add a worker (e.g. ``LocalWorker(host="node2")``), or every worker of a worker
        array, besides ``max_workers``."""
        for w in worker_list(worker):
            if self._engine is not None:
                self._engine.add_worker(w)
            else:
                if not isinstance(w, Worker):
                    raise TypeError("add_worker() takes a worker object such as "
                                    "LocalWorker(), not %r" % (w,))
                self._extra.append(w)

    def wait_ready(self, timeout: Optional[float] = None) -> int:
        """Start the workers (``max_workers`` and added ones) and wait until each is up or
        failed to start; return how many are ready. ``run()`` does not wait: jobs go to the
        first workers up while the others still start."""
        return self._get_engine().wait_ready(timeout)

    @property
    def workers(self) -> List[Worker]:
        """The workers this dispatcher has (empty before the first ``run()``)."""
        return list(self._engine.workers) if self._engine is not None else list(self._extra)

    def _get_engine(self) -> Engine:
        if self._engine is None:
            engine, self._world = engine_for_pool(self._options, self.max_workers,
                                                  self.max_workers or 0)
            self._engine = engine
            for w in self._extra:
                engine.add_worker(w)
            self._extra = []
        return self._engine

    # -- running -------------------------------------------------------------------------------
    def run(self, progress: bool = False) -> None:
        """Generate, dispatch and collect every job, then call ``postprocess()``.

        Args:
            progress: draw a progress bar (count of collected jobs) and print a summary.

        Raises:
            RemoteError: ``job_processor`` raised on a worker (jobs not yet sent are dropped).
            NoMoreWorkersError: every worker died with jobs left (use ``fault_tolerant``).
        """
        self.reset()
        engine = self._get_engine()
        live = len(engine.live_workers())
        self.local_mode = live == 0 or live < self.min_workers
        bar = Progress(progress, desc="jobs")
        stats = RunStats(None if self.local_mode else engine)
        try:
            if self.local_mode:
                self._run_local(bar, stats)
            else:
                self._run_remote(engine, bar)
        finally:
            bar.close()
        stats.report(progress, type(self).__name__)
        self.postprocess()

    def _say(self, text: str) -> None:
        out = self.debug_stream or sys.stdout
        out.write("%s: %s\n" % (type(self).__name__, text))
        out.flush()

    def _run_local(self, bar: Progress, stats: RunStats) -> None:
        index = 0
        while True:
            job = self.job_generator()
            if job is None:
                return
            start = time.perf_counter()
            result = self.job_processor(job)
            if self.debug:
                self._say("job %d evaluated locally in %.4f s" % (
                    index, time.perf_counter() - start))
            self.job_collector(job, result)
            stats.local_tasks += 1
            bar.update()
            index += 1

    def _run_remote(self, engine: Engine, bar: Progress) -> None:
        announced: Dict[int, float] = {}  # debug: work id -> when it was dispatched

        def announce(item: Any) -> bool:  # engine hook, just before the job is sent
            if self.debug:
                announced[item.work_id] = now = time.monotonic()
                self._say("job %d -> %r after %.4f s in the queue" % (
                    item.index, item.worker, now - item.tag))
            return True

        # the dispatcher as it is now is each worker's setup (sent once per worker)
        group = TaskGroup(engine, _Clone(self), on_starting=announce)
        exhausted = False
        try:
            while True:
                while not exhausted and group.capacity() > 0:  # generate lazily
                    job = self.job_generator()
                    if job is None:
                        exhausted = True
                        break
                    group.submit(job, _Process(job), tag=time.monotonic())
                item = group.next_completed()
                if item is None:
                    if group.outstanding == 0 and exhausted:
                        return
                    continue
                if self.debug:
                    now = time.monotonic()
                    self._say("job %d <- %r: %s %.4f s after dispatch (%.4f s after "
                              "generation)" % (item.index, item.worker,
                                               "error" if item.error else "result",
                                               now - announced.pop(item.work_id, now),
                                               now - item.tag))
                if item.error is not None:
                    raise item.error
                self.job_collector(item.task, item.result)
                bar.update()
        finally:
            group.cancel_pending()  # an error: drop what no worker has yet

    # -- pickling and cleanup ----------------------------------------------------------------
    def __getstate__(self) -> Dict[str, Any]:
        """What a worker's copy holds: everything but the engine and manager-side state."""
        state = self.__dict__.copy()
        for key in ("_engine", "_extra", "_world", "debug_stream"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._engine = None
        self._extra = []
        self._world = []
        self.debug_stream = None

    def close(self) -> None:
        """Stop the spawned workers (done at exit too)."""
        if self._engine is not None:
            self._engine.close()  # gives the world's ranks back too
            self._world = []

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> "JobDispatcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
