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
from .errors import JobWillNotRunError, SchedulerError

_FAILED = {"FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
           "PREEMPTED", "SPECIAL_EXIT"}
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}

#: Reasons for which a pending job waits forever unless someone changes it or the cluster,
#: with what they mean. (``Resources``, ``Priority``, ``Dependency``... resolve by themselves.)
HOPELESS_REASONS = {
    "PartitionConfig": "the request exceeds what the partition allows",
    "PartitionNodeLimit": "the job needs more nodes than the partition allows",
    "PartitionTimeLimit": "the time limit is above the partition's maximum",
    "BadConstraints": "no node matches the job's constraints",
    "InvalidAccount": "the account is not valid",
    "InvalidQOS": "the QOS is not valid",
    "QOSMaxCpuPerJobLimit": "the job asks for more CPUs than its QOS allows one job",
    "QOSMaxNodePerJobLimit": "the job asks for more nodes than its QOS allows one job",
    "QOSMaxWallDurationPerJobLimit": "the time limit is above its QOS's maximum",
    "AssocMaxCpuPerJobLimit": "the job asks for more CPUs than its account allows one job",
    "AssocMaxNodePerJobLimit": "the job asks for more nodes than its account allows one job",
    "AssocMaxWallDurationPerJobLimit": "the time limit is above its account's maximum",
}


def _fields(line: str) -> dict:
    """``Key=Value`` pairs of one ``scontrol -o`` line."""
    return dict(re.findall(r"(\w+)=(\S*)", line))


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
            return "; list the partitions with `sinfo -s` and pick one with {option:queue}"
        if "node configuration is not available" in error or "More processors" in error:
            return ("; the request exceeds what any node/partition offers (see `sinfo -o "
                    "'%P %c %m %l'`): ask for fewer ranks ({option:nprocs}), less memory "
                    "({option:mem}) or time ({option:time}), or another partition "
                    "({option:queue})")
        if "time limit" in error.lower():
            return ("; the time limit exceeds the partition's (`sinfo -o '%P %l'`): use a "
                    "shorter {option:time} or another partition ({option:queue})")
        return ""

    def check_runnable(self, cancel: bool = False) -> None:
        """Raise :class:`JobWillNotRunError` for a job pending with a reason in
        :data:`HOPELESS_REASONS` (or waiting for more CPUs than its partition has).

        Slurm sets the reason when the job is submitted, so ``submit`` finds out at once.
        """
        job_id = self._require_id()
        try:
            proc = self.run_command(["scontrol", "-o", "show", "job", job_id], check=False)
        except SchedulerError:         # no scontrol, or no answer: the job itself was submitted
            return
        for line in proc.stdout.splitlines():
            job = _fields(line)
            if job.get("JobState") != "PENDING":
                continue
            reason = job.get("Reason", "")
            part = self._partition(job.get("Partition", ""))
            cpus = _int(job.get("NumCPUs"))
            too_big = cpus is not None and part.get("cpus") is not None and cpus > part["cpus"]
            if reason not in HOPELESS_REASONS and not (reason == "Resources" and too_big):
                continue
            message = self._hopeless_message(job_id, reason, job, part, too_big)
            if cancel:
                self.cancel()
                message += " The job was cancelled: as it is, it would never start."
            else:
                message += " Cancel it with job.cancel() / `scancel %s`." % job_id
            raise JobWillNotRunError(message, reason=reason, job_id=job_id)

    def _partition(self, name: str) -> dict:
        """Total CPUs, largest node and MaxTime of a partition (what is known)."""
        out: dict = {"name": name}
        if not name:
            return out
        proc = self.run_command(["scontrol", "-o", "show", "partition", name], check=False)
        part = _fields(proc.stdout)
        out["cpus"] = _int(part.get("TotalCPUs"))
        out["nodes"] = _int(part.get("TotalNodes"))
        out["max_time"] = part.get("MaxTime")
        sizes = self.run_command(["sinfo", "-h", "-p", name, "-o", "%c"], check=False).stdout
        node_cpus = [_int(x.strip("+")) for x in sizes.split()]
        out["node_cpus"] = max((c for c in node_cpus if c), default=None)
        return out

    @staticmethod
    def _hopeless_message(job_id: str, reason: str, job: dict, part: dict,
                          too_big: bool) -> str:
        meaning = HOPELESS_REASONS.get(reason, "the job waits for more CPUs than the "
                                               "partition has")
        text = ("Slurm will not start job %s: it is pending with reason %s (%s)."
                % (job_id, reason, meaning))
        cpus, name = job.get("NumCPUs"), part.get("name")
        if part.get("cpus") is not None:
            text += " It asks for %s CPUs; partition %s has %d in total" % (
                cpus, name, part["cpus"])
            if part.get("node_cpus"):
                text += " (%s node(s), up to %d CPUs each)" % (part.get("nodes"),
                                                                part["node_cpus"])
            text += "; its time limit is %s." % (part.get("max_time") or "unknown")
        if too_big or reason in ("PartitionConfig", "PartitionNodeLimit",
                                 "QOSMaxCpuPerJobLimit", "AssocMaxCpuPerJobLimit",
                                 "QOSMaxNodePerJobLimit", "AssocMaxNodePerJobLimit"):
            most = part.get("cpus")
            text += (" Fix: ask for fewer ranks (%s), or choose a larger partition with "
                     "{option:queue} (`sinfo -s` lists them)."
                     % ("{option:nprocs=%d} or less" % most if most else "{option:nprocs}"))
        if reason in ("PartitionTimeLimit", "QOSMaxWallDurationPerJobLimit",
                      "AssocMaxWallDurationPerJobLimit") or (
                reason == "PartitionConfig" and part.get("max_time") not in
                (None, "UNLIMITED") and not too_big):
            limit = part.get("max_time")
            text += (" Fix: a shorter time limit (%s), or another partition with "
                     "{option:queue}." % ("{option:time=%s} or less" % limit if limit
                                          else "{option:time}"))
        if reason in ("InvalidAccount", "InvalidQOS", "BadConstraints"):
            text += (" Fix: check the job's account/QOS/constraints (`sacctmgr show assoc "
                     "user=$USER`); pass the right ones with {option:directive}.")
        return text

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
        last: Optional[int] = max(codes) if codes else None
        if "CANCELLED" in states:
            return CANCELLED, last
        if any(s in _FAILED for s in states):
            return FAILED, last if last else 1
        return COMPLETED, last


def _int(text: Optional[str]) -> Optional[int]:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None
