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
import runpy
import shutil
import subprocess
import sys
import tempfile
from typing import List, Optional

from . import _mpienv


def mpiexec_command(nprocs: int, fault_tolerant: bool = False) -> List[str]:
    """The ``mpiexec`` command line for ``nprocs`` ranks with the wheel in use."""
    name = _mpienv.backend()
    exe = os.path.join(_mpienv.env_prefix(), "bin", "mpiexec")
    if not os.path.exists(exe):
        exe = shutil.which("mpiexec") or "mpiexec"
    cmd = [exe, "-n", str(nprocs)]
    if name == "openmpi":
        cmd.append("--oversubscribe")
        if fault_tolerant:
            cmd += ["--with-ft", "ulfm"]
    elif name == "mpich" and fault_tolerant:
        cmd.append("-disable-auto-cleanup")
    return cmd


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mpidispatch",
        description="Run SCRIPT with MPI rank 0 as the manager and the other ranks as workers. "
                    "Other commands: 'mpidispatch submit -h' (Slurm/Grid Engine), "
                    "'mpidispatch info'.")
    p.add_argument("-n", "--nprocs", type=int, default=None,
                   help="start mpiexec with this many ranks (1 manager + N-1 workers)")
    p.add_argument("--ft", "--fault-tolerant", dest="fault_tolerant", action="store_true",
                   help="launch with the MPI library's fault-tolerance flags")
    p.add_argument("--output", default="worker%d.output",
                   help="%%d pattern of the workers' log files (default: %(default)s)")
    p.add_argument("script", help="the Python script to run on rank 0")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def run_script(argv: List[str]) -> int:
    """``mpidispatch [-n N] script.py args``."""
    args = _run_parser().parse_args(argv)
    if args.nprocs is not None and args.nprocs < 1:
        _run_parser().error("-n must be at least 1")
    if not os.path.exists(args.script):
        _run_parser().error("no such script: %s" % args.script)
    if args.nprocs is not None and not _mpienv.under_launcher():
        env = dict(os.environ)
        for key, value in _mpienv.recommended_environment(for_launcher=True).items():
            env.setdefault(key, value)
        bindir = os.path.join(_mpienv.env_prefix(), "bin")
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        cmd = mpiexec_command(args.nprocs, args.fault_tolerant) + [
            sys.executable, "-m", "mpidispatch", "--output", args.output, args.script] + args.args
        # mpiexec's own exit status is that of whichever rank failed, e.g. a worker that
        # died and was replaced; report the manager's (rank 0's) instead.
        with tempfile.TemporaryDirectory(prefix="mpidispatch-") as tmp:
            env["MPIDISPATCH_STATUS_FILE"] = status_file = os.path.join(tmp, "status")
            code = subprocess.call(cmd, env=env)
            try:
                with open(status_file) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                return code
    from . import _world
    _world.serve_if_worker(args.output)   # ranks >= 1 serve here and exit
    sys.argv = [args.script] + args.args
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.script)))
    code = 1
    try:
        runpy.run_path(args.script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    finally:
        status_file = os.environ.get("MPIDISPATCH_STATUS_FILE")
        if status_file:
            with open(status_file, "w") as f:
                f.write(str(code))
    return 0


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
    if argv and argv[0] in ("status", "report"):   # run journals: docs/journal.md
        from .journal import report, status
        return (status.status_main if argv[0] == "status" else report.report_main)(argv[1:])
    if argv and argv[0] == "submit":
        from .launch.cli import add_submit_arguments, run_submit
        parser = argparse.ArgumentParser(prog="mpidispatch submit",
                                         description="Run a script as a Slurm or Grid "
                                                     "Engine job with N MPI ranks.")
        add_submit_arguments(parser)
        return run_submit(parser.parse_args(argv[1:]))
    return run_script(argv)
