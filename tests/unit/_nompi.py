"""Shared by the unit tests (imported by each): no MPI process is started and MPI is never
initialized here.

They drive the engine's parts that hold the rules (task group, failure policy, options,
wire records) with plain objects and fakes of the engine or communicator.
"""
import sys

import pytest


@pytest.fixture(autouse=True)
def no_mpi_initialized():
    """Fail a unit test that initialized MPI (it belongs in the integration level). Only
    this test's own doing counts: in one pytest run with the other levels, an earlier
    integration test may have initialized MPI in this process already."""
    def initialized():
        mod = sys.modules.get("mpi4py.MPI")
        return mod is not None and mod.Is_initialized()
    before = initialized()
    yield
    assert before or not initialized(), "a unit test initialized MPI"
