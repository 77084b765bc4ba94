"""Signals and orphans: how a manager stops, and how nothing a run started outlives it.

Manager side (:func:`manager_started`, called when an engine is created):

* SIGTERM and SIGHUP raise :class:`~mpidispatch.errors.Terminated` (a ``SystemExit`` with
  exit status 128 + signal number) and SIGINT raises ``KeyboardInterrupt`` in the main
  thread, so the user's ``try/finally`` and ``with`` blocks run. A signal that arrives while
  the engine is in the middle of its bookkeeping is held and raised at the engine loop's next
  safe point (:func:`raise_if_stopping`, within milliseconds). From then on the engine hands out
  no new task (:func:`stopping`) and stops its workers without waiting for running tasks
  (:func:`stop_timeout`). A second signal raises at once. Handlers are installed only in the
  main thread and only for signals whose handler is still Python's default: a handler of the
  user's own is left alone.
* A manager started by a launcher (``python -m mpidispatch``, ``mpiexec``, ``srun``) watches
  it; when the launcher is gone the manager stops as on SIGTERM and, if it has not exited
  :data:`ORPHAN_GRACE` seconds later, exits hard.

Worker side (:func:`lead_process_group`, :func:`end_process_group`): each worker process
leads its own process group, so that whatever its tasks start (``subprocess``, ``fork``)
belongs to it, and the group is ended when the worker ends. See docs/signals.md.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import Dict, List, Optional

from ._util import env_float, hostname, pid_status
from .errors import Terminated

#: The signals a manager stops on, and the exit status each one gives (shell convention).
STOP_SIGNALS: Dict[int, int] = {signal.SIGTERM: 128 + signal.SIGTERM,
                                signal.SIGINT: 128 + signal.SIGINT,
                                signal.SIGHUP: 128 + signal.SIGHUP}

#: Seconds an orphaned manager (its launcher gone) has to finish before it exits hard.
ORPHAN_GRACE = 5.0

#: ``host:pid`` of the ``python -m mpidispatch`` launcher, set for the processes it starts.
LAUNCHER_VAR = "MPIDISPATCH_LAUNCHER"

_HERE = os.path.dirname(os.path.abspath(__file__))
_ENGINE_FILE = os.path.join(_HERE, "_engine.py")
_UTIL_FILE = os.path.join(_HERE, "_util.py")
#: Modules whose code keeps the run's books: a signal is never raised inside them, except in
#: ``Engine.run_until`` itself (and its idle sleep).
BOOKKEEPING = frozenset(os.path.join(_HERE, name) for name in
                        ("_engine.py", "_taskgroup.py", "_failure.py", "_work.py",
                         "_workerlife.py", "_messaging.py", "_protocol.py"))

_received: Optional[int] = None   # the first stop signal this process got
_raised = False                   # the exception for it was raised (a second one raises at once)
_deferred = False                 # held at an unsafe point; sent again to the main thread soon
_installed = False
_watching = False


# -- the manager: stop on a signal ------------------------------------------------------------
def manager_started() -> None:
    """A manager (engine) starts: install the stop handlers (main thread only, once) and the
    launcher watchdog. A new manager after a stop signal that the program caught and
    survived starts afresh: it hands out tasks again."""
    global _installed, _received, _raised, _deferred
    if _raised:
        _received, _raised, _deferred = None, False, False
    if not _installed and threading.current_thread() is threading.main_thread():
        _installed = True
        for signum in STOP_SIGNALS:
            if signum == signal.SIGINT and _interactive():
                continue   # a REPL or notebook: Ctrl-C interrupts a call, not the session
            current = signal.getsignal(signum)
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            if current is default:
                signal.signal(signum, _on_signal)
    watch_launcher()


def _interactive() -> bool:
    """True in an interactive session (python -i, the REPL, IPython or Jupyter)."""
    return hasattr(sys, "ps1") or bool(sys.flags.interactive) or "IPython" in sys.modules


def stopping() -> bool:
    """True once this process got a stop signal: hand out no more tasks."""
    return _received is not None


def exit_status(default: int) -> int:
    """The exit status for a process that leaves with ``os._exit``: 128 + the stop signal's
    number after one, else ``default``."""
    return STOP_SIGNALS[_received] if _received is not None else default


def stop_timeout(default: float) -> float:
    """How long a stopping worker may take: ``default``, or 1 s after a stop signal."""
    return min(default, 1.0) if _received is not None else default


def raise_if_stopping(any_thread: bool = False) -> bool:
    """After a stop signal, raise it (again): call at an engine loop's safe point.

    In the main thread, a signal that came while the engine was busy is raised here within
    milliseconds, and a loop that waits for results after a stop signal ends at once instead
    of waiting for tasks that will never be handed out. With ``any_thread``, a background
    engine loop (the executor's) raises too, and fails what it still holds. Returns False
    when it does not raise (so that it fits in a loop's condition).
    """
    global _raised, _deferred
    if _received is None:
        return False
    if threading.current_thread() is threading.main_thread():
        _raised, _deferred = True, False
    elif not any_thread:
        return False
    raise exception_for(_received)


def exception_for(signum: int) -> BaseException:
    """``KeyboardInterrupt`` for SIGINT, :class:`Terminated` for SIGTERM and SIGHUP."""
    if signum == signal.SIGINT:
        return KeyboardInterrupt()
    return Terminated(signum)


def _on_signal(signum: int, frame: Optional[FrameType]) -> None:
    global _received, _raised, _deferred
    redelivered, _deferred = _deferred, False
    again = _raised or (_received is not None and not redelivered)
    if _received is None:
        _received = signum
        _say("mpidispatch: %s received; stopping (no new tasks, exit status %d)"
             % (signal.Signals(signum).name, STOP_SIGNALS[signum]))
    if again or _at_safe_point(frame):
        _raised = True
        raise exception_for(signum)
    # Inside the engine's bookkeeping: raise_if_stopping() raises it at the engine loop's
    # next turn; if the program leaves the engine first, the signal comes again in 20 ms.
    _deferred = True
    timer = threading.Timer(0.02, _redeliver, (signum,))
    timer.daemon = True
    timer.start()


def _redeliver(signum: int) -> None:
    main = threading.main_thread()
    if _deferred and not _raised and main.ident is not None and main.is_alive() \
            and signal.getsignal(signum) is _on_signal:
        signal.pthread_kill(main.ident, signum)


def _say(line: str) -> None:
    """A line on stderr, which may be a pipe to a launcher that is gone: never raise."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _at_safe_point(frame: Optional[FrameType]) -> bool:
    """False while the engine is inside its bookkeeping (raising there could lose a result).

    Safe: outside the engine altogether (user code, a face waiting on a future), or in
    ``Engine.run_until`` itself or its idle sleep.
    """
    inner: List[str] = []
    while frame is not None:
        name = frame.f_code.co_filename
        if name in BOOKKEEPING:
            return name == _ENGINE_FILE and frame.f_code.co_name == "run_until" \
                and all(f == _UTIL_FILE for f in inner)
        inner.append(name)
        frame = frame.f_back
    return True


# -- the manager: notice that the launcher is gone --------------------------------------------
def _launcher_pid() -> Optional[int]:
    """The pid to watch: our ``python -m mpidispatch`` on this host, else the parent that an
    MPI launcher made (prterun, hydra's proxy, slurmstepd); None for a plain ``python``."""
    from ._mpiexec import under_launcher
    host, _, pid = os.environ.get(LAUNCHER_VAR, "").rpartition(":")
    if host == hostname() and pid.isdigit():
        return int(pid)
    if under_launcher():
        return os.getppid()
    return None


def watch_launcher() -> None:
    """Stop this manager when its launcher is gone (once per process; a daemon thread)."""
    global _watching
    pid = _launcher_pid()
    if _watching or pid is None or pid <= 1:
        return
    _watching = True
    parent = os.getppid()
    interval = env_float("WATCHDOG_INTERVAL", 0.5)
    main = threading.main_thread().ident

    def watch() -> None:
        while True:
            time.sleep(interval)
            why = pid_status(pid) or ("gone" if os.getppid() != parent else None)
            if why is None:
                continue
            _say("mpidispatch manager %d: its launcher (pid %d) is %s; stopping"
                 % (os.getpid(), pid, why))
            if main is not None:
                signal.pthread_kill(main, signal.SIGTERM)
            time.sleep(env_float("ORPHAN_GRACE", ORPHAN_GRACE))
            end_process_group()
            os._exit(STOP_SIGNALS[signal.SIGTERM])

    threading.Thread(target=watch, name="mpidispatch-launcher-watchdog", daemon=True).start()


# -- workers: one process group each ----------------------------------------------------------
def lead_process_group(create: bool = True) -> None:
    """Make this worker process lead a process group of its own, so that every process its
    tasks start (``subprocess``, ``fork``) can be ended with it; end the group at exit.

    Args:
        create: make a new group if this process does not lead one already (a worker). A
            manager rank only ends a group that its MPI launcher made for it.
    """
    try:
        if os.getpgid(0) != os.getpid():
            if not create:
                return
            os.setpgid(0, 0)
    except OSError:
        return
    atexit.register(end_process_group)


def group_members(pgid: int) -> List[int]:
    """Pids of the live (not zombie) processes of process group ``pgid`` (Linux /proc)."""
    found: List[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name, "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            found.append(int(name))
    return found


def end_process_group(grace: float = 1.0) -> None:
    """End every other process of the group this process leads: SIGTERM, then SIGKILL after
    ``grace`` seconds. Does nothing in a group this process does not lead (a manager started
    from a shell shares the shell's group, which is not ours to end)."""
    me = os.getpid()
    try:
        if os.getpgid(0) != me:
            return
    except OSError:
        return
    deadline = time.monotonic() + grace
    for signum in (signal.SIGTERM, signal.SIGKILL):
        others = [p for p in group_members(me) if p != me]
        for pid in others:
            try:
                os.kill(pid, signum)
            except OSError:
                pass
        while others and signum == signal.SIGTERM and time.monotonic() < deadline:
            time.sleep(0.02)
            others = [p for p in group_members(me) if p != me]
        if not others:
            return


#: The shell that stands between MPI and a spawned worker (``sh -c WRAPPER python args``;
#: ``%(record)s`` is a command that records the exit status ``$s``). It runs the worker in
#: the background so that it knows its pid; the worker makes itself the leader of a process
#: group (:func:`lead_process_group`), and whatever is left of that group when the worker
#: ends, however it ends, is killed. It also ignores hydra's SIGUSR1 and turns a death by
#: signal into an ordinary exit status (which MPICH's hydra needs), and passes a SIGTERM,
#: SIGHUP or SIGINT on to the worker.
WORKER_WRAPPER = ('trap "" USR1; "$0" "$@" & p=$!; '
                  "trap 'kill -TERM $p 2>/dev/null' TERM HUP INT; "
                  "{ wait $p; s=$?; while kill -0 $p; do wait $p; s=$?; done; kill -KILL -$p; }"
                  " 2>/dev/null; %(record)sexit $s")   # 2>/dev/null: no "Killed" from sh
