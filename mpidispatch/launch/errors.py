"""Errors raised by :mod:`mpidispatch.launch`; all derive from
:class:`mpidispatch.errors.Error`.

A message may name an option of ``submit``; it is written with a placeholder such as
``{option:queue}`` and shown in the language of the API in use: ``queue=`` from Python
(``str(error)``), ``--partition`` on the command line (``error.in_language("cli")``).
"""
from __future__ import annotations

import re
from typing import Dict

from ..errors import Error

#: How each option of :func:`mpidispatch.launch.submit` is spelled, per API.
SPELLING: Dict[str, Dict[str, str]] = {
    "python": {"nprocs": "nprocs=", "time": "time=", "queue": "queue=", "pe": "pe=",
               "mem": "mem=", "directive": "extra_directives=", "dry_run": "dry_run=True",
               "scheduler": "scheduler=", "launcher": "launcher=", "array": "array=",
               "workdir": "workdir="},
    "cli": {"nprocs": "-n", "time": "--time", "queue": "--partition", "pe": "--pe",
            "mem": "--mem", "directive": "--directive", "dry_run": "--dry-run",
            "scheduler": "--scheduler", "launcher": "--launcher", "array": "--array",
            "workdir": "--workdir"},
}
_OPTION = re.compile(r"\{option:(\w+)(?:=([^}]*))?\}")


def spell(text: str, api: str = "python") -> str:
    """``text`` with each ``{option:NAME}`` or ``{option:NAME=VALUE}`` written as ``api``
    ("python" or "cli") spells it: ``nprocs=4`` in Python, ``-n 4`` on the command line."""
    def one(m: "re.Match[str]") -> str:
        name, value = m.group(1), m.group(2)
        word = SPELLING[api].get(name, name)
        if value is None:
            return word
        if api == "cli":
            return "%s %s" % (word, value)
        return "%s%s" % (word, value if value.isdigit() else '"%s"' % value)
    return _OPTION.sub(one, text)


class SchedulerError(Error):
    """A batch-scheduler command failed, or its answer could not be understood."""

    def __str__(self) -> str:
        return self.in_language("python")

    def in_language(self, api: str) -> str:
        """The message with options spelled for ``api``: "python" (keywords) or "cli" (flags)."""
        return spell(super().__str__(), api)


class SchedulerNotFoundError(SchedulerError):
    """The scheduler's client command (``sbatch``, ``qsub``, ...) is not on ``PATH``."""


class JobTimeoutError(SchedulerError, TimeoutError):
    """:meth:`Job.wait` gave up; the job itself was left alone (it may still be running)."""


class JobWillNotRunError(SchedulerError):
    """The scheduler keeps the job pending for a reason that will not go away by itself
    (for Slurm: ``PartitionConfig``, ``PartitionTimeLimit``, an invalid account, ...).

    ``submit()`` cancels such a job and raises this error: it names the scheduler's reason
    (:attr:`reason`) and what to change. :meth:`Job.wait` raises it too when a job reaches
    such a state later.
    """

    def __init__(self, message: str, reason: str = "", job_id: str = ""):
        super().__init__(message)
        self.reason = reason
        self.job_id = job_id
