"""Slurm worker arrays: the allocation the manager runs in, or an ``sbatch --array`` job."""
from __future__ import annotations

import os
from typing import Optional, Union

from .. import _mpienv
from .allocation import slurm_slots
from .errors import AllocationError
from .inside import AllocationArray
from .submitted import JobArray


class SlurmAllocationArray(AllocationArray):
    """One worker per task slot of the Slurm allocation the manager runs in.

    Reads ``$SLURM_JOB_NODELIST`` (or ``$SLURM_NODELIST``) and ``$SLURM_TASKS_PER_NODE``.
    The Open MPI wheel's PRTE reads the Slurm allocation itself; with the MPICH wheel,
    ``SLURM_OVERLAP=1`` is set (unless set): hydra starts its proxies with ``srun``, and
    without ``--overlap`` the second job step waits forever for the CPUs the first holds.

    Raises:
        AllocationError: not inside a Slurm allocation, or malformed values.
    """

    def __init__(self) -> None:
        nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
        tasks = os.environ.get("SLURM_TASKS_PER_NODE")
        if not nodelist or not tasks:
            raise AllocationError(
                "SlurmWorkerArray() reads $SLURM_JOB_NODELIST and $SLURM_TASKS_PER_NODE, which "
                "are not set: it must run inside a Slurm allocation (sbatch -n N, salloc -n N). "
                "From outside one, use SlurmWorkerArray(numworker) to submit workers as a job "
                "array.")
        super().__init__(slurm_slots(nodelist, tasks), "$SLURM_JOB_NODELIST=%s" % nodelist)
        if _mpienv.backend() == "mpich":
            os.environ.setdefault("SLURM_OVERLAP", "1")


class SlurmJobArray(JobArray):
    """``numworker`` workers from a Slurm job array (``sbatch --array=1-numworker``) that
    join a manager running outside Slurm; see :class:`~.submitted.JobArray` for the
    arguments. ``close()`` (or the manager's end) cancels the array with ``scancel``."""

    scheduler = "slurm"

    def _cancel_job(self) -> None:
        """Cancel the tasks not started yet; a started one ends by itself (its worker was
        stopped, or sees the manager's connection close)."""
        self.job.run_command(["scancel", "--state=PENDING", self.job.id])


def SlurmWorkerArray(numworker: Optional[int] = None, options: str = "",
                     host: Optional[str] = None, start_timeout: Optional[float] = None,
                     workdir: Optional[str] = None
                     ) -> Union[SlurmAllocationArray, SlurmJobArray]:
    """Workers from Slurm: from the allocation the manager runs in, or from an array job.

    ``SlurmWorkerArray()`` (no count), in a job such as ``sbatch -n 8 --wrap "python
    manager.py"``: a :class:`SlurmAllocationArray`, one worker per task slot, each started
    with ``MPI_Comm_spawn`` on its node (the manager's own slot gets a worker beside it).
    Works with both MPI wheels.

    ``SlurmWorkerArray(numworker, options="--partition=short --time=60")``, for a manager
    outside Slurm: a :class:`SlurmJobArray` of ``numworker`` tasks whose workers join the
    manager (``MPI_Comm_connect``; MPICH wheel only).

    Args:
        numworker: None for the allocation's slots, or the number of array tasks.
        options: (array only) more ``sbatch`` options as one string.
        host, start_timeout, workdir: (array only) see :class:`~.submitted.JobArray`.

    Raises:
        AllocationError: without ``numworker``, when not inside a Slurm allocation.
        ConnectNotSupportedError: with ``numworker``, under the Open MPI 5 wheel.
        ValueError: array options without ``numworker``.
    """
    if numworker is None:
        if options or host or start_timeout is not None or workdir:
            raise ValueError("options/host/start_timeout/workdir apply to a submitted "
                             "array: give numworker too")
        return SlurmAllocationArray()
    return SlurmJobArray(numworker, options, host, start_timeout, workdir)
