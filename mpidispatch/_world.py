"""The static world: ``mpiexec -n N python script.py``.

Rank 0 is the manager; ranks 1..N-1 turn into workers the moment the script constructs any
face (``Manager()``, ``job()``, ``JobDispatcher``, ``MPIExecutor``), serve until rank 0 is
done, and exit. So one unchanged script runs under ``python script.py`` (spawned workers)
and under ``mpiexec``. Rank 0 tells the workers to stop from its exit hook (:mod:`._lifecycle`).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any, List, Optional

from . import _lifecycle, _signals
from ._mpienv import mpi
from ._protocol import Tag, Verb, control
from ._util import env_float
from .workers import DEAD, STOPPED, WorldWorker

log = logging.getLogger("mpidispatch")

_comm: Any = None
_workers: Optional[List[WorldWorker]] = None
_held: set = set()
_watching = False


def world_size() -> int:
    """Number of ranks in ``MPI.COMM_WORLD``."""
    return mpi().COMM_WORLD.Get_size()


def _world_comm() -> Any:
    """A private duplicate of COMM_WORLD (collective: every rank gets it at the same point)."""
    global _comm
    if _comm is None:
        MPI = mpi()
        _comm = MPI.COMM_WORLD.Dup()
        _comm.Set_errhandler(MPI.ERRORS_RETURN)
    return _comm


def serve_if_worker(log_pattern: Optional[str] = None) -> None:
    """On ranks >= 1 of a multi-rank world, serve as a worker and exit; on rank 0, return.

    Args:
        log_pattern: ``%d`` pattern for this worker's log file (index = rank - 1).
    """
    MPI = mpi()
    if MPI.COMM_WORLD.Get_size() == 1:
        return
    comm = _world_comm()
    rank = MPI.COMM_WORLD.Get_rank()
    _signals.lead_process_group(create=rank > 0)   # end what the rank started, at its exit
    if rank == 0:   # (rank 0 watches its launcher through _signals: a graceful stop)
        _manager_setup()
        return
    _watch_launcher(rank)
    from ._worker import WorkerLoop, redirect_output
    log_file = log_pattern % (rank - 1) if log_pattern else None
    redirect_output(log_file)
    loop = WorkerLoop(comm, 0, log_file)
    loop.say_bye = False
    try:
        loop.serve()
    except MPI.Exception as exc:
        # The manager is gone (ULFM reports it; e.g. it ended while this host was cut off).
        # MPI_Finalize would wait for it forever: leave now.
        from ._worker import EXIT_MANAGER_LOST
        sys.stderr.write("mpidispatch worker rank %d: lost the manager (%s); exiting\n"
                         % (rank, exc))
        sys.stderr.flush()
        _signals.end_process_group()
        os._exit(EXIT_MANAGER_LOST)
    sys.stdout.flush()
    sys.stderr.flush()
    if loop.hard_stop:
        _signals.end_process_group()
        os._exit(0)
    sys.exit(0)


def _watch_launcher(rank: int) -> None:
    """End this worker rank within about a second once its launcher (its parent: mpiexec's
    daemon, hydra's proxy, slurmstepd) is gone.

    When a node is lost, Open MPI's launcher gives up the whole job and exits, but ranks on
    the surviving hosts were left running, waiting forever (measured, tests/multihost). A
    rank whose parent died is reparented: that is the sign.
    """
    import threading
    import time
    global _watching
    parent = os.getppid()
    if parent <= 1 or _watching:
        return
    _watching = True
    interval = env_float("WATCHDOG_INTERVAL", 0.5)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        try:  # stderr may be a pipe to the dead launcher
            sys.stderr.write("mpidispatch rank %d: the MPI launcher (pid %d) is gone, which "
                             "ends the run (a world started by mpiexec does not survive a lost "
                             "node: see docs/multihost.md); exiting\n" % (rank, parent))
            sys.stderr.flush()
        except Exception:
            pass
        _signals.end_process_group()
        os._exit(70)

    threading.Thread(target=watch, name="mpidispatch-launcher-watch", daemon=True).start()


def _manager_setup() -> None:
    global _workers
    if _workers is None:
        comm = _world_comm()
        _workers = [WorldWorker(comm, r) for r in range(1, comm.Get_size())]
        _lifecycle.register(_stop_world, _lifecycle.WORLD)


def take_workers() -> List[WorldWorker]:
    """The world's workers that no other engine holds (for a new engine on rank 0)."""
    if _workers is None:
        return []
    free = [w for w in _workers if w.rank not in _held and w.state not in (DEAD, STOPPED)]
    _held.update(w.rank for w in free)
    return free


def give_back(workers: List[WorldWorker]) -> None:
    """An engine closed: its world workers can serve the next one."""
    for w in workers:
        _held.discard(w.rank)


def _stop_world() -> None:
    """At exit of rank 0: stop every world worker, then let MPI finalize (or not)."""
    if _workers is None:
        return
    comm = _world_comm()
    lost = False
    lost = any(w.state == DEAD for w in _workers) or _signals.stopping()   # a stop signal:
    # busy ranks are not waited for (Finalize would); the MPI launcher ends them
    for w in _workers:
        if w.state == DEAD:
            # Given up on, but maybe alive (a heartbeat timeout: a host cut off for a while,
            # now back): tell it to leave too, without waiting (it may really be dead).
            try:
                message, _ = control(Verb.STOP, {"hard": True})
                comm.isend(message, dest=w.rank, tag=Tag.CONTROL)
            except Exception:
                pass
            continue
        try:
            # After a rank died, MPI_Finalize would wait for it forever: the survivors
            # must leave without it ("hard" stop), like rank 0 below.
            message, _ = control(Verb.STOP, {"hard": lost})  # small: no buffers
            comm.send(message, dest=w.rank, tag=Tag.CONTROL)
        except Exception:
            lost = True
        w.state = STOPPED
        if w.req is not None:  # an engine's receive still posted: it must not outlive
            try:               # its buffer into MPI_Finalize
                w.req.Cancel()
                if not lost:
                    w.req.Wait()
            except Exception:
                pass
            w.req = None
    if lost:
        # After a rank died, MPI_Finalize waits for it forever (Open MPI ULFM and MPICH
        # alike): leave without it. Exit status 0 unless Python already failed.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        _signals.end_process_group()
        os._exit(_signals.exit_status(getattr(sys, "last_value", None) is not None and 1 or 0))
