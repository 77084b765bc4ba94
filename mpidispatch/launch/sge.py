"""(Son of) Grid Engine: ``qsub`` / ``qdel``; state from ``qstat``, exit code from ``qacct``.

Grid Engine's client commands occasionally fail with a transient ``commlib error``; every
call is retried (bounded). The job script exports what the run needs explicitly and also
asks for ``-V`` (Grid Engine does not pass ``PATH`` to jobs by default).
"""
from __future__ import annotations

import os
import re
from typing import ClassVar, List, Optional, Sequence, Tuple

from .. import _mpienv
from . import _options
from ._base import CANCELLED, COMPLETED, FAILED, PENDING, RUNNING, UNKNOWN, Job
from .errors import SchedulerError

#: Parallel environment used when ``pe`` is not given and more than one rank is asked for.
DEFAULT_PE = os.environ.get("MPIDISPATCH_SGE_PE", "mpi")


class SGEJob(Job):
    """A job for Grid Engine. Queue = ``-q``; ranks = slots of parallel environment ``pe``."""

    scheduler = "Grid Engine"
    # -w e: refuse a job that could not run even on an empty cluster (more slots than any
    # queue has, a resource no host offers) instead of leaving it queued forever.
    submit_command: ClassVar[Sequence[str]] = ("qsub", "-terse", "-w", "e")
    cancel_command: ClassVar[Sequence[str]] = ("qdel",)
    directive_prefix = "#$"
    script_suffix = ".sge"
    job_id_regexp = r"^\s*(?P<job_id>\d+)(\.\d+-\d+:\d+)?\s*$"
    transient_errors = ("commlib error", "unable to contact qmaster",
                        "failed receiving gdi request", "unable to send message to qmaster",
                        "got select error")
    unknown_grace = 60.0      # qacct sees a job only after reporting_params flush_time (15 s)
    install_hint = ("load Grid Engine's environment (e.g. `module load sge` or `source "
                    "$SGE_ROOT/default/common/settings.sh`) or add the directory holding qsub "
                    "to PATH")

    def header_lines(self) -> List[str]:
        o = self.options
        # -notify: qdel sends USR2 before KILL; the script forwards it to mpiexec, whose
        # ranks may run in their own process group that a plain qdel would not reach
        lines = ["-N %s" % o.name, "-S /bin/bash", "-V", "-notify", "-wd %s" % o.workdir,
                 "-o %s" % self._output_pattern(), "-j y"]
        if o.nprocs > 1 or o.pe:
            lines.append("-pe %s %d" % (o.pe or DEFAULT_PE, o.nprocs))
        if o.queue:
            lines.append("-q %s" % o.queue)
        if o.time_s is not None:
            lines.append("-l h_rt=%s" % _options.format_hms(o.time_s))
        if o.mem_mib is not None:
            lines.append("-l mem_free=%dM" % o.mem_mib)
        if o.array is not None:
            lines.append("-t %d-%d" % o.array)
        return lines

    def pre_launch_lines(self) -> List[str]:
        """For the Open MPI wheel: hand it the PE's hosts.

        The wheel's PRTE has no Grid Engine support (``prte_info`` lists ras/plm slurm, pbs,
        ssh only), so it ignores ``$PE_HOSTFILE`` and would put every rank on the first host.
        Its default hostfile is pointed at a copy in PRTE's format; on several hosts PRTE
        then starts its daemons over ssh. MPICH's hydra reads ``$PE_HOSTFILE`` itself.
        """
        if _mpienv.backend() != "openmpi" or self.options.launcher != "mpiexec":
            return []
        return ['if [ -r "${PE_HOSTFILE:-}" ]; then',
                '  hosts="${TMPDIR:-/tmp}/mpidispatch-hosts.$job${task:+.$task}"; '
                'trap \'rm -f "$hosts"\' EXIT',
                '  awk \'{print $1" slots="$2}\' "$PE_HOSTFILE" > "$hosts" &&'
                ' export PRTE_MCA_prte_default_hostfile="$hosts"',
                'fi']

    def _output_pattern(self) -> str:
        o = self.options
        tail = "$JOB_ID.$TASK_ID.out" if o.array else "$JOB_ID.out"
        return os.path.join(o.workdir, "%s-%s" % (o.name, tail))

    def output_files(self) -> List[str]:
        o, job_id = self.options, self._require_id()
        tail = "%s.*.out" % job_id if o.array else "%s.out" % job_id
        return self._glob_outputs(os.path.join(o.workdir, "%s-%s" % (o.name, tail)))

    @classmethod
    def explain(cls, error: str) -> str:
        if "parallel environment" in error and "does not exist" in error:
            return ("; list the parallel environments with `qconf -spl` and choose one with "
                    "{option:pe} (or set MPIDISPATCH_SGE_PE)")
        if "no suitable queues" in error:
            return ("; Grid Engine could never run this job as asked (checked against an "
                    "empty cluster): no queue offers this many slots or these resources. "
                    "Fix: ask for fewer ranks ({option:nprocs}; `qstat -g c` shows each "
                    "queue's TOTAL slots), less memory or time ({option:mem}, {option:time}), "
                    "another queue ({option:queue}), or a parallel environment spanning "
                    "several hosts ({option:pe}; `qconf -spl`)")
        return ""

    def _query(self) -> Tuple[str, Optional[int]]:
        job_id = self._require_id()
        proc = self.run_command(["qstat", "-u", "*"])
        letters = [f[4] for f in (line.split() for line in proc.stdout.splitlines())
                   if len(f) > 4 and f[0] == job_id]
        if letters:
            if any("E" in s for s in letters):
                reason = self.run_command(["qstat", "-j", job_id], check=False).stdout
                why = [ln.strip() for ln in reason.splitlines() if ln.startswith("error reason")]
                raise SchedulerError(
                    "Grid Engine job %s is in error state (%s) and will not run: %s. Fix the "
                    "cause, then `qmod -cj %s` to retry it or `qdel %s`"
                    % (job_id, letters[0], "; ".join(why) or "see `qstat -j %s`" % job_id,
                       job_id, job_id))
            if all(s.endswith("qw") for s in letters):
                return PENDING, None
            return RUNNING, None
        if self._cancelled:
            return CANCELLED, None
        codes = self.exit_codes()
        if codes is not None:
            code = max(codes)
            return (COMPLETED if code == 0 else FAILED), code
        return self._accounting(job_id)

    def _accounting(self, job_id: str) -> Tuple[str, Optional[int]]:
        """State and exit code of a job that left qstat, from ``qacct -j``."""
        proc = self.run_command(["qacct", "-j", job_id], check=False)
        records = [dict(re.findall(r"^(\w+)\s+(.*?)\s*$", block, re.MULTILINE))
                   for block in re.split(r"^=+\s*$", proc.stdout, flags=re.MULTILINE)]
        records = [r for r in records if "exit_status" in r]
        if self.options.array is not None and not self._cancelled:
            first, last = self.options.array
            if len(records) < last - first + 1:
                return (UNKNOWN if not records else RUNNING), None   # accounting lags
        if not records:
            return (CANCELLED, 0) if self._cancelled else (UNKNOWN, None)
        codes = [_leading_int(r["exit_status"]) for r in records]
        failed = [r.get("failed", "0").split()[0] != "0" for r in records]
        deleted = [r.get("deleted_by", "NONE") not in ("NONE", "") for r in records]
        code = max(codes)
        if self._cancelled or any(deleted):
            return CANCELLED, code
        if any(failed) or code != 0:
            return FAILED, code if code else 1
        return COMPLETED, code


def _leading_int(text: str, default: int = 1) -> int:
    """The integer an accounting field starts with (``"137 (killed)"`` -> 137)."""
    m = re.match(r"-?\d+", text)
    return int(m.group()) if m else default
