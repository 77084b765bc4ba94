"""The one engine every face drives: the manager loop over worker processes.

::

  TaskGroup.submit ─► queue ─► _dispatch() ── TASK (isend) ─────────────► worker loop
  group._finished ◄── _collect() ◄───────── RESULT / ERROR (posted irecv) ◄ task(*setup)
                      _check_health() ─► FailurePolicy.check ─► _lost(worker) ─►
                      FailurePolicy.after_loss (requeue / give up) and may_replace

This module is the loop only. What a task group is lives in :mod:`._taskgroup`, what a task
is in :mod:`._work`, the liveness and retry rules in :mod:`._failure`, starting and stopping
worker processes in :mod:`._workerlife`, message passing in :mod:`._messaging`, the options
in :mod:`._options`, the wire records in :mod:`._protocol`.

The engine never waits on one worker: every send is non-blocking, receives are posted
ahead, worker start-up runs in the background, and an idle loop backs off. It is single
threaded: a face drives it inline (:meth:`Engine.run_until`) or from one background thread
(the executor), which takes work from other threads through :meth:`Engine.call_soon`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import queue
import signal
import time
import weakref
from collections import deque
from typing import Any, Callable, Deque, List, Optional

from . import _lifecycle, _signals, _world
from ._failure import FailurePolicy, Verdict, check_mode
from .journal import Journal, default_run_id, encode_error, encode_result
from ._mpienv import mpi, ulfm_error_classes
from ._options import Options, validate
from ._protocol import (BATCH_BYTES, BATCH_ENTRY_MAX, BATCH_MAX, ControlMsg, ErrorKind,
                        ErrorMsg, Tag, Verb, control, read_info, decode,
                        requests_done, send_message, transfer_active, unpack_error)
from ._serialize import loads
from ._util import Backoff, hostname
from ._work import QUEUED, WorkItem
from ._watch import WatchPost
from . import _workerlife as life
from ._workerlife import cancel_request
from .errors import (Error, NoMoreWorkersError, RemoteError, SerializationError,
                     WorkerStartError)
from .workers import (DEAD, NEW, READY, STARTING, STOPPED, LocalWorker, Worker, WorldWorker,
                      default_python, describe_exit, exit_status_from_log, worker_list)

log = logging.getLogger("mpidispatch")

_engines: "weakref.WeakSet[Engine]" = weakref.WeakSet()

#: Mean task time above which a worker gets one task at a time (see ``_depth``)...
LONG_TASK = 0.005
#: ...unless a worker waits longer than this share of a task between its tasks (measured:
#: an oversubscribed host, where waking a process takes milliseconds).
WAIT_SHARE = 0.05

#: The manager's longest sleep between polls after a long idleness: this share of the time
#: idle so far, at most LONG_IDLE_CAP (see ``_util.Backoff``). With 128 workers busy with
#: 10 s tasks, the manager's CPU while they ran went from 3.2% of a core (the fixed 10 ms
#: cap) to 1.5%; a result that comes after 10 s is noticed at most 0.1 s late.
IDLE_SHARE = 0.02
LONG_IDLE_CAP = 0.1

#: Seconds of (measured) task time that an automatic batch holds: tasks shorter than half of
#: this -- much shorter than a message round trip plus the manager's time per message --
#: travel several to a message (see ``_batch_size``).
BATCH_SECONDS = 0.001


def _close_all() -> None:
    """At exit (before MPI finalizes): stop the workers of every engine still open."""
    for engine in list(_engines):
        try:
            engine.close()
        except Exception:  # never let cleanup turn a clean exit into a traceback
            log.exception("error while stopping workers at exit")






class Engine:
    """Manager state and loop (see the module docstring).

    Args:
        options: the resolved engine options (:func:`mpidispatch._options.resolve`).
        adopt_world: take the static world's free ranks as workers.
    """

    def __init__(self, options: Options, adopt_world: bool = True) -> None:
        self.options = options
        self.python = options.python or default_python()
        self.prefetch = options.prefetch
        self.policy = FailurePolicy(options, hostname())
        self.workers: List[Worker] = []
        self.ready: List[Worker] = []
        self.queue: Deque[WorkItem] = deque()
        self.start_errors: List[WorkerStartError] = []
        self.lost_count = 0
        self.tasks_done = 0
        self.batches_sent = 0  # TASKS messages (two tasks or more) sent
        self.requested = 0  # workers asked for (replacements not counted): the budget's base
        self.closed = False
        self._next_index = 0
        self._next_health = 0.0
        self._new_workers = False
        self._doomed: List[tuple] = []  # (worker, reason) found while iterating: lost later
        self._inbox: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()
        self._mean_task = 0.0
        self._mean_wait = 0.0  # a worker's wait between tasks, beyond the task (see _depth)
        self._host = self.policy.local_host
        self.watch_post = WatchPost()  # reports of the watchers beside heartbeat workers
        self._ulfm = ulfm_error_classes()
        self._status = mpi().Status()
        self._any_tag = mpi().ANY_TAG
        self._backoff = Backoff(idle_share=IDLE_SHARE, long_cap=LONG_IDLE_CAP)
        check_mode(options.fault_tolerant, options.task_timeout)
        self.journal: Optional[Journal] = None
        if options.journal is not None:
            self.journal = Journal.open(os.fspath(options.journal), default_run_id(),
                                        options.retry_failed)
        _lifecycle.register(_close_all, _lifecycle.ENGINES)
        _signals.manager_started()   # SIGTERM/SIGINT/SIGHUP handlers, launcher watchdog
        _engines.add(self)
        self._world_workers = _world.take_workers() if adopt_world else []
        for w in self._world_workers:
            self.add_worker(w)

    def set_option(self, **changes: Any) -> None:
        """Change options of a running engine (e.g. IMP's ``Manager.heartbeat_timeout``)."""
        self.options = dataclasses.replace(self.options, **changes)
        validate(self.options)
        self.policy.options = self.options
        self.prefetch = self.options.prefetch

    # worker start-up and shutdown (see ._workerlife)
    _start_new = life._start_new
    _poll_start = life._poll_start
    _fail_alike = life._fail_alike
    _log_file = life._log_file
    _hello_timeout = life._hello_timeout
    _start_failed = life._start_failed
    _welcome = life._welcome
    wait_ready = life.wait_ready
    _stop_workers = life._stop_workers

    def _on_hello(self, w: Worker, info: dict) -> None:
        life._on_hello(self, w, info)
        if self.journal is not None:
            self.journal.worker_seen("worker %d" % w.index, w.host)

    @property
    def respawns(self) -> int:
        """Replacement workers spawned so far."""
        return self.policy.respawns

    # -- workers -----------------------------------------------------------------------------
    def add_worker(self, worker: Worker, replacement: bool = False) -> None:
        """Add a worker; it starts on the next loop turn (workers may join while tasks run).

        Raises:
            TypeError: ``worker`` is not a Worker object (e.g. the class ``LocalWorker``).
            ValueError: the worker was already used by a manager.
        """
        if not isinstance(worker, Worker):
            hint = " (call it: LocalWorker())" if isinstance(worker, type) else ""
            raise TypeError("add_worker() takes a worker object such as LocalWorker(), or a "
                            "worker array, not %r%s" % (worker, hint))
        if worker in self.workers:
            return
        if worker.state not in (NEW, READY) or (worker.state == READY and
                                                not isinstance(worker, WorldWorker)):
            raise ValueError("%r was already used by a manager" % (worker,))
        if worker.index < 0 or not isinstance(worker, WorldWorker):
            worker.index = self._next_index
        self._next_index = max(self._next_index, worker.index) + 1
        if not replacement:
            self.requested += 1
        self.workers.append(worker)
        self._new_workers = True
        if worker.state == READY:
            self.ready.append(worker)
            if worker.comm is not None:  # a world rank another face used before: this
                self._welcome(worker)    # face's settings (output) apply from now

    def remove_worker(self, worker: Worker) -> None:
        """Stop a worker once it has finished the tasks it holds."""
        worker.retiring = True
        if worker in self.ready:
            self.ready.remove(worker)
        if not worker.inflight:
            self._stop_workers([worker])

    def live_workers(self) -> List[Worker]:
        """Workers that run or will run tasks (not dead, stopped or retiring)."""
        return [w for w in self.workers if w.state in (NEW, STARTING, READY) and not w.retiring]

    # -- tasks -------------------------------------------------------------------------------
    def submit(self, item: WorkItem) -> None:
        """Queue a task; it is sent to a worker on the next loop turn."""
        if self.closed:
            raise RuntimeError("cannot submit tasks after the manager was closed")
        self.queue.append(item)

    def cancel(self, item: WorkItem) -> bool:
        """Take a task out of the queue if no worker has it yet."""
        if item.state != QUEUED:
            return False
        try:
            self.queue.remove(item)
        except ValueError:
            return False
        return True

    def take_queued(self, group: Any) -> List[WorkItem]:
        """Take every queued task of ``group`` out of the queue; return them."""
        taken = [item for item in self.queue if item.group is group]
        if taken:
            self.queue = deque(item for item in self.queue if item.group is not group)
        return taken

    def slots(self) -> int:
        """Tasks the live workers can hold now: workers x tasks in flight per worker (the
        base of the one back-pressure rule, :meth:`TaskGroup.capacity`)."""
        return len(self.live_workers()) * self._depth() * self._batch_limit()

    def outstanding(self) -> int:
        """Tasks queued or held by workers."""
        return len(self.queue) + sum(len(w.inflight) for w in self.workers)

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the engine's thread at its next turn (thread-safe)."""
        self._inbox.put(fn)

    def _depth(self) -> int:
        """Tasks to keep in flight per worker now: ``prefetch`` for short tasks; one for long
        ones (measured), or while a worker is still starting, so that a short task never
        waits behind a long one on a worker while another worker is (about to be) idle.

        Long tasks get ``prefetch`` too while the queue holds a task for every worker and
        a worker's wait for its next task (measured: send to result, less the task's own
        time) exceeds :data:`WAIT_SHARE` of a task: on an oversubscribed host (128 workers
        on 2 cores: 50 ms tasks took 1.85x the ideal time, 1.05x with this) the wait, not
        the placement, decides the run time."""
        if self._mean_task > LONG_TASK:
            if not (self._mean_wait > WAIT_SHARE * self._mean_task
                    and len(self.queue) >= len(self.ready)):
                return 1
        if any(w.state in (NEW, STARTING) and not w.retiring for w in self.workers):
            return 1
        return self.prefetch

    def _batch_limit(self) -> int:
        """Most tasks per message now: the ``batch`` option, or when automatic, as many as
        fill :data:`BATCH_SECONDS` of measured task time (1 until a task was measured, for
        tasks of half that or longer, and with a task time limit)."""
        limit = self.options.batch
        if limit is not None:
            return min(limit, BATCH_MAX)
        mean = self._mean_task
        if not mean or self.options.task_timeout is not None:
            return 1
        return max(1, min(BATCH_MAX, int(BATCH_SECONDS / mean)))

    def _dispatch(self) -> None:
        queue = self.queue
        depth = self._depth()
        ready = self.ready
        size = self._batch_limit()
        if size > 1:  # spread the queue over the workers' slots, never all to one worker
            size = min(size, -(-len(queue) // (len(ready) * depth or 1)))
        for level in range(depth):
            room = level * size
            for w in ready:
                if not queue:
                    return
                if w.load <= room and w.state == READY:
                    if size > 1:
                        self._send_batch(w, size)
                    else:
                        self._send_task(w, queue.popleft())

    def _context_for(self, w: Worker, item: WorkItem) -> int:
        """The context id of ``item``'s setup; sends the setup first if ``w`` lacks it."""
        setup = item.setup
        if setup is None:
            return 0
        context_id = setup.id
        if context_id not in w.contexts:
            p = setup.payload
            w.contexts.add(context_id)
            w.setup_running = setup
            self._send(w, Tag.SETUP, (context_id, p.data, p.sizes), p.buffers)
        return context_id

    def _send_task(self, w: Worker, item: WorkItem, weight: int = 1) -> None:
        """Send one task alone. ``weight``: the slots it takes on ``w`` (a task sent alone
        while others travel in batches of n takes n: a worker holds ``prefetch`` messages,
        whatever they carry)."""
        item.worker = w
        if not item.group._starting(item):
            item.worker = None
            return  # cancelled by its owner meanwhile: never sent
        if self.journal is not None and item.key is not None:
            self.journal.started(item.key, "worker %d" % w.index, w.host)
        setup = item.setup
        context_id = setup.id if setup is not None else 0
        if context_id and context_id not in w.contexts:
            self._context_for(w, item)
        p = item.payload
        if not w.inflight:
            w.busy_since = time.monotonic()
            w.solo = item.work_id   # sent to an idle worker: its wait can be measured
        w.inflight[item.work_id] = item
        item.weight = weight
        item.batched = False
        w.load += weight
        self._send(w, Tag.TASK, (item.work_id, context_id, p.data, p.sizes), p.buffers)

    def _send_batch(self, w: Worker, size: int) -> None:
        """Send up to ``size`` tasks from the head of the queue to ``w`` in one TASKS message.

        A batch takes consecutive tasks of one setup that may share a message: small inline
        payloads (:func:`~._protocol.batch_fits`), no time limit, never retried after a
        lost worker (such a task travels alone, so that a task that kills its worker is
        found and does not take the others down again). The first task that does not fit
        ends the batch; a batch of one is sent as a plain TASK.
        """
        queue = self.queue
        first = queue[0]
        if not _batchable(first):
            self._send_task(w, queue.popleft(), size)
            return
        setup = first.setup
        entries: List[tuple] = []
        nbytes = 0
        inflight = w.inflight
        was_idle = not inflight
        size = min(size, BATCH_MAX)
        journal = self.journal
        while queue and len(entries) < size:
            item = queue[0]
            payload = item.payload
            data = payload.data
            # _batchable and batch_fits, inline: this loop runs once per task
            if item.setup is not setup or item.solo or item.timeout is not None \
                    or payload.sizes or data is None or len(data) > BATCH_ENTRY_MAX \
                    or nbytes + len(data) > BATCH_BYTES:
                break
            queue.popleft()
            item.worker = w
            if not item.group._starting(item):
                item.worker = None
                continue  # cancelled by its owner meanwhile: never sent
            if journal is not None and item.key is not None:
                journal.started(item.key, "worker %d" % w.index, w.host)
            entries.append((item.work_id, data))
            nbytes += len(data)
            inflight[item.work_id] = item
            item.weight = 1
            item.batched = True
        if not entries:
            return
        w.load += len(entries)
        self.batches_sent += len(entries) > 1
        context_id = self._context_for(w, first)
        if was_idle:
            w.busy_since = time.monotonic()
        if len(entries) == 1:
            work_id, data = entries[0]
            self._send(w, Tag.TASK, (work_id, context_id, data, ()))
        else:
            self._send(w, Tag.TASKS, (context_id, entries))

    def _send(self, w: Worker, tag: int, message: tuple, buffers: Any = ()) -> bool:
        """Start a send to a worker. A failure marks the worker lost after this turn (never
        while the caller iterates over the workers). Returns False on failure."""
        try:
            more = send_message(w.comm, w.rank, tag, message, buffers)
        except mpi().Exception as exc:
            self._doomed.append((w, "MPI error while sending: %s" % (exc,)))
            return False
        if more:
            w.pending.extend(more)
        return True

    def send_control(self, w: Worker, verb: Verb, info: Any = None) -> bool:
        """Send a CONTROL record (message passing and lifecycle)."""
        message, buffers = control(verb, info)
        return self._send(w, Tag.CONTROL, message, buffers)

    def _finish(self, item: WorkItem) -> None:
        self.tasks_done += 1
        if self.journal is not None and item.key is not None:
            if item.error is None:
                try:
                    blob = encode_result(item.result)
                except Exception as exc:   # kept in memory only: the task reruns on resume
                    log.warning("the result of %s is not recorded in the journal (it cannot "
                                "be pickled here: %s)", item.describe(), exc)
                    blob = None
                if blob is not None:
                    self.journal.finished(item.key, True, blob)
            else:
                self.journal.finished(item.key, False, encode_error(item.error))
        item.group._finished(item)

    # -- the loop ----------------------------------------------------------------------------
    def progress_inbox(self) -> bool:
        """Run what other threads handed in with :meth:`call_soon`; True if anything ran."""
        inbox = self._inbox
        if inbox.empty():  # the common case, without raising queue.Empty every turn
            return False
        while True:
            try:
                fn = inbox.get_nowait()
            except queue.Empty:
                return True
            fn()

    def progress(self) -> bool:
        """One turn of the loop. Returns True if anything happened."""
        happened = self.progress_inbox()
        if self._new_workers:
            self._new_workers = False
            self._start_new()
        if self.queue and not _signals.stopping():   # no new task after a stop signal
            self._dispatch()
        for w in self.workers:
            if w.comm is not None and w.state in (STARTING, READY):
                if self._collect(w):
                    happened = True
            if w.pending:
                try:
                    requests_done(w.pending)
                except mpi().Exception as exc:
                    self._doomed.append((w, "MPI error on a send: %s" % (exc,)))
                    w.pending.clear()
                if transfer_active(w.pending):
                    happened = True  # big buffers move only while we call MPI: no sleep
        self._bury()
        now = time.monotonic()
        if now >= self._next_health:
            self._next_health = now + self.options.health_interval
            self._check_health(now)
        if self.queue and not self.ready:
            self._fail_stranded()
        return happened

    def run_until(self, done: Callable[[], bool], timeout: Optional[float] = None) -> bool:
        """Drive the loop until ``done()`` or ``timeout``; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = self._backoff
        while not done():
            if not self.closed:
                _signals.raise_if_stopping()   # a stop signal that came while we were busy
            if self.progress():
                backoff.reset()
                continue
            if done():
                break
            if deadline is not None and time.monotonic() > deadline:
                return False
            backoff.sleep()
        return True

    def _fail_stranded(self) -> None:
        """No worker is left, or will start, to run the queued tasks: each fails with
        :class:`NoMoreWorkersError` (once, with its task), so that loops over results end."""
        if self.live_workers():
            return
        items = list(self.queue)
        self.queue.clear()
        never_ready = self.start_errors and not any(w.ready_time for w in self.workers)
        for item in items:
            if never_ready:
                first = self.start_errors[0]
                err: BaseException = WorkerStartError(
                    "%s cannot run: no worker started. %s" % (item.describe(), first),
                    first.command, first.log_file)
            else:
                err = NoMoreWorkersError(
                    "%s cannot run: no worker is left (%d started, %d lost, %d failed to "
                    "start, %d replaced). Add workers with add_worker(LocalWorker()), run "
                    "under mpiexec -n N, or use fault_tolerant=True to replace dead workers."
                    % (item.describe(), len(self.workers), self.lost_count,
                       len(self.start_errors), self.respawns))
            err.task, err.index = item.task, item.index  # type: ignore[attr-defined]
            item.error = err
            self._finish(item)

    def _collect(self, w: Worker) -> bool:
        """Take what worker ``w`` sent. True if anything came.

        Each worker has one receive posted at all times (``w.req``): MPI matches it as the
        message arrives. (Probing with MPI_Improbe/MPI_Iprobe on one source was seen to miss
        a waiting message for seconds on both MPI wheels while both sides backed off.)
        """
        status = self._status
        got = False
        now = 0.0
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
            if not now:
                now = w.last_heard = time.monotonic()
            try:
                self._handle(w, status.Get_tag(), payload)
            except mpi().Exception as exc:
                self._lost(w, self._describe_mpi_error(exc))
                return True
            if w.state not in (STARTING, READY):
                return True
        return got

    def _handle(self, w: Worker, tag: int, payload: tuple) -> None:
        if tag == Tag.RESULTS:
            self._on_results(w, payload[0])
        elif tag == Tag.RESULT:
            self._on_result(w, *payload)
        elif tag == Tag.ERROR:
            self._on_error(w, ErrorMsg(*payload))
        elif tag == Tag.CONTROL:
            msg = ControlMsg(*payload)
            verb = msg.verb
            info = read_info(w.comm, w.rank, msg)  # its buffers come next: read them now
            if verb == Verb.HELLO:
                self._on_hello(w, info)
            elif verb == Verb.BYE:
                w.said_bye = True
            elif verb == Verb.SETUP_DONE:
                w.setup_running = None
                w.busy_since = time.monotonic()  # the task's own time starts now
        elif tag == Tag.DATA:
            data, sizes = payload
            try:
                w.inbox.append(decode(w.comm, w.rank, data, sizes))
            except (ValueError, TypeError, AttributeError, ImportError, EOFError) as exc:
                w.errors.append(SerializationError(
                    "data from %r cannot be unpickled: %s" % (w, exc)))

    def _on_result(self, w: Worker, work_id: int, data: Any, sizes: tuple,
                   took: float = 0.0) -> None:
        """A RESULT record (:class:`~._protocol.ResultMsg`, unpacked)."""
        item = w.inflight.pop(work_id, None)
        if item is not None:
            w.load -= item.weight
        try:
            result = decode(w.comm, w.rank, data, sizes) if sizes else loads(data)
        except Exception as exc:
            result = None
            if item is not None:
                item.error = self._task_error(item, SerializationError(
                    "the result of %s from %r cannot be unpickled here: %s: %s"
                    % (item.describe(), w, type(exc).__name__, exc)))
                item.error.__cause__ = exc
        if item is None:
            return  # a task already given up on (timeout, loss)
        item.result = result
        self._mean_task = took if not self._mean_task else 0.8 * self._mean_task + 0.2 * took
        if w.solo == work_id:
            wait = max(0.0, time.monotonic() - w.busy_since - took)
            self._mean_wait = 0.8 * self._mean_wait + 0.2 * wait
            w.solo = None
        self._completed(w, item)

    def _on_results(self, w: Worker, results: tuple) -> None:
        """A RESULTS record: the results of tasks of a batch (:class:`~._protocol.ResultsMsg`).
        Each is handled like a RESULT; a result that cannot be unpickled fails its task
        alone."""
        inflight = w.inflight
        mean = self._mean_task
        done = []
        for work_id, data, took in results:
            item = inflight.pop(work_id, None)
            mean = took if not mean else 0.8 * mean + 0.2 * took
            if item is None:
                continue  # a task already given up on (timeout, loss)
            w.load -= item.weight
            try:
                item.result = loads(data)
            except Exception as exc:
                item.error = self._task_error(item, SerializationError(
                    "the result of %s from %r cannot be unpickled here: %s: %s"
                    % (item.describe(), w, type(exc).__name__, exc)))
                item.error.__cause__ = exc
            done.append(item)
        self._mean_task = mean
        w.busy_since = time.monotonic()
        w.tasks_done += len(done)
        for item in done:
            item.worker = w
            self._finish(item)
        if w.retiring and not inflight:
            self._stop_workers([w])

    def _completed(self, w: Worker, item: WorkItem) -> None:
        """Worker ``w`` is done with ``item`` (result or error set): hand it on."""
        w.busy_since = time.monotonic()
        w.tasks_done += 1
        item.worker = w
        self._finish(item)
        if w.retiring and not w.inflight:
            self._stop_workers([w])

    @staticmethod
    def _task_error(item: WorkItem, err: Error) -> Error:
        err.task, err.index = item.task, item.index
        return err

    def _on_error(self, w: Worker, msg: ErrorMsg) -> None:
        try:
            exc, tb = unpack_error(decode(w.comm, w.rank, msg.data, msg.sizes))
        except (ValueError, TypeError, AttributeError, ImportError, EOFError) as why:
            exc, tb = RuntimeError("an error report from %r could not be read: %s"
                                   % (w, why)), ""
        kind = msg.kind
        item = w.inflight.pop(msg.work_id, None) if msg.work_id is not None else None
        if item is not None:
            w.load -= item.weight
        what = item.describe() if item is not None else "a task"
        err: Error
        if kind == ErrorKind.PICKLE:
            err = SerializationError("the result of %s on %r cannot be pickled: %s: %s\n%s"
                                     % (what, w, type(exc).__name__, exc, tb))
            err.__cause__ = exc
        elif kind == ErrorKind.UNPICKLE:
            err = SerializationError(
                "%r cannot unpickle %s: %s: %s. Is the task's module importable on the "
                "worker (same sys.path, same packages)?\n%s"
                % (w, what, type(exc).__name__, exc, tb))
            err.__cause__ = exc
        else:
            err = RemoteError(exc, tb, w)
            err.kind = "setup" if kind == ErrorKind.SETUP else (  # type: ignore[attr-defined]
                "cmd" if kind == ErrorKind.CMD else "raised")
        if msg.work_id is None:
            w.errors.append(err)
            return
        if item is None:
            return
        item.error = self._task_error(item, err)
        self._completed(w, item)

    # -- failures ----------------------------------------------------------------------------
    def _describe_mpi_error(self, exc: Exception) -> str:
        try:
            cls = exc.Get_error_class()  # type: ignore[attr-defined]
        except Exception:
            cls = None
        if cls in self._ulfm:
            return "MPI reports the process failed (error class %s)" % cls
        return "MPI error: %s" % (exc,)

    def _bury(self) -> None:
        """Handle the losses found while iterating over the workers."""
        while self._doomed:
            w, reason = self._doomed.pop(0)
            self._lost(w, reason)

    def _check_health(self, now: float) -> None:
        self.watch_post.collect(now)
        for w in list(self.workers):
            if w.state == STARTING and w.comm is None:
                self._poll_start(w, now)
            verdict = self.policy.check(w, now)
            if verdict is not None:
                self._apply(w, verdict)

    def _apply(self, w: Worker, v: Verdict) -> None:
        if v.kind == "start":
            self._start_failed(w, self._hello_timeout(w))
            return
        if v.kill:
            self._kill(w)
        if v.kind == "timeout":
            if w.inflight.pop(v.item.work_id, None) is not None:
                w.load -= v.item.weight
            v.item.error = self.policy.timeout_error(v, w)
            self._finish(v.item)
            self._lost(w, "stopped after a task timeout")
        else:
            self._lost(w, v.reason)

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
        self._await_mpi_notice(w)

    def _await_mpi_notice(self, w: Worker, limit: float = 2.0) -> None:
        """Wait (bounded) until MPI has noticed that ``w``'s process is gone: its posted
        receive completes with an error. Freeing the communicator before that crashed
        Open MPI (ULFM's failure notice then revoked a freed communicator)."""
        deadline = time.monotonic() + limit
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
        if w.req is not None and w.pid is not None and w.host == self._host:
            self._await_mpi_notice(w)  # found by pid check: let MPI catch up first
        w.state = DEAD
        self.watch_post.forget(w)
        if w.records_exit_status:
            w.exitcode = exit_status_from_log(w.log_file)
            reason = "%s, %s" % (reason, describe_exit(w.exitcode))
        w.death = reason
        w.death_time = time.monotonic()
        if self.journal is not None:
            self.journal.worker_seen("worker %d" % w.index, w.host, state="lost",
                                     exit_status=w.exitcode)
        self.lost_count += 1
        if w in self.ready:
            self.ready.remove(w)
        w.pending.clear()
        cancel_request(w.req)
        w.req = None
        w._release()
        items = list(w.inflight.values())
        w.inflight.clear()
        w.load = 0
        replaced = self._replace(w)
        live_after = len(self.live_workers())
        if items and items[0].batched:
            # It died in a batch: which task ran is unknown, so none is blamed (no try
            # counted); each is a suspect and runs alone from now on, where a task that
            # kills its worker again is found and counted as usual.
            requeue, give_up = items, []  # type: List[WorkItem], List[WorkItem]
            for item in items:
                item.worker = None
                item.killed += 1
        else:
            requeue, give_up = self.policy.after_loss(w, items, reason, live_after)
        for item in reversed(requeue):
            item.state = QUEUED
            item.solo = True  # never batched again: a task that kills workers runs alone
            self.queue.appendleft(item)
        for item in give_up:
            self._finish(item)
        log.warning("%r lost (%s); %d task(s) requeued, %d given up%s. Log file: %s",
                    w, reason, len(requeue), len(give_up),
                    "; a replacement is starting" if replaced else "", w.log_file)

    def _replace(self, w: Worker) -> bool:
        if self.closed or w.retiring or not self.policy.may_replace(self.requested):
            if self.options.fault_tolerant and not self.closed and not w.retiring \
                    and not self.policy.budget_spent_logged:
                self.policy.budget_spent_logged = True
                log.warning("respawn budget (%d replacements) spent; going on with the "
                            "workers left", self.policy.budget(self.requested))
            return False
        new = w._replacement() or LocalWorker()
        self.add_worker(new, replacement=True)
        return True

    # -- shutdown ----------------------------------------------------------------------------
    def close(self) -> None:
        """Stop spawned workers and give world ranks back. Tasks still queued are dropped."""
        if self.closed:
            return
        self.closed = True
        self.queue.clear()
        for w in self.workers:
            if isinstance(w, WorldWorker):
                w.inflight.clear()
                w.load = 0
        # A worker still starting is let finish (bounded) and then stopped like the others:
        # one left connecting would be orphaned, and MPI_Finalize would trip over its link.
        starting = lambda: any(w.state == STARTING for w in self.workers)  # noqa: E731
        if starting():
            self._new_workers = False
            self.run_until(lambda: not starting(), self.options.stop_timeout)
        self._stop_workers([w for w in self.workers if not isinstance(w, WorldWorker)])
        _world.give_back(self._world_workers)
        self.watch_post.close()
        if self.journal is not None:
            self.journal.close()

    def summary(self) -> str:
        """One line: tasks, workers, tasks per worker, losses and replacements."""
        per = ", ".join("%d" % w.tasks_done for w in self.workers)
        text = "%d tasks on %d workers (%s per worker); %d lost" % (
            self.tasks_done, len(self.workers), per, self.lost_count)
        if self.options.fault_tolerant:
            text += ", %d of %d replacements spent" % (
                self.respawns, self.policy.budget(self.requested))
        else:
            text += ", %d respawned" % self.respawns
        return text


def _batchable(item: WorkItem) -> bool:
    """Whether ``item`` may share a message with other tasks (see ``Engine._send_batch``)."""
    data = item.payload.data
    return not item.solo and item.timeout is None and not item.payload.sizes \
        and data is not None and len(data) <= BATCH_ENTRY_MAX


def engine_for_pool(options: Options, max_workers: Optional[int], spawn: int,
                    workers: Any = None) -> "tuple[Engine, List[WorldWorker]]":
    """An engine with the free ranks of the ``mpiexec`` world (at most ``max_workers``), or,
    in a singleton, ``spawn`` new ``LocalWorker`` processes (the executor and dispatcher);
    or, when ``workers`` is given (workers or worker arrays), just those.

    Returns the engine and the world ranks it holds; :meth:`Engine.close` gives them back.
    """
    engine = Engine(options, adopt_world=False)
    if workers is not None:
        for w in worker_list(workers) if not isinstance(workers, (list, tuple)) else \
                [x for item in workers for x in worker_list(item)]:
            engine.add_worker(w)
        return engine, []
    world = _world.take_workers()
    if max_workers is not None:
        _world.give_back(world[max_workers:])
        world = world[:max_workers]
    engine._world_workers = list(world)
    for w in world:
        engine.add_worker(w)
    if not world and _world.world_size() == 1:
        for _ in range(spawn):
            engine.add_worker(LocalWorker())
    return engine, world
