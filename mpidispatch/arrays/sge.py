"""Grid Engine worker arrays: the parallel environment the manager runs in, or a
``qsub -t`` array job."""
from __future__ import annotations

import os
from typing import Optional

from .allocation import parse_pe_hostfile
from .errors import AllocationError
from .inside import AllocationArray
from .submitted import JobArray


class SGEPEWorkerArray(AllocationArray):
    """Workers on the slots of the Grid Engine parallel environment the manager runs in.

    Use it in a job submitted with ``qsub -pe PE N`` whose script runs the manager as a plain
    ``python manager.py`` (not under ``mpiexec``)::

        m = Manager()
        m.add_worker(SGEPEWorkerArray())      # N workers: one per slot

    As in IMP.parallel, every slot of ``$PE_HOSTFILE`` gets a worker, and the manager's own
    slot gets a plain :class:`~mpidispatch.workers.LocalWorker`; each worker's slot host is
    its ``_host`` (and ``spawn_host``, except the manager's). Workers are started with
    ``MPI_Comm_spawn`` on their slot's host: MPICH's hydra reaches other hosts with ``qrsh
    -inherit``; the Open MPI wheel's PRTE, which cannot read Grid Engine's allocation, gets
    the PE's hosts in a private host file given to each spawn that goes to another host (MPI
    ``hostfile`` info key), removed once the spawn has completed. Nothing is exported into
    the process environment, so other spawns of the process are not affected.

    Args:
        hostfile: path of the PE host file (default ``$PE_HOSTFILE``).

    Raises:
        AllocationError: not inside a parallel-environment job, or the file is malformed.
    """

    prte_needs_hosts = True

    def __init__(self, hostfile: Optional[str] = None) -> None:
        path = hostfile or os.environ.get("PE_HOSTFILE")
        if not path or path == "undefined":
            raise AllocationError(
                "SGEPEWorkerArray() reads $PE_HOSTFILE, which is not set: it must run inside "
                "a Grid Engine job with a parallel environment (qsub -pe mpi N script.sh). "
                "From outside a job, use SGEQsubWorkerArray(numworker) instead.")
        try:
            with open(path) as fh:
                slots = parse_pe_hostfile(fh.read())
        except OSError as exc:
            raise AllocationError("cannot read the PE host file %s: %s" % (path, exc)) from None
        if not slots:
            raise AllocationError("the PE host file %s lists no host" % path)
        super().__init__(slots, path)


class SGEQsubWorkerArray(JobArray):
    """``numworker`` workers from a Grid Engine array job (``qsub -t 1-numworker``).

    For a manager running *outside* the batch system (e.g. on the login node). Each array
    task runs ``mpiexec -n 1 python -m mpidispatch.arrays.worker``, which joins the manager
    through ``MPI_Comm_connect``; tasks start whenever Grid Engine schedules them, and the
    manager uses each worker as soon as it has joined. ``close()`` (or the manager's end)
    cancels the array with ``qdel``; a worker whose manager died exits by itself.

    Needs the MPICH wheel (or an MPI that can connect separate jobs); the Open MPI 5 wheel
    raises :class:`~.errors.ConnectNotSupportedError` here.

    Args:
        numworker: number of array tasks (= workers).
        options: more ``qsub`` options, as one string (``"-q long.q -l h_rt=2:00:00"``).
        host, start_timeout, workdir: see :class:`~.submitted.JobArray`.
    """

    scheduler = "sge"
