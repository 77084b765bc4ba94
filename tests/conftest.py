"""Shared fixtures: run real MPI programs in a subprocess, bounded, leaving nothing behind.

Every MPI test starts its own ``python`` or ``mpiexec`` in a new session (process group), so
that a hung or crashed run can be killed whole, and no test relies on a mock of mpi4py.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
sys.path.insert(0, str(ROOT))

from mpidispatch import _mpienv, _mpiexec  # noqa: E402

BACKEND = _mpienv.backend()

# Rank-0-runs-the-tests in an mpiexec world (tests/mpi), the mpidispatch_face fixture and
# --mpidispatch-in-process.
pytest_plugins = ["mpidispatch.testing"]


class Run:
    """The outcome of one MPI program run."""

    def __init__(self, proc: subprocess.CompletedProcess, seconds: float, cwd: Path):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.seconds = seconds
        self.cwd = cwd

    def lines(self, prefix: str) -> List[str]:
        return [line[len(prefix):].strip() for line in self.stdout.splitlines()
                if line.startswith(prefix + " ") or line == prefix]

    def value(self, prefix: str) -> str:
        found = self.lines(prefix)
        assert found, "no %r line in output:\n%s\n--- stderr:\n%s" % (prefix, self.stdout,
                                                                       self.stderr[-3000:])
        return found[-1]

    def __repr__(self) -> str:
        return "<Run rc=%s %.1fs>\nstdout:\n%s\nstderr:\n%s" % (
            self.returncode, self.seconds, self.stdout[-3000:], self.stderr[-3000:])


def session_env(cmd: Optional[List[str]], cwd: Optional[Path]) -> Dict[str, str]:
    """For a test's own Open MPI ``mpiexec`` (as a user types it), what the docs advise: a
    session directory of its own, so that a killed run's ``$TMPDIR/ompi.<pid>`` cannot break
    it (test_session_dirs.py; mpidispatch does this for the runtimes it starts itself)."""
    if BACKEND == "openmpi" and cmd and cwd and os.path.basename(cmd[0]) in ("mpiexec", "mpirun"):
        return {_mpienv.SESSION_BASE_VAR: str(cwd / ".mpi-session")}
    return {}


def _environment(extra: Optional[Dict[str, str]], cmd: Optional[List[str]] = None,
                 cwd: Optional[Path] = None) -> Dict[str, str]:
    env = _mpiexec.environment(pythonpath=[str(ROOT)])
    env.setdefault("MPIDISPATCH_START_TIMEOUT", "30")
    for key, value in session_env(cmd, cwd).items():
        env.setdefault(key, value)
    if extra:
        env.update(extra)
    return env


def run_program(cmd: List[str], cwd: Path, timeout: float = 90,
                env: Optional[Dict[str, str]] = None) -> Run:
    """Run ``cmd`` in its own session; on timeout kill the whole group and fail."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=_environment(env, cmd, cwd), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail("timed out after %gs (a hang): %s\nstdout:\n%s\nstderr:\n%s"
                    % (timeout, " ".join(cmd), out[-3000:], err[-3000:]))
    _kill_group(proc.pid)  # anything the run left behind in its session
    return Run(subprocess.CompletedProcess(cmd, proc.returncode, out, err),
               time.monotonic() - start, cwd)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def survivors(pattern: str) -> List[str]:
    """Processes whose command line contains ``pattern`` (to prove none is left)."""
    out = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if pattern in line and " Z" not in line[:12]
            and "ps -eo" not in line]


@pytest.fixture
def mpi_run(tmp_path):
    """``mpi_run(scenario, n=None, *args, timeout=..., env=...)``.

    ``n=None`` runs ``python scenario.py`` (a singleton manager spawning workers);
    ``n=N`` runs it under ``mpiexec -n N``.
    """
    def run(scenario: str, *args: str, n: Optional[int] = None, timeout: float = 90,
            env: Optional[Dict[str, str]] = None, ft: bool = False,
            module: bool = False) -> Run:
        script = str(SCENARIOS / scenario)
        if module:
            cmd = [sys.executable, "-m", "mpidispatch"] + (["-n", str(n)] if n else []) \
                + (["--ft"] if ft else []) + [script] + list(args)
        elif n is None:
            cmd = [sys.executable, script] + list(args)
        else:
            cmd = _mpiexec.command(n, [sys.executable, script, *args], ft, oversubscribe=True)
        return run_program(cmd, tmp_path, timeout=timeout, env=env)
    return run


def pytest_report_header(config):
    return "mpidispatch MPI wheel: %s (%s)" % (BACKEND, sys.prefix)
