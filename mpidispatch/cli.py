"""Command line: ``python -m mpidispatch`` / ``mpidispatch``.

``mpidispatch [-n N] [--ft] script.py [args]`` runs a script with rank 0 as the manager and
the other ranks as workers (like ``python -m mpi4py.futures``). With ``-n N`` outside of
``mpiexec`` it starts ``mpiexec -n N`` itself, with the settings the MPI wheel needs.
``mpidispatch submit ...`` hands a script to Slurm or Grid Engine; ``mpidispatch info``
prints the MPI setup.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from . import _launcher, _mpienv, _mpiexec


def mpiexec_command(nprocs: int, fault_tolerant: bool = False) -> List[str]:
    """The ``mpiexec`` command line for ``nprocs`` ranks on this machine with the wheel in use
    (built by :mod:`._mpiexec`)."""
    return _mpiexec.command(nprocs, (), fault_tolerant, oversubscribe=True)


def run_script(argv: List[str]) -> int:
    """``mpidispatch [-n N] script.py args`` (see :mod:`._launcher`)."""
    return _launcher.main(argv)


def info() -> int:
    """Print the MPI wheel, library version and the settings mpidispatch applies."""
    print("mpidispatch", __import__("mpidispatch").__version__)
    print("python", sys.executable)
    print("MPI wheel:", _mpienv.backend())
    for key, value in sorted(_mpienv.recommended_environment().items()):
        print("  %s=%s%s" % (key, os.environ.get(key, value),
                             "" if key not in os.environ else " (set by you)"))
    MPI = _mpienv.mpi()
    print(MPI.Get_library_version().strip().splitlines()[0])
    import mpi4py
    print("mpi4py", mpi4py.__version__, "thread level:", mpi4py.rc.thread_level)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``mpidispatch`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "info":
        return info()
    if argv and argv[0] == "submit":
        from .launch.cli import add_submit_arguments, run_submit
        parser = argparse.ArgumentParser(prog="mpidispatch submit",
                                         description="Run a script as a Slurm or Grid "
                                                     "Engine job with N MPI ranks.")
        add_submit_arguments(parser)
        return run_submit(parser.parse_args(argv[1:]))
    return run_script(argv)
