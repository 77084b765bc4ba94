"""mpidispatch: farm Python tasks out to worker processes over MPI.

Faces over one engine: IMP-style :class:`Manager`/:class:`Context`, MODELLER-style ``job``,
a PyOPUS-style ``JobDispatcher`` and a ``concurrent.futures`` executor.
"""
from .errors import (Error, NetworkError, NoMoreWorkersError, RemoteError, SerializationError,
                     TaskTimeoutError, WorkerLostError, WorkerStartError)
from .dispatcher import JobDispatcher
from .executor import BrokenMPIExecutor, MPIExecutor, RemoteTraceback
from .launch import submit
from .arrays import SGEPEWorkerArray, SGEQsubWorkerArray, SlurmWorkerArray
from ._options import Options
from .modeller import job, task
from .tasks import Context, Manager, ResultIterator
from .workers import LocalWorker, Worker

__version__ = "0.1.0"

__all__ = ["Manager", "Context", "ResultIterator", "LocalWorker", "Worker", "job", "task",
           "Options",
           "JobDispatcher", "MPIExecutor", "BrokenMPIExecutor", "RemoteTraceback", "submit",
           "Error", "NetworkError",
           "NoMoreWorkersError", "RemoteError", "SerializationError", "TaskTimeoutError",
           "WorkerLostError", "WorkerStartError", "SGEPEWorkerArray", "SGEQsubWorkerArray",
           "SlurmWorkerArray", "__version__"]
