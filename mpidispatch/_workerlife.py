"""Starting and stopping worker processes: the engine's side of a worker's life.

Kept apart from the loop (:mod:`._engine`): a worker starts in the background (the loop polls
it), says hello, gets a welcome; at the end it is told to stop, answers BYE and is
disconnected, or killed after ``stop_timeout``. Each function takes the engine as its
first argument and is bound as a method of :class:`~mpidispatch._engine.Engine`.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from typing import TYPE_CHECKING, Any, List, Optional

from . import _signals, _spawngroup
from ._protocol import Verb, requests_done
from ._util import Backoff
from .errors import WorkerStartError
from .workers import (DEAD, NEW, READY, STARTING, STOPPED, LocalWorker, Worker, WorldWorker,
                      describe_exit, exit_status_from_log, log_tail)

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("mpidispatch")


def cancel_request(req: Any, wait: bool = False) -> None:
    """Cancel a posted receive; with ``wait``, also complete it (MPI_Comm_disconnect waits
    for every pending request on the communicator)."""
    if req is not None:
        try:
            req.Cancel()
            if wait:
                req.Wait()
        except Exception:
            pass


def _start_new(engine: "Engine") -> None:
    """Start every NEW worker at once; each connects in the background.

    ``MPI_Comm_spawn`` runs in a thread (a program that dies before MPI_Init makes it hang
    forever); the loop polls them, so N broken workers cost one ``start_timeout``, not N,
    and a worker that exits is noticed from its log at once. Plain local workers that start
    together share spawns of up to :func:`._spawngroup.group_size` processes (one spawn
    each cost about 0.2 s, and spawns run one at a time); the others spawn one by one.
    """
    together: List[LocalWorker] = []
    size = _spawngroup.group_size()
    for w in engine.workers:
        if w.state != NEW:
            continue
        w.state = STARTING
        w.start_time = time.monotonic()
        w.log_file = engine._log_file(w)
        if w.log_file and isinstance(w, LocalWorker):
            try:
                open(w.log_file, "w").close()  # a fresh log per worker, as IMP does
            except OSError as exc:
                engine._start_failed(w, WorkerStartError(
                    "cannot write the worker log file %s: %s. Pass output= a writable "
                    "%%d pattern." % (w.log_file, exc), w.command, w.log_file))
                continue
        if size > 1 and isinstance(w, LocalWorker) and w.groupable:
            together.append(w)
            continue
        _launch_one(engine, w)
    if len(together) == 1:
        _launch_one(engine, together[0])
        return
    for first in range(0, len(together), size):
        chunk = together[first:first + size]
        for failed, why in _spawngroup.spawn_together(chunk, engine.python):
            engine._start_failed(failed, why)


def _launch_one(engine: "Engine", w: Worker) -> None:
    try:
        w._launch(engine.python, w.log_file)
        engine._poll_start(w, time.monotonic())
    except WorkerStartError as exc:
        engine._start_failed(w, exc)


def _poll_start(engine: "Engine", w: Worker, now: float) -> None:
    """Is a starting worker connected yet? Did it exit instead?"""
    try:
        got = w._launched(0.0)
    except WorkerStartError as exc:
        engine._start_failed(w, exc)
        return
    if got is not None:
        w.comm, w.rank = got
        w.last_heard = now
        return
    if w.records_exit_status:
        code = exit_status_from_log(w.log_file, wait=0.0)
        if code is not None:
            cause = WorkerStartError(
                "worker %d exited before it connected (%s). Command: %s. Last lines of "
                "its log file %s:\n%s" % (w.index, describe_exit(code), w.command,
                                          w.log_file, log_tail(w.log_file)),
                w.command, w.log_file)
            engine._start_failed(w, cause)
            engine._fail_alike(w, cause)


def _fail_alike(engine: "Engine", failed: Worker, cause: WorkerStartError) -> None:
    """Workers started the same way as one that exited before connecting would exit
    too: fail them now with its cause. (Its ``MPI_Comm_spawn`` never returns, and a spawn
    beside a hung one hangs under MPICH, so waiting would cost ``start_timeout`` each.)"""
    for w in engine.workers:
        if w is failed or w.state != STARTING or w.comm is not None \
                or type(w) is not type(failed) \
                or getattr(w, "spawn_host", None) != getattr(failed, "spawn_host", None):
            continue
        engine._start_failed(w, WorkerStartError(
            "worker %d was not started: worker %d, started the same way, exited before "
            "it connected. %s" % (w.index, failed.index, cause), cause.command,
            cause.log_file))


def _log_file(engine: "Engine", w: Worker) -> Optional[str]:
    if not engine.options.output or isinstance(w, WorldWorker):
        return w.log_file
    return os.path.abspath(engine.options.output % w.index)


def _hello_timeout(engine: "Engine", w: Worker) -> WorkerStartError:
    limit = engine.policy.start_limit(w)
    return WorkerStartError(
        "worker %d did not start within start_timeout=%gs. Command: %s; log file: %s%s. "
        "Check that the python= command works on that host, that it can import mpi4py "
        "and mpidispatch, and raise start_timeout for a slow start."
        % (w.index, limit, w.command, w.log_file,
           (":\n" + log_tail(w.log_file)) if log_tail(w.log_file) else " (empty)"),
        w.command, w.log_file)


def _start_failed(engine: "Engine", w: Worker, exc: WorkerStartError) -> None:
    log.warning("%s", exc)
    w.state = DEAD
    w.death = str(exc)
    engine.start_errors.append(exc)
    cancel_request(w.req)
    w.req = None
    w._release()
    engine._replace(w)


_host_loss_warned = False


def _warn_host_loss(engine: "Engine", w: Worker) -> None:
    """Once per process: fault-tolerant mode cannot survive a lost host for workers that one
    MPI launch put on other hosts (world ranks, spawned workers): the launcher ends the run
    (docs/multihost.md). Workers that join (worker arrays) are not concerned."""
    global _host_loss_warned
    if (_host_loss_warned or not engine.options.fault_tolerant
            or w.host in (None, engine._host) or type(w) not in (WorldWorker, LocalWorker)):
        return
    _host_loss_warned = True
    log.warning("fault_tolerant=True: %r runs on another host (%s), started by this run's MPI "
                "launcher; a lost host ends the whole run (the launcher gives up), only "
                "lost processes are survived. To survive a lost host, use "
                "mpidispatch.launch.host_arrays.HostWorkerArray (MPICH); see "
                "docs/multihost.md", w, w.host)


def _on_hello(engine: "Engine", w: Worker, info: dict) -> None:
    w.host, w.pid = info.get("host"), info.get("pid")
    _warn_host_loss(engine, w)
    if info.get("log"):
        w.log_file = info["log"]
    w.state = READY
    w.last_heard = w.ready_time = time.monotonic()
    if not w.retiring:
        engine.ready.append(w)
    engine._welcome(w)


def _welcome(engine: "Engine", w: Worker) -> None:
    """Tell a worker who its manager is, and (a world rank) where its output goes."""
    welcome = {
        "host": engine._host, "pid": os.getpid(), "cwd": os.getcwd(),
        "heartbeat": None, "watch": None,
        "sys_path": [p for p in sys.path if p]}
    if engine.policy.uses_heartbeat(w):
        interval = engine.options.heartbeat_timeout / 4
        welcome["heartbeat"] = interval
        welcome["watch"] = engine.watch_post.enlist(w, interval, same_host=w.host == engine._host)
    if isinstance(w, WorldWorker):  # a rank follows this face's output setting
        out = engine.options.output
        welcome["output"] = w.log_file = (os.path.abspath(out % w.index) if out else None)
    engine.send_control(w, Verb.WELCOME, welcome)


def wait_ready(engine: "Engine", timeout: Optional[float] = None) -> int:
    """Start every worker and wait until each has said hello or failed to start.

    Returns the number of ready workers.

    Raises:
        WorkerStartError: no worker started at all (the first such error).
    """
    engine._new_workers = True
    limit = engine.options.start_timeout + 5 if timeout is None else timeout
    waiting = lambda: [w for w in engine.workers if w.state in (NEW, STARTING)]  # noqa
    if not engine.run_until(lambda: not waiting(), limit):
        raise engine._hello_timeout(waiting()[0])
    ready = sum(1 for w in engine.workers if w.state == READY)
    if engine.start_errors and not ready:
        raise engine.start_errors[0]
    return ready


def _stop_workers(engine: "Engine", workers: List[Worker]) -> None:
    """Stop spawned workers: say STOP to all, wait (bounded) for each one's BYE, then
    disconnect; a worker that does not answer in ``stop_timeout`` is killed. Every MPI
    call stays on this thread (MPI from a second thread once crashed Open MPI here)."""
    stopping = []
    for w in workers:
        if w in engine.ready:
            engine.ready.remove(w)
        if isinstance(w, WorldWorker):
            continue  # world ranks serve until rank 0 exits
        if w.state == READY:
            w.said_bye = False
            if engine.send_control(w, Verb.STOP, {"hard": False}):
                stopping.append(w)
            else:
                engine._bury()
        elif w.state in (NEW, STARTING):
            w.state = STOPPED
            cancel_request(w.req)
            w.req = None
            w._release()
    deadline = time.monotonic() + _signals.stop_timeout(engine.options.stop_timeout)
    backoff = Backoff()
    while True:
        waiting = [w for w in stopping if w.state == READY and not w.said_bye]
        if not waiting or time.monotonic() > deadline:
            break
        busy = False
        for w in waiting:
            if w.pending:
                requests_done(w.pending)
            if engine._collect(w):
                busy = True
        engine._bury()
        if busy:
            backoff.reset()
        else:
            backoff.sleep()
    for w in stopping:
        if w.state != READY:
            continue
        w.pending.clear()
        if w.said_bye:
            cancel_request(w.req, wait=True)
            w.req = None
            w._disconnect(engine.options.stop_timeout)
        else:
            log.warning("%r did not stop within stop_timeout=%gs; killing it",
                        w, engine.options.stop_timeout)
            engine._kill(w)
            cancel_request(w.req)
            w.req = None
            w._release()
        w.state = STOPPED
