"""Workers on named hosts that join the manager: a run that survives a lost node.

``HostWorkerArray("node1:4,node2:4")`` starts, on each host, its own small MPI job (``ssh
node1 mpiexec -n 4 python -m mpidispatch.launch.host_arrays ...``) whose ranks *join* the
running manager, exactly like the tasks of a submitted worker array (the same rendezvous:
MPI port, TCP listener, a per-run secret checked before any MPI connection). Each
host's workers belong to a job of their own, so when a host is lost (power, kernel panic,
network) only its workers go: the manager requeues their tasks and goes on with the others.
A world launched by one ``mpiexec`` across hosts cannot do this: its launcher gives up the
whole job when it loses one of its daemons (measured with both MPI wheels, see
docs/multihost.md).

Needs an MPI that connects separately launched jobs: the MPICH wheel. The Open MPI 5 wheel
is refused at once (:class:`~mpidispatch.launch.worker_arrays.ConnectNotSupportedError`).

The per-run secret is in a file of mode 0600 in ``workdir`` (shared with the hosts), never
on a command line; the files are removed at close. Works with the joining machinery both as
the package ``mpidispatch.arrays`` (the key is in its rendezvous file; each host's ranks run
``python -m mpidispatch.launch.host_arrays``, which joins like ``mpidispatch.arrays.worker``).
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, List, Optional, Sequence, Tuple, Union


from ..arrays.rendezvous import package_parent as _package_parent
from ..arrays.submitted import JobArray as _JoiningArray

__all__ = ["HostWorkerArray", "parse_hosts"]

#: Environment variables passed on to the workers' hosts (ssh does not pass the environment).
FORWARDED_PREFIXES = ("MPIR_CVAR_", "UCX_", "FI_", "MPIDISPATCH_", "OMP_")
DEFAULT_START_TIMEOUT = 60.0


def parse_hosts(hosts: Union[str, Sequence[str]]) -> List[Tuple[str, int]]:
    """``"a:2,b"`` or ``["a:2", "b"]`` -> [("a", 2), ("b", 1)]."""
    parts = hosts.split(",") if isinstance(hosts, str) else list(hosts)
    out: List[Tuple[str, int]] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        name, _, count = part.partition(":")
        try:
            n = int(count) if count else 1
        except ValueError:
            n = 0
        if not name or n < 1:
            raise ValueError("bad host entry %r: expected HOST or HOST:N with N >= 1" % part)
        out.append((name, n))
    if not out:
        raise ValueError("HostWorkerArray needs at least one host, got %r" % (hosts,))
    return out


class _HostLaunches:
    """The per-host launch processes, seen as one "job" by the array machinery."""

    script_path: Optional[str] = None      # no job script: nothing to remove

    def __init__(self, procs: List[Tuple[str, subprocess.Popen]], outputs: List[str]):
        self.procs = procs
        self.outputs = outputs
        self.id = "ssh-%d" % os.getpid()

    def state(self) -> str:
        codes = [p.poll() for _, p in self.procs]
        if any(c is None for c in codes):
            return "RUNNING"
        return "COMPLETED" if all(c == 0 for c in codes) else "FAILED"

    def output_files(self) -> List[str]:
        return list(self.outputs)

    def cancel(self) -> None:
        """End every launch still running (bounded); its workers then lose the manager's
        TCP connection and exit by themselves, on hosts the launcher cannot reach too."""
        deadline = time.monotonic() + 3.0   # workers told to stop are leaving: let them
        while time.monotonic() < deadline and any(p.poll() is None for _, p in self.procs):
            time.sleep(0.05)
        for _, proc in self.procs:
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for _, proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                try:
                    proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    pass


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class HostWorkerArray(_JoiningArray):
    """Workers on the given hosts, each host's workers one MPI job that joins the manager.

    Args:
        hosts: ``"node1:4,node2:4"`` (host:workers) or a list of such entries.
        launcher: command that runs a command on a host, given as ``LAUNCHER HOST COMMAND``
            (default ``ssh``: passwordless ssh needed; e.g. ``"ssh -o BatchMode=yes"``).
        host: address of the manager's TCP listener that the hosts can reach (default: this
            machine's fully qualified name).
        start_timeout: seconds a worker may take to join (default 60).
        workdir: a directory shared with the hosts, for the rendezvous file (mode 0600) and the
            per-host output files ``NAME-HOST.out`` (default: the current directory).

    ``Manager().add_worker(HostWorkerArray(...))`` adds all its workers. In fault-tolerant
    mode a lost worker is replaced by a spawned ``LocalWorker`` on the manager's host.
    """

    scheduler = "host"

    def __init__(self, hosts: Union[str, Sequence[str]], launcher: str = "ssh",
                 host: Optional[str] = None, start_timeout: Optional[float] = None,
                 workdir: Optional[str] = None, name: str = "mpidispatch-workers") -> None:
        slots = parse_hosts(hosts)
        if start_timeout is None:
            start_timeout = float(os.environ.get("MPIDISPATCH_ARRAY_START_TIMEOUT",
                                                 DEFAULT_START_TIMEOUT))
        super().__init__(sum(n for _, n in slots), "", host, start_timeout, workdir)
        self.name = name
        self.slots = slots
        self.launcher = shlex.split(launcher)
        if not self.launcher:
            raise ValueError("launcher must name a command, e.g. 'ssh'")

    def __repr__(self) -> str:
        return "<HostWorkerArray %s>" % ",".join("%s:%d" % s for s in self.slots)

    def _job(self, port_file: str, dry_run: bool = False) -> Any:
        """Start one launch per host (called once, when the first worker starts)."""
        procs, outputs = [], []
        for node, count in self.slots:
            out = os.path.join(self.workdir, "%s-%s.out" % (self.name, node))
            cmd = self.launcher + [node, self.remote_command(node, count, port_file, out)]
            with open(out, "ab") as fh:
                procs.append((node, subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                    start_new_session=True)))
            outputs.append(out)
        return _HostLaunches(procs, outputs)

    def remote_command(self, node: str, count: int, port_file: str, out: str) -> str:
        """The shell command run on ``node`` (no secret in it: the key is in a 0600 file)."""
        bindir = os.path.dirname(sys.executable)
        env = {"PATH": bindir + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
               "PYTHONPATH": _package_parent() + (os.pathsep + os.environ["PYTHONPATH"]
                                                  if os.environ.get("PYTHONPATH") else ""),
               "HYDRA_LAUNCHER": "fork"}    # this host's workers only
        for key, value in os.environ.items():
            if key.startswith(FORWARDED_PREFIXES) and key not in env:
                env[key] = value
        words = (["cd", self.workdir, "&&", "exec", "env"]
                 + ["%s=%s" % (k, v) for k, v in sorted(env.items())]
                 + [os.path.join(bindir, "mpiexec"), "-n", str(count),
                    "-disable-auto-cleanup",     # one worker's death spares the others
                    sys.executable, "-m"])
        # the key is in the rendezvous file (mode 0600), never on this command line
        words += ["mpidispatch.arrays.worker", "--rendezvous-file", port_file, "--log", out]
        return " ".join(w if w == "&&" else shlex.quote(w) for w in words)


