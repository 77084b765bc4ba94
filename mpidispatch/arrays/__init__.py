"""Worker arrays: many workers from a batch scheduler, IMP.parallel style.

Two ways to get them from Slurm or Grid Engine:

* **Inside an allocation** -- the manager is a plain ``python manager.py`` in a job
  (``sbatch -n 8``, ``qsub -pe mpi 8``): :func:`SlurmWorkerArray` () and
  :class:`SGEPEWorkerArray` () read the allocation and spawn one worker per slot
  (:mod:`.inside`). Both MPI wheels.
* **From outside** -- the manager runs on a login node: :func:`SlurmWorkerArray`
  (``numworker``) and :class:`SGEQsubWorkerArray` (``numworker``) submit a job array whose
  tasks join the running manager (:mod:`.submitted`, :mod:`.rendezvous`). MPICH wheel.

Every face takes an array's workers: ``Manager.add_worker(array)``, ``job.extend(array)``
(MODELLER), or ``array.workers()`` for anything that adds workers one by one.

Modules: :mod:`.allocation` (reading allocations), :mod:`.inside` (in-allocation arrays),
:mod:`.submitted` (submitted arrays and their monitor), :mod:`.rendezvous` with
:mod:`.tcpgate`, :mod:`.mpiport` and :mod:`.auth` (how joining workers are authenticated),
:mod:`.worker` (the joining worker's entry point), :mod:`.slurm` and :mod:`.sge` (one small
class per scheduler and situation).
"""
from .allocation import (expand_nodelist, expand_tasks_per_node, parse_pe_hostfile,
                         slurm_slots, worker_hosts)
from .base import WorkerArray, as_workers
from .errors import AllocationError, ConnectNotSupportedError
from .inside import AllocationArray, SlotWorker
from .sge import SGEPEWorkerArray, SGEQsubWorkerArray
from .slurm import SlurmAllocationArray, SlurmJobArray, SlurmWorkerArray
from .submitted import JobArray

__all__ = ["SGEPEWorkerArray", "SGEQsubWorkerArray", "SlurmWorkerArray",
           "SlurmAllocationArray", "SlurmJobArray", "WorkerArray", "AllocationArray",
           "JobArray", "SlotWorker", "as_workers", "AllocationError",
           "ConnectNotSupportedError", "parse_pe_hostfile", "expand_nodelist",
           "expand_tasks_per_node", "slurm_slots", "worker_hosts"]
