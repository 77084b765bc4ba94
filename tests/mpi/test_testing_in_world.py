"""mpidispatch.testing inside a world: faces adopt the serving ranks and spawn nothing."""
import os

import pytest

from mpidispatch import Manager, MPIExecutor
from mpidispatch.testing import _worker_processes, running

pytestmark = pytest.mark.mpi(min_size=3)


def test_running_adopts_the_world_instead_of_spawning():
    with running(Manager, workers=5) as m:
        c = m.get_context()
        for _ in range(20):
            c.add_task(os.getpid)
        ran_on = set(c.get_results())
        assert len(m.workers) == 2 and ran_on <= {w.pid for w in m.workers}
        assert _worker_processes() == set()


def test_executor_takes_at_most_workers_ranks():
    with running(MPIExecutor, workers=1) as ex:
        assert ex.num_workers == 1
        assert len({ex.submit(os.getpid).result(30) for _ in range(10)}) == 1


def test_in_process_mode_works_in_a_world_too():
    with running(Manager, workers=2, in_process=True) as m:
        c = m.get_context()
        c.add_task(os.getpid)
        assert c.get_results() == [os.getpid()]
