"""``python -m mpidispatch [-n N] [--ft] script.py args``: rank 0 runs the script as manager.

Two halves:

* :func:`launch` (``-n N`` outside of ``mpiexec``) starts ``mpiexec -n N`` and supervises it
  so that nothing it started outlives it. ``mpiexec`` runs in a process group of its own (a
  terminal's Ctrl-C reaches only the launcher, which decides) and gets SIGTERM from the
  kernel if the launcher dies, even by SIGKILL (``prctl(PR_SET_PDEATHSIG)``). SIGINT, SIGTERM
  and SIGHUP go to rank 0 first (the manager: the script's ``except KeyboardInterrupt`` and
  ``finally`` run); after :data:`GRACE` seconds ``mpiexec`` gets SIGTERM, and 3 seconds later
  everything left is killed. A second signal skips the grace. At the end, every process that
  still carries this run's tag in its environment is ended.
* :func:`run_rank` runs inside ``mpiexec`` (or without ``-n``): ranks >= 1 serve as workers,
  rank 0 runs the script and reports its exit status to the launcher.
"""
from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import TracebackType
from typing import List, Optional

from . import _mpienv, _mpiexec, _signals
from ._util import env_float, hostname

#: The launcher's private directory (mode 0700), in the environment of everything it starts:
#: rank 0 writes ``rank0.pid`` and ``status`` there, and the variable tags the run's processes.
RUN_DIR_VAR = "MPIDISPATCH_RUN_DIR"

#: Seconds rank 0 has after a forwarded signal before ``mpiexec`` is told to stop
#: (``MPIDISPATCH_SIGNAL_GRACE``).
GRACE = 5.0

#: Seconds ``mpiexec`` has after SIGTERM before everything left is killed.
KILL_AFTER = 3.0

_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m mpidispatch [-n N] script.py``."""
    p = argparse.ArgumentParser(
        prog="mpidispatch",
        description="Run SCRIPT with MPI rank 0 as the manager and the other ranks as workers. "
                    "Other commands: 'mpidispatch submit -h' (Slurm/Grid Engine), "
                    "'mpidispatch info'.")
    p.add_argument("-n", "--nprocs", type=int, default=None,
                   help="start mpiexec with this many ranks (1 manager + N-1 workers)")
    p.add_argument("--ft", "--fault-tolerant", dest="fault_tolerant", action="store_true",
                   help="launch with the MPI library's fault-tolerance flags")
    add_host_arguments(p)
    p.add_argument("--output", default="worker%d.output",
                   help="%%d pattern of the workers' log files (default: %(default)s)")
    p.add_argument("script", help="the Python script to run on rank 0")
    p.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def add_host_arguments(p: argparse.ArgumentParser) -> None:
    """``--host`` and ``--hostfile`` (several hosts; see docs/multihost.md)."""
    p.add_argument("--host", dest="hosts", default=None, metavar="HOST:SLOTS,...",
                   help="with -n: put the ranks on these hosts, in order (rank 0, the "
                        "manager, on the first), e.g. node1:1,node2:4,node3:4")
    p.add_argument("--hostfile", default=None,
                   help="with -n: the launcher's host file (Open MPI: 'node1 slots=4' "
                        "lines; MPICH: 'node1:4' lines)")


def main(argv: List[str], p: Optional[argparse.ArgumentParser] = None) -> int:
    """``mpidispatch [-n N] [--ft] script.py args``: launch, or run as a rank (``p``: the
    command line's parser, with its help and version; default: :func:`parser`)."""
    p = p or parser()
    args = p.parse_args(argv)
    if args.nprocs is not None and args.nprocs < 1:
        p.error("-n must be at least 1")
    if not os.path.exists(args.script):
        p.error("no such script: %s" % args.script)
    if (args.hosts or args.hostfile) and args.nprocs is None:
        p.error("--host/--hostfile go with -n N (the number of ranks)")
    if args.hostfile and not os.path.exists(args.hostfile):
        p.error("no such host file: %s" % args.hostfile)
    if args.nprocs is not None and not _mpiexec.under_launcher():
        try:
            cmd = _mpiexec.command(
                args.nprocs, [sys.executable, "-m", "mpidispatch", "--output", args.output,
                              args.script, *args.args],
                args.fault_tolerant, oversubscribe=True, hosts=args.hosts,
                hostfile=args.hostfile, spawning_manager=True)
        except ValueError as exc:
            p.error(str(exc))
        return launch(cmd, several_hosts=bool(args.hosts or args.hostfile))
    return run_rank(args.output, args.script, args.args)


# -- the launcher ------------------------------------------------------------------------------
def launch(cmd: List[str], several_hosts: bool = False) -> int:
    """Run ``cmd`` (an ``mpiexec`` line) to its end, forwarding signals; its exit status is
    rank 0's (mpiexec's own is that of whichever rank failed first)."""
    run_dir = tempfile.mkdtemp(prefix="mpidispatch-")
    try:
        env = _mpiexec.environment()
        if several_hosts and "HYDRA_LAUNCHER" not in os.environ:
            # MPICH: the one-machine default (fork) would start every rank on this host.
            env.pop("HYDRA_LAUNCHER", None)
        env[RUN_DIR_VAR] = run_dir
        if _mpienv.backend() == "openmpi":
            # mpirun's session files: in a directory no killed run can have left files in
            env.setdefault(_mpienv.SESSION_BASE_VAR, run_dir)
        env[_signals.LAUNCHER_VAR] = "%s:%d" % (hostname(), os.getpid())
        return _Supervisor(cmd, env, run_dir).run()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _die_with_parent():
    """A ``preexec_fn``: own process group; SIGTERM when the launcher dies (Linux)."""
    parent = os.getpid()
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            prctl = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6",
                                use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        os.setpgid(0, 0)
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
            if os.getppid() != parent:   # the launcher died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)
    return setup


class _Supervisor:
    """One ``mpiexec`` run: signals in, escalation, exit status, sweep of leftovers."""

    def __init__(self, cmd: List[str], env: dict, run_dir: str) -> None:
        self.cmd, self.env, self.run_dir = cmd, env, run_dir
        self.signals: List[int] = []
        self.proc: Optional[subprocess.Popen] = None

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def run(self) -> int:
        previous = {s: signal.signal(s, self._on_signal) for s in _FORWARDED}
        try:
            self.proc = subprocess.Popen(self.cmd, env=self.env, preexec_fn=_die_with_parent())
            code = self._supervise()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.sweep()
        return self._status(code)

    def _supervise(self) -> int:
        proc = self.proc
        assert proc is not None
        seen = 0
        stage, deadline = "running", None
        while True:
            try:
                return proc.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            if stage == "running" and os.path.exists(os.path.join(self.run_dir, "status")):
                # The manager finished. In fault-tolerant mode a rank it gave up on that
                # still lives (stopped, hung, on a host cut off) keeps Open MPI's mpiexec
                # --with-ft ulfm waiting forever (measured, tests/multihost): end mpiexec
                # MPIDISPATCH_LAUNCHER_GRACE seconds later.
                stage, deadline = "finished", now + env_float("LAUNCHER_GRACE", 10.0)
            if len(self.signals) > seen:
                first, seen = seen == 0, len(self.signals)
                if first:
                    self._to_rank0(self.signals[0])
                    stage, deadline = "rank0", now + env_float("SIGNAL_GRACE", GRACE)
                else:   # a second signal: no more patience
                    deadline = now
            if deadline is not None and now >= deadline:
                if stage == "finished":
                    sys.stderr.write("mpidispatch: the manager finished but mpiexec still "
                                     "waits for ranks (stopped or unreachable); ending it\n")
                    self._signal_mpiexec(signal.SIGTERM)
                    stage, deadline = "mpiexec", now + KILL_AFTER
                elif stage == "rank0":
                    self._signal_mpiexec(signal.SIGTERM)
                    stage, deadline = "mpiexec", now + KILL_AFTER
                else:
                    self._signal_mpiexec(signal.SIGKILL)
                    self.sweep()
                    stage, deadline = "killed", None

    def _to_rank0(self, signum: int) -> None:
        """Deliver ``signum`` to the manager (rank 0); if it has not started yet, stop mpiexec."""
        pid = self.rank0_pid()
        try:
            if pid is not None:
                os.kill(pid, signum)
                return
        except OSError:
            pass
        self._signal_mpiexec(signal.SIGTERM)

    def rank0_pid(self) -> Optional[int]:
        try:
            with open(os.path.join(self.run_dir, "rank0.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def _signal_mpiexec(self, signum: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except OSError:
                pass

    def sweep(self) -> None:
        """End every process still tagged with this run (an orphaned rank, a task's child)."""
        tagged = tagged_processes(RUN_DIR_VAR, self.run_dir)
        deadline = time.monotonic() + 1.0
        for signum in (signal.SIGTERM, signal.SIGKILL):
            for pid in tagged:
                try:
                    os.kill(pid, signum)
                except OSError:
                    pass
            while tagged and signum == signal.SIGTERM and time.monotonic() < deadline:
                time.sleep(0.02)
                tagged = tagged_processes(RUN_DIR_VAR, self.run_dir)
            if not tagged:
                return

    def _status(self, code: int) -> int:
        try:
            with open(os.path.join(self.run_dir, "status")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            pass
        if self.signals:
            return 128 + self.signals[0]
        # The manager never finished its script: never report that as a success (Open MPI's
        # mpiexec exited 0 after losing a node mid-run, tests/multihost).
        sys.stderr.write("mpidispatch: the manager (rank 0) did not finish; mpiexec exit "
                         "status %d\n" % code)
        return 128 - code if code < 0 else (code or 1)


def tagged_processes(name: str, value: str) -> List[int]:
    """Pids of the live processes (other than this one) whose environment has ``name=value``."""
    needle = ("%s=%s" % (name, value)).encode()
    found: List[int] = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                if needle not in f.read().split(b"\0"):
                    continue
            with open("/proc/%s/stat" % entry, "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
        except (OSError, IndexError):
            continue
        found.append(int(entry))
    return found


# -- a rank --------------------------------------------------------------------------------------
def run_rank(output: str, script: str, args: List[str]) -> int:
    """Ranks >= 1 serve as workers and exit; rank 0 (or a singleton) runs ``script``."""
    from . import _world
    _world.serve_if_worker(output)   # ranks >= 1 serve here and exit
    run_dir = os.environ.get(RUN_DIR_VAR)
    if run_dir:
        _write(os.path.join(run_dir, "rank0.pid"), str(os.getpid()))
    _signals.manager_started()   # stop handlers from the start, launcher watchdog
    sys.argv = [script] + list(args)
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    code = 1
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    except BaseException as exc:
        # shown as `python script.py` would show it: the script's frames, not the launcher's
        interrupted = isinstance(exc, KeyboardInterrupt)
        code = 128 + signal.SIGINT if interrupted else 1
        tb = exc.__traceback__ = _script_frames(exc.__traceback__, interrupted)
        sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
        sys.excepthook(type(exc), exc, tb)
        raise SystemExit(code) from None
    finally:
        if run_dir:
            _write(os.path.join(run_dir, "status"), str(code))
    return 0


def _script_frames(tb: Optional[TracebackType], interrupted: bool) -> Optional[TracebackType]:
    """The script's part of ``tb``: without the leading frames of this module and ``runpy``;
    for an interrupt also without the trailing ones inside mpidispatch (where the signal
    happened to land, of no use to the reader)."""
    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames: List[TracebackType] = []
    while tb is not None:
        name = tb.tb_frame.f_code.co_filename
        if frames or not (name.startswith(package) or "runpy" in name):
            frames.append(tb)
        tb = tb.tb_next
    while interrupted and len(frames) > 1 and \
            frames[-1].tb_frame.f_code.co_filename.startswith(package):
        frames.pop()
    if not frames:
        return None
    frames[-1].tb_next = None
    return frames[0]


def _write(path: str, text: str) -> None:
    """Write a small file whole (readers never see half of it)."""
    tmp = "%s.%d" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
