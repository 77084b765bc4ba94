"""Submit MPI runs of a Python script to a batch scheduler (Slurm, Grid Engine).

>>> job = submit("simulate.py", args=["--steps", "100"], scheduler="slurm", nprocs=8,
...              time="1:00:00")                                        # doctest: +SKIP
>>> job.wait(timeout=7200), job.output()                                # doctest: +SKIP

The job script runs the current Python (``sys.executable``) under the ``mpiexec`` of this
environment's MPI wheel, with the environment it needs exported in the script. The command
line equivalent is ``mpidispatch submit`` (:mod:`mpidispatch.launch.cli`).
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Optional, Sequence, Type, Union

from . import _options, _script
from ._base import (CANCELLED, CANCELLED_EXIT_CODE, COMPLETED, FAILED, PENDING, RUNNING,
                    UNKNOWN, Job, JobOptions)
from .errors import (JobTimeoutError, JobWillNotRunError, SchedulerError,
                     SchedulerNotFoundError)
from .sge import SGEJob
from .slurm import SlurmJob

__all__ = ["submit", "Job", "SlurmJob", "SGEJob", "SCHEDULERS", "SchedulerError",
           "SchedulerNotFoundError", "JobTimeoutError", "JobWillNotRunError", "PENDING",
           "RUNNING", "COMPLETED",
           "FAILED", "CANCELLED", "UNKNOWN", "CANCELLED_EXIT_CODE",
           "SGEPEWorkerArray", "SGEQsubWorkerArray", "SlurmWorkerArray", "AllocationError",
           "ConnectNotSupportedError"]

#: Names kept here for compatibility; they live in :mod:`mpidispatch.arrays`.
_ARRAY_NAMES = frozenset({"SGEPEWorkerArray", "SGEQsubWorkerArray", "SlurmWorkerArray",
                          "AllocationError", "ConnectNotSupportedError"})


def __getattr__(name: str) -> Any:
    # imported on first use: mpidispatch.arrays submits its jobs through this package
    if name in _ARRAY_NAMES:
        from .. import arrays
        return getattr(arrays, name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


#: Scheduler name -> job class. "sge" also covers Son of Grid Engine / Open Cluster Scheduler.
SCHEDULERS: Dict[str, Type[Job]] = {"slurm": SlurmJob, "sge": SGEJob}


def submit(script: str, args: Sequence[str] = (), scheduler: str = "slurm", nprocs: int = 1,
           time: _options.TimeSpec = None, queue: Optional[str] = None,
           pe: Optional[str] = None, mem: Union[str, int, None] = None,
           fault_tolerant: bool = False, name: Optional[str] = None,
           workdir: Optional[str] = None, dry_run: bool = False,
           extra_directives: Iterable[str] = (), array: Union[str, int, None] = None,
           launcher: str = "mpiexec", journal: Optional[str] = None) -> Job:
    """Submit ``mpiexec -n nprocs python script args`` as a batch job.

    Args:
        script: the Python script to run (must be visible from the compute nodes).
        args: its command-line arguments.
        scheduler: "slurm" or "sge".
        nprocs: number of MPI ranks (Slurm ``--ntasks``; Grid Engine PE slots).
        time: wall-clock limit in Slurm's formats ("30" minutes, "1:30:00", "2-00:00:00"),
            an int (minutes) or a timedelta.
        queue: Slurm partition or Grid Engine queue.
        pe: Grid Engine parallel environment (default "mpi", or $MPIDISPATCH_SGE_PE).
        mem: memory per rank, e.g. "2G" (Slurm ``--mem-per-cpu``; SGE ``-l mem_free``).
        fault_tolerant: launch with ULFM (Open MPI ``--with-ft ulfm``; MPICH
            ``-disable-auto-cleanup``) so that a rank's death does not kill the others.
        name: job name (default: the script's file name without extension).
        workdir: directory for the job script and output files (default: the current one).
        dry_run: only render; the returned job has ``id`` None and nothing is written.
        extra_directives: more scheduler lines, e.g. ``"--nodes=2"`` or ``"-l h_vmem=4G"``
            (the ``#SBATCH``/``#$`` prefix is added unless the line starts with ``#``).
        array: submit a job array: a count (3 -> tasks 1-3) or a range "1-10".
        launcher: "mpiexec" (default) or "srun" (Slurm with the MPICH wheel).
        journal: a run journal file (docs/journal.md): exported to the job as
            ``MPIDISPATCH_JOURNAL``, so every face of the script records there, and a
            resubmitted (or requeued) job resumes instead of starting again.

    Returns:
        The :class:`Job` (``id``, ``state()``, ``wait(timeout)``, ``cancel()``,
        ``output()``, ``script``).

    Raises:
        ValueError: a bad option (nothing was submitted).
        SchedulerNotFoundError: the scheduler's submit command is not on PATH.
        SchedulerError: the submission failed (the message says why and what to change).
        JobWillNotRunError: the scheduler accepted the job but keeps it pending for a reason
            that will not resolve by itself (e.g. Slurm's ``PartitionConfig``: more CPUs than
            the partition has); the job was cancelled.
    """
    try:
        cls = SCHEDULERS[scheduler]
    except (KeyError, TypeError):
        raise ValueError("unknown scheduler %r: use one of %s"
                         % (scheduler, ", ".join(sorted(SCHEDULERS)))) from None
    if not isinstance(script, (str, os.PathLike)) or not os.path.isfile(script):
        raise ValueError("script %r is not a file" % (script,))
    if pe is not None and cls is not SGEJob:
        raise ValueError("pe (parallel environment) is a Grid Engine option; for Slurm, "
                         "nprocs alone sets --ntasks")
    if launcher == "srun" and cls is not SlurmJob:
        raise ValueError("launcher='srun' only works with scheduler='slurm'")
    if isinstance(args, (str, bytes)):
        raise ValueError("args must be a sequence of strings, not one string")
    workdir = os.path.abspath(workdir or os.getcwd())
    if not os.path.isdir(workdir):
        raise ValueError("workdir %r is not a directory" % workdir)
    script = os.path.abspath(os.fspath(script))
    options = JobOptions(
        script=script, args=tuple(str(a) for a in args),
        nprocs=_options.parse_nprocs(nprocs), name=_options.job_name(name, script),
        workdir=workdir, time_s=_options.parse_time(time),
        queue=_check_word("queue", queue), pe=_check_word("pe", pe),
        mem_mib=_options.parse_mem(mem), array=_options.parse_array(array),
        fault_tolerant=bool(fault_tolerant), launcher=launcher,
        extra_directives=tuple(extra_directives), env=_job_env(journal, workdir))
    job = cls(options)
    if not dry_run:
        job.submit()
    return job


def _job_env(journal: Optional[str], workdir: str) -> Dict[str, str]:
    env = _script.job_environment()
    if journal is not None:
        if not isinstance(journal, (str, os.PathLike)) or not os.fspath(journal):
            raise ValueError("journal must be a file name, not %r" % (journal,))
        env["MPIDISPATCH_JOURNAL"] = os.path.join(workdir, os.fspath(journal))
    return env


def _check_word(what: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError("%s must be a non-empty name without spaces, got %r" % (what, value))
    return value
