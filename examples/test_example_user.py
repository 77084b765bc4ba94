"""How a scientist tests task code that runs under mpidispatch (docs/testing.md).

The same file runs three ways:

    pytest examples/test_example_user.py                            # 2 spawned workers
    pytest examples/test_example_user.py --mpidispatch-in-process   # no MPI: fast, pdb works
    mpiexec -n 3 python -m pytest --with-mpi examples/test_example_user.py   # a static world

``examples/conftest.py`` loads the plugin: ``pytest_plugins = ["mpidispatch.testing"]``.
"""
import math

import numpy as np
import pytest

from mpidispatch import Manager, MPIExecutor, RemoteError, job, task
from mpidispatch.testing import running


# -- the code under test (in a real project: imported from your package) --------------------
def make_rng():
    """Setup: one random generator per worker."""
    return (np.random.default_rng(12345),)


class Darts:
    """Throw ``n`` darts at the unit square; count those inside the quarter circle."""

    def __init__(self, n):
        if n <= 0:
            raise ValueError("need at least one dart, got %d" % n)
        self.n = n

    def __call__(self, rng):
        xy = rng.random((self.n, 2))
        return int(((xy ** 2).sum(axis=1) <= 1.0).sum()), self.n


def estimate_pi(manager, throws=20, darts=10_000):
    """The pipeline: farm out darts, combine the counts."""
    context = manager.get_context(make_rng)
    for _ in range(throws):
        context.add_task(Darts(darts))
    hits = total = 0
    for inside, n in context.get_results_unordered():
        hits += inside
        total += n
    return 4 * hits / total


def normalize(row):
    return row / np.linalg.norm(row)


class Word(task):
    def run(self, text):
        return text.upper()


# -- the tests ------------------------------------------------------------------------------
def test_estimate_pi():
    with running(Manager, workers=2) as manager:
        assert estimate_pi(manager) == pytest.approx(math.pi, abs=0.05)


def test_a_bad_task_reports_the_worker_traceback():
    with running(Manager, workers=2) as manager:
        context = manager.get_context(make_rng)
        context.add_task(lambda rng: Darts(0)(rng))
        with pytest.raises(RemoteError) as info:
            context.get_results()
    assert isinstance(info.value.exc, ValueError)
    assert "need at least one dart" in info.value.traceback


def test_normalize_rows(mpidispatch_face):
    executor = mpidispatch_face(MPIExecutor, workers=2)  # closed at the end of the test
    rows = np.arange(1.0, 13.0).reshape(4, 3)
    for row, unit in zip(rows, executor.map(normalize, rows)):
        assert np.linalg.norm(unit) == pytest.approx(1.0)
        assert np.allclose(unit * np.linalg.norm(row), row)


def test_modeller_style_tasks(mpidispatch_face):
    j = mpidispatch_face(job, workers=2)
    for text in ("alpha", "beta"):
        j.queue_task(Word(text))
    assert j.run_all_tasks() == ["ALPHA", "BETA"]
