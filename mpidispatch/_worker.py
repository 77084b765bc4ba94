"""The worker side: serve tasks, setups, commands and data from the manager until told to stop.

The same loop serves a rank of a static ``mpiexec`` world and a process started with
``MPI_Comm_spawn`` (entry point: ``python -m mpidispatch._worker``); only the communicator
differs. The loop never blocks inside MPI: it keeps one receive posted and tests it, and
backs off when idle so that a waiting worker does not burn a core. On STOP it answers BYE
(so the manager can disconnect without waiting) and leaves.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from . import _serialize, _signals
from ._mpienv import backend, mpi
from ._protocol import (BATCH_ENTRY_MAX, INLINE_MAX, ControlMsg, ErrorKind, SetupMsg, Tag, Verb,
                        batch_fits, control, decode, error_message, pack, pack_error,
                        read_info, send_message, wait_all)
from ._util import Backoff, env_float, hostname, pid_status

#: Exit status of a worker whose manager vanished.
EXIT_MANAGER_LOST = 70


class _SetupFailed:
    __slots__ = ("error",)

    def __init__(self, error: tuple):
        self.error = error


class ManagerChannel:
    """The worker's communicator to its manager (``manager`` in ``run_cmd`` source).

    Gives MODELLER-style ``send_data``/``get_data`` on the worker side.
    """

    def __init__(self, loop: "WorkerLoop"):
        self._loop = loop
        self.inbox: deque = deque()

    def send_data(self, obj: Any) -> None:
        """Send any picklable object to the manager (numpy arrays travel without copies)."""
        data, bufs = _serialize.dumps(obj)
        data, sizes, bufs = pack(data, bufs)
        self._loop.send(Tag.DATA, (data, sizes), bufs)

    def get_data(self, timeout: Optional[float] = None) -> Any:
        """Wait for the next object the manager sent with ``send_data``.

        Raises:
            TimeoutError: nothing arrived within ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        backoff = Backoff()
        while not self.inbox:
            if self._loop.poll_one():
                backoff.reset()
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError("no data from the manager within %s s" % timeout)
            backoff.sleep()
        return self.inbox.popleft()


class WorkerLoop:
    """State and message handlers of one worker process."""

    def __init__(self, comm: Any, manager_rank: int, log_file: Optional[str] = None):
        MPI = mpi()
        self.comm = comm
        self.manager = manager_rank
        self.log_file = log_file
        self.where = "worker %s:%d" % (hostname(), os.getpid())
        self.contexts: Dict[int, Any] = {}
        self.channel = ManagerChannel(self)
        self.deferred: deque = deque()  # messages that came while run_cmd waited for data
        self.req: Any = None
        self.in_cmd = False
        self.namespace: Dict[str, Any] = {"manager": self.channel, "__name__": "__worker__"}
        self.status = MPI.Status()
        self.running = True
        self.hard_stop = False
        #: (process, its stdin pipe) of the watcher that reports our state (``_watcher``)
        self.watcher: Optional[Tuple[subprocess.Popen, int]] = None
        #: Answer STOP with BYE (spawned workers, which the manager then disconnects; a
        #: static-world rank's manager is finalizing and would not read it).
        self.say_bye = True

    # -- sending -------------------------------------------------------------------------
    def send(self, tag: int, message: tuple, buffers: Sequence[Any] = ()) -> None:
        pending = send_message(self.comm, self.manager, tag, message, buffers)
        if pending:
            wait_all([item[0] for item in pending], 3600.0, "sending a result to the manager")

    def send_error(self, work_id: Any, kind: ErrorKind, exc: BaseException) -> None:
        self.send(Tag.ERROR, *error_message(work_id, kind, pack_error(exc, self.where)))

    # -- handlers ------------------------------------------------------------------------
    def on_task(self, payload: tuple) -> None:
        work_id, context_id, data, sizes = payload  # a TaskMsg
        try:
            fn = decode(self.comm, self.manager, data, sizes) if sizes else \
                _serialize.loads(data)
        except BaseException as exc:
            self.send_error(work_id, ErrorKind.UNPICKLE, exc)
            return
        args = self.contexts.get(context_id, ())
        if isinstance(args, _SetupFailed):
            self.send(Tag.ERROR, *error_message(work_id, ErrorKind.SETUP, args.error))
            return
        started = time.perf_counter()
        try:
            result = fn(*args)
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: report, live on
            self.send_error(work_id, ErrorKind.RAISED, exc)
            return
        finally:
            del fn
        try:
            data, bufs = _serialize.dumps(result)
        except BaseException as exc:
            self.send_error(work_id, ErrorKind.PICKLE, exc)
            return
        took = time.perf_counter() - started
        if bufs or len(data) > INLINE_MAX:
            data, sizes, bufs = pack(data, bufs)
            self.send(Tag.RESULT, (work_id, data, sizes, took), bufs)
        else:
            self.send(Tag.RESULT, (work_id, data, (), took))

    def on_tasks(self, payload: tuple) -> None:
        """A batch (:class:`~._protocol.TasksMsg`): run each task in turn; send the small
        results back together (:class:`~._protocol.ResultsMsg`, as many messages as the
        batch bounds need), and each failure, and each result too big for a batch, alone
        and at once -- one failing task fails alone, the others go on."""
        context_id, tasks = payload
        args = self.contexts.get(context_id, ())
        if isinstance(args, _SetupFailed):
            for work_id, _ in tasks:
                self.send(Tag.ERROR, *error_message(work_id, ErrorKind.SETUP, args.error))
            return
        loads, dumps, clock = _serialize.loads, _serialize.dumps, time.perf_counter
        results: list = []
        nbytes = 0
        for work_id, data in tasks:
            try:
                fn = loads(data)
            except BaseException as exc:
                self.send_error(work_id, ErrorKind.UNPICKLE, exc)
                continue
            started = clock()
            try:
                result = fn(*args)
            except BaseException as exc:  # SystemExit and KeyboardInterrupt too
                self.send_error(work_id, ErrorKind.RAISED, exc)
                continue
            finally:
                del fn
            try:
                data, bufs = dumps(result)
            except BaseException as exc:
                self.send_error(work_id, ErrorKind.PICKLE, exc)
                continue
            finally:
                del result
            took = clock() - started
            if bufs or len(data) > BATCH_ENTRY_MAX:  # a big result travels alone
                data, sizes, bufs = pack(data, bufs)
                self.send(Tag.RESULT, (work_id, data, sizes, took), bufs)
                continue
            if not batch_fits(len(results), nbytes, data):
                self.send(Tag.RESULTS, (results,))
                results, nbytes = [], 0
            results.append((work_id, data, took))
            nbytes += len(data)
        if results:
            self.send(Tag.RESULTS, (results,))

    def on_setup(self, payload: tuple) -> None:
        msg = SetupMsg(*payload)
        try:
            setup = decode(self.comm, self.manager, msg.data, msg.sizes)
            result = setup() if setup is not None else ()
            if result is not None and not isinstance(result, (tuple, list)):
                raise TypeError("the setup function %r returned %r; it must return a tuple "
                                "(the arguments of each task) or None"
                                % (getattr(setup, "__name__", setup), result))
            self.contexts[msg.context_id] = tuple(result) if result is not None else ()
        except BaseException as exc:
            self.contexts[msg.context_id] = _SetupFailed(pack_error(exc, self.where))
        # Tells the manager that a task's time limit starts now, and that a limit passed
        # before this came was the setup's, not the task's.
        self.send(Tag.CONTROL, *control(Verb.SETUP_DONE, msg.context_id))

    def on_control(self, payload: tuple) -> None:
        msg = ControlMsg(*payload)
        verb = msg.verb
        info = read_info(self.comm, self.manager, msg)
        if verb == Verb.STOP:
            self.running = False
            self.hard_stop = bool(info and info.get("hard"))
        elif verb == Verb.WELCOME:
            self.on_welcome(info)
        elif verb == Verb.EXEC:
            self.in_cmd = True
            try:
                exec(compile(info, "<run_cmd>", "exec"), self.namespace)
            except BaseException as exc:
                self.send_error(None, ErrorKind.CMD, exc)
            finally:
                self.in_cmd = False
        elif verb == Verb.FORGET:
            self.contexts.pop(info, None)

    def on_welcome(self, info: dict) -> None:
        """Take the manager's working directory, import path and identity."""
        for path in reversed(info.get("sys_path", [])):
            if path not in sys.path:
                sys.path.insert(0, path)
        cwd = info.get("cwd")
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        if "output" in info:  # a static-world rank: the face using it decides where
            out = info["output"]
            if out != self.log_file:
                redirect_output(out)
                self.log_file = out
        if info.get("host") == hostname() and info.get("pid"):
            _start_watchdog(int(info["pid"]))
        if info.get("heartbeat"):
            self._start_heartbeat(float(info["heartbeat"]))
        self._start_watcher(info.get("watch"))

    def _start_watcher(self, settings: Optional[dict]) -> None:
        """Start the process that reports this worker's state to the manager (``_watcher``),
        ending the one a previous manager's welcome started.

        Its settings (with the key) are in its stdin pipe before it starts, so that a worker
        stopped right after the spawn (SIGSTOP) still has a watcher that can say so; the
        pipe's end of file, when this worker ends or closes it, ends the watcher."""
        old, self.watcher = self.watcher, None
        if old is not None:
            proc, pipe = old
            os.close(pipe)          # end of file: it ends
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
        if not settings:
            return
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, json.dumps(settings).encode() + b"\n")   # < a pipe's buffer
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", os.path.join(os.path.dirname(__file__),
                                                          "_watcher.py")],
                stdin=read_end, stdout=subprocess.DEVNULL, close_fds=True)
        except OSError as exc:
            os.close(write_end)
            print("mpidispatch: could not start the watcher (%s); a task holding Python's "
                  "lock longer than heartbeat_timeout will count as lost" % exc,
                  file=sys.stderr)
            return
        finally:
            os.close(read_end)
        self.watcher = (proc, write_end)

    def _start_heartbeat(self, interval: float) -> None:
        """Tell a manager on another host, every ``interval`` s, that this worker lives
        (it cannot check our pid); runs beside long tasks (MPI_THREAD_MULTIPLE)."""
        comm, manager = self.comm, self.manager

        def beat() -> None:
            while self.running:
                time.sleep(interval)
                try:
                    comm.send((Verb.HEARTBEAT.value, None, ()), dest=manager, tag=Tag.CONTROL)
                except Exception:
                    return

        threading.Thread(target=beat, name="mpidispatch-heartbeat", daemon=True).start()

    def on_data(self, payload: tuple) -> None:
        data, sizes = payload
        self.channel.inbox.append(decode(self.comm, self.manager, data, sizes))

    # -- main loop -----------------------------------------------------------------------
    def poll_one(self) -> bool:
        """Receive one message if one came (through a receive kept posted); handle it.

        While ``run_cmd`` source waits in ``get_data``, only DATA is handled; anything else
        waits in ``deferred`` until the command is done.
        """
        req = self.req
        if req is None:
            req = self.req = self.comm.irecv(source=self.manager, tag=self._any_tag)
        done, payload = req.test(self.status)
        if not done:
            return False
        self.req = None
        tag = self.status.Get_tag()
        if self.in_cmd and tag != Tag.DATA:
            self.deferred.append((tag, payload))
        else:
            self.handlers[tag](payload)
        return True

    def serve(self) -> None:
        """Say hello, then handle messages until the manager says stop."""
        import platform
        self._any_tag = mpi().ANY_TAG
        self.handlers = {Tag.TASK: self.on_task, Tag.TASKS: self.on_tasks,
                         Tag.SETUP: self.on_setup,
                         Tag.CONTROL: self.on_control, Tag.DATA: self.on_data}
        self.send(Tag.CONTROL, *control(Verb.HELLO, {
            "host": hostname(), "pid": os.getpid(), "log": self.log_file,
            "python": sys.executable, "version": platform.python_version()}))
        backoff = Backoff()
        while self.running:
            if self.deferred:
                tag, payload = self.deferred.popleft()
                self.handlers[tag](payload)
            elif self.poll_one():
                backoff.reset()
            else:
                backoff.sleep()
        self._start_watcher(None)   # ends the watcher: this manager is done with us
        if self.say_bye:
            try:
                self.send(Tag.CONTROL, *control(Verb.BYE))  # the manager may disconnect now
            except Exception:
                pass
        if self.req is not None:
            try:
                self.req.Cancel()
                self.req.Wait()  # disconnect waits for pending requests
            except Exception:
                pass
            self.req = None


_watched_managers: set = set()


def _wait_for_manager_death(manager_pid: int, worker: int,
                            alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll (every ``MPIDISPATCH_WATCHDOG_INTERVAL`` s) until the manager is gone, saying so
    in the log; False if ``alive()`` turned false first. Shared by both watchdogs below."""
    interval = env_float("WATCHDOG_INTERVAL", 0.5)
    while alive():
        time.sleep(interval)
        why = pid_status(manager_pid)
        if why is not None:
            sys.stderr.write("mpidispatch worker %d: manager (pid %d) is %s; ending it\n"
                             % (worker, manager_pid, why))
            sys.stderr.flush()
            return True
    return False


def _start_watchdog(manager_pid: int) -> None:
    """End this worker within about a second if its manager (on this host) dies."""
    if manager_pid in _watched_managers:
        return
    _watched_managers.add(manager_pid)

    def watch() -> None:
        _wait_for_manager_death(manager_pid, os.getpid())
        _signals.end_process_group()
        os._exit(EXIT_MANAGER_LOST)

    threading.Thread(target=watch, name="mpidispatch-watchdog", daemon=True).start()


def _fork_watchdog(manager_pid: int) -> None:
    """Watch the manager from a child process, forked before MPI starts.

    A thread cannot do it here: MPI_Init holds Python's lock, and a manager killed while it
    spawned us leaves MPI_Init waiting forever (seen with MPICH), so the thread never ran.
    The child ends this worker (SIGKILL: nothing else reaches a process stuck in C), then
    what its tasks started, when the manager is gone; it ends itself when the worker does.
    """
    worker = os.getpid()
    try:
        child = os.fork()
    except OSError:
        _start_watchdog(manager_pid)
        return
    if child:
        _watched_managers.add(manager_pid)   # the welcome's thread watchdog is not needed
        return
    try:   # the child: no MPI, no other thread; it must never return into the worker's code
        if _wait_for_manager_death(manager_pid, worker, lambda: os.getppid() == worker):
            os.kill(worker, signal.SIGKILL)
            os.killpg(worker, signal.SIGKILL)   # its tasks' processes, and this one
    finally:
        os._exit(0)


_original_fds: list = []


def redirect_output(log_file: Optional[str]) -> None:
    """Send this process's stdout and stderr (file descriptors 1 and 2) to ``log_file``;
    ``None`` sends them back where they went when the process started (a static-world
    rank follows the output setting of each face that uses it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if not log_file:
        if not _original_fds:
            return
        os.dup2(_original_fds[0], 1)
        os.dup2(_original_fds[1], 2)
    else:
        if not _original_fds:
            _original_fds.extend([os.dup(1), os.dup(2)])
        fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def spawned_main(argv: Optional[list] = None) -> None:
    """Entry point of a worker started with ``MPI_Comm_spawn``."""
    parser = argparse.ArgumentParser(prog="python -m mpidispatch._worker")
    parser.add_argument("--log", default=None)
    parser.add_argument("--manager", default=None, help="HOST:PID of the manager")
    args = parser.parse_args(argv)
    redirect_output(args.log)
    _signals.lead_process_group()   # what tasks start ends with this worker
    # MPICH only: there a manager killed before its welcome left workers in MPI_Init
    # forever. Open MPI's runtime ends them itself, and a process forked there before
    # MPI_Init made about 1 in 8 spawns fail or crash the manager in MPI_Comm_spawn on a
    # busy machine (measured), so Open MPI workers start their watch at the welcome.
    if args.manager and backend() == "mpich":
        host, _, pid = args.manager.rpartition(":")   # (after lead_process_group: the
        if host == hostname() and pid.isdigit():      # watchdog is ended with the group)
            _fork_watchdog(int(pid))   # from the start: a manager may die before its welcome
    MPI = mpi()
    parent = MPI.Comm.Get_parent()
    if parent == MPI.COMM_NULL:
        sys.exit("python -m mpidispatch._worker is started by a manager (MPI_Comm_spawn), "
                 "not by hand")
    parent.Set_errhandler(MPI.ERRORS_RETURN)
    WorkerLoop(parent, 0, args.log).serve()
    if parent.Get_size() > 1:
        # One of a spawn group (mpidispatch._spawngroup): disconnect is collective over the
        # whole group, so only our side is freed. MPI_Finalize waits for the rest of the
        # group; it runs now, while the manager watchdog thread can still end us.
        parent.Free()
        MPI.Finalize()
    else:
        parent.Disconnect()


if __name__ == "__main__":
    spawned_main()
