"""mpidispatch: farm Python tasks out to worker processes over MPI.

Faces over one engine: IMP-style :class:`Manager`/:class:`Context`, MODELLER-style ``job``,
a PyOPUS-style ``JobDispatcher`` and a ``concurrent.futures`` executor.
"""
from .errors import (Error, NetworkError, NoMoreWorkersError, RemoteError, SerializationError,
                     TaskTimeoutError, WorkerLostError, WorkerStartError)
from .tasks import Context, Manager
from .workers import LocalWorker, Worker

__version__ = "0.1.0"

__all__ = ["Manager", "Context", "LocalWorker", "Worker", "Error", "NetworkError",
           "NoMoreWorkersError", "RemoteError", "SerializationError", "TaskTimeoutError",
           "WorkerLostError", "WorkerStartError", "__version__"]
