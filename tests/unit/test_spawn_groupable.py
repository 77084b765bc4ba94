"""Which workers may share one spawn (no MPI): plain local workers only. A worker that
joins the manager in its own way (worker arrays) must never be spawned with a group; that
broke every joining array under MPICH when spawn groups landed."""
from mpidispatch.arrays.inside import SlotWorker
from mpidispatch.arrays.submitted import ArrayWorker
from mpidispatch.workers import LocalWorker
from _nompi import no_mpi_initialized  # noqa: F401  (autouse fixture)


def bare(cls):
    w = cls.__new__(cls)
    w.spawn_host = None
    return w


def test_only_plain_local_workers_are_groupable():
    assert LocalWorker().groupable
    assert not LocalWorker(host="elsewhere").groupable
    assert not bare(ArrayWorker).groupable
    assert not bare(SlotWorker).groupable           # has a host list of its own
