"""Moved to :mod:`mpidispatch.arrays`; this module re-exports its names for old imports.

The joining worker's entry point is now ``python -m mpidispatch.arrays.worker``.
"""
from ..arrays import (AllocationError, ConnectNotSupportedError, SGEPEWorkerArray,  # noqa: F401
                      SGEQsubWorkerArray, SlurmWorkerArray, expand_nodelist,
                      expand_tasks_per_node, parse_pe_hostfile, slurm_slots, worker_hosts)
from ..arrays.worker import worker_main  # noqa: F401

__all__ = ["SGEPEWorkerArray", "SGEQsubWorkerArray", "SlurmWorkerArray",
           "ConnectNotSupportedError", "AllocationError", "parse_pe_hostfile",
           "expand_nodelist", "expand_tasks_per_node", "slurm_slots", "worker_hosts",
           "worker_main"]
