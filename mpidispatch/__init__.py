"""mpidispatch: farm Python tasks out to worker processes over MPI.

Faces over one engine: IMP-style :class:`Manager`/:class:`Context`, MODELLER-style ``job``,
a PyOPUS-style ``JobDispatcher`` and a ``concurrent.futures`` executor.

The public names are imported on first use (PEP 562): a spawned worker imports
``mpidispatch._worker`` only, and every worker started pays the package's import time (on
a 2-core machine, 64 workers x 0.14 s of CPU for the whole package, see
docs/performance.md, "Starting many workers").
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_WHERE = {
    "Error": ".errors", "NetworkError": ".errors", "NoMoreWorkersError": ".errors",
    "RemoteError": ".errors", "SerializationError": ".errors",
    "TaskTimeoutError": ".errors", "Terminated": ".errors", "WorkerLostError": ".errors",
    "WorkerStartError": ".errors",
    "JobDispatcher": ".dispatcher",
    "BrokenMPIExecutor": ".executor", "MPIExecutor": ".executor",
    "RemoteTraceback": ".executor",
    "submit": ".launch",
    "SGEPEWorkerArray": ".arrays", "SGEQsubWorkerArray": ".arrays",
    "SlurmWorkerArray": ".arrays",
    "Options": "._options",
    "job": ".modeller", "task": ".modeller",
    "Context": ".tasks", "Manager": ".tasks", "ResultIterator": ".tasks",
    "LocalWorker": ".workers", "Worker": ".workers",
}

__all__ = ["Manager", "Context", "ResultIterator", "LocalWorker", "Worker", "job", "task",
           "Options",
           "JobDispatcher", "MPIExecutor", "BrokenMPIExecutor", "RemoteTraceback", "submit",
           "Error", "NetworkError", "Terminated",
           "NoMoreWorkersError", "RemoteError", "SerializationError", "TaskTimeoutError",
           "WorkerLostError", "WorkerStartError", "SGEPEWorkerArray", "SGEQsubWorkerArray",
           "SlurmWorkerArray", "__version__"]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:  # a submodule (mpidispatch.launch, ...), as the eager imports gave
        try:
            return importlib.import_module("." + name, __name__)
        except ModuleNotFoundError:
            raise AttributeError("module 'mpidispatch' has no attribute %r" % (name,)) \
                from None
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the eager imports, for type checkers and IDEs
    from .errors import (Error, NetworkError, NoMoreWorkersError, RemoteError,  # noqa: F401
                         SerializationError, TaskTimeoutError, Terminated, WorkerLostError,
                         WorkerStartError)
    from .dispatcher import JobDispatcher  # noqa: F401
    from .executor import BrokenMPIExecutor, MPIExecutor, RemoteTraceback  # noqa: F401
    from .launch import submit  # noqa: F401
    from .arrays import SGEPEWorkerArray, SGEQsubWorkerArray, SlurmWorkerArray  # noqa: F401
    from ._options import Options  # noqa: F401
    from .modeller import job, task  # noqa: F401
    from .tasks import Context, Manager, ResultIterator  # noqa: F401
    from .workers import LocalWorker, Worker  # noqa: F401
