"""Errors raised by :mod:`mpidispatch.launch`; all derive from
:class:`mpidispatch.errors.Error`.
"""
from __future__ import annotations

from ..errors import Error


class SchedulerError(Error):
    """A batch-scheduler command failed, or its answer could not be understood."""


class SchedulerNotFoundError(SchedulerError):
    """The scheduler's client command (``sbatch``, ``qsub``, ...) is not on ``PATH``."""


class JobTimeoutError(SchedulerError, TimeoutError):
    """:meth:`Job.wait` gave up; the job itself was left alone (it may still be running)."""
