"""Slurm: ``sbatch`` / ``scancel``; state and exit code from ``scontrol show job``.

``sbatch --wait`` is not used: it polls every 2 s growing to 10 s. ``sacct`` is not used:
it needs slurmdbd, which many small clusters (and CI) do not run. ``scontrol`` knows a
finished job for ``MinJobAge`` seconds (default 300), which is enough for :meth:`wait`.
"""
from __future__ import annotations

import os
import re
from typing import ClassVar, List, Optional, Sequence, Tuple

from . import _options
from ._base import (CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, UNKNOWN, Job)
from .errors import SchedulerError

_FAILED = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
           "PREEMPTED", "SPECIAL_EXIT"}
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}


class SlurmJob(Job):
    """A job for Slurm. Queue = partition; ``pe`` does not apply."""

    scheduler = "Slurm"
    submit_command: ClassVar[Sequence[str]] = ("sbatch", "--parsable")
    cancel_command: ClassVar[Sequence[str]] = ("scancel",)
    directive_prefix = "#SBATCH"
    script_suffix = ".sbatch"
    job_id_regexp = r"^\s*(?P<job_id>\d+)(;\S+)?\s*$"
    transient_errors = ("Socket timed out", "Unable to contact slurm controller",
                        "Zero Bytes were transmitted", "Resource temporarily unavailable",
                        "backup controller in standby", "Connection refused")
    install_hint = ("load Slurm's environment module (e.g. `module load slurm`) or add the "
                    "directory holding sbatch (often /usr/bin or /opt/slurm/bin) to PATH")

    def header_lines(self) -> List[str]:
        o = self.options
        lines = ["--job-name=%s" % o.name, "--ntasks=%d" % o.nprocs,
                 "--chdir=%s" % o.workdir, "--output=%s" % self._output_pattern()]
        if o.queue:
            lines.append("--partition=%s" % o.queue)
        if o.time_s is not None:
            lines.append("--time=%s" % _options.format_slurm_time(o.time_s))
        if o.mem_mib is not None:
            lines.append("--mem-per-cpu=%dM" % o.mem_mib)
        if o.array is not None:
            lines.append("--array=%d-%d" % o.array)
        return lines

    def _output_pattern(self) -> str:
        o = self.options
        tail = "%A.%a.out" if o.array else "%j.out"
        return os.path.join(o.workdir, "%s-%s" % (o.name, tail))

    def output_files(self) -> List[str]:
        o, job_id = self.options, self._require_id()
        tail = "%s.*.out" % job_id if o.array else "%s.out" % job_id
        return self._glob_outputs(os.path.join(o.workdir, "%s-%s" % (o.name, tail)))

    @classmethod
    def explain(cls, error: str) -> str:
        if "Invalid partition" in error:
            return "; list the partitions with `sinfo -s` and pick one with --partition"
        if "node configuration is not available" in error or "More processors" in error:
            return ("; the request (ranks, memory or time) exceeds what any node/partition "
                    "offers: see `sinfo -o '%P %c %m %l'`")
        return ""

    def _query(self) -> Tuple[str, Optional[int]]:
        job_id = self._require_id()
        proc = self.run_command(["scontrol", "-o", "show", "job", job_id], check=False)
        if proc.returncode != 0:
            if "Invalid job id" in proc.stderr + proc.stdout:
                # gone from slurmctld's memory (MinJobAge): the job's own record remains
                codes = self.exit_codes()
                if codes is None:
                    return UNKNOWN, None
                return (COMPLETED if max(codes) == 0 else FAILED), max(codes)
            raise SchedulerError("`scontrol show job %s` failed: %s"
                                 % (job_id, (proc.stderr + proc.stdout).strip()))
        return self._combine(proc.stdout)

    @staticmethod
    def _combine(text: str) -> Tuple[str, Optional[int]]:
        """State and exit code of a job (or all tasks of an array) from scontrol -o lines."""
        states, codes = [], []
        for line in text.splitlines():
            m = re.search(r"\bJobState=(\S+)", line)
            if not m:
                continue
            states.append(m.group(1))
            e = re.search(r"\bExitCode=(\d+):(\d+)", line)
            if e:
                code, sig = int(e.group(1)), int(e.group(2))
                codes.append(code if code or not sig else 128 + sig)
        if not states:
            return UNKNOWN, None
        done = _FAILED | {"COMPLETED", "CANCELLED"}
        unfinished = [s for s in states if s not in done]
        if unfinished:
            all_pending = len(unfinished) == len(states) and all(s in _PENDING for s in states)
            return (PENDING if all_pending else RUNNING), None
        code = max(codes) if codes else None
        if "CANCELLED" in states:
            return CANCELLED, code
        if any(s in _FAILED for s in states):
            return FAILED, code if code else 1
        return COMPLETED, code
