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
import time
from typing import List, Optional

from . import _mpienv


def mpiexec_command(nprocs: int, fault_tolerant: bool = False, hosts: Optional[str] = None,
                    hostfile: Optional[str] = None) -> List[str]:
    """The ``mpiexec`` command line for ``nprocs`` ranks with the wheel in use.

    Args:
        hosts: where the ranks go, ``"node1:4,node2:4"`` (host:slots, filled in order: rank 0,
            the manager, on the first host); the same syntax for both wheels.
        hostfile: a file naming the hosts, in the launcher's own format (Open MPI:
            ``node1 slots=4``; MPICH: ``node1:4``).
    """
    name = _mpienv.backend()
    exe = os.path.join(_mpienv.env_prefix(), "bin", "mpiexec")
    if not os.path.exists(exe):
        exe = shutil.which("mpiexec") or "mpiexec"
    cmd = [exe, "-n", str(nprocs)]
    if name == "openmpi":
        # Not --oversubscribe: that maps by hardware object and, on several hosts, put every
        # rank on the first one (tests/multihost).
        cmd += ["--map-by", "slot:oversubscribe"]
        if fault_tolerant:
            cmd += ["--with-ft", "ulfm"]
        if hosts:
            cmd += ["--host", hosts]
        if hostfile:
            cmd += ["--hostfile", hostfile]
    else:
        if fault_tolerant:
            cmd.append("-disable-auto-cleanup")
        if hosts:
            cmd += ["-hosts", hosts]
        if hostfile:
            cmd += ["-f", hostfile]
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
    p.add_argument("--host", dest="hosts", default=None, metavar="HOST:SLOTS,...",
                   help="with -n: put the ranks on these hosts, in order (rank 0, the "
                        "manager, on the first), e.g. node1:1,node2:4,node3:4")
    p.add_argument("--hostfile", default=None,
                   help="with -n: the launcher's host file (Open MPI: 'node1 slots=4' "
                        "lines; MPICH: 'node1:4' lines)")
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
    if (args.hosts or args.hostfile) and args.nprocs is None:
        _run_parser().error("--host/--hostfile go with -n N (the number of ranks)")
    if args.hostfile and not os.path.exists(args.hostfile):
        _run_parser().error("no such host file: %s" % args.hostfile)
    if args.nprocs is not None and not _mpienv.under_launcher():
        env = dict(os.environ)
        for key, value in _mpienv.recommended_environment(for_launcher=True).items():
            env.setdefault(key, value)
        if (args.hosts or args.hostfile) and "HYDRA_LAUNCHER" not in os.environ:
            # MPICH: the one-machine default (fork) would start every rank on this host.
            env.pop("HYDRA_LAUNCHER", None)
        bindir = os.path.join(_mpienv.env_prefix(), "bin")
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
        cmd = mpiexec_command(args.nprocs, args.fault_tolerant, args.hosts, args.hostfile) + [
            sys.executable, "-m", "mpidispatch", "--output", args.output, args.script] + args.args
        # mpiexec's own exit status is that of whichever rank failed, e.g. a worker that
        # died and was replaced; report the manager's (rank 0's) instead.
        with tempfile.TemporaryDirectory(prefix="mpidispatch-") as tmp:
            env["MPIDISPATCH_STATUS_FILE"] = status_file = os.path.join(tmp, "status")
            code = _run_launcher(cmd, env, status_file)
            try:
                with open(status_file) as f:
                    return int(f.read().strip())
            except (OSError, ValueError):
                # The manager never finished its script: never report that as a success
                # (Open MPI's mpiexec exited 0 after losing a node mid-run).
                sys.stderr.write("mpidispatch: the manager (rank 0) did not finish; mpiexec "
                                 "exit status %d\n" % code)
                return code or 1
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


def _run_launcher(cmd: List[str], env: dict, status_file: str) -> int:
    """Run ``mpiexec`` to its end; once the manager has finished, give it a bounded time.

    In fault-tolerant mode a rank that the manager gave up on but that still lives (stopped,
    hung, on a host cut off) keeps Open MPI's ``mpiexec --with-ft ulfm`` waiting forever:
    neither the manager's exit nor MPI_Abort ends such a job (measured, tests/multihost).
    So ``MPIDISPATCH_LAUNCHER_GRACE`` seconds (default 10) after the manager wrote its exit
    status, ``mpiexec`` is terminated, which ends every rank on every host.
    """
    from ._util import env_float
    grace = env_float("LAUNCHER_GRACE", 10.0)
    proc = subprocess.Popen(cmd, env=env)
    deadline = None
    try:
        while True:
            try:
                return proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if deadline is None and os.path.exists(status_file):
                deadline = time.monotonic() + grace
            if deadline is not None and time.monotonic() > deadline:
                sys.stderr.write("mpidispatch: the manager finished %g s ago but mpiexec is "
                                 "still waiting for ranks (stopped or unreachable); ending it\n"
                                 % grace)
                proc.terminate()
                try:
                    return proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    return proc.wait()
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        raise


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
