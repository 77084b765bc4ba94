"""What every worker array is: a fixed list of :class:`~mpidispatch.workers.Worker` objects.

An array is not a worker itself; each face adds its workers. ``workers()`` is the one
method a face needs (``Manager.add_worker`` also accepts IMP's ``_get_workers``), and an
array is iterable so that ``job.extend(array)`` works on a MODELLER ``job``.
"""
from __future__ import annotations

from typing import Any, Iterator, List

from ..workers import Worker


class WorkerArray:
    """Base of the worker arrays: holds their workers, created once, in order."""

    def __init__(self, workers: List[Worker]) -> None:
        self._workers = list(workers)

    def workers(self) -> List[Worker]:
        """The workers of this array (the same objects on every call)."""
        return list(self._workers)

    def _get_workers(self) -> List[Worker]:
        """IMP.parallel's name for :meth:`workers` (``Manager.add_worker`` looks for it)."""
        return self.workers()

    def __iter__(self) -> Iterator[Worker]:
        return iter(self.workers())

    def __len__(self) -> int:
        return len(self._workers)


def as_workers(obj: Any) -> List[Worker]:
    """The workers ``obj`` stands for: a worker alone, an array's workers, or the workers of
    a list of both -- what a face's ``add_worker`` needs to accept arrays as well.

    Raises:
        TypeError: ``obj`` is neither a worker, nor an array, nor a list of them.
    """
    if isinstance(obj, Worker):
        return [obj]
    if hasattr(obj, "workers") and callable(obj.workers):
        return list(obj.workers())
    if hasattr(obj, "_get_workers"):
        return list(obj._get_workers())
    if isinstance(obj, (list, tuple)):
        return [w for item in obj for w in as_workers(item)]
    raise TypeError("expected a Worker (e.g. LocalWorker()) or a worker array, not %r" % (obj,))
