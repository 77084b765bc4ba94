"""JobDispatcher over the ranks of one world: lazy generation, collection, updates, errors."""
import os
import time

import pytest

from mpidispatch import JobDispatcher, RemoteError

pytestmark = pytest.mark.mpi(min_size=3)


class Squares(JobDispatcher):
    n_jobs = 30
    offset = 0
    fail_at = -1

    def reset(self):
        self.next_job = 0
        self.results = {}
        self.max_uncollected = 0

    def job_generator(self):
        if self.next_job >= self.n_jobs:
            return None
        self.next_job += 1
        self.max_uncollected = max(self.max_uncollected, self.next_job - len(self.results))
        return self.next_job - 1

    def job_processor(self, job):
        time.sleep(0.005)
        if job == self.fail_at:
            raise ArithmeticError("job %d failed" % job)
        return job * job + self.offset, os.getpid()

    def job_collector(self, job, result):
        self.results[job] = result


@pytest.fixture
def squares():
    with Squares() as d:
        yield d


def test_jobs_run_on_the_world_ranks_lazily(squares):
    squares.run()
    assert not squares.local_mode and len(squares.workers) == 2
    assert {j: r[0] for j, r in squares.results.items()} == {j: j * j for j in range(30)}
    assert os.getpid() not in {r[1] for r in squares.results.values()}
    assert 1 <= squares.max_uncollected <= 2  # 2 workers x prefetch 1


def test_each_run_sends_the_dispatcher_as_it_is(squares):
    squares.run()
    squares.offset = 1000
    squares.run()
    assert all(r[0] == j * j + 1000 for j, r in squares.results.items())


def test_failed_job_raises_and_the_next_run_works(squares):
    squares.fail_at = 7
    with pytest.raises(RemoteError) as info:
        squares.run()
    assert "job 7 failed" in info.value.traceback
    squares.fail_at = -1
    squares.run()
    assert len(squares.results) == 30
