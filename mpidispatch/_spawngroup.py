"""Start several spawned workers with one ``MPI_Comm_spawn_multiple``: a spawn group.

Spawning workers one at a time costs a whole ``MPI_Comm_spawn`` each (the runtime maps,
launches and wires up every call; on a 2-core machine about 0.2 s per worker), and two
spawns may not run at once (two in flight from two threads hung Open MPI 5). So when the
engine starts several plain :class:`~mpidispatch.workers.LocalWorker` at once, it spawns
them together, up to :func:`group_size` per spawn, as ``mpi4py.futures`` does: one spawn,
one intercommunicator whose remote ranks are the workers. ``Spawn_multiple`` rather than
``Spawn`` because each worker gets its own command line (its own log file, written by its
own shell wrapper with its own exit status).

What sharing one intercommunicator changes, and how each is kept bounded (measured on
both wheels, see docs/performance.md):

* Each worker is addressed by its rank in the shared communicator; a death is seen on that
  rank only (point-to-point receives from one source; Open MPI's ULFM reports the dead rank
  and the others go on working; MPICH's pid check finds it as before).
* ``MPI_Comm_disconnect`` is collective over the whole group, so it is never called on a
  shared communicator: a worker that stops (alone or with the others) just frees its side,
  and the manager frees its side once the last worker of the group is gone. A worker that
  retires early therefore waits in ``MPI_Finalize`` until its group ends (both wheels
  finalize a spawned group together), idle; the manager never waits for it.
* A worker that exits before ``MPI_Init`` makes the whole spawn hang (as it did for one):
  the engine notices the exit from that worker's log and reports it with its exit status,
  and fails the others of the group, which can no longer connect, each with that cause.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional

from ._mpienv import backend, mpi
from ._util import env_float

if TYPE_CHECKING:
    from .workers import LocalWorker

#: Workers per spawn when groups are asked for: 32 started fastest of 16, 32 and 64.
RECOMMENDED_GROUP_SIZE = 32


def group_size() -> int:
    """Most workers started by one spawn (``MPIDISPATCH_SPAWN_GROUP``; default 1, one spawn
    per worker: opt in with :data:`RECOMMENDED_GROUP_SIZE`). Not the default: with Open MPI,
    after a second worker of one spawn dies the runtime often ends the rest of that spawn
    too (measured: 11 of 15 runs of ``tests/scenarios/faults.py kill_random 3 ft`` lost 4
    workers for 3 kills; 0 of 10 with one spawn per worker). Fault tolerance recovers the
    tasks, but without it those workers are simply gone.

    Open MPI under a launcher needs ``PRTE_MCA_state_base_recoverable=1`` for groups: there
    the runtime's job settings are the launcher's, and without it one dead worker of a spawn
    makes the runtime end every other worker of that spawn (measured); a singleton manager
    starts its own runtime with it (:func:`._mpienv.recommended_environment`).
    """
    return max(1, int(env_float("SPAWN_GROUP", 1)))


class SpawnGroup:
    """Workers started by one spawn, and the intercommunicator they share.

    The spawn runs in a thread (the engine polls :meth:`launched`), holding the process-wide
    spawn slot. The communicator is freed (locally, never disconnected) when the last member
    has been released.
    """

    def __init__(self, members: "List[LocalWorker]") -> None:
        self.members = list(members)
        self._live = set(id(w) for w in members)
        self._result: List[Any] = []
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.comm: Any = None

    def start(self, commands: List[str], argvs: List[List[str]], info: Any) -> None:
        """Spawn every member in the background: ``commands[i] argvs[i]`` for member i;
        ``info`` goes with the first command (Open MPI refuses a mapping key repeated over
        the commands of one spawn)."""
        from .workers import STARTING, spawn_slot
        MPI = mpi()
        infos = [info] + [MPI.INFO_NULL] * (len(commands) - 1)

        def spawn() -> None:
            spawn_slot.acquire(self)
            try:
                if not any(w.state == STARTING for w in self.members):
                    return  # all given up on (or stopped) while waiting for the slot
                now = time.monotonic()
                for w in self.members:
                    w.start_time = now  # the start timeout counts from here
                comm = MPI.COMM_SELF.Spawn_multiple(commands, argvs, [1] * len(commands),
                                                    infos)
                comm.Set_errhandler(MPI.ERRORS_RETURN)
                with self._lock:  # (given up on by every member meanwhile: left, as a
                    if self._live:  # single worker's late spawn is: no MPI call here)
                        self.comm = comm
                    self._result.append(comm)
            except BaseException as exc:  # reported by launched()
                self._result.append(exc)
            finally:
                spawn_slot.release(self)

        self._thread = threading.Thread(target=spawn, name="mpidispatch-spawn-group",
                                        daemon=True)
        self._thread.start()

    def launched(self, worker: "LocalWorker", wait: float = 0.0) -> Any:
        """The group's communicator or the exception the spawn raised; None if not yet."""
        if not self._result and self._thread is not None:
            self._thread.join(wait)
        if not self._result:
            return None
        return self._result[0]

    def rank_of(self, worker: "LocalWorker") -> int:
        return next(i for i, w in enumerate(self.members) if w is worker)

    def release(self, worker: "LocalWorker") -> None:
        """``worker`` is done with the communicator (local, never blocks). A spawn still
        pending is given up (one that never returns must not block the next); the last
        member frees the shared communicator."""
        from .workers import spawn_slot
        with self._lock:
            self._live.discard(id(worker))
            last = not self._live
            comm = self.comm if last else None
            if last:
                self.comm = None
        if not self._result:
            spawn_slot.give_up(self)
        if comm is not None:
            try:
                comm.Free()
            except Exception:
                pass


def info_for(spawn_host: Optional[str]) -> Any:
    """The MPI info of a spawn: placement (``host``) and, for Open MPI, oversubscription."""
    MPI = mpi()
    info = MPI.Info.Create()
    if spawn_host:
        info.Set("host", spawn_host)
    if backend() == "openmpi":
        info.Set("map_by", ":OVERSUBSCRIBE")
    return info


def spawn_together(workers: "List[LocalWorker]", python: str) -> List[tuple]:
    """Start ``workers`` (plain local workers, log files set) with one spawn.

    Returns ``(worker, WorkerStartError)`` for each worker refused before the spawn (its
    command does not work); the others start in the background as one group.
    """
    from .errors import WorkerStartError
    refused: List[tuple] = []
    members: "List[LocalWorker]" = []
    commands: List[str] = []
    argvs: List[List[str]] = []
    for w in workers:
        try:
            executable, args = w._command_line(python, w.log_file)
        except WorkerStartError as exc:
            refused.append((w, exc))
            continue
        members.append(w)
        commands.append(executable)
        argvs.append(args)
    if members:
        group = SpawnGroup(members)
        for w in members:
            w._group = group
        group.start(commands, argvs, info_for(None))
    return refused
